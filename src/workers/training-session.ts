// The training run in the engine worker: prepares the Data panel's text exactly as its report did, asks the memory
// planner before anything is allocated, fine-tunes a LoRA adapter with the engine's Trainer, and streams what happens
// to the UI: step and evaluation metrics (batched, at most ~10 messages a second), and "probe" snapshots — the
// model's greedy answers to a few prompts before the first step, at every evaluation and after the last — so a
// learner sees the answers change. Pause, resume and cancel act between steps.
//
// The step loop never starves the worker's message handling: it trains in chunks of a few steps (Trainer.train with
// `untilStep`) and yields to the event loop between chunks, and the trainer itself waits on the GPU's readbacks within
// a chunk. So pause/cancel messages are handled within a step or two; a pause that lands inside a chunk stops the
// trainer after its current step, one that lands between chunks stops before the next.
//
// When a run ends with steps done (finished or cancelled), its adapter becomes the playground's
// (model-session's setTrainedAdapter) and `lastRunRecord()` describes it for the Runs panel.

import {
  answerFromGenerated,
  encodeGenerationPrompt,
  formatIssue,
  prepareDataset,
  type Example,
  type GenerationInput,
  type PreparedDataset,
} from '../engine/data/index.ts';
import { TunelabError } from '../engine/errors.ts';
import { Generator } from '../engine/generate/generator.ts';
import type { GpuContext } from '../engine/gpu/context.ts';
import { exportPeftAdapter, type AdapterSpec, type AdapterTensors, type AdapterTarget } from '../engine/interop/peft.ts';
import type { ModelConfig } from '../engine/model/config.ts';
import { loraConfig, loraLayers, loraParameterSpecs, type LoraAdapter, type LoraConfig } from '../engine/model/lora.ts';
import { planTraining } from '../engine/model/planner.ts';
import type { Tokenizer } from '../engine/tokenizer/index.ts';
import { decodeCheckpoint, encodeCheckpoint, type TrainingCheckpoint } from '../engine/train/checkpoint.ts';
import { ResilientTrainer, type ResilientEvent } from '../engine/train/resilient.ts';
import { trainConfig, type Trainer, type TrainConfig } from '../engine/train/trainer.ts';
import { currentGpuModel, currentModel, currentTrainedAdapter, frozenWeightStorage, setTrainedAdapter } from './model-session.ts';
import type {
  AdapterFiles,
  Failure,
  ProbeSnapshot,
  ResumeState,
  RunMetric,
  RunRecord,
  RunSettings,
  TrainingRequest,
  TrainingResult,
  TrainingUpdate,
} from './protocol.ts';

/** Optimizer steps per Trainer.train call: the loop yields to the worker's messages at least this often. */
const CHUNK_STEPS = 5;
/** Metrics go to the UI at most this often (batched). */
const UPDATE_INTERVAL_MS = 100;
/** Probe prompts taken from the data when the request brings none. */
const DATA_PROBES = 3;

interface ActiveRun {
  trainer: ResilientTrainer | undefined;
  pauseRequested: boolean;
  cancelRequested: boolean;
  /** Wakes the loop waiting between chunks (resume or cancel). */
  wake: (() => void) | null;
  /** Aborts a probe generation in flight (cancel). */
  abort: AbortController;
}

let active: ActiveRun | undefined;
let lastRecord: RunRecord | null = null;

/** The run in progress, if any, is asked to pause after its current step. False when there is no run to pause. */
export function pauseTraining(): boolean {
  if (!active || active.cancelRequested) return false;
  active.pauseRequested = true;
  active.trainer?.pause();
  return true;
}

export function resumeTraining(): boolean {
  if (!active || !active.pauseRequested) return false;
  active.pauseRequested = false;
  active.trainer?.resume();
  active.wake?.();
  return true;
}

/** Ends the run after its current step; its adapter is kept when a step was done. */
export function cancelTraining(): boolean {
  if (!active) return false;
  active.cancelRequested = true;
  active.trainer?.cancel();
  active.abort.abort();
  active.wake?.();
  return true;
}

export function isTraining(): boolean {
  return active !== undefined;
}

/** The record of the last run that ended (finished, cancelled or failed), as plain data; null before any. */
export function lastRunRecord(): RunRecord | null {
  return lastRecord;
}

/**
 * Trains a LoRA adapter on the current model with `request`, reporting through `send`. Resolves when the run ends
 * (finished or cancelled); rejects with a TunelabError a learner can act on (bad settings or data, a config the
 * memory planner refuses, a diverged loss, a lost GPU).
 */
export async function runTraining(
  acquireGpu: () => Promise<GpuContext>,
  request: TrainingRequest,
  send: (update: TrainingUpdate) => void | Promise<void>,
): Promise<TrainingResult> {
  if (active) throw new TunelabError('bad-data', 'a training run is already going; pause or cancel it before starting another');
  const run: ActiveRun = { trainer: undefined, pauseRequested: false, cancelRequested: false, wake: null, abort: new AbortController() };
  active = run;
  try {
    return await train(acquireGpu, request, send, run);
  } finally {
    active = undefined;
  }
}

/** A RangeError from the engine's config checks, in words for the settings panel. */
function settingsError(error: unknown): never {
  if (error instanceof RangeError) {
    throw new TunelabError('bad-data', `a training setting cannot be used: ${error.message.replace(/^training config: /, '')}`);
  }
  throw error;
}

/** The engine's TrainConfig of a LoRA run with these settings (also what its recipe exports). */
export function trainConfigOf(settings: RunSettings, lora: LoraConfig): TrainConfig {
  try {
    return trainConfig({
      learningRate: settings.learningRate,
      schedule: settings.schedule,
      warmupSteps: settings.warmupSteps,
      epochs: settings.epochs,
      batchSize: settings.batchSize,
      gradientAccumulationSteps: settings.gradientAccumulationSteps,
      maxGradNorm: settings.maxGradNorm,
      weightDecay: settings.weightDecay,
      seed: settings.seed,
      evalEvery: settings.evalEvery,
      evalAtStart: true,
      mode: 'lora',
      lora,
    });
  } catch (error) {
    settingsError(error);
  }
}

/** The LoRA config of these settings for a model of `layers` blocks. */
export function loraConfigOf(settings: RunSettings, layers: number): LoraConfig {
  const { rank, alpha, dropout, rsLora, targets } = settings.lora;
  const selection = settings.lora.layers;
  if (selection !== 'all' && !(Number.isSafeInteger(selection.last) && selection.last >= 1 && selection.last <= layers)) {
    throw new TunelabError('bad-data', `"last N layers" must be from 1 to ${layers} (this model's blocks), got ${selection.last}`);
  }
  try {
    return loraConfig({ rank, alpha, dropout, rsLora, targets: [...targets], layers: selection === 'all' ? 'all' : { last: selection.last } });
  } catch (error) {
    settingsError(error);
  }
}

function dataProblem(prepared: PreparedDataset): TunelabError {
  const { errors } = prepared.report;
  const first = errors[0];
  const where = first.source === 'validation' ? 'validation file' : 'training data';
  return new TunelabError(
    'bad-data',
    `the data has ${errors.length === 1 ? '1 error' : `${errors.length} errors`} to fix before training; the first: ` +
      `${formatIssue(first, `${where}, line`).replace(/line:(\d+)/, 'line $1')}. The Data panel shows ${errors.length === 1 ? 'it' : 'them all'}.`,
  );
}

/** SHA-256 of `text` (UTF-8), lowercase hex. */
async function sha256Hex(text: string): Promise<string> {
  const digest = await crypto.subtle.digest('SHA-256', new TextEncoder().encode(text));
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, '0')).join('');
}

// ---- probes -------------------------------------------------------------------------------------------------------

interface Probe {
  /** What the UI shows as the question. */
  prompt: string;
  /** Token ids the model continues: the prompt rendered exactly as training renders it. */
  ids: number[];
}

/** A data example as a question to ask the model: the conversation up to its last answer, or the prompt. */
function questionOf(example: Example, tokenizer: Tokenizer): { prompt: string; input: GenerationInput } | null {
  switch (example.kind) {
    case 'chat': {
      const lastAnswer = example.messages.map((m) => m.role).lastIndexOf('assistant');
      const asked = example.messages.slice(0, lastAnswer === -1 ? example.messages.length : lastAnswer);
      const lastUser = [...asked].reverse().find((m) => m.role === 'user');
      if (!lastUser) return null;
      return { prompt: lastUser.content, input: { kind: 'chat', messages: asked.map(({ role, content }) => ({ role, content })) } };
    }
    case 'completion':
      return { prompt: example.prompt, input: { kind: 'completion', prompt: example.prompt } };
    case 'text': {
      // The opening words of the text: the model should continue it in the data's style.
      const ids = tokenizer.encode(example.text).slice(0, 16);
      const prompt = tokenizer.decode(ids);
      return prompt.trim() ? { prompt, input: { kind: 'text', text: prompt } } : null;
    }
  }
}

/** The probe prompts: the request's (asked the way the data asks), else the first validation (or training) examples. */
function chooseProbes(request: TrainingRequest, prepared: PreparedDataset, tokenizer: Tokenizer): Probe[] {
  const template = prepared.options.template;
  const kind = prepared.report.format.kind;
  const given = request.probePrompts.map((p) => p.trim()).filter(Boolean);
  if (given.length > 0) {
    return given.map((prompt) => {
      const input: GenerationInput =
        kind === 'chat'
          ? { kind: 'chat', messages: [{ role: 'user', content: prompt }] }
          : kind === 'completion'
            ? { kind: 'completion', prompt }
            : { kind: 'text', text: prompt };
      return { prompt, ids: encodeGenerationPrompt(input, tokenizer, template) };
    });
  }
  const examples = new Map<string, Example>();
  for (const file of [prepared.files.train, prepared.files.validation]) {
    for (const example of file?.examples ?? []) examples.set(`${example.origin.source}:${example.origin.index}`, example);
  }
  const sequences = prepared.validation.length > 0 ? prepared.validation : prepared.train;
  const probes: Probe[] = [];
  const seen = new Set<string>();
  for (const sequence of sequences) {
    if (probes.length === DATA_PROBES) break;
    const origin = sequence.origin;
    const example = kind === 'text' ? prepared.files.train.examples[0] : examples.get(`${origin.source}:${origin.index}`);
    const question = example && questionOf(example, tokenizer);
    if (!question || seen.has(question.prompt)) continue;
    seen.add(question.prompt);
    probes.push({ prompt: question.prompt, ids: encodeGenerationPrompt(question.input, tokenizer, template) });
  }
  return probes;
}

/** New tokens per probe answer: the longest trained answer and a little more, so a learned answer is seen whole. */
function probeAnswerTokens(prepared: PreparedDataset): number {
  let longest = 0;
  for (const sequence of prepared.train) {
    let answer = 0;
    for (const m of sequence.trainMask) answer += m;
    longest = Math.max(longest, answer);
  }
  return Math.min(48, Math.max(8, longest + 4));
}

// ---- metrics to the UI ------------------------------------------------------------------------------------------------

/** Batches metric events into at most one message per UPDATE_INTERVAL_MS; flush() sends what is waiting now. */
class MetricStream {
  private pending: RunMetric[] = [];
  private timer: ReturnType<typeof setTimeout> | undefined;
  private lastSent = 0;

  constructor(private readonly send: (update: TrainingUpdate) => void) {}

  push(event: RunMetric): void {
    this.pending.push(event);
    if (this.timer !== undefined) return;
    const wait = Math.max(0, this.lastSent + UPDATE_INTERVAL_MS - performance.now());
    this.timer = setTimeout(() => this.flush(), wait);
  }

  flush(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.pending.length === 0) return;
    this.send({ type: 'metrics', events: this.pending });
    this.pending = [];
    this.lastSent = performance.now();
  }
}

// ---- the run ----------------------------------------------------------------------------------------------------------

/** Checkpoint period when the settings predate the setting. */
const DEFAULT_CHECKPOINT_EVERY = 20;

/** The metrics and probes a run had measured up to `step` (a checkpoint's, or where a lost device restarts). */
function upTo<T extends { step: number }>(items: readonly T[], step: number): T[] {
  return items.filter((item) => item.step <= step);
}

async function train(
  acquireGpu: () => Promise<GpuContext>,
  request: TrainingRequest,
  send: (update: TrainingUpdate) => void | Promise<void>,
  run: ActiveRun,
): Promise<TrainingResult> {
  const session = currentModel();
  if (!session) throw new TunelabError('bad-model', 'no model is loaded yet; wait for it to load, or load one in the Model panel');
  const modelConfig = session.loaded.config;
  const { settings, resume } = request;
  const lora = loraConfigOf(settings, modelConfig.nLayer);
  const config = trainConfigOf(settings, lora);
  const checkpointEvery = settings.checkpointEvery ?? DEFAULT_CHECKPOINT_EVERY;
  if (!(Number.isSafeInteger(checkpointEvery) && checkpointEvery >= 0)) {
    throw new TunelabError('bad-data', `"checkpoint every N steps" must be a whole number of at least 0, got ${checkpointEvery}`);
  }

  // The same preparation as the Data panel's report (trainer.worker.ts validateData), so what was checked is what trains.
  const prepared = prepareDataset(
    { train: request.data.train, ...(request.data.validation !== undefined ? { validation: request.data.validation } : {}) },
    session.tokenizer,
    {
      format: request.data.format,
      context: modelConfig.nPositions,
      batchSize: config.batchSize,
      validationFraction: settings.validationFraction,
      seed: config.seed,
    },
  );
  if (!prepared.report.trainable) throw dataProblem(prepared);
  if (prepared.batcher.stepsPerEpoch === 0) {
    throw new TunelabError('bad-data', 'there are no training examples with an answer to learn; add some in the Data panel');
  }
  const gpu = await acquireGpu();
  // Refuse a run that cannot fit this device before allocating anything (the planner's message says what would fit).
  const limits = gpu.device.limits;
  planTraining({
    config: modelConfig,
    batchSize: config.batchSize,
    sequenceLength: prepared.batcher.sequenceLength,
    mode: { kind: 'lora', rank: lora.rank, targets: lora.targets, layers: lora.layers },
    limits: { maxBufferSize: limits.maxBufferSize, maxStorageBufferBindingSize: limits.maxStorageBufferBindingSize },
    frozenWeights: frozenWeightStorage(),
  });

  const runId = request.runId;
  const startedAt = resume?.startedAt ?? Date.now();
  const datasetFingerprint = await sha256Hex(`${request.data.format}\n${request.data.train}`);
  const checkpoint = resume ? resumeCheckpoint(resume, { runId, datasetFingerprint, modelName: session.summary.name }) : undefined;
  let metrics: RunMetric[] = resume ? upTo(resume.metrics, checkpoint!.progress.step) : [];
  let probes: ProbeSnapshot[] = resume ? upTo(resume.probes, checkpoint!.progress.step) : [];
  const stream = new MetricStream(send);
  const clock = { start: performance.now(), pausedMs: 0, pausedSince: null as number | null, fromStep: checkpoint?.progress.step ?? 0 };
  let trainer: ResilientTrainer | undefined;
  const record = (status: RunRecord['status'], failure: Failure | null): RunRecord => {
    const lastStep = metrics.findLast((m) => m.type === 'step');
    const lastEval = metrics.findLast((m) => m.type === 'eval');
    return {
      id: runId,
      name: request.name,
      startedAt,
      endedAt: Date.now(),
      config: structuredClone(settings),
      datasetFingerprint,
      modelName: session.summary.name,
      metrics: [...metrics],
      probes: [...probes],
      status,
      failure,
      steps: trainer?.trainer?.step ?? lastStep?.step ?? 0,
      totalSteps: trainer?.totalSteps ?? 0,
      elapsedMs: trainer?.trainer?.elapsedMs ?? 0,
      finalLoss: lastStep?.loss ?? null,
      finalValLoss: lastEval?.loss ?? null,
    };
  };

  let adapter: LoraAdapter | undefined;
  let probeGenerator: { trainer: Trainer; generator: Generator } | undefined;
  try {
    trainer = new ResilientTrainer({
      gpu,
      acquireGpu,
      // The worker's device and its model upload are shared with the playground: never the trainer's to destroy.
      ownsAcquiredGpus: false,
      model: { config: modelConfig, weights: session.loaded.weights },
      modelOn: (device) => currentGpuModel(device),
      data: prepared.batcher,
      config,
      checkpoint,
      checkpointEvery,
      checkpointAtEpochEnd: true,
      checkpointExtra: { runId, datasetFingerprint, modelName: session.summary.name },
      onCheckpoint: async (taken) => {
        const step = taken.progress.step;
        stream.flush();
        // The page keeps it in IndexedDB; training waits until it is written (or failed to be: the page says why).
        await send({
          type: 'checkpoint',
          step,
          totalSteps: trainer!.totalSteps,
          files: encodeCheckpoint(taken),
          metrics: upTo(metrics, step),
          probes: upTo(probes, step),
          elapsedMs: taken.progress.elapsedMs,
        });
      },
    });
    const resilient = trainer;
    run.trainer = resilient;
    const probeList = chooseProbes(request, prepared, session.tokenizer);
    const answerTokens = probeAnswerTokens(prepared);
    const endOfText = session.summary.tokenizer.endOfText;
    const totalSteps = resilient.totalSteps;

    /** Tells the UI, and keeps paused time out of the time-left estimate. */
    const notePause = (type: 'paused' | 'resumed', step: number) => {
      stream.flush();
      const now = performance.now();
      if (type === 'paused') clock.pausedSince = now;
      else if (clock.pausedSince !== null) {
        clock.pausedMs += now - clock.pausedSince;
        clock.pausedSince = null;
      }
      send({ type, step });
    };
    resilient.subscribe((event: ResilientEvent) => {
      switch (event.type) {
        case 'step': {
          // Rates over this session of the run: tokens per second of training time, and the time left at the pace
          // so far, probes and evaluations included (the trainer's own figures restart with every chunk).
          const activeMs = performance.now() - clock.start - clock.pausedMs;
          const done = event.step - clock.fromStep;
          const metric = {
            ...event,
            tokensPerSecond: event.elapsedMs > 0 ? (event.tokens * 1000) / event.elapsedMs : 0,
            etaMs: done > 0 ? (activeMs / done) * (totalSteps - event.step) : 0,
          };
          metrics.push(metric);
          stream.push(metric);
          break;
        }
        case 'eval':
          metrics.push(event);
          stream.push(event);
          break;
        case 'paused':
        case 'resumed':
          notePause(event.type, event.step);
          break;
        case 'device-lost':
          // The steps after the checkpoint are redone on the new device (with the same results): forget them.
          stream.flush();
          metrics = upTo(metrics, event.resumeStep);
          probes = upTo(probes, event.resumeStep);
          send({ type: 'device-lost', step: event.step, resumeStep: event.resumeStep, message: event.message });
          break;
        case 'recovered':
          clock.start = performance.now();
          clock.pausedMs = 0;
          clock.fromStep = event.step;
          send({ type: 'recovered', step: event.step, device: event.device, message: event.message });
          break;
      }
      // 'start' and 'end' come with every chunk; the run's own start and end are reported by this function.
    });

    const takeSnapshot = async (step: number) => {
      const current = resilient.trainer;
      if (probeList.length === 0 || !current?.adapter) return;
      // A generator binds the model and adapter of one device: after a recovery, build it again.
      if (probeGenerator?.trainer !== current) {
        probeGenerator?.generator.destroy();
        probeGenerator = undefined;
        const generator = await Generator.create(resilient.gpu!, current.model, { tokenizer: session.tokenizer, adapter: current.adapter });
        probeGenerator = { trainer: current, generator };
      }
      const answers = [];
      try {
        for (const probe of probeList) {
          if (run.cancelRequested) return;
          const result = await probeGenerator.generator.generate(probe.ids, { temperature: 0, maxNewTokens: answerTokens }, undefined, run.abort.signal);
          if (result.stopReason === 'aborted') return;
          answers.push({ prompt: probe.prompt, answer: answerFromGenerated(result.text, prepared.options.template, endOfText) });
        }
      } catch (error) {
        // A device lost while probing: the next chunk notices it and recovers; these answers are simply skipped.
        if (resilient.gpu?.lost) return;
        throw error;
      }
      const snapshot = { step, answers };
      probes.push(snapshot);
      stream.flush();
      send({ type: 'probe', snapshot });
    };

    send({
      type: 'started',
      runId,
      name: request.name,
      startedAt,
      totalSteps,
      microStepsPerEpoch: prepared.batcher.stepsPerEpoch,
      gradientAccumulationSteps: config.gradientAccumulationSteps,
      batchSize: prepared.batcher.batchSize,
      sequenceLength: prepared.batcher.sequenceLength,
      trainableParameters: countTrainable(modelConfig, lora),
      validationExamples: prepared.report.stats.validationExamples,
      probePrompts: probeList.map((p) => p.prompt),
      resumedFrom: clock.fromStep,
    });
    // A resumed run's history up to the checkpoint is the page's already (it sent it in `resume`).

    // 0: only before the first step and after the last.
    const probeEvery = request.probeEvery > 0 ? request.probeEvery : Infinity;
    let step = clock.fromStep;
    let nextProbe = probeEvery === Infinity ? Infinity : (Math.floor(step / probeEvery) + 1) * probeEvery;
    let lastProbe = probes.at(-1)?.step ?? -1;
    // The model before training: built on the first chunk (the trainer is made there), so train 0 steps first.
    if (step === 0 && lastProbe !== 0) {
      await resilient.train({ untilStep: 0 });
      stream.flush();
      await takeSnapshot(0);
      lastProbe = 0;
    }
    while (step < totalSteps && !run.cancelRequested) {
      if (run.pauseRequested) {
        // A pause asked for between chunks (during a probe, say): wait here; the trainer is not running.
        notePause('paused', step);
        while (run.pauseRequested && !run.cancelRequested) await new Promise<void>((resolve) => (run.wake = resolve));
        run.wake = null;
        if (run.cancelRequested) break;
        notePause('resumed', step);
      }
      const until = Math.min(totalSteps, step + CHUNK_STEPS, nextProbe);
      const summary = await resilient.train({ untilStep: until });
      step = summary.step;
      stream.flush();
      if (summary.reason === 'cancelled' || run.cancelRequested) break;
      if (step >= nextProbe) {
        await takeSnapshot(step);
        lastProbe = step;
        nextProbe = step + probeEvery;
      }
      // Let pause, resume and cancel messages in before the next chunk.
      await new Promise((resolve) => setTimeout(resolve, 0));
    }
    if (!run.cancelRequested && step === totalSteps && lastProbe !== totalSteps) await takeSnapshot(totalSteps);
    stream.flush();

    const status = step === totalSteps ? 'finished' : 'cancelled';
    lastRecord = record(status, null);
    const trainedSteps = resilient.trainer?.step ?? 0;
    if (trainedSteps > 0) {
      adapter = resilient.releaseAdapter();
      if (adapter) setTrainedAdapter({ adapter, spec: lora, runId, gpu: resilient.gpu! });
    }
    return { status, record: lastRecord, hasAdapter: adapter !== undefined };
  } catch (error) {
    stream.flush();
    const failure: Failure =
      error instanceof TunelabError
        ? { code: error.code, message: error.message }
        : { code: 'internal', message: error instanceof Error ? error.message : String(error) };
    lastRecord = record('failed', failure);
    throw error;
  } finally {
    probeGenerator?.generator.destroy();
    trainer?.destroy();
  }
}

/** The stored checkpoint of an interrupted run, checked against the run it is asked to continue. */
function resumeCheckpoint(resume: ResumeState, expected: { runId: string; datasetFingerprint: string; modelName: string }): TrainingCheckpoint {
  const checkpoint = decodeCheckpoint(resume.checkpoint);
  const extra = (checkpoint.extra ?? {}) as Record<string, unknown>;
  if (extra.runId !== undefined && extra.runId !== expected.runId) {
    throw new TunelabError('bad-data', 'the stored checkpoint belongs to another run; start this run again instead');
  }
  if (extra.datasetFingerprint !== undefined && extra.datasetFingerprint !== expected.datasetFingerprint) {
    throw new TunelabError('bad-data', 'the data differs from what this run was trained on, so it cannot continue; start a new run');
  }
  if (typeof extra.modelName === 'string' && extra.modelName !== expected.modelName) {
    throw new TunelabError(
      'bad-model',
      `this run fine-tunes the model "${extra.modelName}", but "${expected.modelName}" is loaded; load "${extra.modelName}" in the Model panel to resume it`,
    );
  }
  return checkpoint;
}

/** LoRA parameters the run trains (what the Training panel shows before the trainer exists). */
function countTrainable(config: ModelConfig, lora: LoraConfig): number {
  return loraParameterSpecs(config, lora).reduce((sum, spec) => sum + spec.shape.reduce((a, d) => a * d, 1), 0);
}

// ---- export -----------------------------------------------------------------------------------------------------------

/** The current trained adapter as PEFT's two files (adapter_config.json, adapter_model.safetensors). */
export async function exportTrainedAdapter(): Promise<AdapterFiles> {
  const trained = currentTrainedAdapter();
  if (!trained) throw new TunelabError('bad-model', 'there is no trained adapter to export yet; train one first');
  const { adapter, spec } = trained;
  const values = await adapter.read('tunelab');
  const tensors: AdapterTensors = new Map();
  for (const site of adapter.sites) {
    const path = `h.${site.layer}.${site.module}`;
    tensors.set(path, { a: values.get(`${path}.lora_A`)!, b: values.get(`${path}.lora_B`)! });
  }
  const adapterSpec: AdapterSpec = {
    rank: spec.rank,
    alpha: spec.alpha,
    dropout: spec.dropout,
    useRslora: spec.rsLora,
    targetModules: [...spec.targets] as AdapterTarget[],
    layers: spec.layers === 'all' ? null : loraLayers(adapter.model, spec.layers),
    baseModel: currentModel()?.summary.name ?? '',
  };
  return exportPeftAdapter(adapterSpec, tensors, adapter.model);
}
