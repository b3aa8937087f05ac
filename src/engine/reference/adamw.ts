// Reference AdamW step (decoupled weight decay, bias-corrected moments), in double precision, as a plain loop.
// Same formula as PyTorch's torch.optim.AdamW: the decay multiplies the weight before the Adam step, independent of
// the gradient. The gradient is first multiplied by the global clip scale (see reference/gradnorm.ts). A clip scale of
// 0 means the global gradient norm was not finite, and the step is skipped: param, m and v stay exactly as they were
// (scaling would not help: NaN·0 and ∞·0 are NaN, and even a zero gradient would still decay the weights and moments).

export interface AdamWHyperparameters {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
}

/**
 * One update of a parameter tensor (n) in place; m and v (n) are the moment estimates, `step` counts from 1.
 * clipScale 0 skips the update entirely (nothing is written).
 */
export function adamwStep(
  param: Float64Array,
  grad: Float64Array,
  m: Float64Array,
  v: Float64Array,
  h: AdamWHyperparameters,
  step: number,
  clipScale = 1,
): void {
  if (clipScale === 0) return;
  const biasCorrection1 = 1 - Math.pow(h.beta1, step);
  const biasCorrection2 = 1 - Math.pow(h.beta2, step);
  for (let i = 0; i < param.length; i++) {
    const g = grad[i] * clipScale;
    m[i] = h.beta1 * m[i] + (1 - h.beta1) * g;
    v[i] = h.beta2 * v[i] + (1 - h.beta2) * g * g;
    const mHat = m[i] / biasCorrection1;
    const vHat = v[i] / biasCorrection2;
    param[i] -= h.lr * (mHat / (Math.sqrt(vHat) + h.eps) + h.weightDecay * param[i]);
  }
}
