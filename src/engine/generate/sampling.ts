// Choosing the next token from one row of logits (V), on the CPU: repetition penalty, temperature, top-k, top-p
// (nucleus), then a seeded draw — the order and semantics of Hugging Face's `generate(do_sample=True)`. And the
// conditions that end a generation: the end-of-text token, a stop string in the decoded text, a token limit.

import type { Rng } from '../random.ts';

export interface SamplingOptions {
  /** Divides the logits before the softmax: < 1 sharper, > 1 flatter; 0 = greedy (always the likeliest token). 1. */
  temperature: number;
  /** Keep only the k likeliest tokens (and any tied with the k-th); 0 = no limit. 50, as Hugging Face. */
  topK: number;
  /** Nucleus: keep the smallest set of likeliest tokens whose probability reaches p; 1 = keep all. 1. */
  topP: number;
  /** > 1 discourages tokens already in the context (prompt and generated): positive logits are divided by it,
   * negative ones multiplied, as Hugging Face does; 1 = off. 1. */
  repetitionPenalty: number;
  /** Seed of the sampling RNG: the same seed, model and prompt give the same text. 0. */
  seed: number;
  /** Stop after this many new tokens. 64. */
  maxNewTokens: number;
  /** Stop as soon as the generated text contains one of these; the output ends before it. None. */
  stopStrings: readonly string[];
  /** Stop at the model's end-of-text token (which is not part of the output). true. */
  stopAtEndOfText: boolean;
}

export const DEFAULT_SAMPLING: Readonly<SamplingOptions> = Object.freeze({
  temperature: 1,
  topK: 50,
  topP: 1,
  repetitionPenalty: 1,
  seed: 0,
  maxNewTokens: 64,
  stopStrings: [],
  stopAtEndOfText: true,
});

/** The defaults with some fields overridden, checked; a bad value throws a RangeError that names the option. */
export function samplingOptions(overrides: Partial<SamplingOptions> = {}): SamplingOptions {
  const options = { ...DEFAULT_SAMPLING, ...overrides };
  const fail = (message: string) => {
    throw new RangeError(`sampling: ${message}`);
  };
  if (!(Number.isFinite(options.temperature) && options.temperature >= 0)) {
    fail(`temperature must be 0 (greedy) or positive, got ${options.temperature}`);
  }
  if (!(Number.isSafeInteger(options.topK) && options.topK >= 0)) {
    fail(`topK must be a whole number, 0 for no limit, got ${options.topK}`);
  }
  if (!(options.topP > 0 && options.topP <= 1)) {
    fail(`topP must be in (0, 1], 1 to keep every token, got ${options.topP}`);
  }
  if (!(Number.isFinite(options.repetitionPenalty) && options.repetitionPenalty > 0)) {
    fail(`repetitionPenalty must be positive (1 = off, 1.1–1.3 is typical), got ${options.repetitionPenalty}`);
  }
  if (!Number.isSafeInteger(options.seed)) fail(`seed must be a whole number, got ${options.seed}`);
  if (!(Number.isSafeInteger(options.maxNewTokens) && options.maxNewTokens >= 1)) {
    fail(`maxNewTokens must be a whole number ≥ 1, got ${options.maxNewTokens}`);
  }
  if (options.stopStrings.some((s) => typeof s !== 'string' || s.length === 0)) {
    fail('stop strings must be non-empty text');
  }
  return options;
}

/** Index of the largest logit (the first one on ties): the greedy choice. */
export function argmaxToken(logits: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
  return best;
}

/**
 * In place, once per distinct token of `context`: logit / penalty where positive, logit · penalty where negative,
 * so that with penalty > 1 a token seen before always becomes less likely.
 */
export function applyRepetitionPenalty(
  logits: Float32Array | Float64Array,
  context: ArrayLike<number>,
  penalty: number,
): void {
  if (penalty === 1) return;
  for (const token of new Set(Array.from(context))) {
    if (token < 0 || token >= logits.length) continue;
    const value = logits[token];
    logits[token] = value > 0 ? value / penalty : value * penalty;
  }
}

/** The greedy case: temperature 0, or top-k of 1 (both leave only the likeliest token). */
export function isGreedy(options: SamplingOptions): boolean {
  return options.temperature === 0 || options.topK === 1;
}

/**
 * The distribution (V) the next token is drawn from: repetition penalty, temperature, top-k, softmax, top-p, with
 * the survivors renormalized. Greedy settings give a one-hot vector. Does not change `logits`.
 */
export function nextTokenDistribution(
  logits: ArrayLike<number>,
  context: ArrayLike<number>,
  options: SamplingOptions,
): Float64Array {
  const V = logits.length;
  const scores = Float64Array.from(logits);
  applyRepetitionPenalty(scores, context, options.repetitionPenalty);
  const probabilities = new Float64Array(V);
  if (isGreedy(options)) {
    probabilities[argmaxToken(scores)] = 1;
    return probabilities;
  }
  for (let i = 0; i < V; i++) scores[i] /= options.temperature;

  if (options.topK > 0 && options.topK < V) {
    const kth = Float64Array.from(scores).sort()[V - options.topK]; // ascending, so the k-th largest
    for (let i = 0; i < V; i++) if (scores[i] < kth) scores[i] = -Infinity;
  }

  let max = -Infinity;
  for (let i = 0; i < V; i++) max = Math.max(max, scores[i]);
  if (max === -Infinity || Number.isNaN(max)) throw new RangeError('sampling: the logits hold no finite value');
  let sum = 0;
  for (let i = 0; i < V; i++) {
    probabilities[i] = Math.exp(scores[i] - max);
    sum += probabilities[i];
  }
  for (let i = 0; i < V; i++) probabilities[i] /= sum;

  if (options.topP < 1) {
    // Likeliest first (lower id first on ties, so the cut is deterministic); a token is kept when the tokens before
    // it hold less than p, which keeps exactly the smallest prefix reaching p.
    const order = [];
    for (let i = 0; i < V; i++) if (probabilities[i] > 0) order.push(i);
    order.sort((a, b) => probabilities[b] - probabilities[a] || a - b);
    let before = 0; // the probability of the likelier tokens
    let kept = 0;
    for (const token of order) {
      const p = probabilities[token];
      if (before < options.topP) kept += p;
      else probabilities[token] = 0;
      before += p;
    }
    for (let i = 0; i < V; i++) probabilities[i] /= kept;
  }
  return probabilities;
}

/** Draws an index from a distribution with one uniform number of `rng`. */
export function drawFromDistribution(probabilities: Float64Array, rng: Rng): number {
  const u = rng.next();
  let cumulative = 0;
  let last = -1;
  for (let i = 0; i < probabilities.length; i++) {
    if (probabilities[i] === 0) continue;
    cumulative += probabilities[i];
    last = i;
    if (u < cumulative) return i;
  }
  // Only reached when rounding left the total a hair under u.
  if (last < 0) throw new RangeError('sampling: the distribution is empty');
  return last;
}

/**
 * The next token. `context` is every token so far (prompt and generated), for the repetition penalty. Greedy
 * settings take the argmax and draw nothing from `rng`; otherwise exactly one number is drawn, so a run is
 * reproducible from the seed.
 */
export function sampleNextToken(
  logits: ArrayLike<number>,
  context: ArrayLike<number>,
  options: SamplingOptions,
  rng: Rng,
): number {
  if (isGreedy(options)) {
    const scores = Float64Array.from(logits);
    applyRepetitionPenalty(scores, context, options.repetitionPenalty);
    return argmaxToken(scores);
  }
  return drawFromDistribution(nextTokenDistribution(logits, context, options), rng);
}

// ---- stopping ------------------------------------------------------------------------------------------------

export type StopReason = 'end-of-text' | 'stop-string' | 'max-new-tokens';

export interface StopCriteria {
  /** The end-of-text token id, or null not to stop on it. */
  endOfTextId: number | null;
  stopStrings: readonly string[];
  maxNewTokens: number;
}

/** The stop criteria of these options for a model whose end-of-text token is `endOfTextId`. */
export function stopCriteria(options: SamplingOptions, endOfTextId: number): StopCriteria {
  return {
    endOfTextId: options.stopAtEndOfText ? endOfTextId : null,
    stopStrings: options.stopStrings,
    maxNewTokens: options.maxNewTokens,
  };
}

export interface GenerationSoFar {
  /** The token just generated. */
  lastToken: number;
  /** New tokens generated so far, the last one included. */
  newTokenCount: number;
  /** The new tokens decoded, without an end-of-text token. */
  text: string;
}

export interface StopDecision {
  reason: StopReason;
  /** The final output: `text` cut before the earliest stop string (unchanged for the other reasons). */
  text: string;
}

/** Whether to stop after this token, and why; null to go on. End-of-text wins over a stop string over the limit. */
export function checkStop(state: GenerationSoFar, criteria: StopCriteria): StopDecision | null {
  if (criteria.endOfTextId !== null && state.lastToken === criteria.endOfTextId) {
    return { reason: 'end-of-text', text: state.text };
  }
  let cut = -1;
  for (const stop of criteria.stopStrings) {
    const at = state.text.indexOf(stop);
    if (at >= 0 && (cut < 0 || at < cut)) cut = at;
  }
  if (cut >= 0) return { reason: 'stop-string', text: state.text.slice(0, cut) };
  if (state.newTokenCount >= criteria.maxNewTokens) return { reason: 'max-new-tokens', text: state.text };
  return null;
}

/**
 * How much of `text` a streaming callback may show now: all of it except a tail that could still grow into a stop
 * string (the longest suffix that is a proper prefix of one), since that tail may yet be cut from the output.
 */
export function streamableLength(text: string, stopStrings: readonly string[]): number {
  let held = 0;
  for (const stop of stopStrings) {
    for (let length = Math.min(stop.length - 1, text.length); length > held; length--) {
      if (text.endsWith(stop.slice(0, length))) {
        held = length;
        break;
      }
    }
  }
  return text.length - held;
}
