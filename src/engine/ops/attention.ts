// Causal multi-head self-attention, forward and backward, as prepared dispatches (flash-attention style kernels).
//
// qkv (B,T,3C) is c_attn's output [q | k | v] (each C = NH·HS wide, head h in columns h·HS..(h+1)·HS of each);
// out (B,T,C). The forward saves lse (B,NH,T) = log Σ exp(score) per row; the backward needs it, `out`, and a
// scratch tensor `delta` (B,NH,T). `attentionScratchSizes` gives both lengths.

import { TunelabError } from '../errors.ts';
import { grid1d, type Dispatch, type GpuContext, type GpuTensor } from '../gpu/context.ts';
import {
  attentionBackward as attentionBackwardKernel,
  attentionBackwardDelta as attentionBackwardDeltaKernel,
  attentionForward as attentionForwardKernel,
} from '../../kernels/registry.ts';

export interface AttentionShape {
  B: number;
  T: number;
  C: number;
  NH: number;
}

/** Query rows (BQ) and key rows (BK) per tile; a workgroup has BQ·BK threads. */
export interface AttentionTiles {
  BQ: number;
  BK: number;
}

const DELTA_WG = 64;
/** Largest first; the first that fits the device's workgroup memory and invocation limits is used. */
const TILE_CANDIDATES: readonly AttentionTiles[] = [
  { BQ: 16, BK: 16 },
  { BQ: 16, BK: 8 },
  { BQ: 8, BK: 8 },
  { BQ: 4, BK: 4 },
];

/** Lengths (f32 elements) of the tensors a caller allocates besides qkv, out and their gradients. */
export function attentionScratchSizes({ B, T, NH }: AttentionShape): { lse: number; delta: number } {
  // lse: written by the forward, kept until the backward. delta: backward-only scratch, free after it.
  return { lse: B * NH * T, delta: B * NH * T };
}

/** Workgroup memory of attention_forward: q, k, v and output tiles plus two (BQ,BK) tiles. */
function forwardWorkgroupBytes({ BQ, BK }: AttentionTiles, HS: number): number {
  return 4 * (2 * BQ * HS + 2 * BK * HS + 2 * BQ * BK);
}

/** Workgroup memory of attention_backward: q, dout, k, v tiles, two accumulators, P and dS, lse and delta. */
function backwardWorkgroupBytes({ BQ, BK }: AttentionTiles, HS: number): number {
  return 4 * (2 * BQ * HS + 2 * BK * HS + Math.max(BQ, BK) * HS + BK * HS + 2 * BQ * BK + 2 * BQ);
}

function headSize({ C, NH }: AttentionShape): number {
  if (!Number.isInteger(NH) || NH < 1 || C % NH !== 0) {
    throw new TunelabError('bad-model', `attention: n_embd ${C} is not divisible by n_head ${NH}`);
  }
  return C / NH;
}

function chooseTiles(gpu: GpuContext, HS: number, bytes: (tiles: AttentionTiles, HS: number) => number, given?: AttentionTiles): AttentionTiles {
  const limits = gpu.device.limits;
  const fits = (tiles: AttentionTiles) =>
    tiles.BQ * tiles.BK <= limits.maxComputeInvocationsPerWorkgroup && bytes(tiles, HS) <= limits.maxComputeWorkgroupStorageSize;
  if (given) {
    if (!fits(given)) throw new RangeError(`attention: tiles ${given.BQ}x${given.BK} do not fit this device for head size ${HS}`);
    return given;
  }
  const tiles = TILE_CANDIDATES.find(fits);
  if (!tiles) {
    throw new TunelabError(
      'too-large',
      `attention: head size ${HS} needs more workgroup memory than this GPU offers ` +
        `(${limits.maxComputeWorkgroupStorageSize} bytes); choose a model with a smaller head size`,
    );
  }
  return tiles;
}

function expectLength(t: GpuTensor, length: number, name: string): void {
  if (t.length < length) throw new RangeError(`attention: ${name} (${t.label}) has ${t.length} elements, needs ${length}`);
}

/** out (B,T,C) = causal softmax(q·kᵀ/√HS)·v per head, and lse (B,NH,T) for the backward. */
export async function attentionForward(
  gpu: GpuContext,
  t: { out: GpuTensor; lse: GpuTensor; qkv: GpuTensor },
  shape: AttentionShape,
  tiles?: AttentionTiles,
): Promise<Dispatch> {
  const { B, T, C, NH } = shape;
  const HS = headSize(shape);
  expectLength(t.qkv, B * T * 3 * C, 'qkv');
  expectLength(t.out, B * T * C, 'out');
  expectLength(t.lse, attentionScratchSizes(shape).lse, 'lse');
  const { BQ, BK } = chooseTiles(gpu, HS, forwardWorkgroupBytes, tiles);
  return gpu.prepare(attentionForwardKernel, {
    bindings: { qkv: t.qkv, out: t.out, lse: t.lse },
    uniforms: { T, C, NH, HS },
    overrides: { BQ, BK, HS_MAX: HS },
    workgroups: [Math.ceil(T / BQ), B * NH],
  });
}

/**
 * dqkv (B,T,3C) = gradient of attention with respect to qkv, assigned (not accumulated). Needs the forward's out and
 * lse, and `delta` (B,NH,T) as scratch. Two dispatches, to record in this order: delta = rowsum(dout ⊙ out), then
 * dq, dk, dv.
 */
export async function attentionBackward(
  gpu: GpuContext,
  t: { dqkv: GpuTensor; dout: GpuTensor; qkv: GpuTensor; out: GpuTensor; lse: GpuTensor; delta: GpuTensor },
  shape: AttentionShape,
  tiles?: AttentionTiles,
): Promise<Dispatch[]> {
  const { B, T, C, NH } = shape;
  const HS = headSize(shape);
  const rows = B * NH * T;
  expectLength(t.qkv, B * T * 3 * C, 'qkv');
  expectLength(t.dqkv, B * T * 3 * C, 'dqkv');
  expectLength(t.out, B * T * C, 'out');
  expectLength(t.dout, B * T * C, 'dout');
  expectLength(t.lse, rows, 'lse');
  expectLength(t.delta, rows, 'delta');
  const { BQ, BK } = chooseTiles(gpu, HS, backwardWorkgroupBytes, tiles);
  const delta = await gpu.prepare(attentionBackwardDeltaKernel, {
    bindings: { dout: t.dout, out: t.out, delta: t.delta },
    uniforms: { rows, T, C, NH, HS },
    overrides: { WG: DELTA_WG },
    workgroups: grid1d(rows, DELTA_WG),
  });
  try {
    const gradients = await gpu.prepare(attentionBackwardKernel, {
      bindings: { qkv: t.qkv, dout: t.dout, lse: t.lse, delta: t.delta, dqkv: t.dqkv },
      uniforms: { T, C, NH, HS },
      overrides: { BQ, BK, HS_MAX: HS },
      // x: ceil(T/BQ) query-block workgroups (dq), then ceil(T/BK) key-block workgroups (dk, dv).
      workgroups: [Math.ceil(T / BQ) + Math.ceil(T / BK), B * NH],
    });
    return [delta, gradients];
  } catch (error) {
    delta.release();
    throw error;
  }
}
