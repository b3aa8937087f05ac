// Batches for next-token prediction: layout of inputs, targets and masks (padding and packing), per-epoch seeded
// shuffles, fixed validation batches, and the seeded train/validation split.
import { describe, expect, it } from 'vitest';
import { DataBatcher, prepareDataset, splitIndices, type TokenSequence } from '../../src/engine/data/index.ts';
import { TunelabError } from '../../src/engine/errors.ts';
import { byteTokenizer, jsonl, manyChats } from './helpers.ts';

const PAD = 99;

function sequence(ids: number[], trainMask: number[], line = 1): TokenSequence {
  return {
    ids: Uint32Array.from(ids),
    trainMask: Uint8Array.from(trainMask),
    fullLength: ids.length,
    origin: { source: 'train', line, index: line - 1 },
  };
}

// Two "examples": prompt tokens (mask 0) then answer tokens (mask 1).
const a = sequence([1, 2, 3, 4], [0, 0, 1, 1], 1);
const b = sequence([5, 6, 7], [0, 1, 1], 2);

function rowsOf(values: ArrayLike<number>, T: number): number[][] {
  const out: number[][] = [];
  for (let i = 0; i < values.length; i += T) out.push(Array.from(values).slice(i, i + T));
  return out;
}

describe('DataBatcher', () => {
  it('pads one example per row; targets are inputs shifted by one; the mask sits on the targets', () => {
    const batcher = new DataBatcher([a, b], [], { batchSize: 2, context: 16, packing: false, seed: 0, padId: PAD });
    expect(batcher.sequenceLength).toBe(3); // longest sequence (4) less one
    expect(batcher.stepsPerEpoch).toBe(1);
    const batch = batcher.trainBatch(0);
    const order = [...batcher.epochOrder(0)];
    const expected = {
      0: { inputs: [1, 2, 3], targets: [2, 3, 4], mask: [0, 1, 1] },
      1: { inputs: [5, 6, PAD], targets: [6, 7, PAD], mask: [1, 1, 0] },
    } as const;
    expect(rowsOf(batch.inputIds, 3)).toEqual(order.map((r) => expected[r as 0 | 1].inputs));
    expect(rowsOf(batch.targets, 3)).toEqual(order.map((r) => expected[r as 0 | 1].targets));
    expect(rowsOf(batch.lossMask, 3)).toEqual(order.map((r) => expected[r as 0 | 1].mask));
    expect(batch.lossTokens).toBe(4);
    expect(batch.rows).toBe(2);
    expect(batcher.trainLossTokens).toBe(4);
  });

  it('packs several examples into a row when asked', () => {
    const batcher = new DataBatcher([a, b, a], [], { batchSize: 1, context: 7, packing: true, seed: 0, padId: PAD });
    // Capacity 8 tokens: [a b] (7 tokens) then [a] (4).
    expect(batcher.trainRows).toBe(2);
    expect(batcher.sequenceLength).toBe(6);
    const packed = [0, 1].map((step) => batcher.trainBatch(step)).find((batch) => batch.inputIds[4] === 5)!;
    expect([...packed.inputIds]).toEqual([1, 2, 3, 4, 5, 6]);
    expect([...packed.targets]).toEqual([2, 3, 4, 5, 6, 7]);
    // Predicting b's first token (a prompt token) does not count.
    expect([...packed.lossMask]).toEqual([0, 1, 1, 0, 1, 1]);
  });

  it('fills a last, partial batch with masked padding rows', () => {
    const batcher = new DataBatcher([a, b, a], [], { batchSize: 2, context: 16, packing: false, seed: 3, padId: PAD });
    expect(batcher.stepsPerEpoch).toBe(2);
    const last = batcher.trainBatch(1);
    expect(last.rows).toBe(1);
    expect([...last.inputIds.slice(3)]).toEqual([PAD, PAD, PAD]);
    expect([...last.lossMask.slice(3)]).toEqual([0, 0, 0]);
    expect(batcher.trainBatch(0).lossTokens + last.lossTokens).toBe(batcher.trainLossTokens);
  });

  it('visits every row once per epoch, in an order fixed by (seed, epoch)', () => {
    const sequences = Array.from({ length: 20 }, (_, i) => sequence([i, 100 + i], [0, 1], i + 1));
    const options = { batchSize: 3, context: 8, packing: false, seed: 42, padId: PAD };
    const batcher = new DataBatcher(sequences, [], options);
    expect(batcher.stepsPerEpoch).toBe(7);
    const seen = (epoch: number) => {
      const firsts: number[] = [];
      for (let s = 0; s < batcher.stepsPerEpoch; s++) {
        const batch = batcher.trainBatch(epoch * batcher.stepsPerEpoch + s);
        for (let r = 0; r < batch.rows; r++) firsts.push(batch.inputIds[r * batcher.sequenceLength]);
      }
      return firsts;
    };
    const epoch0 = seen(0);
    const epoch1 = seen(1);
    expect([...epoch0].sort((x, y) => x - y)).toEqual(Array.from({ length: 20 }, (_, i) => i));
    expect([...epoch1].sort((x, y) => x - y)).toEqual(Array.from({ length: 20 }, (_, i) => i));
    expect(epoch1).not.toEqual(epoch0);
    // A fresh batcher (a resumed run) gives the same batch for the same step; another seed another order.
    const resumed = new DataBatcher(sequences, [], options);
    expect([...resumed.trainBatch(9).inputIds]).toEqual([...batcher.trainBatch(9).inputIds]);
    expect([...new DataBatcher(sequences, [], { ...options, seed: 43 }).epochOrder(0)]).not.toEqual([...batcher.epochOrder(0)]);
  });

  it('fills a given batch in place, so a trainer allocates nothing per step', () => {
    const batcher = new DataBatcher([a, b], [], { batchSize: 1, context: 16, packing: false, seed: 0, padId: PAD });
    const reusable = batcher.createBatch();
    const first = batcher.trainBatch(0, reusable);
    const second = batcher.trainBatch(1, reusable);
    expect(first).toBe(reusable);
    expect(second.inputIds).toBe(reusable.inputIds);
    expect(() => batcher.trainBatch(0, { ...reusable, inputIds: new Uint32Array(1) })).toThrow(TunelabError);
  });

  it('keeps validation batches fixed and in file order', () => {
    const batcher = new DataBatcher([a], [b, a, b], { batchSize: 2, context: 16, packing: false, seed: 0, padId: PAD });
    const batches = batcher.validationBatches();
    expect(batches).toHaveLength(2);
    expect(batcher.validationBatches()).toBe(batches);
    expect(rowsOf(batches[0].inputIds, 3)).toEqual([[5, 6, PAD], [1, 2, 3]]);
    expect(batches[1].rows).toBe(1);
    expect(batches.reduce((s, x) => s + x.lossTokens, 0)).toBe(batcher.validationLossTokens);
    expect(batcher.validationLossTokens).toBe(2 + 2 + 2);
  });

  it('leaves out rows with nothing to learn, and cuts rows to an explicit sequence length', () => {
    const silent = sequence([1, 2, 3], [0, 0, 0]);
    const batcher = new DataBatcher([a, silent], [], { batchSize: 4, context: 16, packing: false, seed: 0, padId: PAD, sequenceLength: 2 });
    expect(batcher.trainRows).toBe(1);
    expect(batcher.sequenceLength).toBe(2);
    const batch = batcher.trainBatch(0);
    expect([...batch.inputIds.slice(0, 2)]).toEqual([1, 2]);
    expect([...batch.targets.slice(0, 2)]).toEqual([2, 3]);
    expect(batch.lossTokens).toBe(1);
  });

  it('rejects impossible options and batching no data', () => {
    expect(() => new DataBatcher([a], [], { batchSize: 0, context: 8, packing: false, seed: 0, padId: 0 })).toThrow(TunelabError);
    expect(() => new DataBatcher([a], [], { batchSize: 1, context: 0, packing: false, seed: 0, padId: 0 })).toThrow(/context/);
    expect(() => new DataBatcher([], [], { batchSize: 1, context: 8, packing: false, seed: 0, padId: 0 }).trainBatch(0)).toThrow(/no training examples/);
  });
});

describe('splitIndices', () => {
  it('holds out round(n * fraction), at least one, never all; seeded; both sides in order', () => {
    const split = splitIndices(50, 0.1, 7);
    expect(split.validation).toHaveLength(5);
    expect([...split.train, ...split.validation].sort((x, y) => x - y)).toEqual(Array.from({ length: 50 }, (_, i) => i));
    expect(split.train).toEqual([...split.train].sort((x, y) => x - y));
    expect(splitIndices(50, 0.1, 7)).toEqual(split);
    expect(splitIndices(50, 0.1, 8).validation).not.toEqual(split.validation);
    expect(splitIndices(5, 0.1, 0).validation).toHaveLength(1);
    expect(splitIndices(1, 0.5, 0).validation).toHaveLength(0);
    expect(splitIndices(4, 0.99, 0).validation).toHaveLength(3);
    expect(splitIndices(10, 0, 0).validation).toHaveLength(0);
  });
});

describe('prepareDataset batching', () => {
  it('reports the steps and loss tokens the batcher will produce, padded or packed', () => {
    const train = jsonl(...manyChats(30));
    for (const packing of [false, true]) {
      const prepared = prepareDataset({ train }, byteTokenizer(), { batchSize: 4, packing, context: 128, seed: 5 });
      const { stats } = prepared.report;
      expect(stats.trainExamples + stats.validationExamples).toBe(30);
      expect(stats.validationExamples).toBe(3);
      expect(stats.stepsPerEpoch).toBe(prepared.batcher.stepsPerEpoch);
      let lossTokens = 0;
      for (let step = 0; step < stats.stepsPerEpoch; step++) lossTokens += prepared.batcher.trainBatch(step).lossTokens;
      expect(lossTokens).toBe(stats.lossTokens);
      if (!packing) expect(stats.stepsPerEpoch).toBe(Math.ceil(27 / 4));
      else expect(stats.stepsPerEpoch).toBeLessThan(Math.ceil(27 / 4));
      expect(stats.lossTokens).toBe(prepared.train.reduce((sum, s) => sum + s.trainMask.reduce((x, y) => x + y, 0), 0));
    }
  });

  it('splits the same way for the same seed and differently for another', () => {
    const train = jsonl(...manyChats(40));
    const lines = (seed: number) => prepareDataset({ train }, byteTokenizer(), { seed }).validation.map((s) => s.origin.line);
    expect(lines(1)).toEqual(lines(1));
    expect(lines(1)).not.toEqual(lines(2));
    expect(lines(1)).toHaveLength(4);
  });
});
