import { beforeAll, describe, expect, it } from 'vitest';
import type { GpuContext, GpuTensor } from '../src/engine/gpu/context.ts';
import { CROSS_ENTROPY_RESULT, crossEntropyForwardBackward, crossEntropyMetrics } from '../src/engine/ops/crossentropy.ts';
import * as ref from '../src/engine/reference/crossentropy.ts';
import { Rng, uniformArray } from '../src/engine/random.ts';
import { REDUCTION, expectClose, type Tolerance } from './helpers/check.ts';
import { expectGradient } from './helpers/gradcheck.ts';
import { runAndRead, testGpu } from './helpers/gpu.ts';

// Exact comparisons, for 0/1 counts and for values that must not change at all.
const EXACT: Tolerance = { atol: 0, rtol: 0 };

/**
 * dlogits are (softmax − onehot)·mask·dlossScale: most entries are probabilities of O(1/V) times dlossScale, far
 * below ELEMENTWISE's atol of 1e-5, which would then pass anything. So the absolute floor is scaled to the size of
 * those entries (1e-6·dlossScale, i.e. 1e-6 in units of probability); rtol 1e-4 covers the f32 error of lse, a
 * reduction over up to 5003 terms (about 1e-5 relative on every probability).
 */
function dlogitsTolerance(dlossScale: number): Tolerance {
  return { atol: 1e-6 * dlossScale, rtol: 1e-4 };
}

/** Logits rounded to f32 (what the GPU sees), so reference and kernel agree on every argmax. */
function f32Logits(rng: Rng, count: number, lo = -4, hi = 4): Float64Array {
  return Float64Array.from(Float32Array.from(uniformArray(rng, count, lo, hi)));
}

/** A batch: targets, a mask with zeros, and every third counted row's target set to its argmax (accuracy counts). */
function makeBatch(rng: Rng, logits: Float64Array, N: number, V: number) {
  const targets = new Uint32Array(N);
  const mask = new Float64Array(N);
  for (let r = 0; r < N; r++) {
    mask[r] = r === 0 || rng.next() < 0.7 ? 1 : 0; // row 0 always counts, so Σ mask > 0
    targets[r] = r % 3 === 0 ? ref.argmax(logits, r * V, V) : rng.int(V);
    // Ignored tokens may carry any target (an "ignore" id past the vocabulary is common); it must not be read.
    if (mask[r] === 0 && r % 2 === 0) targets[r] = 0xffffffff;
  }
  let counted = 0;
  for (const w of mask) counted += w;
  return { targets, mask, dlossScale: 1 / counted };
}

describe('cross-entropy reference', () => {
  it('dlogits are the finite-difference gradient of the mean loss', () => {
    const rng = new Rng(3);
    const N = 4;
    const V = 7;
    const logits = uniformArray(rng, N * V, -2, 2);
    const targets = [3, 0, 6, 2];
    const mask = [1, 0, 1, 1];
    const dlossScale = 1 / 3;
    const meanLoss = () => ref.crossEntropyMetrics(logits, targets, mask, dlossScale, N, V).meanLoss;
    const dlogits = new Float64Array(N * V);
    ref.crossEntropyBackward(dlogits, logits, targets, mask, dlossScale, N, V);
    expectGradient(dlogits, meanLoss, logits, 'logits');
  });

  it('uniform logits give loss log V, and metrics count only masked tokens', () => {
    const V = 11;
    const logits = new Float64Array(2 * V).fill(0.5);
    logits[V + 4] = 3; // row 1 predicts 4
    const m = ref.crossEntropyMetrics(logits, [2, 4], [1, 1], 0.5, 2, V);
    const loss = new Float64Array(2);
    ref.crossEntropyForward(loss, logits, [2, 4], [1, 1], 2, V);
    expect(loss[0]).toBeCloseTo(Math.log(V), 12);
    expect(m.correct).toBe(1); // row 0's ties resolve to column 0, not the target 2
    expect(m.tokens).toBe(2);
    const masked = ref.crossEntropyMetrics(logits, [2, 4], [1, 0], 1, 2, V);
    expect(masked.correct).toBe(0);
    expect(masked.lossSum).toBeCloseTo(Math.log(V), 12);
  });
});

describe('cross-entropy kernels on WebGPU', () => {
  let gpu: GpuContext;
  beforeAll(async () => {
    gpu = await testGpu();
  });

  function freeAll(tensors: Record<string, GpuTensor>): void {
    for (const tensor of Object.values(tensors)) gpu.free(tensor);
    expect(gpu.pool.bytesInUse).toBe(0);
  }

  /** Fused kernel and metrics on one (N, V) batch in one chunk, compared with the reference. */
  async function checkBatch(N: number, V: number, seed: number, logitRange: [number, number] = [-4, 4]): Promise<void> {
    const rng = new Rng(seed);
    const logits = f32Logits(rng, N * V, ...logitRange);
    const { targets, mask, dlossScale } = makeBatch(rng, logits, N, V);

    const loss = new Float64Array(N);
    ref.crossEntropyForward(loss, logits, targets, mask, N, V);
    const dlogits = new Float64Array(N * V);
    ref.crossEntropyBackward(dlogits, logits, targets, mask, dlossScale, N, V);
    const metrics = ref.crossEntropyMetrics(logits, targets, mask, dlossScale, N, V);
    const correct = mask.map((w, r) => (w !== 0 && ref.argmax(logits, r * V, V) === targets[r] ? w : 0));

    const t = {
      logits: gpu.upload(logits, 'logits'),
      targets: gpu.uploadU32(targets, 'targets'),
      mask: gpu.upload(mask, 'mask'),
      loss: gpu.tensor(N, 'loss'),
      correct: gpu.tensor(N, 'correct'),
      result: gpu.tensor(CROSS_ENTROPY_RESULT.length, 'result'),
    };
    const fused = await crossEntropyForwardBackward(gpu, t, { rows: N, vocab: V, dlossScale });
    const reduce = await crossEntropyMetrics(gpu, t, N, dlossScale);
    const [gDlogits, gLoss, gCorrect, gResult] = await runAndRead(gpu, [fused, reduce], t.logits, t.loss, t.correct, t.result);

    expectClose(gLoss, loss, REDUCTION, 'loss');
    expectClose(gCorrect, correct, EXACT, 'correct');
    expectClose(gDlogits, dlogits, dlogitsTolerance(dlossScale), 'dlogits');
    expectClose(
      gResult,
      [metrics.meanLoss, metrics.lossSum, metrics.correct, metrics.tokens],
      REDUCTION,
      'metrics',
    );
    expect(gResult[CROSS_ENTROPY_RESULT.correct]).toBe(metrics.correct);
    expect(gResult[CROSS_ENTROPY_RESULT.tokens]).toBe(metrics.tokens);
    freeAll(t);
  }

  for (const V of [37, 50, 1000, 5003]) {
    for (const N of [1, 7, 16]) {
      it(`loss, dlogits in place, accuracy and metrics, N=${N} V=${V}`, () => checkBatch(N, V, V * 100 + N));
    }
  }

  it('stays finite and exact for logits far from zero (naive exp would overflow)', () => checkBatch(7, 50, 9, [296, 304]));

  it('chunked calls over batch-wide buffers add up to the full batch', async () => {
    const N = 16;
    const V = 1000;
    const rng = new Rng(77);
    const logits = f32Logits(rng, N * V);
    const { targets, mask, dlossScale } = makeBatch(rng, logits, N, V);
    const loss = new Float64Array(N);
    ref.crossEntropyForward(loss, logits, targets, mask, N, V);
    const dlogits = new Float64Array(N * V);
    ref.crossEntropyBackward(dlogits, logits, targets, mask, dlossScale, N, V);
    const metrics = ref.crossEntropyMetrics(logits, targets, mask, dlossScale, N, V);

    const chunks = [
      { rowOffset: 0, rows: 7 },
      { rowOffset: 7, rows: 7 },
      { rowOffset: 14, rows: 2 },
    ];
    const t = {
      targets: gpu.uploadU32(targets, 'targets'),
      mask: gpu.upload(mask, 'mask'),
      loss: gpu.tensor(N, 'loss'),
      correct: gpu.tensor(N, 'correct'),
      result: gpu.tensor(CROSS_ENTROPY_RESULT.length, 'result'),
    };
    const chunkLogits = chunks.map((c) => gpu.upload(logits.subarray(c.rowOffset * V, (c.rowOffset + c.rows) * V), 'logits chunk'));
    const dispatches = await Promise.all(
      chunks.map((c, i) => crossEntropyForwardBackward(gpu, { ...t, logits: chunkLogits[i] }, { ...c, vocab: V, dlossScale })),
    );
    // Rows folded into a 2D grid with spare workgroups (4×2 = 8 for 7 rows): the row index must unfold correctly.
    dispatches[0].workgroups = [4, 2, 1];
    dispatches.push(await crossEntropyMetrics(gpu, t, N, dlossScale));
    const [gLoss, gResult, ...gChunks] = await runAndRead(gpu, dispatches, t.loss, t.result, ...chunkLogits);

    expectClose(gLoss, loss, REDUCTION, 'loss');
    chunks.forEach((c, i) =>
      expectClose(gChunks[i], dlogits.subarray(c.rowOffset * V, (c.rowOffset + c.rows) * V), dlogitsTolerance(dlossScale), `dlogits chunk ${i}`),
    );
    expectClose([gResult[CROSS_ENTROPY_RESULT.meanLoss]], [metrics.meanLoss], REDUCTION, 'mean loss');
    expect(gResult[CROSS_ENTROPY_RESULT.correct]).toBe(metrics.correct);
    for (const tensor of chunkLogits) gpu.free(tensor);
    freeAll(t);
  });

  it('evaluation leaves logits untouched; padded rows get zero dlogits; metrics accumulate', async () => {
    const N = 7;
    const V = 37;
    const stride = 40;
    const rng = new Rng(5);
    const logits = f32Logits(rng, N * V);
    const { targets, mask, dlossScale } = makeBatch(rng, logits, N, V);
    const loss = new Float64Array(N);
    ref.crossEntropyForward(loss, logits, targets, mask, N, V);
    const dlogits = new Float64Array(N * V);
    ref.crossEntropyBackward(dlogits, logits, targets, mask, dlossScale, N, V);
    const metrics = ref.crossEntropyMetrics(logits, targets, mask, dlossScale, N, V);

    // Padded layout (N, stride): real columns then 3 junk columns that the backward must zero.
    const padded = new Float32Array(N * stride).fill(5);
    for (let r = 0; r < N; r++) padded.set(logits.subarray(r * V, (r + 1) * V), r * stride);
    const t = {
      evalLogits: gpu.upload(padded, 'eval logits'),
      trainLogits: gpu.upload(padded, 'train logits'),
      targets: gpu.uploadU32(targets, 'targets'),
      mask: gpu.upload(mask, 'mask'),
      loss: gpu.tensor(N, 'loss'),
      correct: gpu.tensor(N, 'correct'),
      result: gpu.tensor(CROSS_ENTROPY_RESULT.length, 'result'),
    };
    const shape = { rows: N, vocab: V, rowStride: stride, dlossScale };
    const evaluate = await crossEntropyForwardBackward(gpu, { ...t, logits: t.evalLogits }, { ...shape, writeGradient: false });
    const reduce = await crossEntropyMetrics(gpu, t, N, dlossScale, { accumulate: true });
    const [gEval, gLoss, gResult] = await runAndRead(gpu, [evaluate, reduce, reduce], t.evalLogits, t.loss, t.result);
    expectClose(gEval, padded, EXACT, 'logits after evaluation');
    expectClose(gLoss, loss, REDUCTION, 'loss');
    expectClose(
      gResult,
      [2 * metrics.meanLoss, 2 * metrics.lossSum, 2 * metrics.correct, 2 * metrics.tokens],
      REDUCTION,
      'metrics accumulated twice',
    );

    const train = await crossEntropyForwardBackward(gpu, { ...t, logits: t.trainLogits }, shape);
    const [gTrain] = await runAndRead(gpu, [train], t.trainLogits);
    const expected = new Float64Array(N * stride);
    for (let r = 0; r < N; r++) expected.set(dlogits.subarray(r * V, (r + 1) * V), r * stride);
    expectClose(gTrain, expected, dlogitsTolerance(dlossScale), 'padded dlogits');
    freeAll(t);
  });

  it('accuracy takes the first column on ties, as the reference does', async () => {
    const V = 50;
    const logits = new Float64Array(3 * V).fill(0.25);
    for (const row of [1, 2]) {
      logits[row * V + 10] = 1; // columns 10 and 40 tie for the max; different threads hold them
      logits[row * V + 40] = 1;
    }
    const targets = [0, 10, 40];
    const expected = [1, 1, 0];
    const t = {
      logits: gpu.upload(logits, 'logits'),
      targets: gpu.uploadU32(targets, 'targets'),
      mask: gpu.upload([1, 1, 1], 'mask'),
      loss: gpu.tensor(3, 'loss'),
      correct: gpu.tensor(3, 'correct'),
    };
    const [gCorrect] = await runAndRead(gpu, [await crossEntropyForwardBackward(gpu, t, { rows: 3, vocab: V, dlossScale: 1 / 3 })], t.correct);
    expect(ref.crossEntropyMetrics(logits, targets, [1, 1, 1], 1, 3, V).correct).toBe(2);
    expectClose(gCorrect, expected, EXACT, 'correct');
    freeAll(t);
  });

  it('ignored tokens skip the row: garbage logits and an out-of-vocabulary target give exact zeros', async () => {
    const V = 37;
    const logits = new Float32Array(2 * V).fill(1);
    logits[V + 3] = NaN;
    logits[V + 5] = Infinity;
    const t = {
      logits: gpu.upload(logits, 'logits'),
      targets: gpu.uploadU32([2, 0xffffffff], 'targets'),
      mask: gpu.upload([1, 0], 'mask'),
      loss: gpu.tensor(2, 'loss'),
      correct: gpu.tensor(2, 'correct'),
    };
    const fused = await crossEntropyForwardBackward(gpu, t, { rows: 2, vocab: V, dlossScale: 1 });
    const [gDlogits, gLoss, gCorrect] = await runAndRead(gpu, [fused], t.logits, t.loss, t.correct);
    expectClose(gDlogits.subarray(V), new Float64Array(V), EXACT, 'dlogits of the ignored row');
    expectClose([gLoss[1], gCorrect[1]], [0, 0], EXACT, 'loss and correct of the ignored row');
    expectClose([gLoss[0]], [Math.log(V)], REDUCTION, 'loss of the counted row');
    freeAll(t);
  });

  it('rejects buffers too short for the chunk', async () => {
    const t = {
      logits: gpu.tensor(10, 'logits'),
      targets: gpu.uploadU32([0, 1], 'targets'),
      mask: gpu.upload([1, 1], 'mask'),
      loss: gpu.tensor(2, 'loss'),
      correct: gpu.tensor(2, 'correct'),
    };
    await expect(crossEntropyForwardBackward(gpu, t, { rows: 2, vocab: 6, dlossScale: 0.5 })).rejects.toThrow(/logits/);
    await expect(crossEntropyForwardBackward(gpu, t, { rows: 2, vocab: 5, rowOffset: 1, dlossScale: 0.5 })).rejects.toThrow(/targets/);
    freeAll(t);
  });
});
