// Reference LayerNorm over the last axis, in double precision. Forward and backward side by side.
// Shapes: N rows of C features; `weight` and `bias` are (C); `mean` and `rstd` (N) are saved by forward for backward.

/** out (N,C) = (inp − mean)·rstd·weight + bias, rstd = 1/√(var + eps) with the biased (÷C) variance. */
export function layernormForward(
  out: Float64Array,
  mean: Float64Array,
  rstd: Float64Array,
  inp: Float64Array,
  weight: Float64Array,
  bias: Float64Array,
  N: number,
  C: number,
  eps: number,
): void {
  for (let n = 0; n < N; n++) {
    const row = n * C;
    let sum = 0;
    for (let c = 0; c < C; c++) sum += inp[row + c];
    const m = sum / C;
    let squares = 0;
    for (let c = 0; c < C; c++) squares += (inp[row + c] - m) ** 2;
    const s = 1 / Math.sqrt(squares / C + eps);
    for (let c = 0; c < C; c++) out[row + c] = (inp[row + c] - m) * s * weight[c] + bias[c];
    mean[n] = m;
    rstd[n] = s;
  }
}

/**
 * dinp (N,C) = or += (assign when `accumulate` is false), dweight (C) +=, dbias (C) +=.
 * With norm = (x − mean)·rstd and g = dout·weight, the gradient through the normalisation is
 * dinp = rstd·(g − mean(g) − norm·mean(g·norm)), the two means taken over the row.
 */
export function layernormBackward(
  dinp: Float64Array,
  dweight: Float64Array,
  dbias: Float64Array,
  dout: Float64Array,
  inp: Float64Array,
  weight: Float64Array,
  mean: Float64Array,
  rstd: Float64Array,
  N: number,
  C: number,
  accumulate: boolean,
): void {
  for (let n = 0; n < N; n++) {
    const row = n * C;
    let gMean = 0;
    let gNormMean = 0;
    for (let c = 0; c < C; c++) {
      const norm = (inp[row + c] - mean[n]) * rstd[n];
      const g = dout[row + c] * weight[c];
      gMean += g;
      gNormMean += g * norm;
      dweight[c] += dout[row + c] * norm;
      dbias[c] += dout[row + c];
    }
    gMean /= C;
    gNormMean /= C;
    for (let c = 0; c < C; c++) {
      const norm = (inp[row + c] - mean[n]) * rstd[n];
      const g = dout[row + c] * weight[c];
      const d = rstd[n] * (g - gMean - norm * gNormMean);
      dinp[row + c] = accumulate ? dinp[row + c] + d : d;
    }
  }
}
