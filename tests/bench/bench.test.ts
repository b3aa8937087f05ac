// Smoke test of `tunelab bench`: every bench runs once on tiny shapes on the test machine's adapter (SwiftShader
// when there is no GPU) and its JSON records carry the fields bench/peer.py and bench/compare.py rely on. Speed is
// never asserted; consistency between fields (tokens/s from ms, memory parts within the total) is.

import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { requestPreciseTimestamps, runBench } from '../../src/cli/bench.ts';
import type { BenchRecord } from '../../src/engine/bench/records.ts';
import { gpuTimeOfSubmits, median, timeDispatches, timeWallClock } from '../../src/engine/bench/timing.ts';
import { GpuContext } from '../../src/engine/gpu/context.ts';
import { nodeGpu } from '../../src/engine/gpu/node.ts';
import { residualForward } from '../../src/engine/ops/residual.ts';
import { testGpu } from '../helpers/gpu.ts';

async function records(args: string[]): Promise<BenchRecord[]> {
  const out: BenchRecord[] = [];
  const status = await runBench(args, (r) => out.push(JSON.parse(JSON.stringify(r)) as BenchRecord));
  expect(status).toBe(0);
  return out;
}

/** Fields every record has, whatever the bench. */
function expectCommon(r: BenchRecord, bench: string): void {
  expect(r.bench).toBe(bench);
  expect(r.impl).toBe('tunelab');
  expect(typeof r.adapter).toBe('string');
  expect((r.adapter as string).length).toBeGreaterThan(0);
  expect(typeof r.scaled).toBe('boolean');
}

/** Fields of a timed record. */
function expectTimed(r: BenchRecord, iters: number): void {
  expect(r.ms).toBeGreaterThan(0);
  expect(r.min_ms).toBeGreaterThan(0);
  expect(r.min_ms as number).toBeLessThanOrEqual(r.ms as number);
  expect(['timestamp-query', 'wall-clock']).toContain(r.timing);
  expect(r.iters).toBe(iters);
  expect(typeof r.warmup).toBe('number');
}

const TINY_STEP = ['--layers', '1', '--width', '16', '--heads', '2', '--vocab', '37', '--positions', '8', '--batch', '1', '--seq', '7', '--rank', '2'];

describe('timing', () => {
  let gpu: GpuContext;
  beforeAll(async () => {
    // As `tunelab bench` does, before this process's first device: unrounded timestamps, so that a tiny dispatch
    // measures above zero.
    requestPreciseTimestamps();
    gpu = await testGpu();
  });

  test('median of odd and even counts', () => {
    expect(median([3, 1, 2])).toBe(2);
    expect(median([4, 1, 3, 2])).toBe(2.5);
    expect(median([])).toBeNaN();
  });

  test('timeDispatches gives one sample per measured run, by timestamp queries where the device has them', async () => {
    const n = 1000;
    const t = { a: gpu.upload(new Float32Array(n).fill(1), 'a'), b: gpu.upload(new Float32Array(n).fill(2), 'b'), out: gpu.tensor(n, 'out') };
    const dispatch = await residualForward(gpu, t, n);
    const timing = await timeDispatches(gpu, [dispatch], { warmup: 1, iters: 3 });
    expect(timing.samples).toHaveLength(3);
    expect(timing.ms).toBe(median(timing.samples));
    expect(timing.method).toBe(gpu.features.timestampQuery ? 'timestamp-query' : 'wall-clock');
    expect((await gpu.read(t.out))[n - 1]).toBe(3); // the timed dispatch really ran
    dispatch.release();
    for (const x of Object.values(t)) gpu.free(x);
  });

  test('without timestamp-query the wall clock is used', async () => {
    const plain = await GpuContext.acquire(await nodeGpu(), { optionalFeatures: false });
    try {
      expect(plain.features.timestampQuery).toBe(false);
      const n = 64;
      const t = { a: plain.tensor(n, 'a'), b: plain.tensor(n, 'b'), out: plain.tensor(n, 'out') };
      const timing = await timeDispatches(plain, [await residualForward(plain, t, n)], { warmup: 0, iters: 2 });
      expect(timing.method).toBe('wall-clock');
      expect(timing.samples).toHaveLength(2);
      expect(await gpuTimeOfSubmits(plain, 1, async () => {})).toBeUndefined();
    } finally {
      plain.destroy();
    }
  });

  test('timeWallClock runs warm-up and measured runs in order', async () => {
    const seen: number[] = [];
    const timing = await timeWallClock(async (i) => void seen.push(i), { warmup: 2, iters: 3 });
    expect(seen).toEqual([0, 1, 2, 3, 4]);
    expect(timing.samples).toHaveLength(3);
    await expect(timeWallClock(async () => {}, { warmup: 0, iters: 0 })).rejects.toThrow(/measured runs/);
  });

  test('gpuTimeOfSubmits times each GpuContext.submit and removes its observer afterwards', async () => {
    if (!gpu.features.timestampQuery) return expect(gpu.features.timestampQuery).toBe(false);
    const n = 256;
    const t = { a: gpu.tensor(n, 'a'), b: gpu.tensor(n, 'b'), out: gpu.tensor(n, 'out') };
    const dispatch = await residualForward(gpu, t, n);
    let cleared = false;
    const samples = await gpuTimeOfSubmits(gpu, 4, async () => {
      gpu.submit([dispatch], 'one', { before: () => void (cleared = true) });
      gpu.submit([dispatch], 'two');
    });
    expect(cleared).toBe(true); // the caller's hooks still run
    expect(samples).toHaveLength(2);
    for (const s of samples!) expect(s).toBeGreaterThan(0);
    expect(gpu.submitObserver).toBeUndefined();
    dispatch.release();
    for (const x of Object.values(t)) gpu.free(x);
  });
});

describe('tunelab bench', () => {
  const stderr = process.stderr.write.bind(process.stderr);
  const errors: string[] = [];
  beforeAll(() => {
    process.stderr.write = ((chunk: string) => (errors.push(String(chunk)), true)) as typeof process.stderr.write;
  });
  afterAll(() => {
    process.stderr.write = stderr;
  });

  test('usage errors exit 2 before any device work', async () => {
    expect(await runBench([], () => {})).toBe(2);
    expect(await runBench(['nonsense'], () => {})).toBe(2);
    expect(await runBench(['step', '--width', '30', '--heads', '4'], () => {})).toBe(2);
    expect(await runBench(['attention', '--seq', '0'], () => {})).toBe(2);
    expect(await runBench(['matmul', '--layout', 'sideways'], () => {})).toBe(2);
    expect(errors.join('')).toMatch(/unknown bench 'nonsense'/);
  });

  test('matmul: one record per layout and weight precision with GFLOP/s and the kernel that ran', async () => {
    const out = await records(['matmul', '--m', '8', '--n', '12', '--k', '20', '--layout', 'all', '--iters', '1', '--warmup', '0']);
    expect(out.map((r) => `${r.layout} ${r.precision}`)).toEqual([
      'forward f32',
      'forward f16-weights',
      'backward-input f32',
      'backward-input f16-weights',
      'backward-weight f32',
    ]);
    // K and N multiples of 4 → vec4 loads; 8 output rows → the short 16×64 tile.
    expect(out[0].kernel).toBe('tiled vec4 16×64×16, 4×4 per thread');
    for (const r of out) {
      expectCommon(r, 'matmul');
      expectTimed(r, 1);
      expect(r.scaled).toBe(false); // an explicit shape is what was asked for
      expect(r.shape).toEqual({ M: 8, N: 12, K: 20 });
      expect(r.gflops).toBeCloseTo((2 * 8 * 12 * 20) / ((r.ms as number) * 1e6), 2);
    }
  });

  test('attention: forward and backward records at the given shape', async () => {
    const out = await records(['attention', '--batch', '1', '--heads', '2', '--seq', '7', '--head-size', '4', '--iters', '1', '--warmup', '0']);
    expect(out.map((r) => r.direction)).toEqual(['forward', 'backward']);
    for (const r of out) {
      expectCommon(r, 'attention');
      expectTimed(r, 1);
      expect(r.shape).toEqual({ B: 1, NH: 2, T: 7, HS: 4 });
      expect(r.scaled).toBe(true);
      expect(r.gflops).toBeGreaterThan(0);
    }
  });

  test('step: a LoRA training step with tokens/s, loss and the memory of the same build', async () => {
    const out = await records(['step', ...TINY_STEP, '--iters', '2', '--warmup', '1']);
    expect(out.map((r) => r.bench)).toEqual(['step', 'memory']);
    const [step, memory] = out;
    expectCommon(step, 'step');
    expectTimed(step, 2);
    expect(step.scaled).toBe(true);
    expect(step.config).toEqual({ layers: 1, width: 16, heads: 2, vocab: 37, positions: 8, batch: 1, seq: 7, rank: 2, targets: ['c_attn'] });
    expect(step.tokens_per_s).toBeCloseTo((7 * 1000) / (step.ms as number), 0);
    expect(step.optimizer).toBe('adamw');
    expect(step.dispatches).toBeGreaterThan(10);
    // Random weights predict nearly uniformly: the loss is close to ln V.
    expect(Math.abs((step.loss as number) - Math.log(37))).toBeLessThan(0.5);
    if (step.gpu_ms !== undefined) expect(step.gpu_ms).toBeGreaterThan(0);
    expectCommon(memory, 'memory');
    const parts = ['model_bytes', 'adapter_bytes', 'run_bytes', 'other_bytes'].map((k) => memory[k] as number);
    for (const p of parts) expect(p).toBeGreaterThanOrEqual(0);
    expect(parts.reduce((a, b) => a + b, 0)).toBe(memory.bytes_in_use);
    expect(memory.bytes_allocated as number).toBeGreaterThanOrEqual(memory.bytes_in_use as number);
  }, 300_000);

  test('memory: builds the step and reports the pool', async () => {
    const [memory] = await records(['memory', ...TINY_STEP]);
    expectCommon(memory, 'memory');
    expect(memory.bytes_in_use).toBeGreaterThan(memory.model_bytes as number);
    expect(memory.run_bytes_by_purpose).toHaveProperty('activations');
  }, 300_000);

  test('generate: greedy tokens with the KV cache, tokens/s over prefill and decode', async () => {
    const [r] = await records(['generate', '--layers', '1', '--width', '16', '--heads', '2', '--vocab', '37', '--positions', '16', '--prompt', '3', '--new-tokens', '4', '--iters', '2', '--warmup', '1']);
    expectCommon(r, 'generate');
    expectTimed(r, 2);
    expect(r).toMatchObject({ batch: 1, prompt: 3, new_tokens: 4, lora: true, scaled: true });
    expect(r.tokens_per_s).toBeCloseTo((4 * 1000) / (r.ms as number), 0);
    expect(r.prefill_ms).toBeGreaterThan(0);
    expect(r.prefill_ms as number).toBeLessThan(r.ms as number);
    expect(r.ms_per_token).toBeGreaterThan(0);
    // Width 16, 2 heads: the fused step takes it, and the tokens are chosen on the GPU in chunks.
    expect(r).toMatchObject({ per_token: false, fused_step: true });
    // 1 layer with LoRA on c_attn: embedding + 5 + head + choice = 8, against the general pass's embedding, ln_1,
    // c_attn + 2 LoRA, KV write, attention, c_proj, residual + ln_2, c_fc + GELU, c_proj, residual, ln_f, classifier.
    expect(r).toMatchObject({ dispatches_per_token: 8, general_pass_dispatches_per_token: 14 });
    const [perToken] = await records(['generate', '--layers', '1', '--width', '16', '--heads', '2', '--vocab', '37', '--positions', '16', '--prompt', '3', '--new-tokens', '4', '--iters', '1', '--warmup', '0', '--per-token']);
    expect(perToken).toMatchObject({ per_token: true, new_tokens: 4 });
  }, 300_000);

  test('generate: a prompt and new tokens beyond the context are a usage error', async () => {
    expect(await runBench(['generate', '--positions', '16', '--prompt', '10', '--new-tokens', '7'], () => {})).toBe(2);
  });
});
