// The trainer on WebGPU with a tiny random GPT-2 (2 layers, width 32, byte-level tokens) and a question→answer task:
// the loss falls and greedy generation gives the learned answers; gradient accumulation equals the big batch; the same
// seed gives the same losses; a run stopped at step k and restored from its checkpoint into a fresh model and trainer
// continues with exactly the losses of the uninterrupted run; pause, resume and cancel work between steps.

import { beforeAll, describe, expect, it } from 'vitest';
import type { GpuContext } from '../../src/engine/gpu/context.ts';
import { decodeCheckpoint, encodeCheckpoint } from '../../src/engine/train/checkpoint.ts';
import type { EvalEvent, StepEvent, TrainEvent } from '../../src/engine/train/metrics.ts';
import { Trainer, trainConfig, type TrainConfig } from '../../src/engine/train/trainer.ts';
import { expectClose } from '../helpers/check.ts';
import { testGpu } from '../helpers/gpu.ts';
import { greedyAnswers, QA, qaData, tinyModel } from './tiny.ts';

const PAIRS = QA.slice(0, 4);

/** Collects a trainer's events by type. */
function record(trainer: Trainer) {
  const events: TrainEvent[] = [];
  trainer.subscribe((e) => events.push(e));
  return {
    events,
    steps: () => events.filter((e): e is StepEvent => e.type === 'step'),
    evals: () => events.filter((e): e is EvalEvent => e.type === 'eval'),
  };
}

describe('trainConfig', () => {
  it('fills defaults, keeps overrides and names a bad setting', () => {
    const c = trainConfig({ learningRate: 1e-3, lora: { rank: 4 } });
    expect(c.learningRate).toBe(1e-3);
    expect(c.schedule).toBe('linear');
    expect(c.lora).toEqual({ rank: 4 });
    expect(() => trainConfig({ gradientAccumulationSteps: 0 })).toThrow(/gradientAccumulationSteps/);
    expect(() => trainConfig({ schedule: 'exponential' as TrainConfig['schedule'] })).toThrow(/kind/);
    expect(() => trainConfig({ lora: { rank: 0 } })).toThrow(/rank/);
  });
});

describe('Trainer on WebGPU', () => {
  let gpu: GpuContext;
  beforeAll(async () => {
    gpu = await testGpu();
  });

  it('drives the loss well down on a small task and then answers the questions it learned', async () => {
    const model = tinyModel(gpu);
    const data = qaData({ batchSize: 4, pairs: PAIRS });
    const trainer = await Trainer.create(gpu, {
      model,
      data: data.batcher,
      config: { mode: 'full', batchSize: 4, learningRate: 1e-2, schedule: 'constant', warmupSteps: 5, maxSteps: 32, evalEvery: 16 },
    });
    const log = record(trainer);
    const summary = await trainer.train();
    expect(summary.reason).toBe('completed');
    expect(summary.step).toBe(32);

    const steps = log.steps();
    expect(steps.map((s) => s.step)).toEqual(Array.from({ length: 32 }, (_, i) => i + 1));
    expect(steps[0].lr).toBeCloseTo(1e-2 / 5, 12); // warmup: step 1 of 5
    expect(steps[10].lr).toBe(1e-2);
    expect(steps.every((s) => s.gradNorm > 0 && s.tokensPerSecond > 0 && s.elapsedMs > 0)).toBe(true);
    const first = steps[0].loss;
    const last = steps[steps.length - 1].loss;
    expect(first).toBeGreaterThan(4); // ln(257) ≈ 5.5 for a random model
    expect(last).toBeLessThan(0.1 * first);

    // Evaluations at steps 0 (before training), 16 and 32, on the same fixed batches.
    const evals = log.evals();
    expect(evals.map((e) => e.step)).toEqual([0, 16, 32]);
    expect(new Set(evals.map((e) => e.tokens)).size).toBe(1);
    expect(evals[2].loss).toBeLessThan(0.1 * evals[0].loss);
    expect(evals[2].perplexity).toBeCloseTo(Math.exp(evals[2].loss), 10);
    expect(evals[2].perplexity).toBeLessThan(2);
    expect(evals[2].accuracy).toBeGreaterThan(0.9);
    expect(log.events[0].type).toBe('start');
    expect(log.events[log.events.length - 1]).toMatchObject({ type: 'end', reason: 'completed', step: 32 });

    const answers = await greedyAnswers(gpu, model, undefined, PAIRS.map(([q]) => q));
    expect(answers).toEqual(PAIRS.map(([, a]) => a));
    trainer.destroy();
    model.destroy();
  });

  it('accumulates gradients as the mean over the whole effective batch: 2 × 2 rows equals one batch of 4', async () => {
    // Answers of different lengths, so the micro-batches count different numbers of tokens.
    const pairs: [string, string][] = [['a?', 'x'], ['b?', 'yyyyyy'], ['c?', 'zz'], ['d?', 'wwwwwwwwww']];
    const weightsAfter = async (batchSize: number, accumulation: number) => {
      const model = tinyModel(gpu);
      const data = qaData({ batchSize, pairs });
      const trainer = await Trainer.create(gpu, {
        model,
        data: data.batcher,
        config: { mode: 'lora', batchSize, gradientAccumulationSteps: accumulation, learningRate: 1e-2, maxSteps: 2, evalAtStart: false, evalEvery: 0, maxGradNorm: 0, lora: { rank: 4, targets: ['c_attn', 'mlp.c_proj'] } },
      });
      const log = record(trainer);
      await trainer.train();
      const weights = await trainer.readTrainable();
      trainer.destroy();
      model.destroy();
      return { weights, losses: log.steps().map((s) => s.loss), norms: log.steps().map((s) => s.gradNorm) };
    };
    const whole = await weightsAfter(4, 1);
    const accumulated = await weightsAfter(2, 2);
    // Same data, same order (the epoch's row order does not depend on the batch size); only the summation order of the
    // gradient differs, so the norms agree to f32 reduction accuracy and the weights to a small fraction of a step.
    expectClose(accumulated.losses, whole.losses, { atol: 1e-5, rtol: 1e-5 }, 'losses');
    expectClose(accumulated.norms, whole.norms, { atol: 1e-6, rtol: 1e-4 }, 'gradient norms');
    expect(whole.norms[0]).toBeGreaterThan(0);
    for (const [name, w] of whole.weights) expectClose(accumulated.weights.get(name)!, w, { atol: 1e-5, rtol: 1e-4 }, name);
  });

  it('is deterministic, and a run restored from a checkpoint at step 3 continues with identical losses', async () => {
    const config: Partial<TrainConfig> = {
      mode: 'lora',
      batchSize: 2,
      gradientAccumulationSteps: 2,
      learningRate: 1e-2,
      schedule: 'cosine',
      warmupSteps: 2,
      maxSteps: 6,
      evalEvery: 3,
      weightDecay: 0.01,
      seed: 7,
      lora: { rank: 4, alpha: 8, dropout: 0.1, targets: ['c_attn', 'c_fc'] },
    };
    const start = async (checkpoint?: ReturnType<typeof decodeCheckpoint>) => {
      const model = tinyModel(gpu);
      const data = qaData({ batchSize: 2, pairs: QA, seed: 3 });
      const trainer = await Trainer.create(gpu, { model, data: data.batcher, config: checkpoint ? {} : config, checkpoint });
      return { model, trainer, log: record(trainer) };
    };

    // Uninterrupted: 6 steps × 2 micro-batches of 2 rows = 4 epochs of the 6 pairs (3 micro-batches each).
    const a = await start();
    await a.trainer.train();
    const uninterrupted = a.log.steps().map((s) => s.loss);
    const uninterruptedEvals = a.log.evals().map((e) => e.loss);
    expect(uninterrupted).toHaveLength(6);
    expect(a.trainer.epoch).toBe(4);

    // Stopped at step 3, checkpointed through bytes, restored into a fresh model and trainer, continued.
    const b = await start();
    const first = await b.trainer.train({ untilStep: 3 });
    expect(first.reason).toBe('stopped');
    const checkpoint = await b.trainer.checkpoint();
    expect(checkpoint.progress).toMatchObject({ step: 3, microStep: 6, epoch: 2 });
    const files = encodeCheckpoint(checkpoint);
    b.trainer.destroy();
    b.model.destroy();

    const c = await start(decodeCheckpoint(files));
    expect(c.trainer.step).toBe(3);
    expect(c.trainer.config.seed).toBe(7);
    const rest = await c.trainer.train();
    expect(rest.reason).toBe('completed');
    const resumed = [...b.log.steps(), ...c.log.steps()].map((s) => s.loss);
    // Bit-for-bit: same seed, same device, same order of every operation.
    expect(resumed).toEqual(uninterrupted);
    expect([...b.log.evals(), ...c.log.evals()].map((e) => e.loss)).toEqual(uninterruptedEvals);
    const finalA = await a.trainer.readTrainable();
    const finalC = await c.trainer.readTrainable();
    for (const [name, w] of finalA) expect(Array.from(finalC.get(name)!)).toEqual(Array.from(w));
    // The learning rates continue the schedule where it stopped.
    expect(c.log.steps().map((s) => s.lr)).toEqual(a.log.steps().slice(3).map((s) => s.lr));
    for (const run of [a, c]) {
      run.trainer.destroy();
      run.model.destroy();
    }
  });

  it('pauses, resumes and cancels between steps, and gives every buffer back when destroyed', async () => {
    const bytesBefore = gpu.pool.bytesInUse;
    const model = tinyModel(gpu);
    const data = qaData({ batchSize: 2, pairs: PAIRS });
    const trainer = await Trainer.create(gpu, {
      model,
      data: data.batcher,
      config: { batchSize: 2, maxSteps: 50, evalAtStart: false, evalEvery: 0, lora: { rank: 2 } },
    });
    const log = record(trainer);
    let pausedAt = -1;
    trainer.subscribe((e) => {
      if (e.type === 'step' && e.step === 2 && pausedAt < 0) trainer.pause();
      if (e.type === 'paused') {
        pausedAt = e.step;
        expect(trainer.isPaused).toBe(true);
        // While paused, nothing runs: resume a little later.
        setTimeout(() => trainer.resume(), 50);
      }
      if (e.type === 'step' && pausedAt >= 0 && e.step === pausedAt + 2) trainer.cancel();
    });
    const summary = await trainer.train();
    expect(summary.reason).toBe('cancelled');
    const types = log.events.map((e) => e.type);
    expect(types.indexOf('paused')).toBeGreaterThan(0);
    expect(types.indexOf('resumed')).toBeGreaterThan(types.indexOf('paused'));
    const stepsWhilePaused = log.events.slice(types.indexOf('paused'), types.indexOf('resumed')).filter((e) => e.type === 'step');
    expect(stepsWhilePaused).toHaveLength(0);
    expect(summary.step).toBeLessThan(50);
    expect(summary.step).toBeGreaterThanOrEqual(pausedAt + 2);
    expect(log.steps().map((s) => s.step)).toEqual(Array.from({ length: summary.step }, (_, i) => i + 1));
    expect(log.events[log.events.length - 1]).toMatchObject({ type: 'end', reason: 'cancelled' });
    // A cancelled run can still be checkpointed and continued.
    const checkpoint = await trainer.checkpoint();
    expect(checkpoint.progress.step).toBe(summary.step);
    trainer.destroy();
    model.destroy();
    expect(gpu.pool.bytesInUse).toBe(bytesBefore);
  });
});
