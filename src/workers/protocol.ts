// The shapes that cross the worker boundary. Every coarse call returns an `Outcome`: errors are values, not thrown,
// because Comlink keeps only an Error's name and message and the UI needs the stable `code` to choose what to show.
// Everything here is plain data (structured-cloneable): no class instances, no functions.

import type { TunelabErrorCode } from '../engine/errors.ts';
import type { DataReport, FormatChoice } from '../engine/data/index.ts';
import type { BufferPurpose, LayerSelection, LoraTarget } from '../engine/model/planner.ts';
import type { LrScheduleKind } from '../engine/train/schedule.ts';
import type { EvalEvent, StepEvent } from '../engine/train/metrics.ts';

/** Codes the engine raises, plus the two failures only the worker boundary can produce. */
export type FailureCode = TunelabErrorCode | 'worker-failed' | 'internal';

export interface Failure {
  code: FailureCode;
  /** A sentence a learner can act on. */
  message: string;
}

export type Outcome<T> = { ok: true; value: T } | { ok: false; failure: Failure };

// ---- model -------------------------------------------------------------------------------------------------------

/** Where `loadModel` reads a model from. */
export type ModelRequest =
  /** A folder served over HTTP (the bundled model). `url` must be absolute: the worker's base URL is not the page's. */
  | { kind: 'url'; url: string; name: string }
  /** Files the user picked or dropped (config.json, model.safetensors, tokenizer.json; others are ignored). */
  /** `name` is the picked folder's name, or empty for loose files. */
  | { kind: 'files'; files: File[]; name: string };

/** What the UI shows about the loaded model. The weights themselves stay in the worker. */
export interface ModelSummary {
  /** Increases with every successful load, so the UI can tell one model from the next one. */
  generation: number;
  /** "tiny", the folder name of a model the user picked, "model from files", or a Hub repo id ("openai-community/gpt2"). */
  name: string;
  origin: 'bundled' | 'files' | 'hub';
  /** Where it came from, as the loader describes it ("http://…/models/tiny/", "the selected files", the Hub page URL). */
  source: string;
  parameterCount: number;
  /** L, NH, C, HS = C / NH */
  layers: number;
  heads: number;
  width: number;
  headSize: number;
  /** Longest sequence in tokens (n_positions). */
  context: number;
  /** V: rows of the token embedding. */
  vocabSize: number;
  /** Bytes of the weights as f32 (what they take on the GPU). */
  weightBytes: number;
  tokenizer: {
    /** "byte-level (one token per byte)", "byte-level BPE (50,000 merges)", "WordPiece" … */
    kind: string;
    /** Ids the tokenizer produces (may be below vocabSize when the embedding is padded). */
    vocabSize: number;
    /** Text of the end-of-text token, e.g. `<|endoftext|>`. */
    endOfText: string;
  };
  /** Things worth knowing that did not stop loading (extra tensors in the checkpoint). */
  warnings: string[];
}

// ---- data --------------------------------------------------------------------------------------------------------

export interface DataValidationRequest {
  /** Echoed back, so the UI can drop answers to requests it has since replaced. */
  requestId: number;
  /** The editor's text (training data). */
  train: string;
  /** A separate validation file's text, when the user gave one (then `validationFraction` is not used). */
  validation?: string;
  format: FormatChoice;
  /** Rows per batch: decides the steps an epoch takes. */
  batchSize: number;
  /** Share of the examples held out for validation (0..1). */
  validationFraction: number;
  /** Seeds the split. */
  seed: number;
}

export interface DataValidation {
  requestId: number;
  report: DataReport;
  /** Context the counts assume (the loaded model's, else 1024), and the model generation they were made with. */
  context: number;
  modelGeneration: number | null;
}

// ---- memory -------------------------------------------------------------------------------------------------------

export interface MemoryEstimateRequest {
  /** B and T of the run. T is clamped to the model's context. */
  batchSize: number;
  sequenceLength: number;
  lora: { rank: number; targets: LoraTarget[]; layers: LayerSelection };
  /** How the frozen weights are kept (the Model panel's setting; default: the worker's current one). */
  frozenWeights?: 'f32' | 'f16';
}

export interface MemoryEstimate {
  totalBytes: number;
  bytesByPurpose: Record<BufferPurpose, number>;
  parameterCount: number;
  trainableParameterCount: number;
  batchSize: number;
  sequenceLength: number;
  /** The device's largest buffer and binding, for context. */
  maxBufferSize: number;
  maxStorageBufferBindingSize: number;
  /** Null when the run fits this device; otherwise the planner's explanation, with a setting that would fit. */
  refusal: string | null;
}

// ---- playground ---------------------------------------------------------------------------------------------------

/**
 * How a playground prompt reaches the model: 'chat' renders it as one user turn through the chat template, exactly as
 * training renders an example (so a fine-tuned model is asked the way it was taught); 'text' continues it as it is.
 */
export type PromptStyle = 'chat' | 'text';

/** The sampling controls of the playground (the engine's SamplingOptions, less the stop conditions it sets itself). */
export interface PlaygroundSampling {
  /** 0 = greedy. */
  temperature: number;
  /** 0 = no limit. */
  topK: number;
  /** 1 = keep every token. */
  topP: number;
  /** 1 = off. */
  repetitionPenalty: number;
  seed: number;
  maxNewTokens: number;
}

export interface GenerateRequest {
  /** Chosen by the UI; `stopGeneration(id)` aborts this generation. */
  id: number;
  prompt: string;
  style: PromptStyle;
  sampling: PlaygroundSampling;
  /** Generate with the current LoRA adapter (the fine-tuned model) or without it (the base model). */
  useAdapter: boolean;
  /**
   * Which of the playground's two generators runs it ('left' for the base column, 'right' for the fine-tuned one), so
   * that both columns can stream at once; each keeps its own KV cache.
   */
  slot: 'left' | 'right';
}

/** A streamed piece of progress: the answer so far (throttled, so not every token produces one). */
export interface GenerationUpdate {
  id: number;
  text: string;
  /** New tokens sampled so far. */
  tokens: number;
}

export type GenerationStopReason = 'end-of-text' | 'stop-string' | 'max-new-tokens' | 'context-full' | 'aborted';

export interface GenerationDone {
  id: number;
  /** The answer (for a chat prompt without the template's leading space and anything after end-of-text). */
  text: string;
  stopReason: GenerationStopReason;
  /** New tokens, end-of-text included. */
  tokens: number;
  promptTokens: number;
  tokensPerSecond: number;
  elapsedMs: number;
  /** The adapter the answer was made with; null for the base model. */
  adapter: AdapterInfo | null;
}

/** The LoRA adapter the fine-tuned column uses: the last training run's, or one imported from PEFT files. */
export interface AdapterInfo {
  source: 'trained' | 'imported';
  /** The run it belongs to, when it has one (a trained run's id, or the saved run it was loaded from). */
  runId: string | null;
  /** A name to show ("adapter_config.json", a saved run's name); empty when the run names it. */
  name: string;
  /** R, alpha, rsLoRA and the adapted modules. */
  rank: number;
  alpha: number;
  rsLora: boolean;
  targets: string[];
  /** Adapted blocks, ascending. */
  layers: number[];
  parameterCount: number;
  /** The model it belongs to (ModelSummary.generation). */
  modelGeneration: number;
  /** Things the import noticed that did not stop it. */
  warnings: string[];
}

export interface AdapterImportRequest {
  /** adapter_config.json's text. */
  adapterConfigJson: string;
  /** adapter_model.safetensors' bytes. */
  adapterModel: Uint8Array;
  /** What to call it ("my-adapter", a saved run's name). */
  name: string;
  /** The saved run it comes from, if any. */
  runId: string | null;
}

// ---- training -----------------------------------------------------------------------------------------------------

/** The hyperparameters of a LoRA run, as the Training settings panel holds them (`TrainSettings.values`). */
export interface RunSettings {
  learningRate: number;
  schedule: LrScheduleKind;
  warmupSteps: number;
  /** Passes over the training examples; may be fractional. */
  epochs: number;
  /** B: examples per micro-batch. */
  batchSize: number;
  gradientAccumulationSteps: number;
  /** 0 = no clipping. */
  maxGradNorm: number;
  weightDecay: number;
  seed: number;
  /** Evaluate every N optimizer steps (and before the first and after the last); 0 = only at the ends. */
  evalEvery: number;
  lora: { rank: number; alpha: number; dropout: number; rsLora: boolean; targets: LoraTarget[]; layers: 'all' | { last: number } };
  /** Share held out for validation when there is no separate validation file. */
  validationFraction: number;
  /**
   * Save a checkpoint to browser storage every N optimizer steps (and at each epoch end), so that a reload or a lost
   * GPU costs at most N steps; 0 = only at epoch ends. Missing in settings saved before it existed: the default.
   */
  checkpointEvery?: number;
}

/** Where an interrupted run continues from: its stored checkpoint and what it had measured up to it. */
export interface ResumeState {
  /** checkpoint.safetensors and trainer_state.json (engine/train/checkpoint.ts), by file name. */
  checkpoint: Record<string, Uint8Array>;
  /** Date.now() when the run first started. */
  startedAt: number;
  /** Metrics and probe answers up to the checkpoint's step. */
  metrics: RunMetric[];
  probes: ProbeSnapshot[];
}

export interface TrainingRequest {
  /** The run's id (RunRecord.id), chosen by the page so that it can keep the request before the run starts. */
  runId: string;
  /** What the run is called in the Runs list. */
  name: string;
  settings: RunSettings;
  /** The Data panel's text, format and optional validation file: prepared exactly as its report was. */
  data: { train: string; validation?: string; format: FormatChoice };
  /** User messages to ask the model during training; empty = the first prompts of the validation examples. */
  probePrompts: string[];
  /** Regenerate the probe answers every N optimizer steps (and always before the first and after the last); 0 = only then. */
  probeEvery: number;
  /** Continue an interrupted run from its checkpoint instead of starting at step 0. */
  resume?: ResumeState;
}

/** One probe prompt and the model's greedy answer to it at some step. */
export interface ProbeAnswer {
  prompt: string;
  answer: string;
}

/** The answers to every probe prompt after `step` optimizer steps (0 = the base model, before training). */
export interface ProbeSnapshot {
  step: number;
  answers: ProbeAnswer[];
}

/** What a run measured, in order: training steps and evaluations (the trainer's events, as plain data). */
export type RunMetric = StepEvent | EvalEvent;

/** Streamed from the worker while a run goes on. Metrics are batched, at most about ten messages a second. */
export type TrainingUpdate =
  | {
      type: 'started';
      runId: string;
      name: string;
      /** Date.now() when the run started. */
      startedAt: number;
      totalSteps: number;
      /** Micro-batches per pass over the training examples, and per optimizer step. */
      microStepsPerEpoch: number;
      gradientAccumulationSteps: number;
      /** B and T of a micro-batch. */
      batchSize: number;
      sequenceLength: number;
      trainableParameters: number;
      validationExamples: number;
      probePrompts: string[];
      /** The step a resumed run continues from (0 for a new run). */
      resumedFrom: number;
    }
  | { type: 'metrics'; events: RunMetric[] }
  | { type: 'probe'; snapshot: ProbeSnapshot }
  | { type: 'paused' | 'resumed'; step: number }
  /**
   * A checkpoint to keep (the page writes it to IndexedDB; the worker waits until the callback's promise settles),
   * with the metrics and probe answers up to its step, so that a resumed run shows its whole history.
   */
  | {
      type: 'checkpoint';
      step: number;
      totalSteps: number;
      files: Record<string, Uint8Array>;
      metrics: RunMetric[];
      probes: ProbeSnapshot[];
      elapsedMs: number;
    }
  /** The GPU device was lost: training restarts from `resumeStep` on a new one (metrics past it will come again). */
  | { type: 'device-lost'; step: number; resumeStep: number; message: string }
  | { type: 'recovered'; step: number; device: string; message: string };

export type RunStatus = 'finished' | 'cancelled' | 'failed';

/** Everything worth keeping about a run, as plain data (the Runs panel stores it; the adapter is exported apart). */
export interface RunRecord {
  id: string;
  name: string;
  /** Date.now() at the start and at the end. */
  startedAt: number;
  endedAt: number;
  /** The settings it trained with. */
  config: RunSettings;
  /** SHA-256 (hex) of the UTF-8 text `${format}\n${training text}`: the same data gives the same fingerprint. */
  datasetFingerprint: string;
  /** The model it fine-tuned (its name in the Model panel). */
  modelName: string;
  metrics: RunMetric[];
  probes: ProbeSnapshot[];
  status: RunStatus;
  /** Why it failed, for status 'failed'. */
  failure: Failure | null;
  /** Optimizer steps done, of the total planned. */
  steps: number;
  totalSteps: number;
  /** Training time, pauses excluded. */
  elapsedMs: number;
  /** The last step's training loss and the last validation loss; null when there was none. */
  finalLoss: number | null;
  finalValLoss: number | null;
}

/** How startTraining ends when the run did not fail (a failure is the Outcome's). */
export interface TrainingResult {
  status: 'finished' | 'cancelled';
  record: RunRecord;
  /** Whether the run left an adapter for the playground (a run cancelled before its first step does not). */
  hasAdapter: boolean;
}

/** A PEFT adapter directory's two files. */
export interface AdapterFiles {
  adapterConfigJson: string;
  adapterModel: Uint8Array;
}

// ---- hub models ---------------------------------------------------------------------------------------------------

/** A model to load from the Hugging Face Hub: `gpt2`, `distilgpt2`, `user/repo`, `user/repo@revision`, or a URL. */
export interface HubModelRequest {
  ref: string;
  /** Download again even when the browser's cache has the model (and replace the cached copy). */
  refresh?: boolean;
}

/** Streamed while a Hub model loads (about ten a second). Sizes in bytes. */
export interface HubLoadProgress {
  /**
   * 'download': from the network; 'cache': read from this browser's cache (no network); 'reading': every file is
   * here and the weights are being checked.
   */
  stage: 'download' | 'cache' | 'reading';
  /** 'config.json', 'tokenizer.json', 'model.safetensors', or a shard of the weights. */
  file: string;
  fileLoaded: number;
  /** Null until the server says the size. */
  fileTotal: number | null;
  /** All files so far, and in all (null until every file's size is known; the weights' answer tells the last). */
  loaded: number;
  total: number | null;
}

/** How loadHubModel ends when it did not fail. */
export interface HubModelLoaded {
  /** The model, now the current one (origin 'hub', name = the repo id, source = its page on the Hub). */
  summary: ModelSummary;
  /** True when nothing was downloaded. */
  fromCache: boolean;
  /** Bytes of the model's files. */
  totalBytes: number;
  /** Set when the model loaded but could not be kept for offline use (storage full): what to do about it. */
  cacheWarning: string | null;
}

/** A model kept in this browser's cache. */
export interface CachedHubModel {
  /** The cache's key; deleteCachedHubModel takes it. */
  key: string;
  /** What loadHubModel takes to load it again: 'gpt2', 'user/repo@dev', or the folder URL. */
  ref: string;
  /** The repo id (or the folder URL). */
  name: string;
  /** The revision for a Hub model; null for a folder URL. */
  revision: string | null;
  bytes: number;
  /** ISO 8601 time it was saved. */
  savedAt: string;
}

export interface CachedHubModels {
  /** Largest first. */
  models: CachedHubModel[];
  /** This site's storage use and quota, where the browser says. */
  storage: { usage: number; quota: number } | null;
  /** Why models cannot be kept in this browser (no Cache Storage), or null. */
  unavailable: string | null;
}
// (end of hub models)

// ---- exports --------------------------------------------------------------------------------------------------------
// What a saved run's adapter can become: the base model with the adapter merged in (a Hugging Face checkpoint, or an
// ONNX file), the scale-out recipe (TRL + PEFT), and the engine's greedy answer for comparing with the ONNX file.

/** A saved run's adapter and the names that go with it; the current model is the base it is merged into. */
export interface ExportRequest {
  adapter: AdapterFiles;
  /** The run's name, for README and model-card text ("Custom data, 3 Nov 14:05"). */
  runName: string;
  /** A file-safe folder name: the zips hold one folder of that name. */
  folder: string;
  /** The model the run fine-tuned (its Model panel name), named in the message when another model is loaded. */
  modelName: string;
}

/** The engine's greedy answer to a prompt with a run's adapter, and the logits to compare an ONNX export with. */
export interface GreedyRequest extends ExportRequest {
  prompt: string;
  style: PromptStyle;
  /** New tokens at most (end-of-text, or the model's context, may stop it sooner). */
  maxNewTokens: number;
}

export interface GreedyAnswer {
  /** The prompt as token ids (for 'chat', rendered through the chat template). */
  promptIds: number[];
  /** The new tokens, argmax at each position, a final end-of-text included. */
  ids: number[];
  /** The answer as the playground shows it (chat: without the template's leading space and end-of-text). */
  text: string;
  /** (V) logits at the prompt's last position (predicting the first new token). */
  lastLogits: Float32Array;
  endOfTextId: number;
  /** n_positions: prompt plus new tokens never exceed it. */
  context: number;
}

/** Token ids as answer text, the way GreedyAnswer.text is made (for the ONNX model's answer). */
export interface DecodeRequest {
  ids: number[];
  style: PromptStyle;
}

export interface RecipeRequest {
  /** The run's adapter (its LoRA settings are read from it); null: the settings' LoRA values are used. */
  adapter: AdapterFiles | null;
  /** What the run was started with: its data text and format, and its settings. */
  request: TrainingRequest;
  runName: string;
  folder: string;
  /** from_pretrained's model id in train.py: the run's model name. */
  modelName: string;
}
// (end of exports)
