// The memory planner: every GPU buffer a run needs (name, purpose, bytes, the named views inside it) and the total,
// from (model config, batch, sequence length, mode, device limits), before anything is allocated. It is the one plan
// the engine allocates from: Gpt2Model cuts its weights as planned here, LoraAdapter holds the one 'lora' buffer,
// Gpt2Run allocates exactly planGpt2Run's buffers and views (and refuses, before allocating, a run that breaks a
// device limit), AdamW packs its moments as planned here. `planMemory` adds up a whole training run — weights,
// adapter, the training run, the evaluation run, optimizer state and readback slots — and `checkMemoryPlan` refuses
// a plan that breaks a device limit or the budget with a MemoryRefusal (TunelabError 'too-large') that names the
// largest buffer, the limit, and a setting that would fit.
//
// Letters: B batch, T positions, BT = B·T tokens, C width, NH heads, V vocabulary, L layers, R LoRA rank.
//
// What a GPT-2 run holds (llm.c-style training with flash attention, so no (T,T) matrices are kept):
//   io          token ids, targets, loss mask, per-token losses and correctness, the metric sums
//   activations encoded (BT,C); per kept block ln1 (BT,C) + mean/rstd (BT), qkv (BT,3C), atty (BT,C) + lse
//               (B,NH,T), attproj, residual2, ln2 (+ mean/rstd), fch (BT,4C), fchGelu (BT,4C), fcproj, residual3;
//               LoRA u (BT,R) per site; lnf (+ mean/rstd); the logits of one chunk of tokens (chunk,V). Blocks the
//               backward never reaches (below the first one that trains) share one 'transient' set.
//   gradients   one per TRAINABLE tensor (frozen weights get none)
//   scratch     activation gradients reused by every block: dresidual (BT,C), btc (BT,C), bt4c and bt4cGelu
//               (BT,4C), the attention delta (B,NH,T), LoRA du (BT,R), layernorm partials, dwte token segments
// Each kind of tensor has its own buffer(s), one view per block: WebGPU forbids binding one buffer read-only and
// writable in the same dispatch, and a kernel never reads and writes the same kind.

import { TunelabError } from '../errors.ts';
import { attentionScratchSizes } from '../ops/attention.ts';
import { CROSS_ENTROPY_RESULT } from '../ops/crossentropy.ts';
import { GRAD_NORM_RESULT, planGradNorm } from '../ops/gradnorm.ts';
import { layernormScratchLength } from '../ops/layernorm.ts';
import { loraPartialLength } from '../ops/lora.ts';
import { validateModelConfig, type ModelConfig } from './config.ts';
import { checkLoraRank, loraParameterSpecs, loraSites, type LoraShape } from './lora.ts';
import { gpt2ParameterLayout, layoutParameters, type ParameterLayout } from './weights.ts';

// LoRA's selection types and layer rule live in lora.ts; the worker and UI have long imported them from here.
export { loraLayers, type LayerSelection, type LoraTarget } from './lora.ts';

/** Device limits a plan must respect. */
export interface DeviceLimits {
  /** Largest GPUBuffer the device creates. */
  maxBufferSize: number;
  /** Largest range one binding may cover. */
  maxStorageBufferBindingSize: number;
}

const ALIGN_ELEMENTS = 64; // 256 bytes: every view starts where it can be bound on its own
const alignElements = (n: number) => Math.ceil(Math.max(n, 1) / ALIGN_ELEMENTS) * ALIGN_ELEMENTS;

/** Logits of a classifier chunk stay below this unless one row is larger (a 50257-word batch would not fit). */
export const CLASSIFIER_CHUNK_BYTES = 64 * 1024 * 1024;

/** Floats per readback slot of a run's step metrics (the metric sums and a few extra values). */
export const METRICS_SLOT_FLOATS = 64;
/** Readback slots of a run unless it asks for another number: how far the CPU may run ahead of the GPU. */
export const DEFAULT_METRICS_RING = 3;

// ---- one GPT-2 run -----------------------------------------------------------------------------------------------

export type Gpt2Mode =
  /** Forward only: logits, loss and token accuracy. An adapter, if given, is applied (without dropout). */
  | { kind: 'inference' }
  /** Base frozen; the adapter's A and B train. */
  | { kind: 'lora' }
  /** No LoRA; the last `lastBlocks` blocks and ln_f train. */
  | { kind: 'selective'; lastBlocks: number }
  /** Every parameter trains. */
  | { kind: 'full' };

export interface Gpt2RunShape {
  /** B: sequences per batch. */
  batchSize: number;
  /** T: positions per sequence, at most the model's context. */
  sequenceLength: number;
  mode: Gpt2Mode;
  /**
   * Tokens per classifier chunk (rows of logits held at once). Default: all BT tokens, or as many as fit 64 MiB.
   * A chunk smaller than BT must keep chunk·C a multiple of 64, so each chunk's rows start on 256 bytes.
   */
  classifierChunk?: number;
  /** Inference only: keep the logits of every token (BT, V) for readLogits(); for small batches (tests, sampling). */
  keepLogits?: boolean;
  /** Readback slots for step metrics (default 3): how many steps the CPU may run ahead of the GPU. */
  metricsRing?: number;
}

export type RunBufferPurpose = 'activations' | 'gradients' | 'scratch' | 'io';

export interface RunViewPlan {
  /** 'h3.qkv', 'transient.fch', 'h.1.mlp.c_fc.lora_A', 'dresidual' … */
  readonly name: string;
  /** Element offset in its buffer, a multiple of 64 (256 bytes). */
  readonly offset: number;
  readonly length: number;
}

export interface RunBufferPlan {
  /** Also the GPU label: 'act.qkv', 'grads.0', 'scratch.bt4c' … */
  readonly name: string;
  readonly purpose: RunBufferPurpose;
  readonly elements: number;
  readonly bytes: number;
  readonly views: readonly RunViewPlan[];
}

export interface Gpt2RunPlan {
  readonly B: number;
  readonly T: number;
  readonly mode: Gpt2Mode;
  readonly chunk: number;
  readonly keepLogits: boolean;
  /** Trainable tensors (weights.ts names, or LoRA names) in gradient layout order. */
  readonly trainable: ParameterLayout;
  /** Lowest block whose activations the backward needs; layers below share one transient set (L: none). */
  readonly firstBackwardLayer: number;
  /** Storage buffers, in allocation order. */
  readonly buffers: readonly RunBufferPlan[];
  /** Bytes of the storage buffers (the readback slots not included). */
  readonly totalBytes: number;
  readonly bytesByPurpose: Readonly<Record<RunBufferPurpose, number>>;
  /** Readback slots of METRICS_SLOT_FLOATS floats for the step metrics (mappable, so apart from the buffers). */
  readonly metricsRing: number;
}

const BUFFER_PREFIX: Record<RunBufferPurpose, string> = { activations: 'act', gradients: 'grads', scratch: 'scratch', io: 'io' };

/**
 * Packs views of these lengths into as few buffers of at most maxBytes as their order allows, each view on a
 * 64-element (256-byte) boundary. A view larger than maxBytes gets a buffer of its own (checkMemoryPlan refuses it).
 */
function packViews(views: readonly (readonly [string, number])[], maxBytes: number): { views: RunViewPlan[]; elements: number }[] {
  const packed: { views: RunViewPlan[]; elements: number }[] = [];
  let current: { views: RunViewPlan[]; elements: number } | undefined;
  for (const [name, length] of views) {
    const padded = alignElements(length);
    if (!current || (current.views.length > 0 && (current.elements + padded) * 4 > maxBytes)) {
      current = { views: [], elements: 0 };
      packed.push(current);
    }
    current.views.push({ name, offset: current.elements, length });
    current.elements += padded;
  }
  return packed;
}

/** Per-block activations kept for the backward, with their lengths. */
function layerActivationLengths(config: ModelConfig, B: number, T: number): Record<string, number> {
  const BT = B * T;
  const C = config.nEmbd;
  return {
    ln1: BT * C,
    ln1Mean: BT,
    ln1Rstd: BT,
    qkv: BT * 3 * C,
    atty: BT * C,
    attLse: attentionScratchSizes({ B, T, C, NH: config.nHead }).lse,
    attproj: BT * C,
    residual2: BT * C,
    ln2: BT * C,
    ln2Mean: BT,
    ln2Rstd: BT,
    fch: BT * 4 * C,
    fchGelu: BT * 4 * C,
    fcproj: BT * C,
    residual3: BT * C,
  };
}

/** Which set of activation views block l uses: its own ('h3') when the backward reaches it, else 'transient'. */
export function activationSlot(l: number, firstBackwardLayer: number): string {
  return l < firstBackwardLayer ? 'transient' : `h${l}`;
}

/** Smallest token count whose rows of C floats span a multiple of 256 bytes. */
function chunkRowAlignment(C: number): number {
  let rows = 1;
  while ((rows * C) % ALIGN_ELEMENTS !== 0) rows++;
  return rows;
}

function trainableLayout(config: ModelConfig, mode: Gpt2Mode, lora: LoraShape | undefined): ParameterLayout {
  const base = gpt2ParameterLayout(config);
  switch (mode.kind) {
    case 'inference':
      return layoutParameters([]);
    case 'full':
      return base;
    case 'selective': {
      const first = config.nLayer - mode.lastBlocks;
      return layoutParameters(base.entries.filter((e) => (e.layer !== null ? e.layer >= first : e.name.startsWith('ln_f.'))));
    }
    case 'lora':
      if (!lora) throw new RangeError('a LoRA run needs an adapter');
      return layoutParameters(loraParameterSpecs(config, lora));
  }
}

/**
 * Every storage buffer a Gpt2Run of this shape allocates, with its views and bytes; pure arithmetic. `lora` is the
 * adapter's shape: required for mode lora, optional for inference (applied), refused otherwise. Device limits only
 * decide how buffers split and how wide a classifier chunk is: whether the plan fits is checkMemoryPlan's question.
 */
export function planGpt2Run(config: ModelConfig, shape: Gpt2RunShape, limits: DeviceLimits, lora?: LoraShape): Gpt2RunPlan {
  validateModelConfig(config);
  const { batchSize: B, sequenceLength: T, mode } = shape;
  const L = config.nLayer;
  const C = config.nEmbd;
  const V = config.vocabSize;
  if (!Number.isSafeInteger(B) || B < 1) throw new RangeError(`batch size must be a positive integer, got ${B}`);
  if (!Number.isSafeInteger(T) || T < 1 || T > config.nPositions) {
    throw new RangeError(`sequence length must be 1..${config.nPositions} (the model's context), got ${T}`);
  }
  if (mode.kind === 'selective' && !(Number.isSafeInteger(mode.lastBlocks) && mode.lastBlocks >= 0 && mode.lastBlocks <= L)) {
    throw new RangeError(`selective fine-tuning: lastBlocks must be 0..${L}, got ${mode.lastBlocks}`);
  }
  if (lora && mode.kind !== 'lora' && mode.kind !== 'inference') {
    throw new RangeError(`a ${mode.kind} run cannot carry a LoRA adapter (merge it first, or use mode lora)`);
  }
  const metricsRing = shape.metricsRing ?? DEFAULT_METRICS_RING;
  if (!Number.isSafeInteger(metricsRing) || metricsRing < 1) throw new RangeError(`metricsRing must be ≥ 1, got ${metricsRing}`);
  const training = mode.kind !== 'inference';
  const keepLogits = shape.keepLogits === true;
  if (keepLogits && training) throw new RangeError('keepLogits is for inference runs: training overwrites logits with dlogits');
  const BT = B * T;
  const rowAlign = chunkRowAlignment(C);
  let chunk: number;
  if (keepLogits) {
    chunk = BT;
  } else if (shape.classifierChunk !== undefined) {
    chunk = shape.classifierChunk;
    if (!Number.isSafeInteger(chunk) || chunk < 1) throw new RangeError(`classifier chunk must be a positive integer, got ${chunk}`);
    if (chunk < BT && chunk % rowAlign !== 0) {
      throw new RangeError(`classifier chunk ${chunk} must be a multiple of ${rowAlign} (so chunk·C = chunk·${C} rows start on 256 bytes)`);
    }
    chunk = Math.min(chunk, BT);
  } else {
    const fit = Math.floor(Math.min(CLASSIFIER_CHUNK_BYTES, limits.maxStorageBufferBindingSize) / (V * 4));
    chunk = fit >= BT ? BT : Math.max(rowAlign, Math.floor(fit / rowAlign) * rowAlign);
  }

  const trainable = trainableLayout(config, mode, lora);
  const sites = lora ? loraSites(config, lora) : [];
  const firstBackwardLayer =
    mode.kind === 'full' ? 0 : mode.kind === 'selective' ? L - mode.lastBlocks : mode.kind === 'lora' ? Math.min(...sites.map((s) => s.layer)) : L;
  const slot = (l: number) => activationSlot(l, firstBackwardLayer);
  const slots = [...new Set([...Array(L).keys()].map(slot))];

  const buffers: RunBufferPlan[] = [];
  const addBuffers = (name: string, purpose: RunBufferPurpose, views: [string, number][]) => {
    const packed = packViews(views, limits.maxBufferSize);
    packed.forEach((p, i) =>
      buffers.push({ name: packed.length === 1 ? name : `${name}.${i}`, purpose, elements: p.elements, bytes: p.elements * 4, views: p.views }),
    );
  };
  /** One tensor in its own buffer: 'io.ids', 'act.lnf', 'scratch.btc'. */
  const single = (name: string, purpose: RunBufferPurpose, length: number) => addBuffers(`${BUFFER_PREFIX[purpose]}.${name}`, purpose, [[name, length]]);

  // Inputs and per-token loss terms.
  single('ids', 'io', BT); // u32
  single('targets', 'io', BT); // u32
  single('mask', 'io', BT);
  single('losses', 'io', BT);
  single('correct', 'io', BT);
  single('metrics', 'io', CROSS_ENTROPY_RESULT.length);

  // Activations: per kind, one view per kept layer plus one shared by the layers the backward never reaches.
  single('encoded', 'activations', BT * C);
  for (const [kind, length] of Object.entries(layerActivationLengths(config, B, T))) {
    addBuffers(`act.${kind}`, 'activations', slots.map((s) => [`${s}.${kind}`, length]));
  }
  if (sites.length) {
    const uViews = [...new Set(sites.map((site) => `${slot(site.layer)}.${site.module}.u`))];
    addBuffers('act.loraU', 'activations', uViews.map((v) => [v, BT * lora!.rank]));
  }
  single('lnf', 'activations', BT * C);
  single('lnfMean', 'activations', BT);
  single('lnfRstd', 'activations', BT);
  single('logits', 'activations', chunk * V);

  if (training) {
    // Gradients of the trainable tensors, in their layout order, split where a buffer would exceed maxBufferSize.
    addBuffers('grads', 'gradients', trainable.entries.map((e) => [e.name, e.elementCount]));
    // Activation gradients reused by every layer (llm.c style): the residual stream's, a (BT,C) and two (BT,4C).
    single('dresidual', 'scratch', BT * C);
    single('btc', 'scratch', BT * C); // dlnf, dln2, datty, dln1 in turn
    single('bt4c', 'scratch', BT * 4 * C); // dfchGelu, then dqkv
    single('bt4cGelu', 'scratch', BT * 4 * C); // dfch (gelu's backward is out of place)
    single('attDelta', 'scratch', attentionScratchSizes({ B, T, C, NH: config.nHead }).delta);
    if (mode.kind === 'lora') {
      single('loraDu', 'scratch', BT * lora!.rank);
      // Split LoRA weight gradients' partial sums (ops/lora.ts); 4C is the widest side of any LoRA layer.
      single('loraPartial', 'scratch', loraPartialLength(lora!.rank, 4 * C));
    }
    if (trainable.entries.some((e) => e.kind === 'layernorm-weight')) single('lnPartials', 'scratch', layernormScratchLength(BT, C));
    if (trainable.byName.has('wte.weight')) {
      single('segmentTokens', 'scratch', BT);
      single('segmentOffsets', 'scratch', BT + 1);
      single('segmentPositions', 'scratch', BT);
    }
  }

  const bytesByPurpose: Record<RunBufferPurpose, number> = { activations: 0, gradients: 0, scratch: 0, io: 0 };
  for (const b of buffers) bytesByPurpose[b.purpose] += b.bytes;
  return {
    B,
    T,
    mode,
    chunk,
    keepLogits,
    trainable,
    firstBackwardLayer,
    buffers,
    totalBytes: buffers.reduce((s, b) => s + b.bytes, 0),
    bytesByPurpose,
    metricsRing,
  };
}

// ---- the model's weights: f32, or frozen Conv1D weights packed as f16 ---------------------------------------------

/**
 * How a model stores its frozen weights. 'f16': every Conv1D weight W (K,N), and the tied token table wte (V,C) read
 * as W with K = V, N = C, that no run of the model's training mode updates is kept only as packed f16 pairs
 * (ops/matmul-f16.ts: K·ceil(N/2) u32), half the bytes; the arithmetic stays f32. Everything else (wpe, layernorms,
 * biases, trained weights) stays f32.
 */
export type FrozenWeightStorage = 'f32' | 'f16';

/** One packed weight (a Conv1D W, or wte as K = V, N = C) inside a 'params.f16.N' buffer: `length` = K·ceil(N/2) u32 at element `offset`. */
export interface PackedWeightView extends RunViewPlan {
  /** Rows of W (input features). */
  readonly K: number;
  /** Columns of W (output features). */
  readonly N: number;
}

export interface ModelWeightsPlan {
  /** The tensors kept in f32, laid out as weights.ts lays out a parameter list (cut by partitionLayout). */
  readonly f32: ParameterLayout;
  /** Buffers 'params.f16.0', 'params.f16.1' … of packed weights, each at most maxBufferSize. */
  readonly f16: readonly { readonly elements: number; readonly views: readonly PackedWeightView[] }[];
}

/**
 * The weights a model stores as f16 for runs of `training`: wte and every linear weight that mode leaves frozen (all
 * of them for LoRA and inference, the blocks below the trained ones for selective, none for full).
 */
export function packedWeightNames(config: ModelConfig, storage: FrozenWeightStorage, training: Gpt2Mode): string[] {
  if (storage === 'f32') return [];
  const trained = training.kind === 'lora' || training.kind === 'inference' ? new Set<string>() : new Set(trainableLayout(config, training, undefined).byName.keys());
  return gpt2ParameterLayout(config)
    .entries.filter((e) => (e.kind === 'linear-weight' || e.name === 'wte.weight') && !trained.has(e.name))
    .map((e) => e.name);
}

/** What Gpt2Model allocates for its weights: the f32 layout and the packed f16 buffers. */
export function planModelWeights(config: ModelConfig, maxBufferSize: number, storage: FrozenWeightStorage, training: Gpt2Mode): ModelWeightsPlan {
  const base = gpt2ParameterLayout(config);
  const packed = new Set(packedWeightNames(config, storage, training));
  const f32 = layoutParameters(base.entries.filter((e) => !packed.has(e.name)));
  const shapes = new Map(base.entries.filter((e) => packed.has(e.name)).map((e) => [e.name, { K: e.shape[0], N: e.shape[1] }]));
  const f16 = packViews([...shapes].map(([name, { K, N }]) => [name, K * Math.ceil(N / 2)] as const), maxBufferSize).map((p) => ({
    elements: p.elements,
    views: p.views.map((v) => ({ ...v, ...shapes.get(v.name)! })),
  }));
  return { f32, f16 };
}

// ---- a whole run: request and plan -------------------------------------------------------------------------------

export type PlanMode =
  /** Every weight trains (pretraining from scratch, small models). */
  | { kind: 'full' }
  /** Only the last `lastBlocks` blocks and the final layernorm train (no LoRA). */
  | { kind: 'selective'; lastBlocks: number }
  /** Base frozen; LoRA A (R,in) and B (out,R) on the chosen modules of the chosen blocks train. */
  | ({ kind: 'lora' } & LoraShape)
  /** Forward only (evaluation, generation), with an adapter applied if `lora` is given. */
  | { kind: 'inference'; lora?: LoraShape };

export interface PlanRequest {
  config: ModelConfig;
  /** B: sequences per micro-batch. */
  batchSize: number;
  /** T: tokens per sequence, at most config.nPositions. */
  sequenceLength: number;
  mode: PlanMode;
  limits: DeviceLimits;
  /** Tokens per classifier chunk (rows of logits held at once); default: as many as fit CLASSIFIER_CHUNK_BYTES. */
  classifierChunk?: number;
  /** Inference only: keep every token's logits (BT,V). */
  keepLogits?: boolean;
  /**
   * Training only: also an inference run of the same shape for validation, as the trainer builds whenever there
   * are validation examples (default true).
   */
  evaluation?: boolean;
  /** Readback slots per run for the step metrics (DEFAULT_METRICS_RING). */
  metricsRing?: number;
  /** Total bytes the run may use (the UI's memory budget); no total limit when absent. */
  budgetBytes?: number;
  /** How the model stores its frozen Conv1D weights and wte (default 'f32'); 'f16' halves them (see FrozenWeightStorage). */
  frozenWeights?: FrozenWeightStorage;
}

export type BufferPurpose = 'params' | 'grads' | 'optimizer' | 'activations' | 'scratch';
export const BUFFER_PURPOSES: readonly BufferPurpose[] = ['params', 'grads', 'optimizer', 'activations', 'scratch'];

export interface PlannedView {
  /** 'h.3.attn.c_attn.weight', 'h3.fch', 'logits' … */
  readonly name: string;
  readonly elements: number;
  readonly bytes: number;
  /** Byte offset inside its buffer; a multiple of 256, so the view binds on its own. */
  readonly offset: number;
}

export interface PlannedBuffer {
  /**
   * The GPU label: 'params.0', 'lora', 'act.fch', 'grads', 'adam.m.0', 'gpt2.metrics.0' …; the evaluation run's
   * buffers carry the prefix 'eval.' here (on the GPU they have the same labels as the training run's).
   */
  readonly name: string;
  readonly purpose: BufferPurpose;
  /** Size allocated: a multiple of 256. */
  readonly bytes: number;
  readonly views: readonly PlannedView[];
}

export interface MemoryPlan {
  readonly request: Readonly<PlanRequest>;
  /** The run that trains (or, for mode inference, the only run): what Gpt2Run allocates. */
  readonly run: Gpt2RunPlan;
  /** The validation run of a training plan, or null. */
  readonly evaluationRun: Gpt2RunPlan | null;
  readonly buffers: readonly PlannedBuffer[];
  readonly totalBytes: number;
  readonly bytesByPurpose: Readonly<Record<BufferPurpose, number>>;
  /** Parameters of the base model. */
  readonly parameterCount: number;
  /** LoRA parameters (0 without an adapter). */
  readonly loraParameterCount: number;
  /** Parameters that get gradients and optimizer state. */
  readonly trainableParameterCount: number;
  /** Names of the trainable tensors, in layout order. */
  readonly trainableTensors: readonly string[];
}

/** The adapter shape a mode carries, if any. */
function loraOf(mode: PlanMode): LoraShape | undefined {
  return mode.kind === 'lora' ? mode : mode.kind === 'inference' ? mode.lora : undefined;
}

function gpt2ModeOf(mode: PlanMode): Gpt2Mode {
  return mode.kind === 'lora' ? { kind: 'lora' } : mode.kind === 'inference' ? { kind: 'inference' } : mode;
}

/** The request that plans one Gpt2Run of this shape (and the optimizer of what it trains): what Gpt2Run checks. */
export function runPlanRequest(
  config: ModelConfig,
  shape: Gpt2RunShape,
  limits: DeviceLimits,
  lora?: LoraShape,
  frozenWeights?: FrozenWeightStorage,
): PlanRequest {
  let mode: PlanMode;
  if (shape.mode.kind === 'lora') {
    if (!lora) throw new RangeError('a LoRA run needs an adapter');
    mode = { kind: 'lora', rank: lora.rank, targets: lora.targets, layers: lora.layers, sites: lora.sites };
  } else if (shape.mode.kind === 'inference') {
    mode = { kind: 'inference', lora };
  } else {
    if (lora) throw new RangeError(`a ${shape.mode.kind} run cannot carry a LoRA adapter (merge it first, or use mode lora)`);
    mode = shape.mode;
  }
  return {
    config,
    batchSize: shape.batchSize,
    sequenceLength: shape.sequenceLength,
    mode,
    limits: { maxBufferSize: limits.maxBufferSize, maxStorageBufferBindingSize: limits.maxStorageBufferBindingSize },
    classifierChunk: shape.classifierChunk,
    keepLogits: shape.keepLogits,
    metricsRing: shape.metricsRing,
    evaluation: false,
    ...(frozenWeights ? { frozenWeights } : {}),
  };
}

function checkRequest(request: PlanRequest): void {
  validateModelConfig(request.config);
  const { sequenceLength: T, config } = request;
  if (Number.isSafeInteger(T) && T > config.nPositions) {
    throw new TunelabError(
      'too-large',
      `sequence length ${T} is longer than the model's context of ${config.nPositions} tokens; use at most ${config.nPositions}`,
    );
  }
  const lora = loraOf(request.mode);
  if (lora) {
    checkLoraRank(lora.rank);
    loraSites(config, lora); // validates targets, layers or sites
  }
}

/** Plans every buffer of a run. Pure arithmetic: never allocates, never throws for limits (see checkMemoryPlan). */
export function planMemory(request: PlanRequest): MemoryPlan {
  checkRequest(request);
  const { config, mode, limits } = request;
  const lora = loraOf(mode);
  const training = mode.kind !== 'inference';
  const shape: Gpt2RunShape = {
    batchSize: request.batchSize,
    sequenceLength: request.sequenceLength,
    mode: gpt2ModeOf(mode),
    classifierChunk: request.classifierChunk,
    keepLogits: request.keepLogits,
    metricsRing: request.metricsRing,
  };
  const run = planGpt2Run(config, shape, limits, lora);
  const evaluationRun = training && request.evaluation !== false ? planGpt2Run(config, { ...shape, mode: { kind: 'inference' } }, limits, lora) : null;

  const buffers: PlannedBuffer[] = [];
  const add = (name: string, purpose: BufferPurpose, elements: number, views: readonly RunViewPlan[]) =>
    buffers.push({
      name,
      purpose,
      bytes: elements * 4,
      views: views.map((v) => ({ name: v.name, elements: v.length, bytes: v.length * 4, offset: v.offset * 4 })),
    });
  /** Packed views as buffers `${prefix}.0`, `${prefix}.1` … (always numbered, as Gpt2Model and AdamW label them). */
  const numbered = (prefix: string, purpose: BufferPurpose, views: [string, number][], maxBytes: number) =>
    packViews(views, maxBytes).forEach((p, i) => add(`${prefix}.${i}`, purpose, p.elements, p.views));

  // Weights: Gpt2Model cuts the f32 layout into buffers ≤ maxBufferSize (weights.ts partitionLayout, the same rule);
  // with frozenWeights 'f16' the frozen Conv1D weights and a frozen wte are packed apart in 'params.f16.N'.
  const base = gpt2ParameterLayout(config);
  const weights = planModelWeights(config, limits.maxBufferSize, request.frozenWeights ?? 'f32', gpt2ModeOf(mode));
  numbered('params', 'params', weights.f32.entries.map((e) => [e.name, e.elementCount]), limits.maxBufferSize);
  weights.f16.forEach((p, i) => add(`params.f16.${i}`, 'params', p.elements, p.views));
  // LoraAdapter: every A and B in one buffer.
  const loraLayout = layoutParameters(lora ? loraParameterSpecs(config, lora) : []);
  if (lora) {
    const [packed] = packViews(loraLayout.entries.map((e) => [e.name, e.elementCount]), Infinity);
    add('lora', 'params', packed.elements, packed.views);
  }

  const runPurpose: Record<RunBufferPurpose, BufferPurpose> = { io: 'activations', activations: 'activations', gradients: 'grads', scratch: 'scratch' };
  const addRun = (plan: Gpt2RunPlan, prefix: string) => {
    for (const b of plan.buffers) add(prefix + b.name, runPurpose[b.purpose], b.elements, b.views);
    for (let i = 0; i < plan.metricsRing; i++) add(`${prefix}gpt2.metrics.${i}`, 'scratch', METRICS_SLOT_FLOATS, []);
  };
  addRun(run, '');

  // AdamW (train/optimizer.ts): m and v per trainable tensor, packed under both the buffer and the binding limit,
  // then the gradient norm's partial sums and result.
  const trainable = run.trainable;
  if (trainable.entries.length) {
    const moments: [string, number][] = trainable.entries.map((e) => [e.name, e.elementCount]);
    const momentBytes = Math.min(limits.maxBufferSize, limits.maxStorageBufferBindingSize);
    numbered('adam.m', 'optimizer', moments, momentBytes);
    numbered('adam.v', 'optimizer', moments, momentBytes);
    const partials = planGradNorm(trainable.entries.map((e) => e.elementCount)).partialsLength;
    add('gradnorm.partials', 'scratch', alignElements(partials), []);
    add('gradnorm.result', 'scratch', alignElements(GRAD_NORM_RESULT.length), []);
    add('adam.step', 'scratch', alignElements(1), []); // AdamW's step count, kept on the GPU (ops/adamw.ts)
  }
  if (evaluationRun) addRun(evaluationRun, 'eval.');

  const bytesByPurpose = Object.fromEntries(BUFFER_PURPOSES.map((p) => [p, 0])) as Record<BufferPurpose, number>;
  let totalBytes = 0;
  for (const b of buffers) {
    bytesByPurpose[b.purpose] += b.bytes;
    totalBytes += b.bytes;
  }
  return {
    request,
    run,
    evaluationRun,
    buffers,
    totalBytes,
    bytesByPurpose,
    parameterCount: base.parameterCount,
    loraParameterCount: loraLayout.parameterCount,
    trainableParameterCount: trainable.parameterCount,
    trainableTensors: trainable.entries.map((e) => e.name),
  };
}

// ---- checking --------------------------------------------------------------------------------------------------

export type LimitName = 'maxStorageBufferBindingSize' | 'maxBufferSize' | 'budget';

export interface LimitBreach {
  readonly limit: LimitName;
  readonly limitBytes: number;
  /** The buffer (for maxBufferSize and budget: the largest buffer) that breaks the limit. */
  readonly buffer: string;
  /** The view, for maxStorageBufferBindingSize. */
  readonly view?: string;
  /** Bytes of the offending view, buffer, or (budget) the plan's total. */
  readonly bytes: number;
}

/** The first limit a plan breaks: a binding, then a buffer, then the budget; null when it fits. */
export function findLimitBreach(plan: MemoryPlan): LimitBreach | null {
  const { limits, budgetBytes } = plan.request;
  let worstView: { buffer: PlannedBuffer; view: PlannedView } | undefined;
  for (const buffer of plan.buffers) {
    for (const view of buffer.views) if (!worstView || view.bytes > worstView.view.bytes) worstView = { buffer, view };
  }
  if (worstView && worstView.view.bytes > limits.maxStorageBufferBindingSize) {
    return {
      limit: 'maxStorageBufferBindingSize',
      limitBytes: limits.maxStorageBufferBindingSize,
      buffer: worstView.buffer.name,
      view: worstView.view.name,
      bytes: worstView.view.bytes,
    };
  }
  const largest = largestBuffer(plan);
  if (largest && largest.bytes > limits.maxBufferSize) {
    return { limit: 'maxBufferSize', limitBytes: limits.maxBufferSize, buffer: largest.name, bytes: largest.bytes };
  }
  if (budgetBytes !== undefined && plan.totalBytes > budgetBytes) {
    return { limit: 'budget', limitBytes: budgetBytes, buffer: largest?.name ?? '', bytes: plan.totalBytes };
  }
  return null;
}

export function largestBuffer(plan: MemoryPlan): PlannedBuffer | undefined {
  let largest: PlannedBuffer | undefined;
  for (const b of plan.buffers) if (!largest || b.bytes > largest.bytes) largest = b;
  return largest;
}

/** A change to the request that makes the plan fit. */
export interface PlanSuggestion {
  readonly batchSize: number;
  readonly sequenceLength: number;
  readonly classifierChunk?: number;
  readonly mode: PlanMode;
  /** "batch size 2, sequence length 512 unchanged" */
  readonly description: string;
  readonly totalBytes: number;
}

/** The refusal a plan that does not fit gets: a TunelabError('too-large') with the details as fields. */
export class MemoryRefusal extends TunelabError {
  constructor(
    readonly breach: LimitBreach,
    readonly largest: { name: string; bytes: number; purpose: BufferPurpose },
    readonly suggestion: PlanSuggestion | null,
    message: string,
  ) {
    super('too-large', message);
    this.name = 'MemoryRefusal';
  }
}

function fits(request: PlanRequest): MemoryPlan | null {
  try {
    const plan = planMemory(request);
    return findLimitBreach(plan) ? null : plan;
  } catch {
    return null;
  }
}

/** Largest value in [1, upper] for which `ok` holds, assuming ok is monotone (true up to some point); 0 if none. */
function largestFitting(upper: number, ok: (value: number) => boolean): number {
  let lo = 0;
  let hi = upper;
  while (lo < hi) {
    const mid = Math.ceil((lo + hi) / 2);
    if (ok(mid)) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

/** LoRA on c_attn of every block at rank 8: what a learner who asked for full training could do instead. */
const FALLBACK_LORA: PlanMode = { kind: 'lora', rank: 8, targets: ['c_attn'], layers: 'all' };

function describeMode(mode: PlanMode): string {
  if (mode.kind === 'full') return 'full fine-tuning';
  if (mode.kind === 'selective') return `training only the last ${mode.lastBlocks} blocks`;
  if (mode.kind === 'inference') return mode.lora ? 'inference with a LoRA adapter' : 'inference';
  return mode.sites ? `LoRA rank ${mode.rank} on ${mode.sites.length} modules` : `LoRA rank ${mode.rank} on ${mode.targets.join(', ')}`;
}

/**
 * Searches downward for a setting that fits: a smaller batch at the same sequence length, then batch 1 with a
 * shorter sequence; for a classifier chunk that breaks the binding limit, the largest chunk that fits; for full or
 * selective training whose weights alone do not fit, LoRA. Null when even that does not fit (the model is too big).
 */
export function suggestFittingSetting(request: PlanRequest): PlanSuggestion | null {
  const { batchSize: B, sequenceLength: T } = request;
  const suggestion = (changes: Partial<PlanRequest>, description: string): PlanSuggestion | null => {
    const plan = fits({ ...request, ...changes });
    return plan
      ? {
          batchSize: plan.request.batchSize,
          sequenceLength: plan.request.sequenceLength,
          classifierChunk: changes.classifierChunk,
          mode: plan.request.mode,
          description,
          totalBytes: plan.totalBytes,
        }
      : null;
  };
  const tries: (() => PlanSuggestion | null)[] = [
    () => {
      if (request.classifierChunk === undefined) return null;
      // A chunk shorter than the batch must be a whole number of row alignments (planGpt2Run).
      const align = chunkRowAlignment(request.config.nEmbd);
      const rows = (k: number) => k * align;
      const k = largestFitting(Math.floor((request.classifierChunk - 1) / align), (c) => fits({ ...request, classifierChunk: rows(c) }) !== null);
      return k ? suggestion({ classifierChunk: rows(k) }, `classifier chunk ${rows(k)} tokens`) : null;
    },
    () => {
      const b = largestFitting(B - 1, (value) => fits({ ...request, batchSize: value }) !== null);
      return b ? suggestion({ batchSize: b }, `batch size ${b}, sequence length ${T} unchanged`) : null;
    },
    () => {
      const t = largestFitting(T - 1, (value) => fits({ ...request, batchSize: 1, sequenceLength: value }) !== null);
      return t ? suggestion({ batchSize: 1, sequenceLength: t }, `batch size 1 and sequence length ${t}`) : null;
    },
    () => {
      if (request.mode.kind === 'lora' || request.mode.kind === 'inference') return null;
      const withLora = { ...request, mode: FALLBACK_LORA };
      if (fits(withLora)) return suggestion({ mode: FALLBACK_LORA }, `${describeMode(FALLBACK_LORA)} instead of ${describeMode(request.mode)}`);
      const b = largestFitting(B - 1, (value) => fits({ ...withLora, batchSize: value }) !== null);
      return b ? suggestion({ mode: FALLBACK_LORA, batchSize: b }, `${describeMode(FALLBACK_LORA)} with batch size ${b}`) : null;
    },
  ];
  for (const attempt of tries) {
    const found = attempt();
    if (found) return found;
  }
  return null;
}

function capitalize(text: string): string {
  return text.charAt(0).toUpperCase() + text.slice(1);
}

/** Binary units, since device limits are usually powers of two: "128 MiB", "1.50 GiB". */
export function formatBytes(bytes: number): string {
  if (bytes >= 2 ** 30) return `${(bytes / 2 ** 30).toFixed(2)} GiB`;
  if (bytes >= 2 ** 20) return `${(bytes / 2 ** 20).toFixed(1)} MiB`;
  if (bytes >= 2 ** 10) return `${(bytes / 2 ** 10).toFixed(1)} KiB`;
  return `${bytes} bytes`;
}

const LIMIT_TEXT: Record<LimitName, string> = {
  maxStorageBufferBindingSize: "this device's largest binding (maxStorageBufferBindingSize)",
  maxBufferSize: "this device's largest buffer (maxBufferSize)",
  budget: 'the memory budget',
};

/** Throws a MemoryRefusal when the plan breaks a device limit or the budget; returns the plan otherwise. */
export function checkMemoryPlan(plan: MemoryPlan): MemoryPlan {
  const breach = findLimitBreach(plan);
  if (!breach) return plan;
  const largest = largestBuffer(plan)!;
  const r = plan.request;
  const what =
    breach.limit === 'budget'
      ? `${capitalize(describeMode(r.mode))} at batch size ${r.batchSize} × sequence length ${r.sequenceLength} needs ` +
        `${formatBytes(plan.totalBytes)}, more than ${LIMIT_TEXT.budget} of ${formatBytes(breach.limitBytes)}. ` +
        `The largest buffer is ${largest.name} (${largest.purpose}, ${formatBytes(largest.bytes)}).`
      : `${breach.view ? `${breach.view} in buffer ${breach.buffer}` : `Buffer ${breach.buffer}`} needs ` +
        `${formatBytes(breach.bytes)}, more than ${LIMIT_TEXT[breach.limit]} of ${formatBytes(breach.limitBytes)}` +
        ` (batch size ${r.batchSize}, sequence length ${r.sequenceLength}, ${describeMode(r.mode)}). ` +
        `The largest buffer is ${largest.name} (${largest.purpose}, ${formatBytes(largest.bytes)}).`;
  const suggestion = suggestFittingSetting(r);
  const weightTooLarge = breach.limit !== 'budget' && plan.buffers.find((b) => b.name === breach.buffer)?.purpose === 'params';
  const advice = suggestion
    ? ` It would fit with ${suggestion.description} (${formatBytes(suggestion.totalBytes)} in all).`
    : weightTooLarge
      ? ` No batch, sequence or LoRA setting changes that: the weight ${breach.view ?? breach.buffer} itself is too large ` +
        'for this device. Choose a smaller model (smaller vocabulary or width), or a browser and GPU that offer a larger limit.'
      : ` No smaller batch, sequence or LoRA setting fits: the model alone needs ` +
        `${formatBytes(plan.bytesByPurpose.params)} of weights; choose a smaller model.`;
  throw new MemoryRefusal(breach, { name: largest.name, bytes: largest.bytes, purpose: largest.purpose }, suggestion, what + advice);
}

/** planMemory then checkMemoryPlan: the plan, or a MemoryRefusal. */
export function planTraining(request: PlanRequest): MemoryPlan {
  return checkMemoryPlan(planMemory(request));
}
