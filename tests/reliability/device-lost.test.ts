// Lost device (issue 9): the resilient supervisor (src/engine/train/resilient.ts) on Dawn + SwiftShader. The device is
// destroyed mid-run (`gpu.device.destroy()`, what a driver reset looks like to WebGPU); the run gets a new device,
// restores its last checkpoint, finishes, and — the trainer being deterministic — its losses after the restore and
// its final weights equal those of an uninterrupted run. When new devices keep failing, it gives up after
// maxRecoveries attempts with a message that says what was kept.
//
// Devices compile their pipelines anew (slow on SwiftShader), so the tests share them: the uninterrupted run and the
// start of the interrupted one use the shared test device, which the interrupted run destroys; the giving-up test
// starts on the device the recovery acquired.

import { describe, expect, it } from 'vitest';
import { TunelabError } from '../../src/engine/errors.ts';
import { GpuContext } from '../../src/engine/gpu/context.ts';
import { Gpt2Model } from '../../src/engine/model/gpt2.ts';
import { nodeGpu } from '../../src/engine/gpu/node.ts';
import { ResilientTrainer, type ResilientEvent, type ResilientTrainingOptions } from '../../src/engine/train/resilient.ts';
import type { TrainingCheckpoint } from '../../src/engine/train/checkpoint.ts';
import type { EvalEvent, StepEvent } from '../../src/engine/train/metrics.ts';
import type { TrainConfig } from '../../src/engine/train/trainer.ts';
import { testGpu } from '../helpers/gpu.ts';
import { microConfig, microWeights, randomTokenData } from './helpers.ts';

const CONFIG: Partial<TrainConfig> = {
  mode: 'lora',
  batchSize: 2,
  maxSteps: 12,
  learningRate: 1e-2,
  schedule: 'cosine',
  warmupSteps: 2,
  evalAtStart: false,
  evalEvery: 4,
  seed: 5,
  lora: { rank: 2, dropout: 0.1, targets: ['c_attn', 'c_fc'] },
};

/** Options for a supervised run of the micro model on 6 random rows (3 micro-batches an epoch). */
function supervised(gpu: GpuContext, acquireGpu: () => Promise<GpuContext>, overrides: Partial<ResilientTrainingOptions> = {}) {
  const config = microConfig();
  const saved: TrainingCheckpoint[] = [];
  const events: ResilientEvent[] = [];
  const trainer = new ResilientTrainer({
    gpu,
    acquireGpu,
    model: { config, weights: microWeights(config) },
    data: randomTokenData({ rows: 6, validationRows: 2, sequenceLength: 8, batchSize: 2 }),
    config: CONFIG,
    checkpointEvery: 4,
    checkpointAtEpochEnd: true,
    retryDelayMs: 0,
    onCheckpoint: (checkpoint) => {
      saved.push(checkpoint);
    },
    ...overrides,
  });
  trainer.subscribe((e) => events.push(e));
  const ofType = <T extends ResilientEvent['type']>(type: T) =>
    events.filter((e): e is Extract<ResilientEvent, { type: T }> => e.type === type);
  return { trainer, saved, events, ofType };
}

const freshDevice = async () => GpuContext.acquire(await nodeGpu());

describe('a run whose GPU device is lost', () => {
  let spare: GpuContext | undefined;
  /** The uninterrupted run's losses, for the chunked run below. */
  let referenceLosses: number[] = [];

  it('gets a new device, continues from its checkpoint and finishes exactly as an uninterrupted run', async () => {
    const shared = await testGpu();
    const noDevices = async (): Promise<GpuContext> => {
      throw new Error('the uninterrupted run must not need a new device');
    };
    const uninterrupted = supervised(shared, noDevices);
    const reference = await uninterrupted.trainer.train();
    expect(reference).toMatchObject({ reason: 'completed', step: 12, deviceLosses: 0 });
    // Checkpoints every 4 steps and at each epoch's end (3 micro-batches an epoch), never after the last step.
    expect(uninterrupted.ofType('checkpoint').map((e) => e.step)).toEqual([3, 4, 6, 8, 9]);
    expect(uninterrupted.saved.map((c) => c.progress.step)).toEqual([3, 4, 6, 8, 9]);
    const referenceSteps = uninterrupted.ofType('step');
    referenceLosses = referenceSteps.map((s) => s.loss);
    const referenceEvals = uninterrupted.ofType('eval');
    const referenceWeights = await uninterrupted.trainer.trainer!.readTrainable();
    uninterrupted.trainer.destroy();

    // The same run, with the device destroyed once step 7 has been reported.
    let acquired = 0;
    const interrupted = supervised(shared, async () => {
      acquired++;
      // The first new device fails to come up, as a reset driver may; the second works.
      if (acquired === 1) throw new TunelabError('no-adapter', 'no GPU adapter was offered');
      return freshDevice();
    });
    interrupted.trainer.subscribe((e) => {
      if (e.type === 'step' && e.step === 7 && !shared.lost) shared.device.destroy();
    });
    const summary = await interrupted.trainer.train();
    expect(summary).toMatchObject({ reason: 'completed', step: 12, totalSteps: 12, deviceLosses: 1 });
    expect(acquired).toBe(2);
    expect(shared.lost).toBe(true);
    expect(interrupted.trainer.gpu).not.toBe(shared);

    const lost = interrupted.ofType('device-lost');
    expect(lost).toHaveLength(1);
    const { resumeStep } = lost[0];
    expect([3, 4, 6]).toContain(resumeStep); // the last checkpoint confirmed before the loss
    expect(lost[0].step).toBeGreaterThanOrEqual(7);
    expect(lost[0].message).toMatch(new RegExp(`lost at step ${lost[0].step} .*continuing from the checkpoint at step ${resumeStep}`));
    const recovered = interrupted.ofType('recovered');
    expect(recovered).toHaveLength(1);
    expect(recovered[0]).toMatchObject({ step: resumeStep, attempt: 2 });
    expect(recovered[0].message).toContain(`from step ${resumeStep}`);

    // Events in order: steps up to the loss, the loss, the recovery, then steps from resumeStep + 1 to the end.
    const types = interrupted.events.map((e) => e.type);
    const lostAt = types.indexOf('device-lost');
    expect(types.indexOf('recovered')).toBeGreaterThan(lostAt);
    const after = interrupted.events.slice(lostAt).filter((e): e is StepEvent => e.type === 'step');
    expect(after.map((s) => s.step)).toEqual(Array.from({ length: 12 - resumeStep }, (_, i) => resumeStep + 1 + i));
    // Bit for bit: the losses, learning rates and evaluations after the restore are the uninterrupted run's.
    expect(after.map((s) => s.loss)).toEqual(referenceSteps.slice(resumeStep).map((s) => s.loss));
    expect(after.map((s) => s.lr)).toEqual(referenceSteps.slice(resumeStep).map((s) => s.lr));
    const evalsAfter = interrupted.events.slice(lostAt).filter((e): e is EvalEvent => e.type === 'eval');
    expect(evalsAfter.map((e) => e.loss)).toEqual(referenceEvals.filter((e) => e.step > resumeStep).map((e) => e.loss));
    expect(summary.losses).toEqual(referenceSteps.map((s) => s.loss));
    const finalWeights = await interrupted.trainer.trainer!.readTrainable();
    for (const [name, w] of referenceWeights) expect(Array.from(finalWeights.get(name)!), name).toEqual(Array.from(w));
    // Checkpoints after the recovery continue the schedule and match the uninterrupted run's.
    expect(interrupted.saved.map((c) => c.progress.step).filter((s) => s > resumeStep)).toEqual([4, 6, 8, 9].filter((s) => s > resumeStep));

    // Keep the new device (pipelines compiled) for the next test.
    spare = interrupted.trainer.gpu;
    interrupted.trainer.trainer!.destroy();
    interrupted.trainer.model!.destroy();
  }, 400_000); // two devices compile every pipeline: minutes on a busy SwiftShader machine

  it('trains in chunks on the caller\'s device and model, checkpoints at chunk ends, and hands the adapter over', async () => {
    // How the browser worker drives it: train({ untilStep }) in chunks of 4 (probes between them), the worker's
    // shared device and model upload (never the supervisor's to destroy), and the adapter kept after the run.
    const gpu = spare ?? (await freshDevice());
    const config = microConfig();
    const model = Gpt2Model.create(gpu, config, microWeights(config));
    const devicesAsked: GpuContext[] = [];
    const run = supervised(gpu, freshDevice, {
      modelOn: (device) => {
        devicesAsked.push(device);
        return model;
      },
      ownsAcquiredGpus: false,
    });
    const stops: number[] = [];
    for (let until = 4; ; until += 4) {
      const summary = await run.trainer.train({ untilStep: Math.min(until, 12) });
      stops.push(summary.step);
      if (summary.reason !== 'stopped') {
        expect(summary.reason).toBe('completed');
        break;
      }
    }
    expect(stops).toEqual([4, 8, 12]);
    expect(devicesAsked).toEqual([gpu]); // built once, kept across chunks
    // Checkpoints at the chunk ends (4, 8) as well as inside them, exactly as one train() call takes them.
    expect(run.saved.map((c) => c.progress.step)).toEqual([3, 4, 6, 8, 9]);
    expect(run.ofType('step').map((s) => s.loss)).toEqual(referenceLosses);

    const adapter = run.trainer.releaseAdapter()!;
    const trained = await adapter.read('tunelab');
    run.trainer.destroy();
    // The adapter, the model and the device outlive the supervisor.
    expect(gpu.lost).toBe(false);
    const again = await adapter.read('tunelab');
    for (const [name, values] of trained) expect(Array.from(again.get(name)!), name).toEqual(Array.from(values));
    adapter.destroy();
    model.destroy();
  }, 400_000);

  it('gives up after maxRecoveries failed recoveries, saying what was kept and what to do', async () => {
    const gpu = spare ?? (await freshDevice());
    let attempts = 0;
    const run = supervised(
      gpu,
      async () => {
        attempts++;
        throw new TunelabError('no-adapter', 'WebGPU is present but no GPU adapter was offered');
      },
      { maxRecoveries: 2 },
    );
    run.trainer.subscribe((e) => {
      if (e.type === 'step' && e.step === 5 && !gpu.lost) gpu.device.destroy();
    });
    const error = await run.trainer.train().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(TunelabError);
    expect((error as TunelabError).code).toBe('device-lost');
    expect(attempts).toBe(2);
    const kept = run.saved[run.saved.length - 1].progress.step;
    expect(kept).toBeGreaterThanOrEqual(3);
    const message = (error as Error).message;
    expect(message).toMatch(/^The GPU device was lost and 2 attempts to continue on a new one failed \(last: WebGPU is present but /);
    expect(message).toContain(`the last checkpoint (step ${kept}) is saved and can be resumed`);
    expect(message).toMatch(/Reload the page/);
    expect(run.ofType('device-lost')).toHaveLength(1);
    expect(run.ofType('recovered')).toHaveLength(0);
    expect(run.trainer.lastCheckpoint?.progress.step).toBe(kept);
    // The caller's device: lost, so the supervisor has let go of it.
    expect(run.trainer.gpu).toBeUndefined();
  }, 300_000);
});
