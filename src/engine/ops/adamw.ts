// AdamW update of one parameter tensor, as a prepared dispatch (one per trainable tensor, prepared once per run),
// and the dispatch that advances the step count after a step's updates.
//
// Buffers (n values each, all f32):
//   param      (n)  updated in place
//   grad       (n)  read, multiplied by clipScale[0]; set to 0 afterwards when zeroGrad (the default), so the next
//                   step's gradients can accumulate (+=) from zero without a separate clear
//   m, v       (n)  first and second moments, zero at the start of a run
//   clipScale  (≥1) [0] = global clip factor: gradNorm's result buffer (see GRAD_NORM_RESULT), or a tensor holding
//                   1 when clipping is off; 0 skips the step (param, m and v untouched: the gradient was not finite)
//   stepCount  (≥1) [0] = updates done so far (a whole number in f32); the update uses t = stepCount + 1 in its bias
//                   corrections, and adamwCount adds 1 after the step's updates unless the clip scale was 0, so a
//                   skipped step does not count (as PyTorch's GradScaler skips optimizer.step()), with no readback
// Per step, before the submit: dispatch.setUniforms(adamwUniforms(hyper)) when the learning rate changes.

import { grid1d, type Dispatch, type GpuContext, type GpuTensor } from '../gpu/context.ts';
import { adamwCount as adamwCountKernel, adamwUpdate as adamwUpdateKernel } from '../../kernels/registry.ts';
import type { AdamWHyperparameters } from '../reference/adamw.ts';

export type { AdamWHyperparameters } from '../reference/adamw.ts';

const WG = 256;

/** ln β for the kernel's bias corrections; β = 0 (no momentum) gets a log so negative that β^t is 0 in f32. */
function logBeta(beta: number): number {
  return Math.max(Math.log(beta), -100);
}

/** The uniforms of an update: hyperparameters, and ln β1, ln β2 (double precision) for the bias corrections. */
export function adamwUniforms(h: AdamWHyperparameters) {
  return {
    lr: h.lr,
    beta1: h.beta1,
    beta2: h.beta2,
    eps: h.eps,
    weightDecay: h.weightDecay,
    logBeta1: logBeta(h.beta1),
    logBeta2: logBeta(h.beta2),
  };
}

/** param (n) ← AdamW(param, grad·clipScale[0], m, v) at t = stepCount[0] + 1; grad ← 0 afterwards unless zeroGrad false. */
export async function adamwUpdate(
  gpu: GpuContext,
  t: { param: GpuTensor; grad: GpuTensor; m: GpuTensor; v: GpuTensor; clipScale: GpuTensor; stepCount: GpuTensor },
  n: number,
  h: AdamWHyperparameters,
  options: { zeroGrad?: boolean } = {},
): Promise<Dispatch> {
  for (const name of ['param', 'grad', 'm', 'v'] as const) {
    if (t[name].length < n) throw new RangeError(`AdamW: ${name} ${t[name].label} holds ${t[name].length}, needs ${n}`);
  }
  if (t.clipScale.length < 1) throw new RangeError(`AdamW: clipScale ${t.clipScale.label} is empty`);
  if (t.stepCount.length < 1) throw new RangeError(`AdamW: stepCount ${t.stepCount.label} is empty`);
  return gpu.prepare(adamwUpdateKernel, {
    bindings: t,
    uniforms: { n, ...adamwUniforms(h), zeroGrad: options.zeroGrad === false ? 0 : 1 },
    overrides: { WG },
    workgroups: grid1d(n, WG),
  });
}

/** stepCount[0] += 1 unless clipScale[0] is 0 (a skipped step): record it after every update of the step. */
export async function adamwCount(gpu: GpuContext, t: { clipScale: GpuTensor; stepCount: GpuTensor }): Promise<Dispatch> {
  if (t.clipScale.length < 1 || t.stepCount.length < 1) throw new RangeError('AdamW: clipScale and stepCount need one value each');
  return gpu.prepare(adamwCountKernel, { bindings: t, workgroups: [1, 1, 1] });
}
