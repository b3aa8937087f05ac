// The shapes that cross the worker boundary. Every coarse call returns an `Outcome`: errors are values, not thrown,
// because Comlink keeps only an Error's name and message and the UI needs the stable `code` to choose what to show.
// Everything here is plain data (structured-cloneable): no class instances, no functions.

import type { TunelabErrorCode } from '../engine/errors.ts';
import type { DataReport, FormatChoice } from '../engine/data/index.ts';
import type { BufferPurpose, LayerSelection, LoraTarget } from '../engine/model/planner.ts';

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
  /** "tiny", the folder name of a model the user picked, or "model from files". */
  name: string;
  origin: 'bundled' | 'files';
  /** Where it came from, as the loader describes it ("http://…/models/tiny/", "the selected files"). */
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
