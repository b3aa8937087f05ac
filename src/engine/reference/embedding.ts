// Reference token + position embedding, in double precision. Forward and backward side by side.
// Shapes: ids (B,T) token ids, wte (V,C) token table, wpe (maxT,C) position table, out (B,T,C).

/** out[b,t] = wte[ids[b,t]] + wpe[t]. */
export function embeddingForward(
  out: Float64Array,
  ids: ArrayLike<number>,
  wte: Float64Array,
  wpe: Float64Array,
  B: number,
  T: number,
  C: number,
): void {
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < T; t++) {
      const row = (b * T + t) * C;
      const token = ids[b * T + t];
      for (let c = 0; c < C; c++) out[row + c] = wte[token * C + c] + wpe[t * C + c];
    }
  }
}

/** dwte[ids[b,t]] += dout[b,t] and dwpe[t] += dout[b,t] for every position (parameter gradients accumulate). */
export function embeddingBackward(
  dwte: Float64Array,
  dwpe: Float64Array,
  dout: Float64Array,
  ids: ArrayLike<number>,
  B: number,
  T: number,
  C: number,
): void {
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < T; t++) {
      const row = (b * T + t) * C;
      const token = ids[b * T + t];
      for (let c = 0; c < C; c++) {
        dwte[token * C + c] += dout[row + c];
        dwpe[t * C + c] += dout[row + c];
      }
    }
  }
}
