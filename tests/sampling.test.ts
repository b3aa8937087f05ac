// Next-token sampling and stop conditions (src/engine/generate/sampling.ts). Empirical distributions are checked
// with Pearson's chi-square over many draws from a fixed seed, so the outcome is deterministic; the bound 30 is far
// above chance for ≤ 4 degrees of freedom (P(χ²₄ > 30) ≈ 5e-6) yet far below what a wrong distribution gives.

import { describe, expect, it } from 'vitest';
import {
  applyRepetitionPenalty,
  argmaxToken,
  checkStop,
  DEFAULT_SAMPLING,
  nextTokenDistribution,
  sampleNextToken,
  samplingOptions,
  stopCriteria,
  streamableLength,
  type SamplingOptions,
} from '../src/engine/generate/sampling.ts';
import { Rng } from '../src/engine/random.ts';
import { expectClose } from './helpers/check.ts';

const EXACT = { atol: 1e-15, rtol: 1e-12 };
const CHI_SQUARE_BOUND = 30;

function softmax(values: number[]): number[] {
  const max = Math.max(...values);
  const exps = values.map((v) => Math.exp(v - max));
  const sum = exps.reduce((a, b) => a + b, 0);
  return exps.map((e) => e / sum);
}

/** Counts of `draws` tokens sampled from `logits` with a fixed seed. */
function drawCounts(logits: Float32Array, options: SamplingOptions, draws: number, seed = 1234): number[] {
  const rng = new Rng(seed);
  const counts = new Array<number>(logits.length).fill(0);
  for (let i = 0; i < draws; i++) counts[sampleNextToken(logits, [], options, rng)]++;
  return counts;
}

/** Pearson's χ² of observed counts against probabilities; tokens of probability 0 must never be drawn. */
function chiSquare(counts: number[], probabilities: ArrayLike<number>): number {
  const total = counts.reduce((a, b) => a + b, 0);
  let statistic = 0;
  for (let i = 0; i < counts.length; i++) {
    if (probabilities[i] === 0) {
      expect(counts[i], `token ${i} has probability 0 but was drawn`).toBe(0);
      continue;
    }
    const expected = total * probabilities[i];
    statistic += (counts[i] - expected) ** 2 / expected;
  }
  return statistic;
}

const logitsOf = (values: number[]) => Float32Array.from(values);

describe('greedy and temperature', () => {
  const logits = logitsOf([0.5, 2.25, -1, 2.0, 2.25, 0]);

  it('temperature 0 is the argmax (first of tied maxima) and draws nothing', () => {
    expect(argmaxToken(logits)).toBe(1);
    const rng = new Rng(5);
    const before = rng.getState();
    expect(sampleNextToken(logits, [], samplingOptions({ temperature: 0 }), rng)).toBe(1);
    expect(rng.getState()).toEqual(before);
    expect(Array.from(nextTokenDistribution(logits, [], samplingOptions({ temperature: 0 })))).toEqual([0, 1, 0, 0, 0, 0]);
  });

  it('temperature → 0 behaves as greedy', () => {
    const distinct = logitsOf([0.5, 2.25, -1, 2.0, 1.5, 0]);
    const options = samplingOptions({ temperature: 1e-3, topK: 0 });
    const counts = drawCounts(distinct, options, 2000);
    expect(counts[1]).toBe(2000);
    // 0.25 / 1e-3 = 250 nats between the two likeliest: the runner-up has probability e^-250.
    expect(nextTokenDistribution(distinct, [], options)[1]).toBe(1);
  });

  it('top-k = 1 is greedy at any temperature', () => {
    const rng = new Rng(9);
    const options = samplingOptions({ temperature: 5, topK: 1 });
    for (let i = 0; i < 50; i++) expect(sampleNextToken(logits, [], options, rng)).toBe(1);
  });

  it('temperature scales the logits before the softmax: exact distribution and empirical draws', () => {
    const values = [1, 0.5, 0, -1, 0.25];
    const options = samplingOptions({ temperature: 2, topK: 0 });
    const expected = softmax(values.map((v) => v / 2));
    const probabilities = nextTokenDistribution(logitsOf(values), [], options);
    expectClose(probabilities, expected, EXACT, 'temperature 2');
    const counts = drawCounts(logitsOf(values), options, 20000);
    expect(chiSquare(counts, probabilities)).toBeLessThan(CHI_SQUARE_BOUND);
    // The same counts are far from the temperature-1 distribution: the check has teeth.
    expect(chiSquare(counts, softmax(values))).toBeGreaterThan(10 * CHI_SQUARE_BOUND);
  });
});

describe('top-k and top-p', () => {
  it('top-k keeps the k largest logits, and any tied with the k-th (as Hugging Face)', () => {
    const values = [3, 1, 2, 2, 0];
    const k3 = nextTokenDistribution(logitsOf(values), [], samplingOptions({ topK: 3 }));
    const kept = softmax([3, 2, 2]);
    expectClose(k3, [kept[0], 0, kept[1], kept[2], 0], EXACT, 'top-3');
    const k2 = nextTokenDistribution(logitsOf(values), [], samplingOptions({ topK: 2 }));
    expectClose(k2, [kept[0], 0, kept[1], kept[2], 0], EXACT, 'top-2 with a tie at the 2nd');
  });

  it('top-p keeps the smallest set of likeliest tokens whose probability reaches p', () => {
    // Probabilities 0.4, 0.1, 0.3, 0.15, 0.05 (shuffled so that index order is not likelihood order).
    const probabilities = [0.4, 0.1, 0.3, 0.15, 0.05];
    const logits = logitsOf(probabilities.map(Math.log));
    const at = (topP: number) => nextTokenDistribution(logits, [], samplingOptions({ topK: 0, topP }));
    const p = Array.from(softmax(Array.from(logits))); // the exact f32-logit probabilities, ≈ the above
    // p = 0.35: the likeliest alone (0.4) reaches it.
    expectClose(at(0.35), [1, 0, 0, 0, 0], EXACT, 'p 0.35');
    // p = 0.65: 0.4 < 0.65 so the second (0.3) joins, and 0.7 reaches it.
    expectClose(at(0.65), [p[0] / (p[0] + p[2]), 0, p[2] / (p[0] + p[2]), 0, 0], EXACT, 'p 0.65');
    // p = 0.9: 0.4 + 0.3 + 0.15 = 0.85 < 0.9, so 0.1 joins; 0.05 stays out.
    const four = p[0] + p[1] + p[2] + p[3];
    expectClose(at(0.9), [p[0] / four, p[1] / four, p[2] / four, p[3] / four, 0], EXACT, 'p 0.9');
    expectClose(at(1), p, EXACT, 'p 1');
  });

  it('top-p draws follow the truncated, renormalized distribution', () => {
    const logits = logitsOf([0.4, 0.1, 0.3, 0.15, 0.05].map(Math.log));
    const options = samplingOptions({ topK: 0, topP: 0.9 });
    const counts = drawCounts(logits, options, 20000, 77);
    const probabilities = nextTokenDistribution(logits, [], options);
    expect(counts[4]).toBe(0);
    expect(chiSquare(counts, probabilities)).toBeLessThan(CHI_SQUARE_BOUND);
    // Against the untruncated distribution the statistic is huge (token 4, p ≈ 0.05, never appears).
    expect(chiSquare(counts, softmax(Array.from(logits)))).toBeGreaterThan(10 * CHI_SQUARE_BOUND);
  });

  it('temperature, then top-k, then top-p compose in Hugging Face order', () => {
    // Temperature 0.5 sharpens [ln 0.5, ln 0.3, ln 0.2] to ∝ [0.25, 0.09, 0.04]; top-k 2 drops the third; top-p 0.6 of
    // [0.25, 0.09]/0.34 = [0.735, 0.265] keeps only the first.
    const logits = logitsOf([Math.log(0.5), Math.log(0.3), Math.log(0.2)]);
    const only = nextTokenDistribution(logits, [], samplingOptions({ temperature: 0.5, topK: 2, topP: 0.6 }));
    expect(Array.from(only)).toEqual([1, 0, 0]);
    const two = nextTokenDistribution(logits, [], samplingOptions({ temperature: 0.5, topK: 2, topP: 0.8 }));
    const s = softmax([Math.fround(Math.log(0.5)) / 0.5, Math.fround(Math.log(0.3)) / 0.5]);
    expectClose(two, [s[0], s[1], 0], EXACT, 'temperature, top-k, top-p');
  });
});

describe('repetition penalty', () => {
  it('divides positive and multiplies negative logits of context tokens, once per distinct token', () => {
    const logits = logitsOf([2, -1, 1.5, 0.5, -0.25]);
    applyRepetitionPenalty(logits, [0, 1, 1, 4, 0], 2);
    expect(Array.from(logits)).toEqual([1, -2, 1.5, 0.5, -0.5]);
  });

  it('changes the greedy choice away from a repeated token, and leaves the input untouched', () => {
    const logits = logitsOf([2, -1, 1.5, 0.5]);
    const rng = new Rng(1);
    expect(sampleNextToken(logits, [3, 0], samplingOptions({ temperature: 0 }), rng)).toBe(0);
    expect(sampleNextToken(logits, [3, 0], samplingOptions({ temperature: 0, repetitionPenalty: 1.5 }), rng)).toBe(2);
    expect(Array.from(logits)).toEqual([2, -1, 1.5, 0.5]);
    const penalized = nextTokenDistribution(logits, [0], samplingOptions({ topK: 0, repetitionPenalty: 1.5 }));
    expectClose(penalized, softmax([2 / 1.5, -1, 1.5, 0.5]), EXACT, 'penalized distribution');
  });
});

describe('seeding', () => {
  /** A toy "model": the next logits depend on the last token, so a sequence feeds back into itself. */
  function generate(seed: number, steps: number): number[] {
    const rng = new Rng(seed);
    const options = samplingOptions({ temperature: 1.3, topK: 5, topP: 0.95, repetitionPenalty: 1.1, seed });
    const tokens = [3];
    for (let i = 0; i < steps; i++) {
      const last = tokens[tokens.length - 1];
      const logits = Float32Array.from({ length: 11 }, (_, v) => Math.sin(v * 1.7 + last) * 2);
      tokens.push(sampleNextToken(logits, tokens, options, rng));
    }
    return tokens;
  }

  it('the same seed gives the same sequence; another seed another one', () => {
    const a = generate(42, 40);
    expect(generate(42, 40)).toEqual(a);
    expect(generate(43, 40)).not.toEqual(a);
    expect(new Set(a).size).toBeGreaterThan(2);
  });
});

describe('stop conditions', () => {
  const criteria = stopCriteria(samplingOptions({ maxNewTokens: 5, stopStrings: ['\nUser:', '###'] }), 36);

  it('stops at end-of-text, at the earliest stop string (cut from the output), and at the token limit', () => {
    expect(checkStop({ lastToken: 36, newTokenCount: 2, text: 'Hi' }, criteria)).toEqual({ reason: 'end-of-text', text: 'Hi' });
    expect(checkStop({ lastToken: 7, newTokenCount: 3, text: 'Paris.### x\nUser: y' }, criteria)).toEqual({
      reason: 'stop-string',
      text: 'Paris.',
    });
    expect(checkStop({ lastToken: 7, newTokenCount: 3, text: 'Paris.\nUser: y ###' }, criteria)).toEqual({
      reason: 'stop-string',
      text: 'Paris.',
    });
    expect(checkStop({ lastToken: 7, newTokenCount: 4, text: 'Paris.\nUse' }, criteria)).toBeNull();
    expect(checkStop({ lastToken: 7, newTokenCount: 5, text: 'Paris.\nUse' }, criteria)).toEqual({
      reason: 'max-new-tokens',
      text: 'Paris.\nUse',
    });
  });

  it('end-of-text can be turned off', () => {
    const noEot = stopCriteria(samplingOptions({ stopAtEndOfText: false }), 36);
    expect(noEot.endOfTextId).toBeNull();
    expect(checkStop({ lastToken: 36, newTokenCount: 1, text: '' }, noEot)).toBeNull();
  });

  it('streaming holds back a tail that could still become a stop string', () => {
    expect(streamableLength('Paris.\nUs', ['\nUser:', '###'])).toBe(6);
    expect(streamableLength('Paris.##', ['\nUser:', '###'])).toBe(6);
    expect(streamableLength('Paris.', ['\nUser:', '###'])).toBe(6);
    expect(streamableLength('Paris.', [])).toBe(6);
  });
});

describe('options', () => {
  it('defaults as documented, and overrides are validated', () => {
    expect(samplingOptions()).toEqual(DEFAULT_SAMPLING);
    expect(samplingOptions({ topP: 0.9 }).topP).toBe(0.9);
    expect(() => samplingOptions({ temperature: -1 })).toThrow(/temperature/);
    expect(() => samplingOptions({ topK: 2.5 })).toThrow(/topK/);
    expect(() => samplingOptions({ topP: 0 })).toThrow(/topP/);
    expect(() => samplingOptions({ topP: 1.5 })).toThrow(/topP/);
    expect(() => samplingOptions({ repetitionPenalty: 0 })).toThrow(/repetitionPenalty/);
    expect(() => samplingOptions({ maxNewTokens: 0 })).toThrow(/maxNewTokens/);
    expect(() => samplingOptions({ stopStrings: [''] })).toThrow(/stop strings/);
  });
});
