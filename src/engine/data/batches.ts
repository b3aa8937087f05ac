// Token sequences to training batches for next-token prediction. A row holds one example (padding) or several
// examples back to back (packing); a batch is B rows of T positions:
//   inputIds[b*T + t] = row[t],  targets[b*T + t] = row[t + 1],  lossMask[b*T + t] = trainMask[t + 1]
// so the mask is applied on the target side. Positions past a row's end hold the pad id with mask 0, and so do the
// empty rows that fill a last, partial batch. Rows are fixed once; each epoch visits them in a seeded order that
// depends only on (seed, epoch), so a run resumed at any step sees the same batches.
import { TunelabError } from '../errors.ts';
import { Rng } from '../random.ts';
import { windowLength, type TokenSequence } from './tokenize.ts';

export interface Batch {
  /** (B*T) token ids the model reads. */
  inputIds: Uint32Array;
  /** (B*T) the token that follows each input position. */
  targets: Uint32Array;
  /** (B*T) 1 where the position counts for the loss, else 0. */
  lossMask: Float32Array;
  /** Positions with lossMask 1: divide the summed loss by this. */
  lossTokens: number;
  /** Rows holding data; the rest of the B rows are padding. */
  rows: number;
}

export interface BatchOptions {
  /** B: rows per batch. */
  batchSize: number;
  /** The model's context (n_positions), or a smaller limit chosen to save memory. */
  context: number;
  /** Several examples per row (fewer steps, examples see the ones before them) instead of one padded example. */
  packing: boolean;
  /** Seeds the per-epoch order of the training rows. */
  seed: number;
  /** Filler for positions without data (GPT-2 convention: the end-of-text id); always masked out. */
  padId: number;
  /** T. Default: the longest row less one, at most `context`, so short data does not pay for a long context. */
  sequenceLength?: number;
}

interface Row {
  ids: Uint32Array;
  trainMask: Uint8Array;
  lossTokens: number;
}

export class DataBatcher {
  readonly batchSize: number;
  /** T: positions per row. */
  readonly sequenceLength: number;
  readonly stepsPerEpoch: number;
  readonly trainRows: number;
  readonly validationRows: number;
  /** Positions that count for the loss in one epoch of training / in the whole validation set. */
  readonly trainLossTokens: number;
  readonly validationLossTokens: number;
  private readonly train: Row[];
  private readonly validation: Row[];
  private readonly seed: number;
  private readonly padId: number;
  private orderEpoch = -1;
  private order = new Uint32Array(0);
  private validationCache: Batch[] | undefined;

  constructor(train: TokenSequence[], validation: TokenSequence[], options: BatchOptions) {
    const { batchSize, context, packing } = options;
    const explicitT = options.sequenceLength;
    for (const [name, value] of [['batch size', batchSize], ['context', context], ['sequence length', explicitT]] as const) {
      if (value !== undefined && (!Number.isInteger(value) || value < 1)) {
        throw new TunelabError('bad-data', `${name} must be a positive integer, got ${value}`);
      }
    }
    const capacity = windowLength(Math.min(context, explicitT ?? context));
    const trainRows = packing ? packRows(train, capacity) : train.map((s) => concatRow([s], capacity));
    const validationRows = packing ? packRows(validation, capacity) : validation.map((s) => concatRow([s], capacity));
    let longest = 1;
    for (const row of [...trainRows, ...validationRows]) longest = Math.max(longest, row.ids.length - 1);
    this.sequenceLength = explicitT ?? Math.min(context, longest);
    const T = this.sequenceLength;
    for (const row of [...trainRows, ...validationRows]) row.lossTokens = countLossTokens(row, T);
    // Rows with nothing to learn (all weight 0, or answers cut off) would only cost time.
    this.train = trainRows.filter((row) => row.lossTokens > 0);
    this.validation = validationRows.filter((row) => row.lossTokens > 0);
    this.batchSize = batchSize;
    this.seed = options.seed >>> 0;
    this.padId = options.padId;
    this.trainRows = this.train.length;
    this.validationRows = this.validation.length;
    this.stepsPerEpoch = Math.ceil(this.trainRows / batchSize);
    this.trainLossTokens = this.train.reduce((sum, row) => sum + row.lossTokens, 0);
    this.validationLossTokens = this.validation.reduce((sum, row) => sum + row.lossTokens, 0);
  }

  /** A batch's worth of zeroed arrays, to fill again and again with trainBatch(step, batch). */
  createBatch(): Batch {
    const n = this.batchSize * this.sequenceLength;
    return { inputIds: new Uint32Array(n), targets: new Uint32Array(n), lossMask: new Float32Array(n), lossTokens: 0, rows: 0 };
  }

  epochOf(step: number): number {
    return Math.floor(step / Math.max(1, this.stepsPerEpoch));
  }

  /** The order in which epoch `epoch` visits the training rows (a seeded permutation). */
  epochOrder(epoch: number): Uint32Array {
    if (epoch !== this.orderEpoch) {
      const order = Array.from({ length: this.trainRows }, (_, i) => i);
      new Rng(mixSeed(this.seed, epoch)).shuffle(order);
      this.order = Uint32Array.from(order);
      this.orderEpoch = epoch;
    }
    return this.order;
  }

  /** The training batch of global step `step` (0-based; epoch = step / stepsPerEpoch), filled into `out`. */
  trainBatch(step: number, out: Batch = this.createBatch()): Batch {
    if (this.stepsPerEpoch === 0) throw new TunelabError('bad-data', 'there are no training examples to make batches from');
    const order = this.epochOrder(this.epochOf(step));
    const first = (step % this.stepsPerEpoch) * this.batchSize;
    const rows: Row[] = [];
    for (let i = first; i < Math.min(first + this.batchSize, order.length); i++) rows.push(this.train[order[i]]);
    return this.fill(rows, out);
  }

  /** The validation set as batches, in file order; the same arrays every call, so losses compare across steps. */
  validationBatches(): Batch[] {
    if (!this.validationCache) {
      this.validationCache = [];
      for (let first = 0; first < this.validation.length; first += this.batchSize) {
        this.validationCache.push(this.fill(this.validation.slice(first, first + this.batchSize), this.createBatch()));
      }
    }
    return this.validationCache;
  }

  private fill(rows: Row[], out: Batch): Batch {
    const T = this.sequenceLength;
    const B = this.batchSize;
    if (out.inputIds.length !== B * T) {
      throw new TunelabError('bad-data', `batch arrays hold ${out.inputIds.length} positions, need ${B * T}`);
    }
    out.inputIds.fill(this.padId);
    out.targets.fill(this.padId);
    out.lossMask.fill(0);
    let lossTokens = 0;
    rows.forEach((row, b) => {
      const positions = Math.min(row.ids.length - 1, T);
      for (let t = 0; t < positions; t++) {
        const at = b * T + t;
        out.inputIds[at] = row.ids[t];
        out.targets[at] = row.ids[t + 1];
        out.lossMask[at] = row.trainMask[t + 1];
        lossTokens += row.trainMask[t + 1];
      }
    });
    out.lossTokens = lossTokens;
    out.rows = rows.length;
    return out;
  }
}

function concatRow(sequences: TokenSequence[], capacity: number): Row {
  let length = 0;
  for (const s of sequences) length += s.ids.length;
  length = Math.min(length, capacity);
  const ids = new Uint32Array(length);
  const trainMask = new Uint8Array(length);
  let at = 0;
  for (const s of sequences) {
    const take = Math.min(s.ids.length, length - at);
    ids.set(s.ids.subarray(0, take), at);
    trainMask.set(s.trainMask.subarray(0, take), at);
    at += take;
  }
  return { ids, trainMask, lossTokens: 0 };
}

/** Next-fit packing in data order: a sequence that does not fit in the current row starts the next one. */
function packRows(sequences: TokenSequence[], capacity: number): Row[] {
  const rows: Row[] = [];
  let current: TokenSequence[] = [];
  let used = 0;
  for (const s of sequences) {
    const length = Math.min(s.ids.length, capacity);
    if (used + length > capacity && current.length > 0) {
      rows.push(concatRow(current, capacity));
      current = [];
      used = 0;
    }
    current.push(s);
    used += length;
  }
  if (current.length > 0) rows.push(concatRow(current, capacity));
  return rows;
}

function countLossTokens(row: Row, T: number): number {
  let count = 0;
  for (let t = 1; t <= Math.min(row.ids.length - 1, T); t++) count += row.trainMask[t];
  return count;
}

/** Seed of an epoch's shuffle: a hash of (seed, epoch), so nearby seeds and epochs give unrelated orders. */
function mixSeed(seed: number, epoch: number): number {
  let h = Math.imul(seed ^ 0x9e3779b9, 0x85ebca6b) ^ Math.imul(epoch + 1, 0xc2b2ae35);
  h = Math.imul(h ^ (h >>> 16), 0x7feb352d);
  return (h ^ (h >>> 15)) >>> 0;
}
