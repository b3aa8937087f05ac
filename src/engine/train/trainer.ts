// The trainer: fine-tunes a GPT-2 (LoRA, selective or full) on the GPU from TrainingData (data-source.ts: a
// DataBatcher, or pretraining's TokenBlockBatcher), with AdamW, a learning-rate schedule, gradient accumulation and
// clipping; evaluates on fixed validation batches every N steps; reports a stream of metric events; can pause, resume
// and cancel between steps; and saves and restores checkpoints exactly.
//
// One optimizer step = `gradientAccumulationSteps` micro-batches, one submit each (the inputs change between them);
// the last one also carries the gradient norm, clipping and AdamW updates, so no step ever waits on the GPU. Metrics
// come back through the run's readback ring a step late and are turned into events as they arrive.
//
// Determinism: with the same seed, data and device, every run gives the same losses. All randomness is derived from
// (seed, position): the data order from (seed, epoch) (DataBatcher), LoRA's initialization from the seed, and each
// micro-batch's LoRA dropout seed from (seed, micro-batch index). So the position in the data (`microStep`) is the
// whole random state a checkpoint needs, and a restored run draws exactly what the uninterrupted run would have.
//
// Divergence: a non-finite loss or gradient norm stops the run with a DivergedError that says at which step and what
// to change. Since metrics arrive a step late, a periodic checkpoint is handed out only once the step after it has
// reported finite numbers (its weights have then produced a finite loss and gradient), and a checkpoint holding a
// non-finite weight or moment is never handed out at all: the last checkpoint a caller saved is always a good one.

import { TunelabError } from '../errors.ts';
import type { GpuContext } from '../gpu/context.ts';
import type { Batch } from '../data/batches.ts';
import { Gpt2Run, type Gpt2Mode, type Gpt2Model } from '../model/gpt2.ts';
import { LoraAdapter, loraConfig, type LoraConfig } from '../model/lora.ts';
import { planTraining, type PlanMode } from '../model/planner.ts';
import { lr as scheduledLr, lrScheduleConfig, type LrScheduleConfig, type LrScheduleKind } from './schedule.ts';
import { AdamWOptimizer, GRAD_NORM_RESULT } from './optimizer.ts';
import type { TrainingCheckpoint } from './checkpoint.ts';
import type { TrainingData } from './data-source.ts';
import { perplexity, type EndReason, type EvalEvent, type TrainEvent, type TrainEventListener } from './metrics.ts';

export type TrainMode = 'lora' | 'selective' | 'full';

export interface TrainConfig {
  /** Peak learning rate, reached after warmup (2e-4: a usual LoRA rate; full fine-tuning wants ~5e-5). */
  learningRate: number;
  /** Shape of the rate after warmup: 'constant', 'linear' or 'cosine' ('linear', as Hugging Face's Trainer). */
  schedule: LrScheduleKind;
  /** Warmup steps (linear from lr/W up to the peak); when > 0 it wins over warmupRatio (0). */
  warmupSteps: number;
  /** Warmup as a fraction of the total steps (0). */
  warmupRatio: number;
  /** The schedule decays to learningRate × minLrRatio rather than 0 (0). */
  minLrRatio: number;
  /** Passes over the training data, may be fractional (3). Ignored when maxSteps > 0. */
  epochs: number;
  /** Optimizer steps to run; 0 = as many as `epochs` take (0). */
  maxSteps: number;
  /** B: rows per micro-batch; must equal the data's batch size (8). */
  batchSize: number;
  /** Micro-batches per optimizer step; the effective batch is batchSize × this (1). */
  gradientAccumulationSteps: number;
  /** Clip the global gradient norm to this; 0 turns clipping off (1.0). */
  maxGradNorm: number;
  /** AdamW's decoupled weight decay, on matrices only (not biases or LayerNorm); LoRA A and B decay (0). */
  weightDecay: number;
  /** AdamW β1 (0.9). */
  beta1: number;
  /** AdamW β2 (0.999). */
  beta2: number;
  /** AdamW ε (1e-8). */
  eps: number;
  /** Evaluate every N optimizer steps, and always after the last; 0 = only after the last (10). */
  evalEvery: number;
  /** Evaluate once before the first step too, so the curve starts at the base model (true). */
  evalAtStart: boolean;
  /** Validation batches per evaluation, always the same first ones; 0 = all (0). */
  evalBatches: number;
  /** Seeds LoRA's initialization and dropout (the data order has its own seed in the data batcher) (0). */
  seed: number;
  /** What trains: a LoRA adapter, the last `lastBlocks` blocks + ln_f, or everything ('lora'). */
  mode: TrainMode;
  /** Blocks that train in mode 'selective' (1). */
  lastBlocks: number;
  /** LoRA settings (rank, alpha, dropout, rsLora, targets, layers), over model/lora.ts's defaults. */
  lora: Partial<LoraConfig>;
}

export const DEFAULT_TRAIN_CONFIG: Readonly<TrainConfig> = Object.freeze({
  learningRate: 2e-4,
  schedule: 'linear',
  warmupSteps: 0,
  warmupRatio: 0,
  minLrRatio: 0,
  epochs: 3,
  maxSteps: 0,
  batchSize: 8,
  gradientAccumulationSteps: 1,
  maxGradNorm: 1,
  weightDecay: 0,
  beta1: 0.9,
  beta2: 0.999,
  eps: 1e-8,
  evalEvery: 10,
  evalAtStart: true,
  evalBatches: 0,
  seed: 0,
  mode: 'lora',
  lastBlocks: 1,
  lora: {},
});

/** The defaults with overrides, checked; a bad value throws a RangeError naming the setting. */
export function trainConfig(overrides: Partial<TrainConfig> = {}): TrainConfig {
  const c: TrainConfig = { ...DEFAULT_TRAIN_CONFIG, ...overrides, lora: { ...(overrides.lora ?? {}) } };
  const fail = (message: string): never => {
    throw new RangeError(`training config: ${message}`);
  };
  const wholeAtLeast = (key: keyof TrainConfig, min: number) => {
    const v = c[key] as number;
    if (!(Number.isSafeInteger(v) && v >= min)) fail(`${key} must be a whole number ≥ ${min}, got ${v}`);
  };
  wholeAtLeast('maxSteps', 0);
  wholeAtLeast('batchSize', 1);
  wholeAtLeast('gradientAccumulationSteps', 1);
  wholeAtLeast('evalEvery', 0);
  wholeAtLeast('evalBatches', 0);
  wholeAtLeast('lastBlocks', 0);
  if (!Number.isSafeInteger(c.seed)) fail(`seed must be a whole number, got ${c.seed}`);
  if (!(c.epochs > 0 && Number.isFinite(c.epochs))) fail(`epochs must be positive, got ${c.epochs}`);
  if (!(c.maxGradNorm >= 0 && Number.isFinite(c.maxGradNorm))) fail(`maxGradNorm must be ≥ 0 (0 = no clipping), got ${c.maxGradNorm}`);
  if (!['lora', 'selective', 'full'].includes(c.mode)) fail(`mode must be 'lora', 'selective' or 'full', got ${JSON.stringify(c.mode)}`);
  lrScheduleConfig(scheduleOf(c)); // checks learningRate, schedule, warmup, minLrRatio
  if (c.mode === 'lora') loraConfig(c.lora); // checks rank, alpha, dropout, targets
  return c;
}

function scheduleOf(c: TrainConfig): LrScheduleConfig {
  return lrScheduleConfig({
    learningRate: c.learningRate,
    kind: c.schedule,
    warmupSteps: c.warmupSteps,
    warmupRatio: c.warmupRatio,
    minLrRatio: c.minLrRatio,
  });
}

/** Optimizer steps a run of this config takes on this data. */
export function totalTrainingSteps(config: TrainConfig, microStepsPerEpoch: number): number {
  if (config.maxSteps > 0) return config.maxSteps;
  return Math.max(1, Math.ceil((config.epochs * microStepsPerEpoch) / config.gradientAccumulationSteps));
}

/** The u32 LoRA dropout seed of micro-batch `microStep` of a run seeded `seed` (a hash, so no state to save). */
export function dropoutSeed(seed: number, microStep: number): number {
  let h = Math.imul((seed >>> 0) ^ 0x2545f491, 0x9e3779b1) ^ Math.imul((microStep >>> 0) + 0x632be5ab, 0x85ebca77);
  h = Math.imul(h ^ (h >>> 15), 0x2c1b3c6d);
  h = Math.imul(h ^ (h >>> 12), 0x297a2d39);
  return (h ^ (h >>> 15)) >>> 0;
}

export interface EvalResult {
  /** Mean loss over the counted tokens of all batches. */
  loss: number;
  perplexity: number;
  accuracy: number;
  /** Σ mask over the batches. */
  tokens: number;
}

/**
 * Loss, perplexity and token accuracy of an inference run over batches (fixed validation batches, a test file).
 * Submits one step per batch and waits for the results at the end.
 */
export async function evaluateBatches(run: Gpt2Run, batches: readonly Batch[]): Promise<EvalResult> {
  if (run.mode.kind !== 'inference') throw new RangeError('evaluateBatches needs an inference run');
  await run.flushMetrics(); // anything older must not be counted
  for (const batch of batches) {
    run.setBatch({ ids: batch.inputIds, targets: batch.targets, mask: batch.lossMask });
    await run.step();
  }
  let lossSum = 0;
  let correct = 0;
  let tokens = 0;
  for (const m of await run.flushMetrics()) {
    lossSum += m.lossSum;
    correct += m.correct;
    tokens += m.tokens;
  }
  const loss = tokens > 0 ? lossSum / tokens : NaN;
  return { loss, perplexity: perplexity(loss), accuracy: tokens > 0 ? correct / tokens : NaN, tokens };
}

export interface TrainerOptions {
  model: Gpt2Model;
  data: TrainingData;
  config?: Partial<TrainConfig>;
  /** For mode lora: the adapter to train (default: a new one, PEFT-initialized from config.seed). */
  adapter?: LoraAdapter;
  /** Continue from this checkpoint: its config (with `config` on top), weights, optimizer state and position. */
  checkpoint?: TrainingCheckpoint;
  /**
   * Refuse a run whose memory plan (weights, adapter, training and validation runs, optimizer state) needs more
   * bytes than this, as the device limits are always refused: before anything is allocated (no limit by default).
   */
  memoryBudgetBytes?: number;
}

export interface TrainOptions {
  /** Stop (reason 'stopped') once this many optimizer steps are done; train() can be called again to continue. */
  untilStep?: number;
  /** Take a checkpoint every N optimizer steps (not after the run's last: take that one with checkpoint()). */
  checkpointEvery?: number;
  /** Also take one after the step that completes each epoch (except after the last step) (false). */
  checkpointAtEpochEnd?: boolean;
  /**
   * Receives each periodic checkpoint once the following step has reported a finite loss and gradient norm (so a
   * step or two after it was taken; one still unconfirmed when train() returns is handed over when training goes on,
   * or dropped if it never does). Training waits for it (e.g. while it is written to disk).
   */
  onCheckpoint?: (checkpoint: TrainingCheckpoint) => Promise<void> | void;
}

/**
 * A run stopped because its loss or gradients stopped being finite numbers. `message` says what happened at which
 * step and what to change; `lastCheckpointStep` is the step of the last checkpoint this trainer handed out or was
 * restored from (null if none), which is untouched and can be resumed.
 */
export class DivergedError extends TunelabError {
  constructor(
    readonly step: number,
    readonly loss: number,
    readonly gradNorm: number,
    readonly lastCheckpointStep: number | null,
    message: string,
  ) {
    super('diverged', message);
    this.name = 'DivergedError';
  }
}

/** What to change after a divergence, for this config: the learning rate, clipping, warmup, the data. */
export function divergenceAdvice(config: Pick<TrainConfig, 'learningRate' | 'maxGradNorm' | 'warmupSteps' | 'warmupRatio'>): string {
  const advice = [`lower the learning rate (it is ${config.learningRate}; try ${Number((config.learningRate / 10).toPrecision(3))})`];
  if (config.maxGradNorm > 0) {
    advice.push(`keep gradient clipping on, or clip harder (max grad norm ${config.maxGradNorm}; try ${config.maxGradNorm / 2})`);
  } else {
    advice.push('turn gradient clipping on (max grad norm 1.0)');
  }
  if (config.warmupSteps === 0 && config.warmupRatio === 0) advice.push('add warmup steps');
  advice.push('check the data for broken or unusual examples');
  return advice.slice(0, -1).join(', ') + ' and ' + advice[advice.length - 1];
}

/** A checkpoint taken, waiting for the next step's metrics to confirm its weights give a finite loss. */
interface PendingCheckpoint {
  checkpoint: TrainingCheckpoint;
  deliver: NonNullable<TrainOptions['onCheckpoint']>;
}

export interface TrainSummary {
  reason: EndReason;
  step: number;
  totalSteps: number;
  /** Losses of every step done in this call (also in the step events). */
  losses: number[];
  /** The last evaluation, if any. */
  lastEval?: EvalEvent;
  elapsedMs: number;
}

/** Per micro-batch bookkeeping, matched with the run's metrics as they come back (in submission order). */
interface PendingMicroStep {
  step: number;
  lr: number;
  last: boolean;
  microStepAfter: number;
}

export class Trainer {
  readonly config: TrainConfig;
  readonly totalSteps: number;
  /** The adapter being trained (mode lora). */
  readonly adapter: LoraAdapter | undefined;
  private readonly listeners = new Set<TrainEventListener>();
  private readonly pending: PendingMicroStep[] = [];
  private readonly microBatches: Batch[];
  private partial = { lossSum: 0, correct: 0, tokens: 0 };
  private stepCount = 0;
  private microStepCount = 0;
  private tokenCount = 0;
  private elapsedBefore = 0;
  private sessionStart = 0;
  private sessionSteps = 0;
  private pausedSince: number | null = null;
  private pausedTotal = 0;
  private resumeWaiter: (() => void) | null = null;
  private pauseRequested = false;
  private cancelRequested = false;
  private running = false;
  private sessionLosses: number[] = [];
  private lastEval: EvalEvent | undefined;
  private lastEvalStep = -1;
  /** The last optimizer step whose metrics arrived (all finite, or the run would have stopped). */
  private lastReportedStep = 0;
  private pendingCheckpoint: PendingCheckpoint | undefined;
  private lastCheckpointStep: number | null = null;
  private divergence: DivergedError | undefined;

  private constructor(
    private readonly gpu: GpuContext,
    readonly model: Gpt2Model,
    readonly data: TrainingData,
    config: TrainConfig,
    adapter: LoraAdapter | undefined,
    private ownsAdapter: boolean,
    private readonly run: Gpt2Run,
    private readonly evalRun: Gpt2Run | undefined,
    private readonly optimizer: AdamWOptimizer,
  ) {
    this.config = config;
    this.adapter = adapter;
    this.totalSteps = totalTrainingSteps(config, data.stepsPerEpoch);
    this.microBatches = Array.from({ length: config.gradientAccumulationSteps }, () => data.createBatch());
  }

  /** Builds the adapter (LoRA), the training and evaluation runs and the optimizer; restores a checkpoint if given. */
  static async create(gpu: GpuContext, options: TrainerOptions): Promise<Trainer> {
    const config = trainConfig({ ...((options.checkpoint?.config ?? {}) as Partial<TrainConfig>), ...(options.config ?? {}) });
    const { model, data } = options;
    if (data.batchSize !== config.batchSize) {
      throw new RangeError(`training config: batchSize ${config.batchSize} differs from the data batcher's ${data.batchSize}`);
    }
    if (data.stepsPerEpoch === 0) throw new TunelabError('bad-data', 'there are no training examples with tokens to learn');
    // The memory planner refuses a run that breaks a device limit or the budget before anything below allocates
    // (a MemoryRefusal: the buffer, the limit, and a setting that would fit).
    const lora = config.mode === 'lora' ? (options.adapter?.config ?? loraConfig(config.lora)) : undefined;
    const planMode: PlanMode =
      config.mode === 'lora'
        ? { kind: 'lora', ...lora! }
        : config.mode === 'full'
          ? { kind: 'full' }
          : { kind: 'selective', lastBlocks: config.lastBlocks };
    planTraining({
      config: model.config,
      batchSize: data.batchSize,
      sequenceLength: data.sequenceLength,
      mode: planMode,
      limits: gpu.device.limits,
      evaluation: data.validationRows > 0,
      budgetBytes: options.memoryBudgetBytes,
      // What the model really holds: its frozen matrices packed as f16 when it was built so.
      frozenWeights: model.frozenWeights,
    });
    let adapter = options.adapter;
    let ownsAdapter = false;
    let mode: Gpt2Mode;
    if (config.mode === 'lora') {
      if (!adapter) {
        adapter = LoraAdapter.create(gpu, model.config, loraConfig(config.lora), { seed: config.seed });
        ownsAdapter = true;
      }
      mode = { kind: 'lora' };
    } else {
      if (adapter) throw new RangeError(`a ${config.mode} run trains base weights; it takes no LoRA adapter`);
      mode = config.mode === 'full' ? { kind: 'full' } : { kind: 'selective', lastBlocks: config.lastBlocks };
    }
    const shape = { batchSize: data.batchSize, sequenceLength: data.sequenceLength };
    const built: { run?: Gpt2Run; evalRun?: Gpt2Run; optimizer?: AdamWOptimizer } = {};
    try {
      built.run = await Gpt2Run.create(gpu, model, { ...shape, mode, adapter });
      if (data.validationRows > 0) built.evalRun = await Gpt2Run.create(gpu, model, { ...shape, mode: { kind: 'inference' }, adapter });
      const trainable = built.run.trainable.map((t) => ({ ...t, shape: built.run!.plan.trainable.byName.get(t.name)!.shape }));
      if (!trainable.length) throw new RangeError('nothing trains in this configuration (selective with lastBlocks 0?)');
      built.optimizer = await AdamWOptimizer.create(gpu, trainable, {
        beta1: config.beta1,
        beta2: config.beta2,
        eps: config.eps,
        weightDecay: config.weightDecay,
        maxGradNorm: config.maxGradNorm,
      });
    } catch (error) {
      built.optimizer?.release();
      built.evalRun?.destroy();
      built.run?.destroy();
      if (ownsAdapter) adapter?.destroy();
      throw error;
    }
    const trainer = new Trainer(gpu, model, data, config, adapter, ownsAdapter, built.run, built.evalRun, built.optimizer);
    if (options.checkpoint) trainer.restore(options.checkpoint);
    return trainer;
  }

  /** Optimizer steps done. */
  get step(): number {
    return this.stepCount;
  }
  /** Micro-batches consumed: the data position. */
  get microStep(): number {
    return this.microStepCount;
  }
  get epoch(): number {
    return this.microStepCount / this.data.stepsPerEpoch;
  }
  get isRunning(): boolean {
    return this.running;
  }
  get isPaused(): boolean {
    return this.pausedSince !== null || (this.pauseRequested && this.running);
  }
  /** Set once the run has diverged: train() and checkpoint() then throw it (start again from a checkpoint). */
  get diverged(): DivergedError | undefined {
    return this.divergence;
  }
  get trainableParameters(): number {
    return this.run.plan.trainable.parameterCount;
  }
  /** GPU bytes of the training and evaluation runs (activations, gradients, scratch); not the model or adapter. */
  get runBytes(): number {
    return this.run.bytes + (this.evalRun?.bytes ?? 0);
  }

  /** Adds a listener for metric events; returns a function that removes it. */
  subscribe(listener: TrainEventListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private emit(event: TrainEvent): void {
    for (const listener of this.listeners) listener(event);
  }

  /** Asks the loop to stop after the current step (it emits 'paused' and waits for resume() or cancel()). */
  pause(): void {
    if (this.running) this.pauseRequested = true;
  }

  resume(): void {
    this.pauseRequested = false;
    this.resumeWaiter?.();
  }

  /** Asks the loop to end after the current step; train() then resolves with reason 'cancelled'. */
  cancel(): void {
    this.cancelRequested = true;
    this.resumeWaiter?.();
  }

  private now(): number {
    return performance.now();
  }

  /** Training time of this trainer so far (earlier sessions included, pauses excluded). */
  get elapsedMs(): number {
    if (!this.running) return this.elapsedBefore;
    const pausedNow = this.pausedSince !== null ? this.now() - this.pausedSince : 0;
    return this.elapsedBefore + (this.now() - this.sessionStart - this.pausedTotal - pausedNow);
  }

  /**
   * Trains until totalSteps (or `untilStep`, or cancel()), evaluating as configured and emitting events. Resolves with
   * a summary; rejects on GPU errors, and with a DivergedError (code 'diverged') when the loss or the gradient norm
   * stops being a finite number.
   */
  async train(options: TrainOptions = {}): Promise<TrainSummary> {
    if (this.running) throw new Error('this trainer is already training');
    if (this.divergence) throw this.divergence;
    const until = Math.min(this.totalSteps, options.untilStep ?? this.totalSteps);
    this.running = true;
    this.cancelRequested = false;
    this.sessionStart = this.now();
    this.sessionSteps = 0;
    this.pausedTotal = 0;
    this.sessionLosses = [];
    let reason: EndReason = 'completed';
    try {
      this.emit({
        type: 'start',
        step: this.stepCount,
        totalSteps: this.totalSteps,
        microStepsPerEpoch: this.data.stepsPerEpoch,
        gradientAccumulationSteps: this.config.gradientAccumulationSteps,
        batchSize: this.data.batchSize,
        sequenceLength: this.data.sequenceLength,
        trainableParameters: this.trainableParameters,
        validationBatches: this.validationBatches().length,
      });
      if (this.config.evalAtStart && this.stepCount === 0 && this.lastEvalStep !== 0) await this.evaluateNow();
      while (this.stepCount < until) {
        if (this.cancelRequested) break;
        if (this.pauseRequested) await this.waitWhilePaused();
        if (this.cancelRequested) break;
        await this.trainStep();
        this.collectMetrics(this.run.takeMetrics());
        const evalEvery = this.config.evalEvery;
        if ((evalEvery > 0 && this.stepCount % evalEvery === 0) || this.stepCount === this.totalSteps) await this.evaluateNow();
        await this.deliverConfirmedCheckpoint();
        // Not after the run's last step (the caller keeps the finished weights), but also at the `untilStep` boundary:
        // a run trained in chunks takes the checkpoint there and hands it over in the next chunk once confirmed.
        if (options.onCheckpoint && this.stepCount < this.totalSteps && this.checkpointDue(options)) {
          // Every step so far must have reported finite numbers before its weights are saved.
          this.collectMetrics(await this.run.flushMetrics());
          await this.deliverConfirmedCheckpoint();
          this.pendingCheckpoint = { checkpoint: await this.snapshot(), deliver: options.onCheckpoint };
        }
      }
      this.collectMetrics(await this.run.flushMetrics());
      await this.deliverConfirmedCheckpoint();
      if (this.cancelRequested && this.stepCount < until) reason = 'cancelled';
      else if (this.stepCount < this.totalSteps) reason = 'stopped';
    } finally {
      this.elapsedBefore = this.elapsedMs;
      this.running = false;
      this.pauseRequested = false;
      this.pausedSince = null;
    }
    this.emit({ type: 'end', reason, step: this.stepCount, totalSteps: this.totalSteps, elapsedMs: this.elapsedBefore });
    return {
      reason,
      step: this.stepCount,
      totalSteps: this.totalSteps,
      losses: this.sessionLosses,
      lastEval: this.lastEval,
      elapsedMs: this.elapsedBefore,
    };
  }

  /** Whether the step just done ends a checkpoint period or (if asked) an epoch. */
  private checkpointDue(options: TrainOptions): boolean {
    const every = options.checkpointEvery ?? 0;
    if (every > 0 && this.stepCount % every === 0) return true;
    if (!options.checkpointAtEpochEnd) return false;
    const perEpoch = this.data.stepsPerEpoch;
    const before = this.microStepCount - this.config.gradientAccumulationSteps;
    return Math.floor(this.microStepCount / perEpoch) > Math.floor(before / perEpoch);
  }

  /** Hands the pending checkpoint over once a later step has reported (finite) metrics. */
  private async deliverConfirmedCheckpoint(): Promise<void> {
    const pending = this.pendingCheckpoint;
    if (!pending || this.lastReportedStep <= pending.checkpoint.progress.step) return;
    this.pendingCheckpoint = undefined;
    await pending.deliver(pending.checkpoint);
    this.lastCheckpointStep = pending.checkpoint.progress.step;
  }

  private async waitWhilePaused(): Promise<void> {
    this.collectMetrics(await this.run.flushMetrics());
    this.pausedSince = this.now();
    this.emit({ type: 'paused', step: this.stepCount });
    while (this.pauseRequested && !this.cancelRequested) {
      await new Promise<void>((resolve) => (this.resumeWaiter = resolve));
      this.resumeWaiter = null;
    }
    this.pausedTotal += this.now() - this.pausedSince;
    this.pausedSince = null;
    if (!this.cancelRequested) this.emit({ type: 'resumed', step: this.stepCount });
  }

  /** Submits the micro-batches of one optimizer step; the last carries clipping and the AdamW updates. */
  private async trainStep(): Promise<void> {
    const accumulation = this.config.gradientAccumulationSteps;
    const first = this.microStepCount;
    let lossTokens = 0;
    for (let k = 0; k < accumulation; k++) {
      this.data.trainBatch(first + k, this.microBatches[k]);
      lossTokens += this.microBatches[k].lossTokens;
    }
    const stepIndex = this.stepCount; // 0-based for the schedule
    const lr = scheduledLr(stepIndex, this.totalSteps, scheduleOf(this.config));
    for (let k = 0; k < accumulation; k++) {
      const batch = this.microBatches[k];
      const last = k === accumulation - 1;
      // Every micro-batch's loss is divided by the step's total count, so the accumulated gradient is the mean
      // over all counted tokens of the effective batch.
      this.run.setBatch({
        ids: batch.inputIds,
        targets: batch.targets,
        mask: batch.lossMask,
        lossDenominator: lossTokens,
        dropoutSeed: dropoutSeed(this.config.seed, first + k),
      });
      if (last) this.optimizer.prepareStep(lr);
      await this.run.step({
        zeroGradients: k === 0,
        after: last ? this.optimizer.dispatches : [],
        readback: last ? [this.optimizer.gradNormResult] : [],
      });
      this.pending.push({ step: stepIndex + 1, lr, last, microStepAfter: first + k + 1 });
      this.tokenCount += this.data.batchSize * this.data.sequenceLength;
    }
    this.microStepCount = first + accumulation;
    this.stepCount = stepIndex + 1;
    this.sessionSteps++;
  }

  /** Turns arrived micro-batch metrics into step events (the last micro-batch of a step completes it). */
  private collectMetrics(metrics: ReturnType<Gpt2Run['takeMetrics']>): void {
    for (const m of metrics) {
      const info = this.pending.shift();
      if (!info) throw new Error('trainer: metrics arrived for a step that was never submitted');
      this.partial.lossSum += m.lossSum;
      this.partial.correct += m.correct;
      this.partial.tokens += m.tokens;
      if (!info.last) continue;
      const { lossSum, correct, tokens } = this.partial;
      this.partial = { lossSum: 0, correct: 0, tokens: 0 };
      const loss = tokens > 0 ? lossSum / tokens : NaN;
      const gradNorm = m.extra[GRAD_NORM_RESULT.norm];
      const elapsedMs = this.elapsedMs;
      const sessionMs = elapsedMs - this.elapsedBefore;
      const stepsThisSession = Math.max(1, this.sessionSteps);
      const processed = info.step * this.config.gradientAccumulationSteps * this.data.batchSize * this.data.sequenceLength;
      this.sessionLosses.push(loss);
      this.emit({
        type: 'step',
        step: info.step,
        totalSteps: this.totalSteps,
        epoch: info.microStepAfter / this.data.stepsPerEpoch,
        lr: info.lr,
        loss,
        accuracy: tokens > 0 ? correct / tokens : NaN,
        gradNorm,
        tokens: processed,
        tokensPerSecond: sessionMs > 0 ? (stepsThisSession * this.config.gradientAccumulationSteps * this.data.batchSize * this.data.sequenceLength * 1000) / sessionMs : 0,
        elapsedMs,
        etaMs: (sessionMs / stepsThisSession) * (this.totalSteps - this.stepCount),
      });
      if (!Number.isFinite(loss) || !Number.isFinite(gradNorm)) {
        const what = Number.isFinite(loss)
          ? `the gradient norm became ${gradNorm} although the loss was ${loss.toFixed(4)}`
          : `the loss became ${loss} (gradient norm ${gradNorm})`;
        throw this.diverge(info.step, loss, gradNorm, `at step ${info.step} ${what}`);
      }
      this.lastReportedStep = info.step;
    }
  }

  /** Records the divergence (the trainer is unusable from now on) and returns the error to throw. */
  private diverge(step: number, loss: number, gradNorm: number, what: string): DivergedError {
    const kept =
      this.lastCheckpointStep !== null
        ? `The run stopped; the last checkpoint (step ${this.lastCheckpointStep}) is unchanged and can be resumed.`
        : 'The run stopped before any checkpoint was saved.';
    this.pendingCheckpoint = undefined;
    this.divergence = new DivergedError(
      step,
      loss,
      gradNorm,
      this.lastCheckpointStep,
      `Training diverged: ${what}. ${kept} To fix it, ${divergenceAdvice(this.config)}.`,
    );
    return this.divergence;
  }

  /** The fixed validation batches an evaluation uses. */
  validationBatches(): Batch[] {
    const all = this.data.validationRows > 0 ? this.data.validationBatches() : [];
    return this.config.evalBatches > 0 ? all.slice(0, this.config.evalBatches) : all;
  }

  /** Validation loss, perplexity and accuracy now (between steps); null without validation data. */
  async evaluate(): Promise<EvalResult | null> {
    if (!this.evalRun) return null;
    return evaluateBatches(this.evalRun, this.validationBatches());
  }

  private async evaluateNow(): Promise<void> {
    const result = await this.evaluate();
    if (!result) return;
    // Events stay in step order: the training steps before this evaluation are reported first.
    this.collectMetrics(await this.run.flushMetrics());
    const event: EvalEvent = {
      type: 'eval',
      step: this.stepCount,
      epoch: this.epoch,
      loss: result.loss,
      perplexity: result.perplexity,
      accuracy: result.accuracy,
      tokens: result.tokens,
      elapsedMs: this.elapsedMs,
    };
    this.lastEval = event;
    this.lastEvalStep = this.stepCount;
    this.emit(event);
  }

  /** The trainable tensors as they are now, by name (LoRA: Tunelab names; otherwise weights.ts names). */
  async readTrainable(): Promise<Map<string, Float32Array>> {
    const out = new Map<string, Float32Array>();
    for (const t of this.run.trainable) out.set(t.name, await this.gpu.read(t.param));
    return out;
  }

  /** Extra fields every checkpoint carries (the CLI records its data settings here, to resume with them). */
  checkpointExtra: Record<string, unknown> = {};

  /** A checkpoint of the run as it stands (between train() calls, or paused). */
  async checkpoint(extra: Record<string, unknown> = {}): Promise<TrainingCheckpoint> {
    if (this.divergence) throw this.divergence;
    if (this.running && this.pausedSince === null) {
      throw new Error('checkpoint() runs between train() calls or while paused, not during a step');
    }
    return this.snapshot(extra);
  }

  /** The checkpoint as it stands; a DivergedError if any weight or moment is not a finite number. */
  private async snapshot(extra: Record<string, unknown> = {}): Promise<TrainingCheckpoint> {
    const weights = await this.readTrainable();
    const optimizer = await this.optimizer.exportState();
    const badWeight = [...weights].find(([, data]) => !allFinite(data))?.[0];
    const badMoments = optimizer.tensors.find((t) => !allFinite(t.m) || !allFinite(t.v))?.name;
    if (badWeight !== undefined || badMoments !== undefined) {
      const where = badWeight !== undefined ? `the weight ${badWeight}` : `the AdamW moments of ${badMoments}`;
      throw this.diverge(this.stepCount, NaN, NaN, `after step ${this.stepCount} ${where} holds values that are not finite numbers`);
    }
    return {
      config: this.config as unknown as Record<string, unknown>,
      progress: {
        step: this.stepCount,
        microStep: this.microStepCount,
        epoch: Math.floor(this.microStepCount / this.data.stepsPerEpoch),
        tokens: this.tokenCount,
        elapsedMs: this.elapsedMs,
      },
      // All randomness derives from (seed, position): see the file comment. Nothing else to keep.
      rngStates: {},
      weights: this.run.trainable.map((t) => ({
        name: t.name,
        shape: this.run.plan.trainable.byName.get(t.name)!.shape,
        data: weights.get(t.name)!,
      })),
      optimizer,
      extra: {
        mode: this.config.mode,
        batchSize: this.data.batchSize,
        sequenceLength: this.data.sequenceLength,
        microStepsPerEpoch: this.data.stepsPerEpoch,
        ...this.checkpointExtra,
        ...extra,
      },
    };
  }

  /** Puts weights, optimizer state and position back as they were when `checkpoint` was taken. */
  restore(checkpoint: TrainingCheckpoint): void {
    if (this.running) throw new Error('restore() cannot run while training');
    if (this.divergence) throw new Error('this trainer diverged; create a new Trainer from the checkpoint instead');
    const saved = new Map(checkpoint.weights.map((w) => [w.name, w]));
    for (const t of this.run.trainable) {
      const w = saved.get(t.name);
      if (!w) throw new TunelabError('bad-data', `checkpoint: it has no weights for ${t.name}; it belongs to another configuration`);
      if (w.data.length !== t.param.length) {
        throw new TunelabError('bad-data', `checkpoint: ${t.name} holds ${w.data.length} values, this run's ${t.param.length}`);
      }
    }
    if (saved.size !== this.run.trainable.length) {
      throw new TunelabError('bad-data', `checkpoint: it holds ${saved.size} trainable tensors, this run trains ${this.run.trainable.length}`);
    }
    const extra = checkpoint.extra as { sequenceLength?: number; batchSize?: number } | undefined;
    if (extra?.sequenceLength !== undefined && extra.sequenceLength !== this.data.sequenceLength) {
      throw new TunelabError('bad-data', `checkpoint: its batches were ${extra.sequenceLength} tokens long, this data's ${this.data.sequenceLength}`);
    }
    for (const t of this.run.trainable) this.gpu.write(t.param, saved.get(t.name)!.data);
    this.optimizer.importState(checkpoint.optimizer);
    this.stepCount = checkpoint.progress.step;
    this.microStepCount = checkpoint.progress.microStep;
    this.tokenCount = checkpoint.progress.tokens;
    this.elapsedBefore = checkpoint.progress.elapsedMs;
    this.lastEvalStep = -1;
    this.lastReportedStep = checkpoint.progress.step;
    this.lastCheckpointStep = checkpoint.progress.step;
    this.pendingCheckpoint = undefined;
  }

  /** The trained adapter, now the caller's: destroy() leaves it (mode lora; undefined otherwise). */
  releaseAdapter(): LoraAdapter | undefined {
    this.ownsAdapter = false;
    return this.adapter;
  }

  /** Gives the runs, the optimizer state and (if the trainer made it and kept it) the adapter back to the pool. */
  destroy(): void {
    this.optimizer.release();
    this.evalRun?.destroy();
    this.run.destroy();
    if (this.ownsAdapter) this.adapter?.destroy();
  }
}

function allFinite(values: Float32Array): boolean {
  for (let i = 0; i < values.length; i++) if (!Number.isFinite(values[i])) return false;
  return true;
}
