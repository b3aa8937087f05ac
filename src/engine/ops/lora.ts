// LoRA for a linear layer, as prepared dispatches:
//   forward   u (M,R) = dropout(inp) (M,K) · aᵀ;   out (M,N) += scale · u · bᵀ          (after the base matmul)
//   backward  db (N,R) += scale · doutᵀ · u;  du (M,R) = scale · dout · b;
//             da (R,K) += duᵀ · dropout(inp);  dinp (M,K) += (du · a) ⊙ keep/(1-p)    (after the base backward)
// a (R,K) and b (N,R) as in PEFT; scale = alpha/R (alpha/√R for rsLoRA) is the caller's choice.
// Dropout keeps no mask: the kernels recompute keep(seed, m·K + k) (see src/engine/reference/lora.ts for the
// definition), so forward and backward of one step must use the same seed; setSeed() changes it on every dispatch.

import { grid1d, type Dispatch, type GpuContext, type GpuTensor } from '../gpu/context.ts';
import {
  loraBackwardA as loraBackwardAKernel,
  loraBackwardB as loraBackwardBKernel,
  loraBackwardU as loraBackwardUKernel,
  loraBackwardX as loraBackwardXKernel,
  loraForwardDown as loraForwardDownKernel,
  loraForwardUp as loraForwardUpKernel,
} from '../../kernels/registry.ts';
import { matmulSplitReduce } from './matmul.ts';

export interface LoraShape {
  /** Tokens (B*T). */
  M: number;
  /** Output features of the layer. */
  N: number;
  /** Input features of the layer. */
  K: number;
  /** Rank. */
  R: number;
}

/** Largest rank the kernels' workgroup tiles hold (their MAX_R). */
export const LORA_MAX_RANK = 64;

export interface LoraOptions {
  /** alpha/R, or alpha/√R for rsLoRA. */
  scale: number;
  /** Dropout probability on the layer input, in [0, 1); 0 (the default) applies none. */
  dropout?: number;
  /** u32 seed of the dropout mask; change it every step with setSeed(). */
  seed?: number;
}

/** The dispatches of one LoRA pass, in recording order, with the one uniform a trainer changes per step. */
export interface LoraDispatches {
  readonly dispatches: readonly Dispatch[];
  /** Sets the dropout seed (u32) of every dispatch that draws the mask; takes effect at the next submit. */
  setSeed(seed: number): void;
  release(): void;
}

// Tiles (overrides). The narrow kernels (output (M,R)) hold up to 8 outputs per thread of 256: ROWS·R ≤ 2048.
const NARROW = { TILE_DEPTH: 32, WG: 256, OUTS: 8, MAX_ROWS: 64 };
const WIDE = { TILE_COLS: 64, WG_ROWS: 4, R_CHUNK: 16, TILE_ROWS: 4 * 8 };
const SMALL_GRAD = { COLS: 64, M_CHUNK: 16, WG: 256 };

/** Rows per workgroup for the narrow kernels: as many as the per-thread outputs allow, a power of two, ≤ 64. */
function narrowRows(R: number): number {
  let rows = NARROW.MAX_ROWS;
  while (rows * R > NARROW.WG * NARROW.OUTS) rows /= 2;
  return rows;
}

function checkShape(name: string, shape: LoraShape): void {
  for (const [dim, v] of Object.entries(shape)) {
    if (!Number.isInteger(v) || v < 1) throw new RangeError(`${name}: ${dim} must be a positive integer, got ${v}`);
  }
  if (shape.R > LORA_MAX_RANK) throw new RangeError(`${name}: LoRA rank ${shape.R} exceeds the maximum ${LORA_MAX_RANK}`);
}

function checkLengths(name: string, tensors: [GpuTensor, number, string][]): void {
  for (const [tensor, needed, what] of tensors) {
    if (tensor.length < needed) {
      throw new RangeError(`${name}: ${tensor.label} holds ${tensor.length} elements, ${what} needs ${needed}`);
    }
  }
}

/** An element is dropped when its u32 hash is below floor(p·2^32); kept ones are scaled by 1/(1-p). */
function dropoutUniforms(options: LoraOptions): { seed: number; drop_threshold: number; keep_scale: number } {
  const p = options.dropout ?? 0;
  if (!(p >= 0 && p < 1)) throw new RangeError(`LoRA dropout must be in [0, 1), got ${p}`);
  return { seed: (options.seed ?? 0) >>> 0, drop_threshold: Math.floor(p * 2 ** 32), keep_scale: 1 / (1 - p) };
}

function bundle(dispatches: Dispatch[], seeded: Dispatch[]): LoraDispatches {
  return {
    dispatches,
    setSeed(seed: number) {
      for (const d of seeded) d.setUniforms({ seed: seed >>> 0 });
    },
    release() {
      for (const d of dispatches) d.release();
    },
  };
}

/** u (M,R) = dropout(inp) · aᵀ, then out (M,N) += scale · u · bᵀ. Record after the base layer's matmul into out. */
export async function loraForward(
  gpu: GpuContext,
  t: { out: GpuTensor; u: GpuTensor; inp: GpuTensor; a: GpuTensor; b: GpuTensor },
  shape: LoraShape,
  options: LoraOptions,
): Promise<LoraDispatches> {
  const { M, N, K, R } = shape;
  checkShape('loraForward', shape);
  checkLengths('loraForward', [
    [t.inp, M * K, 'inp (M,K)'],
    [t.a, R * K, 'a (R,K)'],
    [t.b, N * R, 'b (N,R)'],
    [t.u, M * R, 'u (M,R)'],
    [t.out, M * N, 'out (M,N)'],
  ]);
  const maxGroups = gpu.device.limits.maxComputeWorkgroupsPerDimension;
  // Few rows (a decoding step: M = 1) need no more tile rows than they have: the block loads shrink with them.
  const rows = Math.min(narrowRows(R), 2 ** Math.ceil(Math.log2(M)));
  const down = await gpu.prepare(loraForwardDownKernel, {
    bindings: { inp: t.inp, a: t.a, u: t.u },
    uniforms: { M, K, R, ...dropoutUniforms(options) },
    overrides: { ROWS: rows, TILE_DEPTH: NARROW.TILE_DEPTH, WG: NARROW.WG },
    workgroups: grid1d(M, rows, maxGroups),
  });
  const up = await gpu.prepare(loraForwardUpKernel, {
    bindings: { u: t.u, b: t.b, out: t.out },
    uniforms: { M, N, R, scale: options.scale },
    overrides: { TILE_COLS: WIDE.TILE_COLS, WG_ROWS: WIDE.WG_ROWS, R_CHUNK: WIDE.R_CHUNK },
    workgroups: [Math.ceil(N / WIDE.TILE_COLS), Math.ceil(M / WIDE.TILE_ROWS)],
  });
  return bundle([down, up], [down]);
}

/**
 * db += scale · doutᵀ · u and du = scale · dout · b, then da += duᵀ · dropout(inp) and dinp += (du · a) ⊙ mask.
 * `du` (M,R) is scratch. dinp is accumulated: record after the base layer's input gradient. Use the forward's seed.
 */
export async function loraBackward(
  gpu: GpuContext,
  t: {
    dinp: GpuTensor;
    da: GpuTensor;
    db: GpuTensor;
    du: GpuTensor;
    dout: GpuTensor;
    inp: GpuTensor;
    u: GpuTensor;
    a: GpuTensor;
    b: GpuTensor;
    /** Scratch for split weight gradients (loraPartialLength floats for this layer's widest side); none: no split. */
    partial?: GpuTensor;
  },
  shape: LoraShape,
  options: LoraOptions,
): Promise<LoraDispatches> {
  const { M, N, K, R } = shape;
  checkShape('loraBackward', shape);
  checkLengths('loraBackward', [
    [t.dout, M * N, 'dout (M,N)'],
    [t.inp, M * K, 'inp (M,K)'],
    [t.u, M * R, 'u (M,R)'],
    [t.a, R * K, 'a (R,K)'],
    [t.b, N * R, 'b (N,R)'],
    [t.du, M * R, 'du (M,R)'],
    [t.da, R * K, 'da (R,K)'],
    [t.db, N * R, 'db (N,R)'],
    [t.dinp, M * K, 'dinp (M,K)'],
  ]);
  const maxGroups = gpu.device.limits.maxComputeWorkgroupsPerDimension;
  const dropout = dropoutUniforms(options);
  const rows = narrowRows(R);
  // The two small gradients reduce over all M tokens: split that reduction when their column groups alone would
  // leave the GPU idle and the caller gave a scratch for the partial sums (loraPartialLength).
  const splitsB = loraGradSplits(M, N, R, t.partial);
  const gradB = await gpu.prepare(loraBackwardBKernel, {
    bindings: { dout: t.dout, u: t.u, db: splitsB > 1 ? t.partial! : t.db },
    uniforms: { M, N, R, scale: options.scale },
    overrides: { ...SMALL_GRAD, SPLIT_M: splitsB },
    workgroups: [...grid1d(N, SMALL_GRAD.COLS, maxGroups), splitsB],
  });
  const gradU = await gpu.prepare(loraBackwardUKernel, {
    bindings: { dout: t.dout, b: t.b, du: t.du },
    uniforms: { M, N, R, scale: options.scale },
    overrides: { ROWS: rows, TILE_DEPTH: NARROW.TILE_DEPTH, WG: NARROW.WG },
    workgroups: grid1d(M, rows, maxGroups),
  });
  const splitsA = loraGradSplits(M, K, R, t.partial);
  const gradA = await gpu.prepare(loraBackwardAKernel, {
    bindings: { du: t.du, inp: t.inp, da: splitsA > 1 ? t.partial! : t.da },
    uniforms: { M, K, R, ...dropout },
    overrides: { ...SMALL_GRAD, SPLIT_M: splitsA },
    workgroups: [...grid1d(K, SMALL_GRAD.COLS, maxGroups), splitsA],
  });
  const gradX = await gpu.prepare(loraBackwardXKernel, {
    bindings: { du: t.du, a: t.a, dinp: t.dinp },
    uniforms: { M, K, R, ...dropout },
    overrides: { TILE_COLS: WIDE.TILE_COLS, WG_ROWS: WIDE.WG_ROWS, R_CHUNK: WIDE.R_CHUNK },
    workgroups: [Math.ceil(K / WIDE.TILE_COLS), Math.ceil(M / WIDE.TILE_ROWS)],
  });
  const sumB = splitsB > 1 ? [await matmulSplitReduce(gpu, { out: t.db, scratch: t.partial! }, N * R, splitsB, true)] : [];
  const sumA = splitsA > 1 ? [await matmulSplitReduce(gpu, { out: t.da, scratch: t.partial! }, R * K, splitsA, true)] : [];
  return bundle([gradB, ...sumB, gradU, gradA, ...sumA, gradX], [gradA, gradX]);
}

/** At most this many token splits for the LoRA weight gradients (the partial-sum scratch is sized for it). */
export const LORA_GRAD_SPLITS = 16;

/** Floats of the scratch for split LoRA gradients of rank R whose widest layer side is `widest` (a (splits, R, widest) array). */
export function loraPartialLength(R: number, widest: number): number {
  return LORA_GRAD_SPLITS * R * widest;
}

/**
 * Token splits for a LoRA weight gradient `width` columns wide (width/64 column groups): enough for about 256
 * workgroups, each split keeping at least 4 steps of M_CHUNK tokens, and only as many as `partial` holds.
 */
function loraGradSplits(M: number, width: number, R: number, partial: GpuTensor | undefined): number {
  if (!partial) return 1;
  const groups = Math.ceil(width / SMALL_GRAD.COLS);
  const wanted = Math.ceil(256 / groups);
  const bySize = Math.floor(M / (4 * SMALL_GRAD.M_CHUNK));
  const byScratch = Math.floor(partial.length / (R * width));
  return Math.max(1, Math.min(wanted, bySize, byScratch, LORA_GRAD_SPLITS));
}
