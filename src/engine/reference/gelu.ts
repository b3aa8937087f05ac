// Reference GELU, tanh form (Hugging Face `gelu_new`, GPT-2), in double precision. Forward and backward side by side.

const SQRT_2_OVER_PI = Math.sqrt(2 / Math.PI);
const CUBIC = 0.044715;

/** gelu(x) = 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))). */
export function gelu(x: number): number {
  return 0.5 * x * (1 + Math.tanh(SQRT_2_OVER_PI * (x + CUBIC * x ** 3)));
}

/** d gelu / dx: product rule over 0.5·x·(1 + tanh(u)), with du/dx = √(2/π)·(1 + 3·0.044715·x²). */
export function geluDerivative(x: number): number {
  const t = Math.tanh(SQRT_2_OVER_PI * (x + CUBIC * x ** 3));
  const du = SQRT_2_OVER_PI * (1 + 3 * CUBIC * x * x);
  return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * du;
}

/** out (N) = gelu(inp). */
export function geluForward(out: Float64Array, inp: Float64Array): void {
  for (let i = 0; i < inp.length; i++) out[i] = gelu(inp[i]);
}

/** dinp (N) = or += (assign when `accumulate` is false) dout·gelu'(inp). */
export function geluBackward(dinp: Float64Array, dout: Float64Array, inp: Float64Array, accumulate: boolean): void {
  for (let i = 0; i < inp.length; i++) {
    const d = dout[i] * geluDerivative(inp[i]);
    dinp[i] = accumulate ? dinp[i] + d : d;
  }
}
