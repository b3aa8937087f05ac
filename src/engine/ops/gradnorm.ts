// Global gradient norm over a list of gradient tensors and the clip scale AdamW reads, without readback, as
// prepared dispatches: one gradnorm_partial per tensor (sum of squares → per-workgroup partials), then one
// gradnorm_finalize (fixed-order total → norm and clip scale). Deterministic: no float atomics anywhere.
//
// Buffers:
//   grads     the gradient tensors (any lengths; views into a big gradient buffer are fine)
//   partials  (planGradNorm(lengths).partialsLength) f32 scratch, one slot per workgroup of each tensor
//   result    (2) f32 = [clipScale, norm] (GRAD_NORM_RESULT); bind it as adamwUpdate's clipScale
// Record the dispatches after the backward pass and before the AdamW updates, in the same step. The trainer copies
// `result` out and reads the norm a step late. maxNorm can change between steps: finalize.setUniforms({ maxNorm }).

import type { Dispatch, GpuContext, GpuTensor } from '../gpu/context.ts';
import { gradnormFinalize as gradnormFinalizeKernel, gradnormPartial as gradnormPartialKernel } from '../../kernels/registry.ts';

const WG = 256;
/** Each thread sums at least this many squares before the workgroup reduction (small tensors get few groups). */
const ELEMENTS_PER_THREAD = 16;
/** Enough workgroups to fill a large GPU on a big tensor; the finalize then adds at most this many per tensor. */
const MAX_GROUPS_PER_TENSOR = 256;

/** Where each value sits in the result buffer (2 f32). clipScale first, so AdamW binds the buffer as it is. */
export const GRAD_NORM_RESULT = { clipScale: 0, norm: 1, length: 2 } as const;

export interface GradNormPlan {
  /** Per tensor: its first partial and its workgroup count (one partial each). */
  slots: { offset: number; groups: number }[];
  /** Length of the partials buffer (at least 1, so it can be bound). */
  partialsLength: number;
}

/** Workgroups and partial slots for tensors of these lengths; depends on the lengths only, never on the device. */
export function planGradNorm(lengths: readonly number[]): GradNormPlan {
  let offset = 0;
  const slots = lengths.map((n) => {
    const groups = Math.min(MAX_GROUPS_PER_TENSOR, Math.max(1, Math.ceil(n / (WG * ELEMENTS_PER_THREAD))));
    const slot = { offset, groups };
    offset += groups;
    return slot;
  });
  return { slots, partialsLength: Math.max(1, offset) };
}

export interface GradNormDispatches {
  /** One per gradient tensor, in list order. */
  partials: Dispatch[];
  finalize: Dispatch;
  /** partials then finalize: what to record into the step. */
  all: Dispatch[];
}

/**
 * norm = sqrt(Σ over tensors of Σ g²); clipScale = min(1, maxNorm / (norm + 1e-6)), 1 when maxNorm ≤ 0, and 0 when the
 * norm is not finite (AdamW then skips the step).
 */
export async function gradNorm(
  gpu: GpuContext,
  t: { grads: readonly GpuTensor[]; partials: GpuTensor; result: GpuTensor },
  maxNorm: number,
): Promise<GradNormDispatches> {
  const plan = planGradNorm(t.grads.map((g) => g.length));
  if (t.partials.length < plan.partialsLength) {
    throw new RangeError(`gradNorm: partials ${t.partials.label} holds ${t.partials.length}, needs ${plan.partialsLength}`);
  }
  if (t.result.length < GRAD_NORM_RESULT.length) throw new RangeError(`gradNorm: result ${t.result.label} needs 2 elements`);
  const partials = await Promise.all(
    t.grads.map((grad, i) =>
      gpu.prepare(gradnormPartialKernel, {
        bindings: { grad, partials: t.partials },
        uniforms: { n: grad.length, slot: plan.slots[i].offset },
        overrides: { WG },
        workgroups: [plan.slots[i].groups],
      }),
    ),
  );
  const finalize = await gpu.prepare(gradnormFinalizeKernel, {
    bindings: { partials: t.partials, result: t.result },
    uniforms: { count: t.grads.length ? plan.partialsLength : 0, maxNorm },
    overrides: { WG },
    workgroups: [1],
  });
  return { partials, finalize, all: [...partials, finalize] };
}
