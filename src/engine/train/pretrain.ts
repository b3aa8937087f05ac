// Pretraining data: a text corpus as one token stream in a compact typed array (u16 while the vocabulary fits, else
// u32), the training and validation batches cut from it on the fly, and the token file that caches the stream next
// to a run's output so a resumed run does not tokenize again; and when a run with a time limit must stop.
// Platform-neutral: the CLI reads files and hashes them.
//
// Letters: N tokens in a stream, B rows per batch, T positions per row. A row reads T tokens and predicts the T that
// follow, so it needs a block of T + 1 consecutive tokens of the stream.
//
// Training rows come from one of two samplings, both a pure function of (seed, micro-step, row), so the position in
// the data (the trainer's micro-step) is all a checkpoint has to keep:
//   'random'  every row starts at an independent uniformly random offset in [0, N − T − 1] (nanoGPT's way: over many
//             epochs of a small corpus the model seldom sees the same cut twice);
//   'epoch'   the stream is cut into blocks starting at multiples of T, and every epoch visits all of them once in a
//             seeded order (the last batch of an epoch may have fewer rows; its other rows are masked padding).
// Validation rows are the blocks `textBlocks` makes of a plain-text file (starts 0, T, 2T, …; the last one shorter),
// so evaluating all of them gives the loss `tunelab eval --format text` reports for the same file and model.

import { TunelabError } from '../errors.ts';
import type { Batch } from '../data/batches.ts';
import type { TrainingData } from './data-source.ts';
import { Rng } from '../random.ts';
import type { Tokenizer } from '../tokenizer/tokenizer.ts';

/** A token stream: u16 when every id is below 65536 (half the memory), else u32. */
export type TokenArray = Uint16Array | Uint32Array;

export type BlockSampling = 'random' | 'epoch';
export const BLOCK_SAMPLINGS: readonly BlockSampling[] = ['random', 'epoch'];

/** An empty stream of `length` tokens for ids below `vocabSize`. */
export function tokenArray(vocabSize: number, length: number): TokenArray {
  return vocabSize <= 65536 ? new Uint16Array(length) : new Uint32Array(length);
}

/**
 * Tokenizes a corpus text into one stream ending with the end-of-text id, exactly the ids of
 * `[...tokenizer.encode(text), endOfTextId]` (what `textBlocks` cuts plain text from). The text is encoded document
 * by document, split at the end-of-text token's text: the tokenizer cuts special tokens out before anything else,
 * so the ids are the same, and no single encode call holds a whole corpus.
 */
export function tokenizeCorpus(text: string, tokenizer: Tokenizer, vocabSize = tokenizer.vocabSize): TokenArray {
  const eot = tokenizer.endOfTextId;
  let ids = new Uint32Array(Math.max(1024, text.length >> 2));
  let length = 0;
  const push = (id: number) => {
    if (length === ids.length) {
      const grown = new Uint32Array(ids.length * 2);
      grown.set(ids);
      ids = grown;
    }
    ids[length++] = id;
  };
  const documents = text.split(tokenizer.endOfText);
  documents.forEach((document, index) => {
    if (index > 0) push(eot);
    for (const id of tokenizer.encode(document)) push(id);
  });
  push(eot);
  let largest = 0;
  for (let i = 0; i < length; i++) largest = Math.max(largest, ids[i]);
  if (largest >= vocabSize) {
    throw new TunelabError('bad-model', `the tokenizer produced id ${largest}, beyond the model's vocabulary of ${vocabSize}`);
  }
  const out = tokenArray(vocabSize, length);
  out.set(ids.subarray(0, length));
  return out;
}

// ---- the token file --------------------------------------------------------------------------------------------
//
//   bytes 0..7      u64 little-endian: length H of the JSON header
//   bytes 8..8+H    JSON header (TokenFileHeader), padded with spaces so the data starts 8-byte aligned
//   then            count tokens, little-endian u16 or u32

export const TOKEN_FILE_FORMAT = 'tunelab-tokens';
export const TOKEN_FILE_VERSION = 1;

/** Where a token stream came from: enough to tell whether a cached stream still matches its sources. */
export interface TokenSource {
  /** File name as given (for messages). */
  readonly name: string;
  readonly bytes: number;
  /** Hex SHA-256 of the file's bytes as stored (compressed or not). */
  readonly sha256: string;
}

export interface TokenFileMeta {
  readonly sources: readonly TokenSource[];
  /** Hex SHA-256 of the tokenizer.json bytes used. */
  readonly tokenizerSha256: string;
  readonly endOfTextId: number;
}

export interface TokenFileHeader extends TokenFileMeta {
  readonly format: typeof TOKEN_FILE_FORMAT;
  readonly version: number;
  readonly dtype: 'U16' | 'U32';
  readonly count: number;
}

/** The token file's bytes (header + stream). */
export function encodeTokenFile(tokens: TokenArray, meta: TokenFileMeta): Uint8Array {
  const header: TokenFileHeader = {
    format: TOKEN_FILE_FORMAT,
    version: TOKEN_FILE_VERSION,
    dtype: tokens instanceof Uint16Array ? 'U16' : 'U32',
    count: tokens.length,
    sources: meta.sources.map((s) => ({ name: s.name, bytes: s.bytes, sha256: s.sha256 })),
    tokenizerSha256: meta.tokenizerSha256,
    endOfTextId: meta.endOfTextId,
  };
  let json = new TextEncoder().encode(JSON.stringify(header));
  const padded = Math.ceil((8 + json.length) / 8) * 8 - 8;
  if (padded !== json.length) json = new TextEncoder().encode(JSON.stringify(header) + ' '.repeat(padded - json.length));
  const out = new Uint8Array(8 + json.length + tokens.byteLength);
  const view = new DataView(out.buffer);
  view.setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  const dataStart = 8 + json.length;
  const step = tokens.BYTES_PER_ELEMENT;
  for (let i = 0; i < tokens.length; i++) {
    if (step === 2) view.setUint16(dataStart + 2 * i, tokens[i], true);
    else view.setUint32(dataStart + 4 * i, tokens[i], true);
  }
  return out;
}

/** Reads a token file back. Throws TunelabError('bad-data') when the bytes are not a whole, valid token file. */
export function decodeTokenFile(bytes: Uint8Array): { header: TokenFileHeader; tokens: TokenArray } {
  const bad = (why: string) => new TunelabError('bad-data', `token file: ${why}`);
  if (bytes.length < 8) throw bad('too short');
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerLength = Number(view.getBigUint64(0, true));
  if (headerLength > bytes.length - 8) throw bad('the header runs past the end of the file');
  let header: TokenFileHeader;
  try {
    header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + headerLength))) as TokenFileHeader;
  } catch {
    throw bad('the header is not JSON');
  }
  if (header?.format !== TOKEN_FILE_FORMAT) throw bad(`not a ${TOKEN_FILE_FORMAT} file`);
  if (header.version !== TOKEN_FILE_VERSION) throw bad(`version ${header.version} is not supported (this Tunelab reads ${TOKEN_FILE_VERSION})`);
  if (header.dtype !== 'U16' && header.dtype !== 'U32') throw bad(`unknown dtype ${JSON.stringify(header.dtype)}`);
  const step = header.dtype === 'U16' ? 2 : 4;
  const dataStart = 8 + headerLength;
  if (!Number.isSafeInteger(header.count) || header.count < 0 || bytes.length - dataStart !== header.count * step) {
    throw bad(`it should hold ${header.count} tokens of ${step} bytes after the header, but has ${bytes.length - dataStart} bytes`);
  }
  const tokens = header.dtype === 'U16' ? new Uint16Array(header.count) : new Uint32Array(header.count);
  for (let i = 0; i < header.count; i++) {
    tokens[i] = step === 2 ? view.getUint16(dataStart + 2 * i, true) : view.getUint32(dataStart + 4 * i, true);
  }
  return { header, tokens };
}

/** True when a cached token file was made from exactly these sources with this tokenizer. */
export function tokenFileMatches(header: TokenFileHeader, meta: TokenFileMeta): boolean {
  if (header.tokenizerSha256 !== meta.tokenizerSha256 || header.endOfTextId !== meta.endOfTextId) return false;
  if (header.sources.length !== meta.sources.length) return false;
  return header.sources.every((s, i) => s.sha256 === meta.sources[i].sha256 && s.bytes === meta.sources[i].bytes);
}

/** Appends streams (one per corpus file; each already ends with end-of-text). */
export function concatTokens(parts: readonly TokenArray[], vocabSize: number): TokenArray {
  const out = tokenArray(vocabSize, parts.reduce((sum, p) => sum + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** FNV-1a over the stream's ids: a cheap fingerprint a checkpoint keeps, to refuse resuming on other data. */
export function tokenFingerprint(tokens: TokenArray): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < tokens.length; i++) {
    h = Math.imul(h ^ (tokens[i] & 0xffff), 0x01000193);
    h = Math.imul(h ^ (tokens[i] >>> 16), 0x01000193);
  }
  return `${tokens.length}:${(h >>> 0).toString(16).padStart(8, '0')}`;
}

// ---- batches -----------------------------------------------------------------------------------------------------

export interface TokenBatchOptions {
  /** B: rows per batch. */
  batchSize: number;
  /** T: positions per row (at most the model's context). */
  sequenceLength: number;
  /** How training rows are chosen (see the file comment). */
  sampling: BlockSampling;
  /** Seeds the random offsets or the per-epoch block order. */
  seed: number;
  /** Filler for positions without data (always masked out). */
  padId: number;
  /** Validation batches to use, spread evenly over the validation blocks; 0 = all, in order (0). */
  validationBatches?: number;
}

/**
 * Training and validation batches cut from token streams, as TrainingData for the Trainer; it only keeps the two
 * streams: no per-block objects.
 */
export class TokenBlockBatcher implements TrainingData {
  readonly batchSize: number;
  readonly sequenceLength: number;
  readonly sampling: BlockSampling;
  /** Micro-batches per epoch: one epoch reads about as many tokens as the training stream holds. */
  readonly stepsPerEpoch: number;
  /** Training blocks of T + 1 tokens starting at multiples of T ('epoch' visits each once per epoch). */
  readonly trainBlocks: number;
  /** Validation rows (blocks) the validation batches hold. */
  readonly validationRows: number;
  readonly trainTokens: number;
  readonly validationTokens: number;
  private readonly seed: number;
  private readonly padId: number;
  private readonly validationStarts: number[];
  private orderEpoch = -1;
  private order = new Uint32Array(0);
  private validationCache: Batch[] | undefined;

  constructor(
    private readonly train: TokenArray,
    private readonly validation: TokenArray | null,
    options: TokenBatchOptions,
  ) {
    const { batchSize, sequenceLength: T, sampling } = options;
    for (const [name, value] of [['batch size', batchSize], ['sequence length', T]] as const) {
      if (!Number.isSafeInteger(value) || value < 1) throw new TunelabError('bad-data', `${name} must be a positive integer, got ${value}`);
    }
    if (!BLOCK_SAMPLINGS.includes(sampling)) throw new TunelabError('bad-data', `sampling must be random or epoch, got ${JSON.stringify(sampling)}`);
    if (train.length < T + 1) {
      throw new TunelabError(
        'bad-data',
        `the training corpus has ${train.length} tokens; one row of ${T} positions needs ${T + 1} — give more text or a shorter --seq`,
      );
    }
    this.batchSize = batchSize;
    this.sequenceLength = T;
    this.sampling = sampling;
    this.seed = options.seed >>> 0;
    this.padId = options.padId;
    this.trainTokens = train.length;
    this.trainBlocks = Math.floor((train.length - 1) / T);
    this.stepsPerEpoch = Math.max(1, sampling === 'epoch' ? Math.ceil(this.trainBlocks / batchSize) : Math.floor(this.trainBlocks / batchSize));
    this.validationTokens = validation?.length ?? 0;
    const allStarts: number[] = [];
    if (validation && validation.length >= 2) {
      for (let start = 0; start === 0 || start < validation.length - 1; start += T) allStarts.push(start);
    }
    const wanted = (options.validationBatches ?? 0) * batchSize;
    this.validationStarts =
      wanted > 0 && wanted < allStarts.length
        ? Array.from({ length: wanted }, (_, i) => allStarts[Math.floor((i * allStarts.length) / wanted)])
        : allStarts;
    this.validationRows = this.validationStarts.length;
  }

  /** A batch's worth of zeroed arrays, to fill again and again with trainBatch(step, batch). */
  createBatch(): Batch {
    const n = this.batchSize * this.sequenceLength;
    return { inputIds: new Uint32Array(n), targets: new Uint32Array(n), lossMask: new Float32Array(n), lossTokens: 0, rows: 0 };
  }

  epochOf(step: number): number {
    return Math.floor(step / this.stepsPerEpoch);
  }

  /** The order in which epoch `epoch` visits the training blocks ('epoch' sampling). */
  epochOrder(epoch: number): Uint32Array {
    if (epoch !== this.orderEpoch) {
      const order = Array.from({ length: this.trainBlocks }, (_, i) => i);
      new Rng(mix(this.seed, epoch, 0x5bd1e995)).shuffle(order);
      this.order = Uint32Array.from(order);
      this.orderEpoch = epoch;
    }
    return this.order;
  }

  /** Stream offsets of the rows of training micro-batch `step` (fewer than B only at the end of an 'epoch' epoch). */
  rowStarts(step: number): number[] {
    const B = this.batchSize;
    const T = this.sequenceLength;
    if (this.sampling === 'random') {
      // Offsets in [0, N − T − 1], so each block's T + 1 tokens lie inside the stream.
      const rng = new Rng(mix(this.seed, step, 0x27d4eb2f));
      const range = this.trainTokens - T;
      return Array.from({ length: B }, () => rng.int(range));
    }
    const order = this.epochOrder(this.epochOf(step));
    const first = (step % this.stepsPerEpoch) * B;
    const starts: number[] = [];
    for (let i = first; i < Math.min(first + B, order.length); i++) starts.push(order[i] * T);
    return starts;
  }

  /** The training batch of micro-step `step` (0-based), filled into `out`. */
  trainBatch(step: number, out: Batch = this.createBatch()): Batch {
    return this.fill(this.train, this.rowStarts(step), out);
  }

  /** The fixed validation batches, in stream order; the same arrays every call, so losses compare across steps. */
  validationBatches(): Batch[] {
    if (!this.validationCache) {
      this.validationCache = [];
      for (let first = 0; first < this.validationStarts.length; first += this.batchSize) {
        const starts = this.validationStarts.slice(first, first + this.batchSize);
        this.validationCache.push(this.fill(this.validation!, starts, this.createBatch()));
      }
    }
    return this.validationCache;
  }

  private fill(stream: TokenArray, starts: readonly number[], out: Batch): Batch {
    const T = this.sequenceLength;
    if (out.inputIds.length !== this.batchSize * T) {
      throw new TunelabError('bad-data', `batch arrays hold ${out.inputIds.length} positions, need ${this.batchSize * T}`);
    }
    out.inputIds.fill(this.padId);
    out.targets.fill(this.padId);
    out.lossMask.fill(0);
    let lossTokens = 0;
    starts.forEach((start, b) => {
      // A block may be shorter than T + 1 only at the end of a stream (validation's last block).
      const positions = Math.min(T, stream.length - 1 - start);
      const row = b * T;
      for (let t = 0; t < positions; t++) {
        out.inputIds[row + t] = stream[start + t];
        out.targets[row + t] = stream[start + t + 1];
        out.lossMask[row + t] = 1;
      }
      lossTokens += positions;
    });
    out.lossTokens = lossTokens;
    out.rows = starts.length;
    return out;
  }
}

/** A well-mixed u32 seed from (seed, index, salt): nearby seeds and steps give unrelated streams. */
function mix(seed: number, index: number, salt: number): number {
  let h = Math.imul((seed >>> 0) ^ salt, 0x9e3779b1) ^ Math.imul((index >>> 0) + 0x7f4a7c15, 0x85ebca77);
  h ^= Math.floor(index / 4294967296);
  h = Math.imul(h ^ (h >>> 16), 0x7feb352d);
  h = Math.imul(h ^ (h >>> 15), 0x846ca68b);
  return (h ^ (h >>> 16)) >>> 0;
}

// ---- stopping in time ----------------------------------------------------------------------------------------------

/**
 * When a run with a deadline must stop so that finishing still ends in time. After the stop is asked for, the step
 * under way completes, an evaluation may fall due, and the steps in flight drain (at most ~3 of the longest pauses
 * between the trainer's events), then the checkpoint and the model are written (`saveMs`). Times are milliseconds on
 * one clock (the CLI's performance.now()).
 */
export class TimeBudget {
  private lastEventAt: number;
  private longestGapMs = 0;

  constructor(
    readonly deadline: number,
    /** Expected time to write the checkpoint and the model; update with saved(). */
    private saveMs: number,
    start: number,
  ) {
    this.lastEventAt = start;
  }

  /** The trainer emitted an event (a step's metrics, an evaluation) at `now`. */
  event(now: number): void {
    this.longestGapMs = Math.max(this.longestGapMs, now - this.lastEventAt);
    this.lastEventAt = now;
  }

  /** A save took `ms`; later estimates allow twice that. */
  saved(ms: number): void {
    this.saveMs = Math.max(this.saveMs, 2 * ms);
  }

  /** Time that finishing from `now` may take. */
  reserveMs(now: number): number {
    const gap = Math.max(this.longestGapMs, now - this.lastEventAt);
    return this.saveMs + 3 * gap + 1500;
  }

  mustStop(now: number): boolean {
    return now + this.reserveMs(now) >= this.deadline;
  }
}
