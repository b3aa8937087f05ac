// Finite-difference gradient checks for the reference backward functions, in double precision.
// A scalar loss L = Σ out·w with a fixed random w turns any op into a scalar function; central differences of L
// with respect to each input element are compared with the analytic gradient the reference backward produced.

import { expectClose, type Tolerance } from './check.ts';

export const GRADCHECK: Tolerance = { atol: 1e-6, rtol: 1e-5 };

/** Central-difference gradient of `loss()` with respect to every element of `x` (x is perturbed in place). */
export function numericGradient(loss: () => number, x: Float64Array, eps = 1e-6): Float64Array {
  const grad = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const saved = x[i];
    x[i] = saved + eps;
    const plus = loss();
    x[i] = saved - eps;
    const minus = loss();
    x[i] = saved;
    grad[i] = (plus - minus) / (2 * eps);
  }
  return grad;
}

/** Σ a·b. */
export function dot(a: Float64Array, b: Float64Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
}

/** Asserts an analytic gradient equals the numeric one. */
export function expectGradient(analytic: Float64Array, loss: () => number, x: Float64Array, label: string, tol = GRADCHECK, eps = 1e-6): void {
  expectClose(analytic, numericGradient(loss, x, eps), tol, `d${label}`);
}
