// Divergence (issue 9): a run whose loss or gradients stop being finite stops with a DivergedError that names the
// step and what to change, and the checkpoints it handed out before are good ones — their weights and moments are
// finite, and loaded into a fresh trainer they train on with finite losses. Forced three ways on a tiny model: a
// learning rate far too large, a weight made huge (finite, so only the next step's loss can tell) right before a
// checkpoint, and a NaN written into a trainable weight right before a checkpoint.

import { beforeAll, describe, expect, it } from 'vitest';
import type { GpuContext } from '../../src/engine/gpu/context.ts';
import { decodeCheckpoint, encodeCheckpoint, type CheckpointFiles } from '../../src/engine/train/checkpoint.ts';
import type { StepEvent, TrainEvent } from '../../src/engine/train/metrics.ts';
import { DivergedError, divergenceAdvice, Trainer, trainConfig, type TrainConfig } from '../../src/engine/train/trainer.ts';
import { testGpu } from '../helpers/gpu.ts';
import { microModel, randomTokenData } from './helpers.ts';

const BASE: Partial<TrainConfig> = {
  mode: 'lora',
  batchSize: 2,
  maxSteps: 30,
  learningRate: 1e-2,
  schedule: 'constant',
  evalAtStart: false,
  evalEvery: 0,
  seed: 3,
  lora: { rank: 2, targets: ['c_attn', 'mlp.c_proj'] },
};

/** The micro model and random token rows (6 training rows, 2 validation rows, batches of 2×8). */
function modelAndData(gpu: GpuContext) {
  return { model: microModel(gpu), data: randomTokenData({ rows: 6, validationRows: 2, sequenceLength: 8, batchSize: 2 }) };
}

/** A trainer over modelAndData, with its step events and saved checkpoint files. */
async function setUp(gpu: GpuContext, config: Partial<TrainConfig>) {
  const { model, data } = modelAndData(gpu);
  const trainer = await Trainer.create(gpu, { model, data, config });
  const steps: StepEvent[] = [];
  trainer.subscribe((e: TrainEvent) => {
    if (e.type === 'step') steps.push(e);
  });
  const saved: { step: number; files: CheckpointFiles }[] = [];
  const onCheckpoint = (checkpoint: Parameters<typeof encodeCheckpoint>[0]) => {
    saved.push({ step: checkpoint.progress.step, files: encodeCheckpoint(checkpoint) });
  };
  return { model, data, trainer, steps, saved, onCheckpoint };
}

/** Trains and returns the error it stops with (the test fails if it does not stop with one). */
async function divergence(trainer: Trainer, options: Parameters<Trainer['train']>[0]): Promise<DivergedError> {
  const error = await trainer.train(options).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(DivergedError);
  return error as DivergedError;
}

/** Every value of every tensor of a checkpoint is a finite number. */
function expectAllFinite(files: CheckpointFiles): void {
  const checkpoint = decodeCheckpoint(files);
  for (const w of checkpoint.weights) expect(w.data.every(Number.isFinite), w.name).toBe(true);
  for (const t of checkpoint.optimizer.tensors) expect([...t.m, ...t.v].every(Number.isFinite), t.name).toBe(true);
}

/**
 * Loads saved checkpoint files into a fresh model and trainer (with `config` over the saved one), checks that the
 * validation loss is finite, and returns the losses of the next 3 steps, all finite.
 */
async function expectResumable(gpu: GpuContext, files: CheckpointFiles, config: Partial<TrainConfig> = {}): Promise<number[]> {
  const checkpoint = decodeCheckpoint(files);
  const resumed = modelAndData(gpu);
  const trainer = await Trainer.create(gpu, { model: resumed.model, data: resumed.data, checkpoint, config });
  const losses: number[] = [];
  trainer.subscribe((e) => {
    if (e.type === 'step') losses.push(e.loss);
  });
  const evaluation = await trainer.evaluate();
  expect(Number.isFinite(evaluation!.loss)).toBe(true);
  await trainer.train({ untilStep: checkpoint.progress.step + 3 });
  expect(losses).toHaveLength(3);
  expect(losses.every(Number.isFinite)).toBe(true);
  trainer.destroy();
  resumed.model.destroy();
  return losses;
}

describe('divergence advice', () => {
  it('names the learning rate and a smaller one, clipping, warmup and the data', () => {
    const off = divergenceAdvice(trainConfig({ learningRate: 0.5, maxGradNorm: 0 }));
    expect(off).toMatch(/lower the learning rate \(it is 0\.5; try 0\.05\)/);
    expect(off).toMatch(/turn gradient clipping on/);
    expect(off).toMatch(/add warmup steps/);
    expect(off).toMatch(/check the data/);
    const on = divergenceAdvice(trainConfig({ learningRate: 2e-4, maxGradNorm: 1, warmupSteps: 10 }));
    expect(on).toMatch(/\(it is 0\.0002; try 0\.00002\)/);
    expect(on).toMatch(/clip harder \(max grad norm 1; try 0\.5\)/);
    expect(on).not.toMatch(/warmup/);
  });
});

describe('a diverging run on WebGPU', () => {
  let gpu: GpuContext;
  beforeAll(async () => {
    gpu = await testGpu();
  });

  it('stops on a learning rate far too large, and its last checkpoint still loads and trains with finite losses', async () => {
    const run = await setUp(gpu, { ...BASE, learningRate: 1e9, maxGradNorm: 0 });
    const error = await divergence(run.trainer, { checkpointEvery: 1, onCheckpoint: run.onCheckpoint });
    expect(error.code).toBe('diverged');
    const bad = run.steps.find((s) => !Number.isFinite(s.loss) || !Number.isFinite(s.gradNorm));
    expect(bad, 'a step event shows the non-finite numbers').toBeDefined();
    expect(error.step).toBe(bad!.step);
    expect(error.message).toContain(`step ${error.step}`);
    expect(error.message).toMatch(/lower the learning rate \(it is 1000000000; try 100000000\)/);
    expect(error.message).toMatch(/turn gradient clipping on/);
    // Every step before it reported finite numbers; every checkpoint handed out was confirmed by a later step.
    expect(run.steps.slice(0, -1).every((s) => Number.isFinite(s.loss) && Number.isFinite(s.gradNorm))).toBe(true);
    // On this model a rate of 1e9 gives finite losses at steps 1 and 2 and NaN at step 3: the step-2 weights are
    // finite but broken, so only the step-1 checkpoint is handed out.
    expect(error.step).toBe(3);
    expect(run.saved.map((s) => s.step)).toEqual([1]);
    const last = run.saved[run.saved.length - 1];
    expect(error.lastCheckpointStep).toBe(last.step);
    expect(error.message).toContain(`last checkpoint (step ${last.step}) is unchanged`);
    for (const { files } of run.saved) expectAllFinite(files);
    await expectResumable(gpu, last.files, { learningRate: 1e-3 });
    // The trainer refuses to go on or to checkpoint its broken state.
    await expect(run.trainer.train()).rejects.toBe(error);
    await expect(run.trainer.checkpoint()).rejects.toBe(error);
    run.trainer.destroy();
    run.model.destroy();
  });

  it('never hands out a checkpoint whose weights make the next loss non-finite, though they are finite', async () => {
    const run = await setUp(gpu, BASE);
    const loraB = [...run.trainer.adapter!.tensors()].find(([name]) => name.endsWith('lora_B'))!;
    // Right before the step-6 checkpoint is read, make a LoRA B huge: finite, but the forward overflows with it.
    run.trainer.subscribe((e) => {
      if (e.type === 'step' && e.step === 6) gpu.write(loraB[1], new Float32Array(loraB[1].length).fill(3e38));
    });
    const error = await divergence(run.trainer, { checkpointEvery: 3, onCheckpoint: run.onCheckpoint });
    expect(error.step).toBe(7);
    expect(Number.isFinite(error.loss)).toBe(false);
    expect(run.saved.map((s) => s.step)).toEqual([3]);
    expect(error.lastCheckpointStep).toBe(3);
    expect(error.message).toMatch(/^Training diverged: at step 7 the loss became NaN/);
    expect(error.message).toContain('the last checkpoint (step 3) is unchanged');
    expectAllFinite(run.saved[0].files);
    // The saved checkpoint is the step-3 state: it continues exactly as an undisturbed run did after step 3.
    const undisturbed = await setUp(gpu, BASE);
    await undisturbed.trainer.train({ untilStep: 6 });
    expect(await expectResumable(gpu, run.saved[0].files)).toEqual(undisturbed.steps.slice(3, 6).map((s) => s.loss));
    undisturbed.trainer.destroy();
    undisturbed.model.destroy();
    run.trainer.destroy();
    run.model.destroy();
  });

  it('refuses to checkpoint a NaN weight and says which one', async () => {
    const run = await setUp(gpu, BASE);
    const [name, loraA] = [...run.trainer.adapter!.tensors()][0];
    run.trainer.subscribe((e) => {
      if (e.type === 'step' && e.step === 4) {
        const values = new Float32Array(loraA.length);
        values[1] = NaN;
        gpu.write(loraA, values);
      }
    });
    const error = await divergence(run.trainer, { checkpointEvery: 2, onCheckpoint: run.onCheckpoint });
    expect(error.step).toBe(4);
    expect(error.message).toContain(`after step 4 the weight ${name} holds values that are not finite numbers`);
    expect(error.message).toContain('the last checkpoint (step 2) is unchanged');
    expect(run.saved.map((s) => s.step)).toEqual([2]);
    expectAllFinite(run.saved[0].files);
    run.trainer.destroy();
    run.model.destroy();
  });
});
