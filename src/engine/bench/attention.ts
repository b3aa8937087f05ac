// Attention benchmark: the causal multi-head attention kernels (ops/attention.ts) forward and backward on their own,
// at GPT-2 small's training shape (B=8, NH=12, T=256, HS=64) by default, in milliseconds and GFLOP/s.
//
// FLOPs are counted the way FlashAttention's papers count them, over the causal pairs only (T(T+1)/2 per head):
// forward = q·kᵀ and p·v = 4·HS per pair; backward = 2.5× forward (recomputed scores, dv, dp, dq, dk).

import type { GpuContext } from '../gpu/context.ts';
import { attentionBackward, attentionForward, attentionScratchSizes, type AttentionShape } from '../ops/attention.ts';
import { Rng } from '../random.ts';
import { recordBase, round, timingFields, type BenchRecord, type RunCounts } from './records.ts';
import { timeDispatches } from './timing.ts';

/** B batch, NH heads, T positions, HS head size. */
export interface AttentionBenchShape {
  B: number;
  NH: number;
  T: number;
  HS: number;
}

export const GPT2_SMALL_ATTENTION: Readonly<AttentionBenchShape> = Object.freeze({ B: 8, NH: 12, T: 256, HS: 64 });
/** For software adapters: same kernels, a shape SwiftShader runs in well under a second. */
export const SCALED_ATTENTION: Readonly<AttentionBenchShape> = Object.freeze({ B: 1, NH: 2, T: 64, HS: 16 });

export function attentionFlops({ B, NH, T, HS }: AttentionBenchShape, direction: 'forward' | 'backward'): number {
  const forward = 4 * HS * B * NH * ((T * (T + 1)) / 2);
  return direction === 'forward' ? forward : 2.5 * forward;
}

/** Random uniform values in [-1, 1) straight into f32 (big shapes would not fit Float64Arrays comfortably). */
export function randomValues(rng: Rng, length: number, scale = 1): Float32Array {
  const data = new Float32Array(length);
  for (let i = 0; i < length; i++) data[i] = (rng.next() * 2 - 1) * scale;
  return data;
}

/** Times attention forward, then backward (on the forward's real out and lse), and returns one record for each. */
export async function benchAttention(
  gpu: GpuContext,
  shape: AttentionBenchShape,
  counts: RunCounts,
  scaled: boolean,
): Promise<BenchRecord[]> {
  const { B, NH, T, HS } = shape;
  const C = NH * HS;
  const opShape: AttentionShape = { B, T, C, NH };
  const sizes = attentionScratchSizes(opShape);
  const rng = new Rng(7);
  const t = {
    qkv: gpu.upload(randomValues(rng, B * T * 3 * C), 'bench.qkv'),
    out: gpu.tensor(B * T * C, 'bench.atty'),
    lse: gpu.tensor(sizes.lse, 'bench.lse'),
    dout: gpu.upload(randomValues(rng, B * T * C), 'bench.datty'),
    dqkv: gpu.tensor(B * T * 3 * C, 'bench.dqkv'),
    delta: gpu.tensor(sizes.delta, 'bench.delta'),
  };
  const records: BenchRecord[] = [];
  try {
    const forward = await attentionForward(gpu, { out: t.out, lse: t.lse, qkv: t.qkv }, opShape);
    const backward = await attentionBackward(gpu, { dqkv: t.dqkv, dout: t.dout, qkv: t.qkv, out: t.out, lse: t.lse, delta: t.delta }, opShape);
    try {
      for (const [direction, dispatches] of [['forward', [forward]], ['backward', backward]] as const) {
        const timing = await timeDispatches(gpu, dispatches, counts);
        records.push({
          ...recordBase(gpu, 'attention', scaled),
          direction,
          shape: { B, NH, T, HS },
          ...timingFields(timing, counts),
          gflops: round(attentionFlops(shape, direction) / (timing.ms * 1e6)),
        });
      }
    } finally {
      forward.release();
      for (const d of backward) d.release();
    }
  } finally {
    for (const tensor of Object.values(t)) gpu.free(tensor);
  }
  return records;
}
