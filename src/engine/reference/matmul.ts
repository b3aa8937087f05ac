// Reference linear-layer matmul, in double precision. Forward and backward side by side.
// inp (M,K) row-major, weight (K,N) in GPT-2 Conv1D [in,out] layout, bias (N) or null, out (M,N).

/** out (M,N) = inp (M,K) · weight (K,N) + bias (N). */
export function matmulForward(
  out: Float64Array,
  inp: Float64Array,
  weight: Float64Array,
  bias: Float64Array | null,
  M: number,
  N: number,
  K: number,
): void {
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) {
      let sum = bias ? bias[n] : 0;
      for (let k = 0; k < K; k++) sum += inp[m * K + k] * weight[k * N + n];
      out[m * N + n] = sum;
    }
  }
}

/**
 * Accumulates every gradient: dinp (M,K) += dout · weightᵀ, dweight (K,N) += inpᵀ · dout, dbias (N) += Σ_m dout.
 * (The GPU's assigning form of dinp equals this applied to a zeroed dinp.)
 */
export function matmulBackward(
  dinp: Float64Array,
  dweight: Float64Array,
  dbias: Float64Array | null,
  dout: Float64Array,
  inp: Float64Array,
  weight: Float64Array,
  M: number,
  N: number,
  K: number,
): void {
  for (let m = 0; m < M; m++) {
    for (let k = 0; k < K; k++) {
      let sum = 0;
      for (let n = 0; n < N; n++) sum += dout[m * N + n] * weight[k * N + n];
      dinp[m * K + k] += sum;
    }
  }
  for (let k = 0; k < K; k++) {
    for (let n = 0; n < N; n++) {
      let sum = 0;
      for (let m = 0; m < M; m++) sum += inp[m * K + k] * dout[m * N + n];
      dweight[k * N + n] += sum;
    }
  }
  if (dbias) {
    for (let n = 0; n < N; n++) {
      let sum = 0;
      for (let m = 0; m < M; m++) sum += dout[m * N + n];
      dbias[n] += sum;
    }
  }
}
