// Reference fused residual add + LayerNorm, in double precision, composed from the residual and layernorm references.
// Forward and backward side by side. Shapes: N rows of C features; weight and bias (C); mean and rstd (N).

import { layernormBackward, layernormForward } from './layernorm.ts';
import { residualBackward, residualForward } from './residual.ts';

/** residual (N,C) = a + b; out (N,C) = layernorm(residual) with weight and bias, saving mean (N) and rstd (N). */
export function residualLayernormForward(
  residual: Float64Array,
  out: Float64Array,
  mean: Float64Array,
  rstd: Float64Array,
  a: Float64Array,
  b: Float64Array,
  weight: Float64Array,
  bias: Float64Array,
  N: number,
  C: number,
  eps: number,
): void {
  residualForward(residual, a, b);
  layernormForward(out, mean, rstd, residual, weight, bias, N, C, eps);
}

/**
 * da (N,C) +=, db (N,C) +=, dweight (C) +=, dbias (C) +=. The residual has two readers, so its gradient is its own
 * `dresidual` (from the residual stream's next add) plus the LayerNorm's input gradient from `dout`; a and b both
 * receive that sum.
 */
export function residualLayernormBackward(
  da: Float64Array,
  db: Float64Array,
  dweight: Float64Array,
  dbias: Float64Array,
  dout: Float64Array,
  dresidual: Float64Array,
  residual: Float64Array,
  weight: Float64Array,
  mean: Float64Array,
  rstd: Float64Array,
  N: number,
  C: number,
): void {
  const dsum = dresidual.slice();
  layernormBackward(dsum, dweight, dbias, dout, residual, weight, mean, rstd, N, C, true);
  residualBackward(da, db, dsum);
}
