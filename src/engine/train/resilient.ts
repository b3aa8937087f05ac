// A supervisor that keeps a fine-tune going when the GPU device is lost (driver reset, GPU process crash, a sleeping
// laptop, device.destroy()). It runs a Trainer with periodic checkpoints (every N steps and at epoch ends), keeps the
// last confirmed checkpoint on the CPU (and hands each one to the caller to persist), notices a lost device
// (GpuContext.onLost, or a 'device-lost' error from a step or a readback), acquires a new device from the factory it
// was given, rebuilds the model (from the CPU-side base weights), the adapter and the trainer from that checkpoint, and
// continues, telling its listeners what happened. After `maxRecoveries` failed recoveries in a row it gives up with a
// message that says what was kept and what to do.
//
// The trainer is deterministic (see trainer.ts), so a recovered run goes on exactly as an uninterrupted one would
// have from the restored checkpoint: the steps between the checkpoint and the loss are redone with the same losses.
// Listeners therefore see step events past `resumeStep` a second time after a 'device-lost' event; a chart should
// drop its points after `resumeStep` when it gets one.

import { TunelabError } from '../errors.ts';
import type { GpuContext } from '../gpu/context.ts';
import type { ModelConfig } from '../model/config.ts';
import { Gpt2Model } from '../model/gpt2.ts';
import type { LoraAdapter } from '../model/lora.ts';
import type { ParameterSet } from '../model/weights.ts';
import type { TrainingCheckpoint } from './checkpoint.ts';
import type { TrainingData } from './data-source.ts';
import type { EvalEvent, TrainEvent } from './metrics.ts';
import { totalTrainingSteps, trainConfig, Trainer, type TrainConfig, type TrainSummary } from './trainer.ts';

export interface ResilientTrainingOptions {
  /** The device to start on (it stays the caller's unless it is lost); default: one from acquireGpu. */
  gpu?: GpuContext;
  /** Gives a fresh device: at the start when `gpu` is not given, and after every loss. */
  acquireGpu: () => Promise<GpuContext>;
  /** The base model on the CPU, what the model is rebuilt from on a new device (loadModel / initGpt2Parameters). */
  model: { config: ModelConfig; weights: ParameterSet };
  /**
   * The model on a device, when the caller keeps it there (shared with other users of that device, like a
   * playground); the supervisor then never destroys it. Default: one uploaded from `model` per device, its own.
   */
  modelOn?: (gpu: GpuContext) => Gpt2Model;
  /** Whether devices from acquireGpu are the supervisor's to destroy when lost or done (true). */
  ownsAcquiredGpus?: boolean;
  data: TrainingData;
  /** Training settings (trainer.ts TrainConfig over its defaults). */
  config?: Partial<TrainConfig>;
  /** Continue from this checkpoint (a resumed run); its config, with `config` on top. */
  checkpoint?: TrainingCheckpoint;
  /** Take a checkpoint every N optimizer steps; 0 = only at epoch ends (25). */
  checkpointEvery?: number;
  /** Also take one at the end of each epoch (true). */
  checkpointAtEpochEnd?: boolean;
  /** Recoveries that may fail in a row before giving up (3). A recovery holds once it has saved a new checkpoint. */
  maxRecoveries?: number;
  /** Wait before acquiring a new device, doubled after each failed recovery (500 ms). */
  retryDelayMs?: number;
  /** How long a step may take to fail after the device reported its loss before it is abandoned (2000 ms). */
  settleMs?: number;
  /** Receives each checkpoint once confirmed (persist it: a directory, IndexedDB); training waits for it. */
  onCheckpoint?: (checkpoint: TrainingCheckpoint) => Promise<void> | void;
  /** Extra fields every checkpoint carries (Trainer.checkpointExtra). */
  checkpointExtra?: Record<string, unknown>;
  /** Refuse, before allocating, a run whose memory plan needs more than this (TrainerOptions.memoryBudgetBytes). */
  memoryBudgetBytes?: number;
}

/** The device was lost; training goes back to `resumeStep` on a new device. */
export interface DeviceLostEvent {
  type: 'device-lost';
  /** Optimizer steps submitted when the loss was noticed. */
  step: number;
  /** The step training restarts from: the last checkpoint's (0 = from the start, no checkpoint yet). */
  resumeStep: number;
  /** What the browser or driver said. */
  reason: string;
  /** 1 for the first recovery attempt after a loss, 2 when that one did not hold, … */
  attempt: number;
  maxAttempts: number;
  /** For the user: what happened and what happens next. */
  message: string;
}

/** Training runs again on a new device. */
export interface RecoveredEvent {
  type: 'recovered';
  /** The step it continues from. */
  step: number;
  attempt: number;
  /** The new device ("swiftshader", "nvidia ampere" …). */
  device: string;
  message: string;
}

/** A confirmed checkpoint was taken (and handed to onCheckpoint). */
export interface CheckpointEvent {
  type: 'checkpoint';
  step: number;
  /** Epochs done, fractional. */
  epoch: number;
}

export type ResilientEvent = TrainEvent | DeviceLostEvent | RecoveredEvent | CheckpointEvent;
export type ResilientEventListener = (event: ResilientEvent) => void;

export interface ResilientSummary {
  reason: TrainSummary['reason'];
  step: number;
  totalSteps: number;
  /** The loss of every step reported, by step (losses[0] is step 1); redone steps keep their final value. */
  losses: number[];
  lastEval?: EvalEvent;
  /** Devices lost during the run. */
  deviceLosses: number;
  elapsedMs: number;
}

const DEFAULTS = { checkpointEvery: 25, checkpointAtEpochEnd: true, maxRecoveries: 3, retryDelayMs: 500, settleMs: 2000 };

/** What one device is running. */
interface Session {
  gpu: GpuContext;
  ownsGpu: boolean;
  model: Gpt2Model;
  ownsModel: boolean;
  trainer: Trainer;
  /** Set once the device reported its loss (the reason). */
  lost?: string;
}

type SessionOutcome = { finished: TrainSummary } | { lost: string };

const delay = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export class ResilientTrainer {
  private readonly options: ResilientTrainingOptions;
  private readonly settings: typeof DEFAULTS;
  /** Optimizer steps of the whole run. */
  readonly totalSteps: number;
  private readonly listeners = new Set<ResilientEventListener>();
  private session: Session | undefined;
  private latest: TrainingCheckpoint | undefined;
  private readonly losses: number[] = [];
  private lastEval: EvalEvent | undefined;
  private deviceLosses = 0;
  private cancelRequested = false;
  private pauseRequested = false;
  private running = false;

  constructor(options: ResilientTrainingOptions) {
    this.options = options;
    this.settings = {
      checkpointEvery: options.checkpointEvery ?? DEFAULTS.checkpointEvery,
      checkpointAtEpochEnd: options.checkpointAtEpochEnd ?? DEFAULTS.checkpointAtEpochEnd,
      maxRecoveries: options.maxRecoveries ?? DEFAULTS.maxRecoveries,
      retryDelayMs: options.retryDelayMs ?? DEFAULTS.retryDelayMs,
      settleMs: options.settleMs ?? DEFAULTS.settleMs,
    };
    const { checkpointEvery, maxRecoveries } = this.settings;
    for (const [name, value] of [['checkpointEvery', checkpointEvery], ['maxRecoveries', maxRecoveries]] as const) {
      if (!(Number.isSafeInteger(value) && value >= 0)) throw new RangeError(`${name} must be a whole number ≥ 0, got ${value}`);
    }
    const config = trainConfig({ ...((options.checkpoint?.config ?? {}) as Partial<TrainConfig>), ...(options.config ?? {}) });
    this.totalSteps = totalTrainingSteps(config, options.data.stepsPerEpoch);
  }

  /** The device, model and trainer in use now (after a recovery: the new ones); undefined before train(). */
  get gpu(): GpuContext | undefined {
    return this.session?.gpu;
  }
  get model(): Gpt2Model | undefined {
    return this.session?.model;
  }
  get trainer(): Trainer | undefined {
    return this.session?.trainer;
  }
  /** The last confirmed checkpoint (the one a recovery restores), or the one the run started from. */
  get lastCheckpoint(): TrainingCheckpoint | undefined {
    return this.latest ?? this.options.checkpoint;
  }

  subscribe(listener: ResilientEventListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private emit(event: ResilientEvent): void {
    for (const listener of this.listeners) listener(event);
  }

  pause(): void {
    this.pauseRequested = true;
    this.session?.trainer.pause();
  }
  resume(): void {
    this.pauseRequested = false;
    this.session?.trainer.resume();
  }
  /** Ends training after the current step, also while a recovery is under way. */
  cancel(): void {
    this.cancelRequested = true;
    this.session?.trainer.cancel();
  }

  /**
   * Trains to the end (or until `untilStep` optimizer steps are done: reason 'stopped'; call again to go on),
   * recovering from lost devices. Resolves with the summary; rejects with the trainer's errors (a DivergedError, bad
   * data …) and with TunelabError('device-lost') once recoveries keep failing.
   */
  async train(options: { untilStep?: number } = {}): Promise<ResilientSummary> {
    if (this.running) throw new Error('this run is already training');
    this.running = true;
    this.cancelRequested = false;
    const max = this.settings.maxRecoveries;
    let failedInARow = 0;
    let recovering = false;
    let lastFailure = '';
    try {
      for (;;) {
        if (!this.session) {
          try {
            this.session = await this.build(recovering);
          } catch (error) {
            if (!recovering) throw error;
            failedInARow++;
            lastFailure = messageOf(error);
            if (failedInARow >= max || this.cancelRequested) return this.giveUpOrCancel(failedInARow, lastFailure);
            await delay(this.settings.retryDelayMs * 2 ** failedInARow);
            continue;
          }
          if (recovering) {
            const step = this.session.trainer.step;
            this.emit({
              type: 'recovered',
              step,
              attempt: failedInARow + 1,
              device: this.session.gpu.adapter.name,
              message: `Training continues on a new GPU device (${this.session.gpu.adapter.name}) from step ${step}.`,
            });
          }
        }
        const outcome = await this.runSession(this.session, options.untilStep, () => {
          if (recovering) {
            // A checkpoint after a recovery means it held: the run makes progress again.
            recovering = false;
            failedInARow = 0;
          }
        });
        if ('finished' in outcome) return this.summary(outcome.finished);

        // The device is gone: throw the session away and start again from the last checkpoint.
        const lostAt = this.session.trainer.step;
        this.teardown(this.session);
        this.session = undefined;
        this.deviceLosses++;
        if (recovering) failedInARow++;
        recovering = true;
        lastFailure = outcome.lost;
        if (failedInARow >= max || this.cancelRequested) return this.giveUpOrCancel(failedInARow, lastFailure);
        const resumeStep = this.lastCheckpoint?.progress.step ?? 0;
        this.emit({
          type: 'device-lost',
          step: lostAt,
          resumeStep,
          reason: outcome.lost,
          attempt: failedInARow + 1,
          maxAttempts: max,
          message:
            `The GPU device was lost at step ${lostAt} (${outcome.lost}). Getting a new one and continuing from ` +
            (resumeStep > 0 ? `the checkpoint at step ${resumeStep}` : 'the start') +
            ` (attempt ${failedInARow + 1} of ${max}).`,
        });
        await delay(this.settings.retryDelayMs * 2 ** failedInARow);
      }
    } finally {
      this.running = false;
    }
  }

  /** Acquires a device (the given one first), uploads the model and builds the trainer at the last checkpoint. */
  private async build(recovering: boolean): Promise<Session> {
    const given = !recovering && this.options.gpu && !this.options.gpu.lost ? this.options.gpu : undefined;
    const gpu = given ?? (await this.options.acquireGpu());
    const ownsGpu = gpu !== this.options.gpu && (this.options.ownsAcquiredGpus ?? true);
    const ownsModel = !this.options.modelOn;
    let model: Gpt2Model | undefined;
    try {
      model = this.options.modelOn?.(gpu) ?? Gpt2Model.create(gpu, this.options.model.config, this.options.model.weights);
      const trainer = await Trainer.create(gpu, {
        model,
        data: this.options.data,
        // Our own checkpoints carry the whole config; the caller's overrides apply only to the first start.
        config: this.latest ? {} : this.options.config,
        checkpoint: this.lastCheckpoint,
        memoryBudgetBytes: this.options.memoryBudgetBytes,
      });
      trainer.checkpointExtra = { ...(this.options.checkpointExtra ?? {}) };
      return { gpu, ownsGpu, model, ownsModel, trainer };
    } catch (error) {
      if (ownsModel) model?.destroy();
      if (ownsGpu) gpu.destroy();
      throw error;
    }
  }

  /**
   * Trains on one device until the run ends or the device is lost. A loss is noticed through onLost (the trainer is
   * then cancelled, and abandoned if it does not stop within settleMs) or from a device-lost error.
   */
  private async runSession(session: Session, untilStep: number | undefined, onConfirmedCheckpoint: () => void): Promise<SessionOutcome> {
    const { gpu, trainer } = session;
    let noticeLoss!: () => void;
    const lossNoticed = new Promise<void>((resolve) => (noticeLoss = resolve));
    const stopListening = gpu.onLost((reason, message) => {
      session.lost = [reason, message].filter(Boolean).join(': ') || 'no reason given';
      trainer.cancel();
      noticeLoss();
    });
    const unsubscribe = trainer.subscribe((event) => {
      if (session.lost) return; // what a dying trainer still reports is redone on the next device
      if (event.type === 'step') this.losses[event.step - 1] = event.loss;
      if (event.type === 'eval') this.lastEval = event;
      this.emit(event);
    });
    try {
      if (gpu.lost) return { lost: 'the device was already lost' };
      const training = trainer.train({
        untilStep,
        checkpointEvery: this.settings.checkpointEvery,
        checkpointAtEpochEnd: this.settings.checkpointAtEpochEnd,
        onCheckpoint: async (checkpoint) => {
          this.latest = checkpoint;
          await this.options.onCheckpoint?.(checkpoint);
          onConfirmedCheckpoint();
          const { step, microStep } = checkpoint.progress;
          this.emit({ type: 'checkpoint', step, epoch: microStep / this.options.data.stepsPerEpoch });
        },
      });
      if (this.pauseRequested) trainer.pause();
      if (this.cancelRequested) trainer.cancel();
      const settled = training.then(
        (summary) => ({ summary }),
        (error: unknown) => ({ error }),
      );
      const first = await Promise.race([settled, lossNoticed.then(() => 'lost' as const)]);
      if (first === 'lost') {
        await Promise.race([settled, delay(this.settings.settleMs)]);
        return { lost: session.lost! };
      }
      if ('summary' in first) return session.lost ? { lost: session.lost } : { finished: first.summary };
      // An error: a device loss shows up as one before (or without) the lost event in some implementations.
      const error = first.error;
      const maybeLoss = !(error instanceof TunelabError) || error.code === 'device-lost';
      if (maybeLoss && !session.lost) await Promise.race([lossNoticed, delay(this.settings.settleMs)]);
      if (session.lost) return { lost: session.lost };
      if (error instanceof TunelabError && error.code === 'device-lost') return { lost: error.message };
      throw error;
    } finally {
      stopListening();
      unsubscribe();
    }
  }

  /** Frees what a lost session held; nothing here touches the (dead) device's queue. */
  private teardown(session: Session): void {
    session.trainer.destroy();
    if (session.ownsModel) session.model.destroy();
    if (session.ownsGpu) session.gpu.destroy();
  }

  /** The adapter trained so far (mode lora), now the caller's: destroy() leaves it. Undefined before train(). */
  releaseAdapter(): LoraAdapter | undefined {
    return this.session?.trainer.releaseAdapter();
  }

  /** Cancelled while recovering: the summary at the last checkpoint. Otherwise the error that ends the run. */
  private giveUpOrCancel(failedAttempts: number, lastFailure: string): ResilientSummary {
    const kept = this.lastCheckpoint;
    if (this.cancelRequested) {
      const progress = kept?.progress;
      const step = progress?.step ?? 0;
      return this.summary({ reason: 'cancelled', step, totalSteps: this.totalSteps, losses: [], elapsedMs: progress?.elapsedMs ?? 0 });
    }
    const plural = failedAttempts === 1 ? '' : 's';
    const attempts = failedAttempts === 0 ? '' : ` and ${failedAttempts} attempt${plural} to continue on a new one failed`;
    throw new TunelabError(
      'device-lost',
      `The GPU device was lost${attempts} (last: ${lastFailure}). ` +
        (kept
          ? `Training stopped; the last checkpoint (step ${kept.progress.step}) is saved and can be resumed. `
          : 'Training stopped before any checkpoint was saved. ') +
        'Reload the page (or restart the program), close other tabs and apps that use the GPU, and try again; if it keeps ' +
        'happening, a smaller batch size or sequence length puts less load on the GPU, and a driver update may help.',
    );
  }

  private summary(last: TrainSummary): ResilientSummary {
    return {
      reason: last.reason,
      step: last.step,
      totalSteps: last.totalSteps,
      losses: [...this.losses],
      lastEval: this.lastEval,
      deviceLosses: this.deviceLosses,
      elapsedMs: last.elapsedMs,
    };
  }

  /** Frees the trainer, and the model and the device if they are this supervisor's. */
  destroy(): void {
    if (this.session) this.teardown(this.session);
    this.session = undefined;
  }
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
