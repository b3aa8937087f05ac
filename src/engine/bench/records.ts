// What every benchmark record carries, and the shapes the suite measures. Records are flat JSON objects with
// snake_case fields; bench/peer.py (PyTorch) prints the same fields for the same benches, so bench/compare.py can
// pair them by `bench` (and `direction`/`layout`) and print ratios.

import type { GpuContext } from '../gpu/context.ts';
import type { TimingMethod } from './timing.ts';

export interface BenchRecord {
  /** 'matmul', 'attention', 'step', 'generate', 'memory'. */
  bench: string;
  /** Who measured: this engine, or the PyTorch peer. */
  impl: 'tunelab' | 'pytorch';
  /** The adapter's short name ('nvidia hopper', 'google swiftshader'). */
  adapter: string;
  /** True when the shape was shrunk for a slow (software) adapter: the figure is then no comparison with anything. */
  scaled?: boolean;
  [field: string]: unknown;
}

export interface RunCounts {
  /** Warm-up runs before measuring. */
  warmup: number;
  /** Measured runs; figures are their median. */
  iters: number;
}

export function isSwiftShader(gpu: GpuContext): boolean {
  return gpu.adapter.name.toLowerCase().includes('swiftshader');
}

/** The fields every record of this engine starts with. */
export function recordBase(gpu: GpuContext, bench: string, scaled: boolean): BenchRecord {
  return { bench, impl: 'tunelab', adapter: gpu.adapter.name, scaled };
}

/** Rounds to `digits` significant digits (JSON stays readable; the measurement noise is larger anyway). */
export function round(value: number, digits = 4): number {
  return Number.isFinite(value) ? Number(value.toPrecision(digits)) : value;
}

export function timingFields(t: { ms: number; method: TimingMethod; samples: number[] }, counts: RunCounts): Record<string, unknown> {
  return { ms: round(t.ms), timing: t.method, warmup: counts.warmup, iters: counts.iters, min_ms: round(Math.min(...t.samples)) };
}
