// Reference LoRA for a linear layer, in double precision. Forward and backward side by side.
//   out (M,N) += scale · (dropout(inp) · aᵀ) · bᵀ      inp (M,K), a (R,K), b (N,R); u = dropout(inp) · aᵀ (M,R) saved
// scale is alpha/R (or alpha/√R for rsLoRA); the caller passes it.
//
// Dropout is a definition, not a stored mask: element `index` (= m·K + k) of inp is kept when
// pcg(pcg(index) + seed) ≥ floor(p·2^32) in u32 arithmetic, where pcg is the PCG-RXS-M-XS hash of Jarzynski and Olano
// ("Hash Functions for GPU Rendering", 2020); kept values are scaled by 1/(1-p). p = 0 keeps everything exactly.
// The WGSL kernels implement the same definition, so a trainer can redraw the mask in the backward pass from the seed.

export interface LoraShape {
  /** Tokens (B*T). */
  M: number;
  /** Output features of the layer. */
  N: number;
  /** Input features of the layer. */
  K: number;
  /** Rank. */
  R: number;
}

export interface LoraDropout {
  /** Drop probability in [0, 1). */
  p: number;
  /** u32; a new one per step (and per layer). */
  seed: number;
}

/** PCG-RXS-M-XS 32-bit hash: a bijection on u32 with good avalanche. */
export function pcgHash(value: number): number {
  const state = (Math.imul(value >>> 0, 747796405) + 2891336453) >>> 0;
  const shifted = state >>> ((state >>> 28) + 4);
  const word = Math.imul((shifted ^ state) >>> 0, 277803737) >>> 0;
  return ((word >>> 22) ^ word) >>> 0;
}

/** The u32 a hash must reach to keep an element: floor(p·2^32). */
export function dropThreshold(p: number): number {
  if (!(p >= 0 && p < 1)) throw new RangeError(`LoRA dropout must be in [0, 1), got ${p}`);
  return Math.floor(p * 2 ** 32);
}

/** Whether element `index` of the layer input survives dropout with this seed and threshold. */
export function loraKeep(seed: number, index: number, threshold: number): boolean {
  return pcgHash((pcgHash(index) + seed) >>> 0) >= threshold;
}

/** dropout(inp) (M,K): kept elements scaled by 1/(1-p), dropped ones zero. */
export function dropoutInput(inp: Float64Array, dropout: LoraDropout): Float64Array {
  const threshold = dropThreshold(dropout.p);
  const keepScale = 1 / (1 - dropout.p);
  return inp.map((x, index) => (loraKeep(dropout.seed, index, threshold) ? x * keepScale : 0));
}

/** u (M,R) = dropout(inp) · aᵀ;  out (M,N) += scale · u · bᵀ. */
export function loraForward(
  out: Float64Array,
  u: Float64Array,
  inp: Float64Array,
  a: Float64Array,
  b: Float64Array,
  shape: LoraShape,
  scale: number,
  dropout: LoraDropout,
): void {
  const { M, N, K, R } = shape;
  const dropped = dropoutInput(inp, dropout);
  for (let m = 0; m < M; m++) {
    for (let r = 0; r < R; r++) {
      let sum = 0;
      for (let k = 0; k < K; k++) sum += dropped[m * K + k] * a[r * K + k];
      u[m * R + r] = sum;
    }
  }
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) {
      let sum = 0;
      for (let r = 0; r < R; r++) sum += u[m * R + r] * b[n * R + r];
      out[m * N + n] += scale * sum;
    }
  }
}

/**
 * db (N,R) += scale · doutᵀ · u;  du (M,R) = scale · dout · b;  da (R,K) += duᵀ · dropout(inp);
 * dinp (M,K) += (du · a) ⊙ keep/(1-p). Returns du (the GPU keeps it in a scratch tensor).
 */
export function loraBackward(
  dinp: Float64Array,
  da: Float64Array,
  db: Float64Array,
  dout: Float64Array,
  inp: Float64Array,
  u: Float64Array,
  a: Float64Array,
  b: Float64Array,
  shape: LoraShape,
  scale: number,
  dropout: LoraDropout,
): Float64Array {
  const { M, N, K, R } = shape;
  for (let n = 0; n < N; n++) {
    for (let r = 0; r < R; r++) {
      let sum = 0;
      for (let m = 0; m < M; m++) sum += dout[m * N + n] * u[m * R + r];
      db[n * R + r] += scale * sum;
    }
  }
  const du = new Float64Array(M * R);
  for (let m = 0; m < M; m++) {
    for (let r = 0; r < R; r++) {
      let sum = 0;
      for (let n = 0; n < N; n++) sum += dout[m * N + n] * b[n * R + r];
      du[m * R + r] = scale * sum;
    }
  }
  const dropped = dropoutInput(inp, dropout);
  for (let r = 0; r < R; r++) {
    for (let k = 0; k < K; k++) {
      let sum = 0;
      for (let m = 0; m < M; m++) sum += du[m * R + r] * dropped[m * K + k];
      da[r * K + k] += sum;
    }
  }
  // d dropout(x)/dx is the same mask and scale, so the input gradient passes through it.
  const threshold = dropThreshold(dropout.p);
  const keepScale = 1 / (1 - dropout.p);
  for (let m = 0; m < M; m++) {
    for (let k = 0; k < K; k++) {
      const index = m * K + k;
      if (!loraKeep(dropout.seed, index, threshold)) continue;
      let sum = 0;
      for (let r = 0; r < R; r++) sum += du[m * R + r] * a[r * K + k];
      dinp[index] += sum * keepScale;
    }
  }
  return du;
}
