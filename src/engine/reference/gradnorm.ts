// Reference global gradient norm and clip scale, in double precision: the L2 norm of all gradient tensors taken as
// one vector, and the factor that scales it down to at most `maxNorm` (as torch.nn.utils.clip_grad_norm_ does).

/** sqrt(Σ over every tensor of Σ g²). */
export function globalGradNorm(grads: readonly Float64Array[]): number {
  let sumOfSquares = 0;
  for (const g of grads) for (let i = 0; i < g.length; i++) sumOfSquares += g[i] * g[i];
  return Math.sqrt(sumOfSquares);
}

/**
 * min(1, maxNorm / (norm + 1e-6)); maxNorm ≤ 0 turns clipping off (scale 1). A non-finite norm (an overflowed or NaN
 * gradient) gives scale 0 whether clipping is on or off: 0 is the optimizer's signal to skip the step (see
 * reference/adamw.ts), since multiplying a NaN or infinite gradient by any scale would still poison the weights.
 */
export function clipScale(norm: number, maxNorm: number): number {
  if (!Number.isFinite(norm)) return 0;
  if (maxNorm <= 0) return 1;
  return Math.min(1, maxNorm / (norm + 1e-6));
}
