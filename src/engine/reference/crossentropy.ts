// Reference softmax + cross-entropy over the vocabulary, in double precision, with a per-token loss weight (mask).
// Forward (per-token loss and the batch metrics) and backward (dlogits) side by side.
// Dimension letters: N token rows, V vocabulary size. `dlossScale` = 1 / Σ mask over the whole batch, so the mean
// loss is Σ loss·dlossScale and chunks of rows add up to the full batch.

/** Log of Σ exp over one row, shifted by the row's maximum so no exp overflows. */
function logSumExp(logits: Float64Array, rowStart: number, V: number): number {
  let max = -Infinity;
  for (let c = 0; c < V; c++) max = Math.max(max, logits[rowStart + c]);
  let sum = 0;
  for (let c = 0; c < V; c++) sum += Math.exp(logits[rowStart + c] - max);
  return max + Math.log(sum);
}

/** Index of the largest logit of a row (the first one on ties). */
export function argmax(logits: Float64Array, rowStart: number, V: number): number {
  let best = 0;
  for (let c = 1; c < V; c++) if (logits[rowStart + c] > logits[rowStart + best]) best = c;
  return best;
}

/** loss (N) = mask·(logsumexp(logits[r]) − logits[r, target]); logits (N,V), targets (N), mask (N). */
export function crossEntropyForward(
  loss: Float64Array,
  logits: Float64Array,
  targets: ArrayLike<number>,
  mask: ArrayLike<number>,
  N: number,
  V: number,
): void {
  for (let r = 0; r < N; r++) {
    loss[r] = mask[r] === 0 ? 0 : mask[r] * (logSumExp(logits, r * V, V) - logits[r * V + targets[r]]);
  }
}

/**
 * dlogits (N,V) = (softmax(logits[r]) − onehot(target[r]))·mask[r]·dlossScale: the gradient of the mean loss
 * Σ loss·dlossScale with respect to the logits. Assigns (the logits have no other consumer).
 */
export function crossEntropyBackward(
  dlogits: Float64Array,
  logits: Float64Array,
  targets: ArrayLike<number>,
  mask: ArrayLike<number>,
  dlossScale: number,
  N: number,
  V: number,
): void {
  for (let r = 0; r < N; r++) {
    const lse = logSumExp(logits, r * V, V);
    const scale = mask[r] * dlossScale;
    for (let c = 0; c < V; c++) {
      const probability = Math.exp(logits[r * V + c] - lse);
      dlogits[r * V + c] = (probability - (c === targets[r] ? 1 : 0)) * scale;
    }
  }
}

export interface CrossEntropyMetrics {
  /** Σ loss·dlossScale: the mean loss over the masked tokens. */
  meanLoss: number;
  /** Σ loss (each already weighted by its mask). */
  lossSum: number;
  /** Σ mask·[argmax == target]: correct next-token predictions among the masked tokens. */
  correct: number;
  /** Σ mask: the number of tokens that count. */
  tokens: number;
}

/** The batch metrics the trainer reads back: mean loss, and token accuracy as correct / tokens. */
export function crossEntropyMetrics(
  logits: Float64Array,
  targets: ArrayLike<number>,
  mask: ArrayLike<number>,
  dlossScale: number,
  N: number,
  V: number,
): CrossEntropyMetrics {
  const loss = new Float64Array(N);
  crossEntropyForward(loss, logits, targets, mask, N, V);
  let lossSum = 0;
  let correct = 0;
  let tokens = 0;
  for (let r = 0; r < N; r++) {
    lossSum += loss[r];
    tokens += mask[r];
    if (mask[r] !== 0 && argmax(logits, r * V, V) === targets[r]) correct += mask[r];
  }
  return { meanLoss: lossSum * dlossScale, lossSum, correct, tokens };
}
