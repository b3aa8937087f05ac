// Training checkpoints, saved and restored exactly: the trainable weights (a LoRA adapter or the unfrozen base
// tensors), AdamW's moments, the step counters, the position in the data order, RNG states and the configuration.
// Platform-neutral: a checkpoint is two files as bytes —
//   checkpoint.safetensors   f32 tensors: `weights/<name>`, `adam.m/<name>`, `adam.v/<name>`
//   trainer_state.json       everything else (JSON)
// Node writes them to a directory (src/cli/), the browser will keep them in IndexedDB. Tensors are stored in f32, so
// a restored run continues bit for bit.

import { TunelabError } from '../errors.ts';
import { parseSafetensors, readTensorF32, writeSafetensors, type TensorToWrite } from '../io/safetensors.ts';
import type { OptimizerState } from './optimizer.ts';

export const CHECKPOINT_FILES = { tensors: 'checkpoint.safetensors', state: 'trainer_state.json' } as const;
export const CHECKPOINT_FORMAT = 'tunelab-checkpoint';
export const CHECKPOINT_VERSION = 1;

export interface NamedTensor {
  readonly name: string;
  readonly shape: readonly number[];
  readonly data: Float32Array;
}

/** Where a run stands. Steps count optimizer updates; micro-steps count micro-batches (the data position). */
export interface TrainingProgress {
  /** Optimizer updates done. */
  readonly step: number;
  /** Micro-batches consumed: the next training batch is the data batcher's batch number `microStep`. */
  readonly microStep: number;
  /** Epoch of the next micro-batch. */
  readonly epoch: number;
  /** Loss tokens trained on so far. */
  readonly tokens: number;
  /** Training time so far (pauses excluded), for tokens/s and ETA after a resume. */
  readonly elapsedMs: number;
}

export interface TrainingCheckpoint {
  /** The TrainConfig the run uses (plain JSON). */
  readonly config: Record<string, unknown>;
  readonly progress: TrainingProgress;
  /** Named RNG states (Rng.getState()), e.g. the LoRA dropout stream. */
  readonly rngStates: Readonly<Record<string, readonly number[]>>;
  /** The trainable tensors, as they are after `progress.step` updates. */
  readonly weights: readonly NamedTensor[];
  readonly optimizer: OptimizerState;
  /** Anything else a caller wants back (model description, data fingerprint, metric history). */
  readonly extra?: Readonly<Record<string, unknown>>;
}

export type CheckpointFiles = Record<(typeof CHECKPOINT_FILES)[keyof typeof CHECKPOINT_FILES], Uint8Array>;

const WEIGHTS = 'weights/';
const MOMENT_M = 'adam.m/';
const MOMENT_V = 'adam.v/';

interface StateJson {
  format: typeof CHECKPOINT_FORMAT;
  version: number;
  config: Record<string, unknown>;
  progress: TrainingProgress;
  optimizerStep: number;
  rngStates: Record<string, number[]>;
  /** Tensor names and shapes, in the order the trainer lists them (safetensors sorts by name). */
  weights: { name: string; shape: number[] }[];
  extra: Record<string, unknown>;
}

/** The checkpoint's two files as bytes. */
export function encodeCheckpoint(checkpoint: TrainingCheckpoint): CheckpointFiles {
  const tensors: TensorToWrite[] = [];
  const weightNames = new Set<string>();
  for (const w of checkpoint.weights) {
    tensors.push({ name: WEIGHTS + w.name, shape: w.shape, data: w.data });
    weightNames.add(w.name);
  }
  const shapes = new Map(checkpoint.weights.map((w) => [w.name, w.shape]));
  for (const t of checkpoint.optimizer.tensors) {
    const shape = shapes.get(t.name) ?? [t.m.length];
    tensors.push({ name: MOMENT_M + t.name, shape, data: t.m });
    tensors.push({ name: MOMENT_V + t.name, shape, data: t.v });
  }
  const state: StateJson = {
    format: CHECKPOINT_FORMAT,
    version: CHECKPOINT_VERSION,
    config: checkpoint.config,
    progress: { ...checkpoint.progress },
    optimizerStep: checkpoint.optimizer.step,
    rngStates: Object.fromEntries(Object.entries(checkpoint.rngStates).map(([k, v]) => [k, Array.from(v)])),
    weights: checkpoint.weights.map((w) => ({ name: w.name, shape: [...w.shape] })),
    extra: { ...(checkpoint.extra ?? {}) },
  };
  return {
    [CHECKPOINT_FILES.tensors]: writeSafetensors(tensors, {
      dtype: 'F32',
      metadata: { format: CHECKPOINT_FORMAT, step: String(checkpoint.progress.step) },
    }),
    [CHECKPOINT_FILES.state]: new TextEncoder().encode(JSON.stringify(state, null, 2) + '\n'),
  } as CheckpointFiles;
}

function bad(message: string): TunelabError {
  return new TunelabError('bad-data', `checkpoint: ${message}`);
}

/** Reads a checkpoint back from its two files. Throws TunelabError('bad-data') naming what is missing or wrong. */
export function decodeCheckpoint(files: Partial<Record<string, Uint8Array>>): TrainingCheckpoint {
  const stateBytes = files[CHECKPOINT_FILES.state];
  const tensorBytes = files[CHECKPOINT_FILES.tensors];
  if (!stateBytes) throw bad(`${CHECKPOINT_FILES.state} is missing`);
  if (!tensorBytes) throw bad(`${CHECKPOINT_FILES.tensors} is missing`);
  let state: StateJson;
  try {
    state = JSON.parse(new TextDecoder().decode(stateBytes)) as StateJson;
  } catch (error) {
    throw bad(`${CHECKPOINT_FILES.state} is not valid JSON (${(error as Error).message})`);
  }
  if (state?.format !== CHECKPOINT_FORMAT) throw bad(`${CHECKPOINT_FILES.state} is not a Tunelab checkpoint`);
  if (state.version !== CHECKPOINT_VERSION) {
    throw bad(`version ${state.version} is not supported (this Tunelab reads version ${CHECKPOINT_VERSION})`);
  }
  let file;
  try {
    file = parseSafetensors(tensorBytes);
  } catch (error) {
    throw bad(`${CHECKPOINT_FILES.tensors}: ${(error as Error).message}`);
  }
  const tensor = (name: string, expectedLength: number): Float32Array => {
    if (!file.tensors.has(name)) throw bad(`${CHECKPOINT_FILES.tensors} has no tensor ${name}`);
    const data = readTensorF32(file, name);
    if (data.length !== expectedLength) throw bad(`tensor ${name} holds ${data.length} values, expected ${expectedLength}`);
    return data;
  };
  const weights: NamedTensor[] = state.weights.map((w) => {
    const length = w.shape.reduce((a, d) => a * d, 1);
    return { name: w.name, shape: w.shape, data: tensor(WEIGHTS + w.name, length) };
  });
  const momentNames = [...file.tensors.keys()].filter((n) => n.startsWith(MOMENT_M)).map((n) => n.slice(MOMENT_M.length));
  const order = new Map(state.weights.map((w, i) => [w.name, i]));
  momentNames.sort((a, b) => (order.get(a) ?? Infinity) - (order.get(b) ?? Infinity) || (a < b ? -1 : 1));
  const optimizer: OptimizerState = {
    step: state.optimizerStep,
    tensors: momentNames.map((name) => {
      const length = file.tensors.get(MOMENT_M + name)!.elementCount;
      return { name, m: tensor(MOMENT_M + name, length), v: tensor(MOMENT_V + name, length) };
    }),
  };
  return {
    config: state.config,
    progress: state.progress,
    rngStates: state.rngStates,
    weights,
    optimizer,
    extra: state.extra,
  };
}
