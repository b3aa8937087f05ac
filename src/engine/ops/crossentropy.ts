// Fused softmax + cross-entropy (loss and dlogits in one kernel) and the batch metrics reduction, as prepared
// dispatches. The classifier runs chunk by chunk (a 50257-wide vocabulary does not fit for a whole batch), so one
// crossEntropyForwardBackward dispatch is prepared per chunk, all binding the same batch-wide per-token buffers.
//
// Buffers (N rows in a chunk, B*T tokens in the batch, V vocabulary):
//   logits   (N, rowStride) f32  the chunk's logits; OVERWRITTEN IN PLACE with dlogits when writeGradient is on
//   targets  (B*T) u32           next-token ids; those of tokens with mask ≠ 0 must be < V
//   mask     (B*T) f32           loss weight per token: 1 counts, 0 ignored
//   loss     (B*T) f32           out: mask·(lse − logit[target])
//   correct  (B*T) f32           out: mask·[argmax == target]
//   result   (4)   f32           out of crossEntropyMetrics, see CROSS_ENTROPY_RESULT
// dlossScale = 1 / Σ mask over the whole batch, computed on the CPU. It changes per batch: call
// setUniforms({ dlossScale }) on every chunk's dispatch and on the metrics dispatch before the step's submit.

import { grid1d, type Dispatch, type GpuContext, type GpuTensor } from '../gpu/context.ts';
import {
  crossentropyForwardBackward as crossentropyForwardBackwardKernel,
  crossentropyMetrics as crossentropyMetricsKernel,
} from '../../kernels/registry.ts';

const WG = 256;

/** Where each metric sits in the metrics result buffer (4 f32). Token accuracy = correct / tokens. */
export const CROSS_ENTROPY_RESULT = { meanLoss: 0, lossSum: 1, correct: 2, tokens: 3, length: 4 } as const;

export interface CrossEntropyChunk {
  /** N: token rows in this chunk. */
  rows: number;
  /** V: vocabulary size. */
  vocab: number;
  /** Elements between rows of logits (≥ V; default V). Padding columns get dlogits 0. */
  rowStride?: number;
  /** First token of the chunk in the batch-wide per-token buffers (default 0). */
  rowOffset?: number;
  /** 1 / Σ mask over the whole batch. */
  dlossScale: number;
  /** Overwrite logits with dlogits (default true); false for evaluation, which leaves the logits as they were. */
  writeGradient?: boolean;
}

function requireLength(t: GpuTensor, needed: number, what: string): void {
  if (t.length < needed) throw new RangeError(`cross-entropy: ${what} ${t.label} holds ${t.length}, needs ${needed}`);
}

/**
 * loss[t], correct[t] for the chunk's tokens t = rowOffset + r, and dlogits (N,V) = (softmax − onehot)·mask·dlossScale
 * written over logits. One workgroup per row.
 */
export async function crossEntropyForwardBackward(
  gpu: GpuContext,
  t: { logits: GpuTensor; targets: GpuTensor; mask: GpuTensor; loss: GpuTensor; correct: GpuTensor },
  chunk: CrossEntropyChunk,
): Promise<Dispatch> {
  const rowStride = chunk.rowStride ?? chunk.vocab;
  const rowOffset = chunk.rowOffset ?? 0;
  if (rowStride < chunk.vocab) throw new RangeError(`cross-entropy: rowStride ${rowStride} < vocab ${chunk.vocab}`);
  requireLength(t.logits, chunk.rows * rowStride, 'logits');
  for (const name of ['targets', 'mask', 'loss', 'correct'] as const) requireLength(t[name], rowOffset + chunk.rows, name);
  return gpu.prepare(crossentropyForwardBackwardKernel, {
    bindings: t,
    uniforms: {
      rows: chunk.rows,
      vocab: chunk.vocab,
      rowStride,
      rowOffset,
      dlossScale: chunk.dlossScale,
      writeGradient: chunk.writeGradient === false ? 0 : 1,
    },
    overrides: { WG },
    workgroups: grid1d(chunk.rows, 1),
  });
}

/**
 * result (4) ← [Σ loss·dlossScale, Σ loss, Σ correct, Σ mask] over `count` tokens (B*T), after every chunk has run.
 * accumulate = true adds to the result instead (validation over several batches, with dlossScale = 1 / Σ mask over
 * all of them).
 */
export async function crossEntropyMetrics(
  gpu: GpuContext,
  t: { loss: GpuTensor; correct: GpuTensor; mask: GpuTensor; result: GpuTensor },
  count: number,
  dlossScale: number,
  options: { accumulate?: boolean } = {},
): Promise<Dispatch> {
  for (const name of ['loss', 'correct', 'mask'] as const) requireLength(t[name], count, name);
  requireLength(t.result, CROSS_ENTROPY_RESULT.length, 'result');
  return gpu.prepare(crossentropyMetricsKernel, {
    bindings: t,
    uniforms: { count, dlossScale, accumulate: options.accumulate ? 1 : 0 },
    overrides: { WG },
    workgroups: [1],
  });
}
