// AdamW update of one parameter tensor, as a prepared dispatch (one per trainable tensor, prepared once per run).
//
// Buffers (n values each, all f32):
//   param      (n)  updated in place
//   grad       (n)  read, multiplied by clipScale[0]; set to 0 afterwards when zeroGrad (the default), so the next
//                   step's gradients can accumulate (+=) from zero without a separate clear
//   m, v       (n)  first and second moments, zero at the start of a run
//   clipScale  (≥1) [0] = global clip factor: gradNorm's result buffer (see GRAD_NORM_RESULT), or a tensor holding
//                   1 when clipping is off; 0 skips the step (param, m and v untouched: the gradient was not finite)
// Per step, before the submit: dispatch.setUniforms(adamwUniforms(hyper, step)) (the learning rate may follow a
// schedule; the bias corrections follow the step).

import { grid1d, type Dispatch, type GpuContext, type GpuTensor } from '../gpu/context.ts';
import { adamwUpdate as adamwUpdateKernel } from '../../kernels/registry.ts';
import type { AdamWHyperparameters } from '../reference/adamw.ts';

export type { AdamWHyperparameters } from '../reference/adamw.ts';

const WG = 256;

/** The per-step uniforms: hyperparameters and the bias corrections 1 − β^t (computed in double precision). */
export function adamwUniforms(h: AdamWHyperparameters, step: number) {
  if (!(step >= 1)) throw new RangeError(`AdamW step counts from 1, got ${step}`);
  return {
    lr: h.lr,
    beta1: h.beta1,
    beta2: h.beta2,
    eps: h.eps,
    weightDecay: h.weightDecay,
    biasCorrection1: 1 - Math.pow(h.beta1, step),
    biasCorrection2: 1 - Math.pow(h.beta2, step),
  };
}

/** param (n) ← AdamW(param, grad·clipScale[0], m, v) at `step` (from 1); grad ← 0 afterwards unless zeroGrad false. */
export async function adamwUpdate(
  gpu: GpuContext,
  t: { param: GpuTensor; grad: GpuTensor; m: GpuTensor; v: GpuTensor; clipScale: GpuTensor },
  n: number,
  h: AdamWHyperparameters,
  step: number,
  options: { zeroGrad?: boolean } = {},
): Promise<Dispatch> {
  for (const name of ['param', 'grad', 'm', 'v'] as const) {
    if (t[name].length < n) throw new RangeError(`AdamW: ${name} ${t[name].label} holds ${t[name].length}, needs ${n}`);
  }
  if (t.clipScale.length < 1) throw new RangeError(`AdamW: clipScale ${t.clipScale.label} is empty`);
  return gpu.prepare(adamwUpdateKernel, {
    bindings: t,
    uniforms: { n, ...adamwUniforms(h, step), zeroGrad: options.zeroGrad === false ? 0 : 1 },
    overrides: { WG },
    workgroups: grid1d(n, WG),
  });
}
