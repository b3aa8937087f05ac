// Helpers of the tokenizer-training tests: a deliberately naive BPE trainer to judge the fast one by, seeded random
// text, and reading the corpus files.
import { readFileSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import type { Rng } from '../../src/engine/random.ts';
import { byteToCharTable } from '../../src/engine/tokenizer/index.ts';

export interface NaiveBpeResult {
  tokens: string[];
  merges: [string, string][];
  /** Final segmentation of each word (token strings), as training left it. */
  segmentation: Map<string, string[]>;
}

/**
 * Byte-level BPE the slow, obvious way: after every merge, recount every adjacent pair of every word from scratch.
 * Same rules as the real trainer: ids 0..255 bytes, then the special tokens, then new token strings; the most
 * frequent pair wins, ties to the smaller left id, then the smaller right id; merges apply left to right without
 * overlap; a merge whose string already exists reuses that id.
 */
export function naiveTrainBpe(
  wordCounts: Map<string, number>,
  vocabSize: number,
  { specialTokens = ['<|endoftext|>'], minFrequency = 2 }: { specialTokens?: string[]; minFrequency?: number } = {},
): NaiveBpeResult {
  const tokens = [...byteToCharTable(), ...specialTokens];
  const words = [...wordCounts].map(([word, count]) => ({ word, count, ids: [...new TextEncoder().encode(word)] }));
  const merges: [string, string][] = [];
  while (tokens.length < vocabSize) {
    const counts = new Map<string, { left: number; right: number; count: number }>();
    for (const { ids, count } of words) {
      for (let i = 0; i + 1 < ids.length; i++) {
        const name = `${ids[i]},${ids[i + 1]}`;
        const entry = counts.get(name) ?? { left: ids[i], right: ids[i + 1], count: 0 };
        entry.count += count;
        counts.set(name, entry);
      }
    }
    let best: { left: number; right: number; count: number } | undefined;
    for (const candidate of counts.values()) {
      if (
        !best ||
        candidate.count > best.count ||
        (candidate.count === best.count &&
          (candidate.left < best.left || (candidate.left === best.left && candidate.right < best.right)))
      ) {
        best = candidate;
      }
    }
    if (!best || best.count < minFrequency) break;
    const text = tokens[best.left] + tokens[best.right];
    let id = tokens.indexOf(text);
    if (id < 0) id = tokens.push(text) - 1;
    merges.push([tokens[best.left], tokens[best.right]]);
    for (const word of words) {
      const next: number[] = [];
      for (let i = 0; i < word.ids.length; i++) {
        if (i + 1 < word.ids.length && word.ids[i] === best.left && word.ids[i + 1] === best.right) {
          next.push(id);
          i++;
        } else {
          next.push(word.ids[i]);
        }
      }
      word.ids = next;
    }
  }
  const segmentation = new Map(words.map(({ word, ids }) => [word, ids.map((id) => tokens[id])]));
  return { tokens, merges, segmentation };
}

/** A well-formed string of random code points from many scripts and planes (no unpaired surrogates). */
export function randomUnicode(rng: Rng, length: number): string {
  const pools = [
    () => 0x20 + rng.int(0x5f), // ASCII printable
    () => rng.int(0x20), // control characters, \t \n \r
    () => 0xa0 + rng.int(0x700), // Latin-1 .. Cyrillic, combining marks
    () => 0x4e00 + rng.int(0x5000), // CJK
    () => 0x1f300 + rng.int(0x300), // emoji
    () => 0x10000 + rng.int(0x100000 - 0x10000), // any astral plane
    () => [0x20, 0x20, 0x0a, 0x09, 0x3000, 0x2028, 0xfeff, 0x200d, 0xfe0f, 0xfffd][rng.int(10)],
  ];
  let out = '';
  for (let i = 0; i < length; i++) {
    let cp = pools[rng.int(pools.length)]();
    if (cp >= 0xd800 && cp <= 0xdfff) cp = 0x41;
    out += String.fromCodePoint(cp);
  }
  return out;
}

/** Random English-like text over a tiny alphabet, so that pairs repeat and counts tie often. */
export function randomWords(rng: Rng, words: number, alphabet = 'abcde'): string {
  const parts: string[] = [];
  for (let i = 0; i < words; i++) {
    let word = '';
    const length = 1 + rng.int(6);
    for (let j = 0; j < length; j++) word += alphabet[rng.int(alphabet.length)];
    parts.push(word);
    const r = rng.int(10);
    parts.push(r < 6 ? ' ' : r < 7 ? ', ' : r < 8 ? '.\n' : r < 9 ? '  ' : " 'é ");
  }
  return parts.join('');
}

/** A corpus file of the repository (corpus/*.txt.gz), decompressed. */
export function readCorpusFile(name: string): string {
  return gunzipSync(readFileSync(new URL(`../../corpus/${name}`, import.meta.url))).toString('utf8');
}
