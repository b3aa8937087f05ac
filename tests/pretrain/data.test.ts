// Pretraining data without a GPU: the corpus as one token stream (the same ids as encoding the whole text, so the
// validation blocks are exactly `textBlocks`' and `tunelab eval --format text` scores the same rows), the token file
// that caches it (u16 and u32, round trip, refusing damaged files), and the batches cut from the stream: contiguous
// rows whose targets are the inputs shifted by one, a pure function of (seed, micro-step) for exact resumes, every
// block once per epoch with 'epoch' sampling, and validation batches spread over the held-out text.

import { readFileSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { textBlocks } from '../../src/engine/data/tokenize.ts';
import { TunelabError } from '../../src/engine/errors.ts';
import { Tokenizer } from '../../src/engine/tokenizer/index.ts';
import {
  concatTokens,
  decodeTokenFile,
  encodeTokenFile,
  tokenFileMatches,
  tokenFingerprint,
  TokenBlockBatcher,
  tokenizeCorpus,
  type TokenArray,
  type TokenFileMeta,
} from '../../src/engine/train/pretrain.ts';

const corpusTokenizer = Tokenizer.fromJson(JSON.parse(readFileSync('corpus/tokenizer.json', 'utf8')), { name: 'corpus/tokenizer.json' });
/** The first documents of the held-out text: Moby-Dick chapters, each followed by <|endoftext|>. */
const validationText = gunzipSync(readFileSync('corpus/validation.txt.gz')).toString('utf8').slice(0, 40_000);

const META: TokenFileMeta = { sources: [{ name: 'a.txt', bytes: 10, sha256: 'ab'.repeat(32) }], tokenizerSha256: 'cd'.repeat(32), endOfTextId: 256 };

/** A stream 0, 1, 2, … so that every token names its own position. */
function positions(n: number): TokenArray {
  return Uint32Array.from({ length: n }, (_, i) => i);
}

function batcher(stream: TokenArray, options: Partial<ConstructorParameters<typeof TokenBlockBatcher>[2]> = {}, validation: TokenArray | null = null) {
  return new TokenBlockBatcher(stream, validation, { batchSize: 4, sequenceLength: 8, sampling: 'random', seed: 7, padId: 999, ...options });
}

describe('tokenizeCorpus', () => {
  it('gives the ids of encoding the whole text plus end-of-text, in u16 for an 8192 vocabulary', () => {
    const tokens = tokenizeCorpus(validationText, corpusTokenizer);
    expect(tokens).toBeInstanceOf(Uint16Array);
    const expected = [...corpusTokenizer.encode(validationText), corpusTokenizer.endOfTextId];
    expect(validationText.split('<|endoftext|>').length).toBeGreaterThan(2); // several documents are split and joined
    expect(Array.from(tokens)).toEqual(expected);
  });

  it('uses u32 when the vocabulary is larger than 65536, and refuses ids past the vocabulary', () => {
    expect(tokenizeCorpus('Call me Ishmael.', corpusTokenizer, 70_000)).toBeInstanceOf(Uint32Array);
    expect(() => tokenizeCorpus('Call me Ishmael.', corpusTokenizer, 300)).toThrow(/beyond the model's vocabulary of 300/);
  });
});

describe('token file', () => {
  it('round-trips u16 and u32 streams with their header', () => {
    const u16 = Uint16Array.from([0, 1, 65535, 256, 7]);
    const u32 = Uint32Array.from([0, 65536, 4_000_000_000, 3]);
    for (const tokens of [u16, u32, new Uint16Array(0)]) {
      const bytes = encodeTokenFile(tokens, META);
      const { header, tokens: back } = decodeTokenFile(bytes.slice()); // a copy: not aligned like the original
      expect(back.constructor).toBe(tokens.constructor);
      expect(Array.from(back)).toEqual(Array.from(tokens));
      expect(header).toMatchObject({ format: 'tunelab-tokens', count: tokens.length, endOfTextId: 256 });
      expect(tokenFileMatches(header, META)).toBe(true);
      expect(tokenFileMatches(header, { ...META, tokenizerSha256: 'ef'.repeat(32) })).toBe(false);
      expect(tokenFileMatches(header, { ...META, sources: [{ ...META.sources[0], sha256: '00'.repeat(32) }] })).toBe(false);
    }
  });

  it('refuses a truncated or foreign file with a bad-data error', () => {
    const bytes = encodeTokenFile(Uint16Array.from([1, 2, 3, 4]), META);
    const expectBad = (b: Uint8Array, message: RegExp) => {
      let caught: unknown;
      try {
        decodeTokenFile(b);
      } catch (error) {
        caught = error;
      }
      expect(caught).toBeInstanceOf(TunelabError);
      expect((caught as TunelabError).code).toBe('bad-data');
      expect((caught as Error).message).toMatch(message);
    };
    expectBad(bytes.subarray(0, bytes.length - 1), /should hold 4 tokens/);
    expectBad(bytes.subarray(0, 5), /too short/);
    expectBad(new TextEncoder().encode('\x07\0\0\0\0\0\0\0{"a":1}'), /not a tunelab-tokens file/);
    expectBad(new TextEncoder().encode('\x06\0\0\0\0\0\0\0{"a":1'), /the header is not JSON/);
  });

  it('fingerprints differ when one token differs', () => {
    const a = Uint16Array.from([1, 2, 3]);
    expect(tokenFingerprint(a)).toBe(tokenFingerprint(Uint16Array.from([1, 2, 3])));
    expect(tokenFingerprint(a)).not.toBe(tokenFingerprint(Uint16Array.from([1, 2, 4])));
    expect(Array.from(concatTokens([a, Uint16Array.from([9])], 8192))).toEqual([1, 2, 3, 9]);
  });
});

describe('TokenBlockBatcher', () => {
  it("random sampling: contiguous rows, targets shifted by one, all inside the stream, a function of (seed, step)", () => {
    const N = 1000;
    const data = batcher(positions(N));
    expect(data.stepsPerEpoch).toBe(Math.floor((N - 1) / 8 / 4));
    let lowest = N;
    let highest = 0;
    for (let step = 0; step < 200; step++) {
      const batch = data.trainBatch(step);
      expect(batch.rows).toBe(4);
      expect(batch.lossTokens).toBe(32);
      for (let b = 0; b < 4; b++) {
        const start = batch.inputIds[b * 8];
        for (let t = 0; t < 8; t++) {
          expect(batch.inputIds[b * 8 + t]).toBe(start + t);
          expect(batch.targets[b * 8 + t]).toBe(start + t + 1);
          expect(batch.lossMask[b * 8 + t]).toBe(1);
        }
        lowest = Math.min(lowest, start);
        highest = Math.max(highest, start);
      }
    }
    // 800 draws from 992 starts reach both ends of [0, N − T − 1].
    expect(lowest).toBeLessThan(20);
    expect(highest).toBeGreaterThan(N - 8 - 1 - 20);
    expect(highest).toBeLessThanOrEqual(N - 8 - 1);
    // Another batcher (a resumed run) draws the same rows for the same step; other steps and seeds differ.
    const again = batcher(positions(N));
    expect(again.rowStarts(123)).toEqual(data.rowStarts(123));
    expect(data.rowStarts(124)).not.toEqual(data.rowStarts(123));
    expect(batcher(positions(N), { seed: 8 }).rowStarts(123)).not.toEqual(data.rowStarts(123));
  });

  it("epoch sampling: every block once per epoch, in another order each epoch; the last batch is partial and masked", () => {
    const N = 8 * 10 + 1; // 10 blocks of T + 1 tokens starting at multiples of T
    const data = batcher(positions(N), { sampling: 'epoch' });
    expect(data.trainBlocks).toBe(10);
    expect(data.stepsPerEpoch).toBe(3);
    const epochStarts = (epoch: number) => {
      const starts: number[] = [];
      for (let s = 0; s < 3; s++) starts.push(...data.rowStarts(epoch * 3 + s));
      return starts;
    };
    const first = epochStarts(0);
    expect([...first].sort((a, b) => a - b)).toEqual(Array.from({ length: 10 }, (_, i) => 8 * i));
    const second = epochStarts(1);
    expect([...second].sort((a, b) => a - b)).toEqual([...first].sort((a, b) => a - b));
    expect(second).not.toEqual(first);
    const last = data.trainBatch(2);
    expect(last.rows).toBe(2);
    expect(last.lossTokens).toBe(16);
    expect(Array.from(last.lossMask.subarray(16))).toEqual(new Array(16).fill(0));
    expect(Array.from(last.inputIds.subarray(16))).toEqual(new Array(16).fill(999));
  });

  it('validation batches are the blocks textBlocks makes of the same text, in order', () => {
    const T = 32;
    const stream = tokenizeCorpus(validationText, corpusTokenizer);
    const data = new TokenBlockBatcher(stream.subarray(0, 500), stream, { batchSize: 4, sequenceLength: T, sampling: 'random', seed: 0, padId: 256 });
    const blocks = textBlocks({ kind: 'text', text: validationText, origin: { source: 'validation', line: 1, index: 0 } }, corpusTokenizer, T);
    expect(data.validationRows).toBe(blocks.length);
    const batches = data.validationBatches();
    expect(batches).toHaveLength(Math.ceil(blocks.length / 4));
    expect(data.validationBatches()[0]).toBe(batches[0]); // fixed arrays, reused
    blocks.forEach((block, i) => {
      const batch = batches[Math.floor(i / 4)];
      const row = (i % 4) * T;
      const n = block.ids.length - 1;
      expect(Array.from(batch.inputIds.subarray(row, row + n))).toEqual(Array.from(block.ids.subarray(0, n)));
      expect(Array.from(batch.targets.subarray(row, row + n))).toEqual(Array.from(block.ids.subarray(1)));
      expect(batch.lossMask.subarray(row, row + T).reduce((a, b) => a + b, 0)).toBe(n);
    });
  });

  it('a validation budget picks batches spread over the whole held-out text', () => {
    const data = batcher(positions(200), { validationBatches: 2 }, positions(8 * 40 + 1));
    expect(data.validationRows).toBe(8);
    const starts = data.validationBatches().flatMap((b) => [0, 1, 2, 3].map((r) => b.inputIds[r * 8]));
    expect(starts).toEqual([0, 5, 10, 15, 20, 25, 30, 35].map((k) => 8 * k));
  });

  it('refuses a corpus shorter than one row', () => {
    expect(() => batcher(positions(8))).toThrow(/has 8 tokens; one row of 8 positions needs 9/);
  });
});
