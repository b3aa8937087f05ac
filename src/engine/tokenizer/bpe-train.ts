// Trains a byte-level BPE tokenizer the way GPT-2's was made, and writes it as a Hugging Face tokenizer.json that
// `Tokenizer.fromJson` (and the Python/Rust `tokenizers`) load. Text is cut at special tokens, split into words by
// GPT-2's pre-tokenization pattern, and each word's UTF-8 bytes start as one symbol each; then the most frequent
// adjacent pair of symbols is merged, again and again, until the vocabulary is full.
//
// Speed comes from counting distinct words once (a few tens of thousands for megabytes of English) and updating pair
// counts only in the words that contain the merged pair, with a lazily-invalidated max-heap of pair counts, instead of
// recounting every pair after every merge.
//
// Ids: 0..255 are the bytes (id = byte value, as in byte-level.ts), then the special tokens (`<|endoftext|>` = 256 by
// default), then one id per new token string, in the order merges made them.
//
// Determinism: the result depends only on the multiset of words, never on their order. Ties between pairs of equal
// count go to the pair with the smaller left id, then the smaller right id (older tokens, bytes by value, first).

import { TunelabError } from '../errors.ts';
import { byteLevelTokenizerJson, byteToCharTable, END_OF_TEXT } from './byte-level.ts';

/**
 * GPT-2's pre-tokenization pattern, as the ByteLevel pre-tokenizer of `tokenizers` applies it: English contractions,
 * letters with at most one leading space, numbers likewise, other symbols likewise, whitespace runs (a run before
 * a word leaves its last space to that word). Every character falls in some alternative, so nothing is dropped.
 */
export const GPT2_SPLIT_PATTERN = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;

export interface BpeTrainOptions {
  /** Number of ids when done: 256 bytes + special tokens + merged tokens. Training may stop short (see minFrequency). */
  vocabSize: number;
  /** Tokens that are never split or merged, in id order after the bytes (default [`<|endoftext|>`]). */
  specialTokens?: readonly string[];
  /** A pair seen fewer times than this is not merged; training stops early when no pair is left (default 2). */
  minFrequency?: number;
  /** Called now and then with (new tokens so far, new tokens wanted). */
  onProgress?: (done: number, wanted: number) => void;
}

export interface BpeTrainStats {
  /** Words (pre-tokens) counted, with repeats. */
  words: number;
  /** Distinct words. */
  distinctWords: number;
  /** UTF-8 bytes of the counted text (special tokens excluded). */
  bytes: number;
  /** Merges learned (may exceed new tokens: two merges can spell the same string). */
  merges: number;
  /** How often the last merged pair occurred: how much evidence the rarest learned token had (0 if no merge). */
  lastMergeCount: number;
  /** True when training ran out of pairs seen at least minFrequency times before the vocabulary was full. */
  stoppedEarly: boolean;
}

export interface BpeModel {
  /** Token strings by id, in GPT-2's byte-to-character spelling (a space is `Ġ`); special tokens as written. */
  tokens: string[];
  /** The special tokens and their ids. */
  specialTokens: { id: number; content: string }[];
  /** Merges in the order learned, as the two token strings joined. */
  merges: [string, string][];
  stats: BpeTrainStats;
}

/**
 * Counts words of a corpus, one text (or chunk of text) at a time, so a big corpus need not be one string. Special
 * tokens in the text are cut out and never counted, as the tokenizer cuts them out before its model sees the text.
 */
export class BpeWordCounter {
  readonly counts = new Map<string, number>();
  readonly specialTokens: readonly string[];
  words = 0;
  bytes = 0;
  private readonly specialPattern: RegExp | null;
  private readonly encoder = new TextEncoder();

  constructor(specialTokens: readonly string[] = [END_OF_TEXT]) {
    this.specialTokens = specialTokens;
    const nonEmpty = specialTokens.filter((t) => t.length > 0);
    // Longest first, so that one special token that starts another does not cut it short.
    const alternatives = [...nonEmpty].sort((a, b) => b.length - a.length).map(escapeRegExp);
    this.specialPattern = alternatives.length > 0 ? new RegExp(alternatives.join('|'), 'u') : null;
  }

  /** Adds one document (or any piece of text that does not end mid-word). */
  add(text: string): void {
    const pieces = this.specialPattern ? text.split(this.specialPattern) : [text];
    for (const piece of pieces) {
      for (const match of piece.matchAll(GPT2_SPLIT_PATTERN)) {
        const word = match[0];
        this.counts.set(word, (this.counts.get(word) ?? 0) + 1);
        this.words++;
      }
    }
    for (const piece of pieces) this.bytes += this.encoder.encode(piece).length;
  }
}

// A pair of ids as one number: left * 2^21 + right. Ids stay below 2^21, so keys stay exact in a double.
const PAIR_SHIFT = 2 ** 21;
const MAX_VOCAB = PAIR_SHIFT;

/** Trains byte-level BPE on documents (strings) or on words already counted. */
export function trainBpe(corpus: Iterable<string> | BpeWordCounter, options: BpeTrainOptions): BpeModel {
  const counterTokens = corpus instanceof BpeWordCounter ? corpus.specialTokens : undefined;
  const specialTokens = [...(options.specialTokens ?? counterTokens ?? [END_OF_TEXT])];
  if (counterTokens && counterTokens.join('\u0000') !== specialTokens.join('\u0000')) {
    throw new TunelabError('bad-data', 'the word counter was made with other special tokens than the ones to train with');
  }
  const minFrequency = options.minFrequency ?? 2;
  const firstMergedId = 256 + specialTokens.length;
  const { vocabSize } = options;
  if (!Number.isInteger(vocabSize) || vocabSize < firstMergedId || vocabSize > MAX_VOCAB) {
    throw new TunelabError(
      'bad-data',
      `vocabulary size must be a whole number from ${firstMergedId} (256 bytes + ${specialTokens.length} special) ` +
        `to ${MAX_VOCAB}, got ${vocabSize}`,
    );
  }
  if (!Number.isFinite(minFrequency) || minFrequency < 1) {
    throw new TunelabError('bad-data', `minimum pair frequency must be at least 1, got ${minFrequency}`);
  }
  if (new Set(specialTokens).size !== specialTokens.length || specialTokens.some((t) => t.length === 0)) {
    throw new TunelabError('bad-data', 'special tokens must be distinct and non-empty');
  }

  let counter: BpeWordCounter;
  if (corpus instanceof BpeWordCounter) {
    counter = corpus;
  } else {
    counter = new BpeWordCounter(specialTokens);
    for (const text of corpus) counter.add(text);
  }

  const byteChars = byteToCharTable();
  const tokens: string[] = [...byteChars, ...specialTokens];
  const idOf = new Map<string, number>();
  tokens.forEach((token, id) => idOf.set(token, id));

  // Distinct words as symbol sequences (initially their bytes), with how often each occurs.
  const encoder = new TextEncoder();
  const wordSymbols: Int32Array[] = [];
  const wordCounts: number[] = [];
  for (const [word, count] of counter.counts) {
    wordSymbols.push(Int32Array.from(encoder.encode(word)));
    wordCounts.push(count);
  }

  // pairCounts: occurrences of each adjacent pair, weighted by word count. wordsWithPair: words that contain (or
  // once contained) the pair; stale entries are harmless because each word is checked before it is rewritten.
  const pairCounts = new Map<number, number>();
  const wordsWithPair = new Map<number, number[]>();
  const noteWord = (key: number, word: number) => {
    const list = wordsWithPair.get(key);
    if (list === undefined) wordsWithPair.set(key, [word]);
    else if (list[list.length - 1] !== word) list.push(word);
  };
  for (let w = 0; w < wordSymbols.length; w++) {
    const symbols = wordSymbols[w];
    for (let i = 0; i + 1 < symbols.length; i++) {
      const key = symbols[i] * PAIR_SHIFT + symbols[i + 1];
      pairCounts.set(key, (pairCounts.get(key) ?? 0) + wordCounts[w]);
      noteWord(key, w);
    }
  }
  const heap = new PairHeap();
  for (const [key, count] of pairCounts) heap.push(count, key);

  const merges: [string, string][] = [];
  const wanted = vocabSize - firstMergedId;
  let stoppedEarly = false;
  let lastMergeCount = 0;
  while (tokens.length < vocabSize) {
    if (heap.size === 0) {
      stoppedEarly = true;
      break;
    }
    const { count, key } = heap.pop();
    // An entry is current only if its count is the pair's count now; every change pushed a fresh entry.
    if (pairCounts.get(key) !== count) continue;
    if (count < minFrequency) {
      stoppedEarly = true;
      break;
    }
    const left = Math.floor(key / PAIR_SHIFT);
    const right = key - left * PAIR_SHIFT;
    const mergedString = tokens[left] + tokens[right];
    let merged = idOf.get(mergedString);
    if (merged === undefined) {
      merged = tokens.length;
      tokens.push(mergedString);
      idOf.set(mergedString, merged);
    }
    merges.push([tokens[left], tokens[right]]);
    lastMergeCount = count;

    // Net change of every pair count this merge causes, applied once at the end so the heap sees each pair once.
    const deltas = new Map<number, number>();
    const addDelta = (k: number, d: number) => deltas.set(k, (deltas.get(k) ?? 0) + d);
    for (const w of wordsWithPair.get(key) ?? []) {
      const symbols = wordSymbols[w];
      if (!containsPair(symbols, left, right)) continue;
      const c = wordCounts[w];
      for (let i = 0; i + 1 < symbols.length; i++) addDelta(symbols[i] * PAIR_SHIFT + symbols[i + 1], -c);
      // Left to right, without overlap: "a a a" merging (a, a) gives "aa a", as the tokenizer's encoder does.
      const rewritten = new Int32Array(symbols.length);
      let n = 0;
      for (let i = 0; i < symbols.length; ) {
        if (i + 1 < symbols.length && symbols[i] === left && symbols[i + 1] === right) {
          rewritten[n++] = merged;
          i += 2;
        } else {
          rewritten[n++] = symbols[i++];
        }
      }
      const next = rewritten.slice(0, n);
      wordSymbols[w] = next;
      for (let i = 0; i + 1 < n; i++) {
        const k = next[i] * PAIR_SHIFT + next[i + 1];
        addDelta(k, c);
        // Only pairs with the new symbol are new to this word; the word is already listed under the others.
        if (next[i] === merged || next[i + 1] === merged) noteWord(k, w);
      }
    }
    wordsWithPair.delete(key);
    for (const [k, d] of deltas) {
      if (d === 0) continue;
      const updated = (pairCounts.get(k) ?? 0) + d;
      if (updated > 0) {
        pairCounts.set(k, updated);
        heap.push(updated, k);
      } else {
        pairCounts.delete(k);
        wordsWithPair.delete(k);
      }
    }
    const done = tokens.length - firstMergedId;
    if (options.onProgress && (done % 256 === 0 || tokens.length === vocabSize)) options.onProgress(done, wanted);
  }

  return {
    tokens,
    specialTokens: specialTokens.map((content, i) => ({ id: 256 + i, content })),
    merges,
    stats: {
      words: counter.words,
      distinctWords: counter.counts.size,
      bytes: counter.bytes,
      merges: merges.length,
      lastMergeCount,
      stoppedEarly,
    },
  };
}

/**
 * The tokenizer.json object of a trained model: BPE with its vocabulary and merges, GPT-2's ByteLevel pre-tokenizer,
 * post-processor and decoder (exactly as byte-level.ts writes them), special tokens as added tokens.
 */
export function bpeTokenizerJson(model: BpeModel): Record<string, unknown> {
  const json = byteLevelTokenizerJson() as Record<string, unknown> & {
    model: { vocab: Record<string, number>; merges: unknown[] };
  };
  const vocab: Record<string, number> = {};
  model.tokens.forEach((token, id) => (vocab[token] = id));
  json.model.vocab = vocab;
  // "left right" strings: byte-level token strings never contain a space, and every reader of tokenizer.json,
  // old or new, accepts this form.
  json.model.merges = model.merges.map(([left, right]) => `${left} ${right}`);
  json.added_tokens = model.specialTokens.map(({ id, content }) => ({
    id,
    content,
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized: false,
    special: true,
  }));
  return json;
}

function containsPair(symbols: Int32Array, left: number, right: number): boolean {
  for (let i = 0; i + 1 < symbols.length; i++) if (symbols[i] === left && symbols[i + 1] === right) return true;
  return false;
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** Max-heap of (count, pair key): larger count first, then smaller key (smaller left id, then smaller right id). */
class PairHeap {
  private counts: number[] = [];
  private keys: number[] = [];

  get size(): number {
    return this.counts.length;
  }

  push(count: number, key: number): void {
    this.counts.push(count);
    this.keys.push(key);
    let i = this.counts.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.before(i, parent)) break;
      this.swap(i, parent);
      i = parent;
    }
  }

  pop(): { count: number; key: number } {
    const top = { count: this.counts[0], key: this.keys[0] };
    const lastCount = this.counts.pop()!;
    const lastKey = this.keys.pop()!;
    if (this.counts.length > 0) {
      this.counts[0] = lastCount;
      this.keys[0] = lastKey;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let best = i;
        if (l < this.counts.length && this.before(l, best)) best = l;
        if (r < this.counts.length && this.before(r, best)) best = r;
        if (best === i) break;
        this.swap(i, best);
        i = best;
      }
    }
    return top;
  }

  private before(i: number, j: number): boolean {
    return this.counts[i] > this.counts[j] || (this.counts[i] === this.counts[j] && this.keys[i] < this.keys[j]);
  }

  private swap(i: number, j: number): void {
    [this.counts[i], this.counts[j]] = [this.counts[j], this.counts[i]];
    [this.keys[i], this.keys[j]] = [this.keys[j], this.keys[i]];
  }
}
