// Reference residual add, in double precision. Forward and backward side by side.

/** out (N) = a (N) + b (N). */
export function residualForward(out: Float64Array, a: Float64Array, b: Float64Array): void {
  for (let i = 0; i < out.length; i++) out[i] = a[i] + b[i];
}

/** da += dout, db += dout (parameter-style accumulation: the residual stream sums its two gradients). */
export function residualBackward(da: Float64Array, db: Float64Array, dout: Float64Array): void {
  for (let i = 0; i < dout.length; i++) {
    da[i] += dout[i];
    db[i] += dout[i];
  }
}
