// checkOp-style comparison: |actual − expected| ≤ atol + rtol·|expected| elementwise. On failure the message names
// the worst element (index, both values, error) and the first few mismatches, so a broken kernel says where.

export interface Tolerance {
  atol: number;
  rtol: number;
}

/** Elementwise ops: a few ulps of f32 around O(1) values. */
export const ELEMENTWISE: Tolerance = { atol: 1e-5, rtol: 1e-4 };
/** Matmuls and reductions: f32 accumulation over up to a few hundred terms. */
export const REDUCTION: Tolerance = { atol: 1e-4, rtol: 1e-3 };

export function compareArrays(
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  tol: Tolerance,
): { ok: boolean; report: string } {
  if (actual.length < expected.length) {
    return { ok: false, report: `length ${actual.length}, expected at least ${expected.length}` };
  }
  let worst = -1;
  let worstExcess = -Infinity;
  const mismatches: string[] = [];
  let bad = 0;
  for (let i = 0; i < expected.length; i++) {
    const a = actual[i];
    const e = expected[i];
    const err = Math.abs(a - e);
    const allowed = tol.atol + tol.rtol * Math.abs(e);
    const excess = Number.isNaN(a) || Number.isNaN(err) ? Infinity : err - allowed;
    if (excess > worstExcess) {
      worstExcess = excess;
      worst = i;
    }
    if (excess > 0) {
      bad++;
      if (mismatches.length < 5) mismatches.push(`[${i}] got ${a} want ${e} (err ${err.toExponential(2)})`);
    }
  }
  if (bad === 0) return { ok: true, report: 'ok' };
  const w = worst;
  return {
    ok: false,
    report:
      `${bad}/${expected.length} elements outside atol ${tol.atol} + rtol ${tol.rtol}·|ref|; ` +
      `worst [${w}] got ${actual[w]} want ${expected[w]} (err ${Math.abs(actual[w] - expected[w]).toExponential(3)}); ` +
      `first: ${mismatches.join(', ')}`,
  };
}

/** Throws with a precise report when the arrays differ beyond tolerance. */
export function expectClose(actual: ArrayLike<number>, expected: ArrayLike<number>, tol: Tolerance, label = 'tensor'): void {
  const { ok, report } = compareArrays(actual, expected, tol);
  if (!ok) throw new Error(`${label}: ${report}`);
}
