// The memory planner: from (model config, batch, sequence length, training mode, device limits) it lists every GPU
// buffer a training run needs — name, bytes, purpose, and the named views inside it — and the total, before
// anything is allocated. `checkMemoryPlan` refuses a plan that breaks a device limit or the budget with a
// TunelabError('too-large') that names the largest buffer, the limit, and a setting that would fit.
//
// Letters: B batch, T sequence, N = B·T tokens, C width, NH heads, V vocabulary (Vp padded), L layers, R LoRA rank.
//
// What is planned (llm.c-style training with flash attention, so no (T,T) matrices are kept):
//   params      the base weights in the flat layout of weights.ts, cut into buffers ≤ maxBufferSize; LoRA A/B apart
//   grads       one gradient per TRAINABLE tensor (frozen weights get none), same flat layout
//   optimizer   AdamW m and v per trainable tensor
//   activations encoded (N,C); per layer ln1 (N,C) + mean/rstd (N), qkv (N,3C), atty (N,C) + lse (B,NH,T),
//               attproj, residual2, ln2 (+ mean/rstd), fch (N,4C), fchGelu (N,4C), fcproj, residual3; LoRA u (N,R)
//               per target; lnf (+ mean/rstd); logits for one chunk of tokens (chunk,Vp); per-token targets, mask,
//               loss, correct; input token ids. Each kind is one buffer holding a view per layer.
//   scratch     activation gradients reused by every layer: dresidual (N,C), one (N,C), two (N,4C) (gelu's backward
//               is out of place), the LoRA du (N,R), attention delta (B,NH,T), layernorm dweight/dbias partials,
//               gradient-norm partials, small result buffers, and the dwte token segments when wte trains.
// Every tensor that a kernel writes while it reads another lives in a different GPU buffer: WebGPU forbids binding
// one buffer read-only and writable in the same dispatch, so only views of the same kind share a buffer.

import { TunelabError } from '../errors.ts';
import { validateModelConfig, type ModelConfig } from './config.ts';
import {
  LINEAR_MODULES,
  gpt2ParameterLayout,
  layoutParameters,
  linearShape,
  type LinearModule,
  type ParameterLayout,
  type ParameterSpec,
} from './weights.ts';

// ---- request ---------------------------------------------------------------------------------------------------

/** LoRA target modules, as the issue and PEFT's GPT-2 configs name them. */
export type LoraTarget = 'c_attn' | 'attn.c_proj' | 'c_fc' | 'mlp.c_proj';
export const LORA_TARGETS: readonly LoraTarget[] = ['c_attn', 'attn.c_proj', 'c_fc', 'mlp.c_proj'];

const TARGET_MODULE: Record<LoraTarget, LinearModule> = {
  c_attn: 'attn.c_attn',
  'attn.c_proj': 'attn.c_proj',
  c_fc: 'mlp.c_fc',
  'mlp.c_proj': 'mlp.c_proj',
};

/** Which blocks get LoRA: all, the last N, or a list of indices. */
export type LayerSelection = 'all' | { last: number } | readonly number[];

export type TrainingMode =
  /** Every weight trains (pretraining from scratch, small models). */
  | { kind: 'full' }
  /** Only the last `lastBlocks` blocks and the final layernorm train (no LoRA). */
  | { kind: 'selective'; lastBlocks: number }
  /** Base frozen; LoRA A (R,in) and B (out,R) on the chosen modules of the chosen blocks train. */
  | { kind: 'lora'; rank: number; targets: readonly LoraTarget[]; layers: LayerSelection; sites?: readonly LoraSiteRef[] };

/** One adapted linear layer. When a LoRA mode lists `sites`, they replace targets × layers (PEFT regex adapters). */
export interface LoraSiteRef {
  readonly layer: number;
  readonly module: LinearModule;
}

export interface DeviceLimits {
  /** Largest GPUBuffer the device creates. */
  maxBufferSize: number;
  /** Largest range one binding may cover. */
  maxStorageBufferBindingSize: number;
}

export interface PlanRequest {
  config: ModelConfig;
  /** B: sequences per micro-batch. */
  batchSize: number;
  /** T: tokens per sequence, at most config.nPositions. */
  sequenceLength: number;
  mode: TrainingMode;
  limits: DeviceLimits;
  /** Tokens per classifier chunk (rows of logits held at once); default: as many as fit CLASSIFIER_CHUNK_BYTES. */
  classifierChunk?: number;
  /** Vp: logits row stride, if the classifier pads the vocabulary (default V). */
  paddedVocab?: number;
  /** Total bytes the run may use (the UI's memory budget); no total limit when absent. */
  budgetBytes?: number;
}

/** Logits for a whole batch of a 50257-word vocabulary do not fit; chunks stay below this unless N is smaller. */
export const CLASSIFIER_CHUNK_BYTES = 64 * 1024 * 1024;

// ---- plan ------------------------------------------------------------------------------------------------------

export type BufferPurpose = 'params' | 'grads' | 'optimizer' | 'activations' | 'scratch';
export const BUFFER_PURPOSES: readonly BufferPurpose[] = ['params', 'grads', 'optimizer', 'activations', 'scratch'];

export interface PlannedView {
  /** 'h.3.attn.c_attn.weight', 'h3.fch', 'logits' … */
  readonly name: string;
  readonly shape: readonly number[];
  readonly elements: number;
  readonly bytes: number;
  /** Byte offset inside its buffer; a multiple of 256, so the view binds on its own. */
  readonly offset: number;
}

export interface PlannedBuffer {
  /** 'params.0', 'grads.0', 'adam.m.0', 'act.fch', 'scratch.dresidual' … (also the GPU label) */
  readonly name: string;
  readonly purpose: BufferPurpose;
  /** Size to allocate: a multiple of 256. */
  readonly bytes: number;
  readonly views: readonly PlannedView[];
}

export interface MemoryPlan {
  readonly request: Readonly<PlanRequest> & { classifierChunk: number; paddedVocab: number };
  readonly buffers: readonly PlannedBuffer[];
  readonly totalBytes: number;
  readonly bytesByPurpose: Readonly<Record<BufferPurpose, number>>;
  /** Parameters of the base model. */
  readonly parameterCount: number;
  /** LoRA parameters (0 unless mode is lora). */
  readonly loraParameterCount: number;
  /** Parameters that get gradients and optimizer state. */
  readonly trainableParameterCount: number;
  /** Names of the trainable tensors, in layout order. */
  readonly trainableTensors: readonly string[];
}

const ALIGN_BYTES = 256;
const alignBytes = (n: number) => Math.ceil(n / ALIGN_BYTES) * ALIGN_BYTES;

/** Upper bound of gradient-norm partial slots per tensor (ops/gradnorm.ts caps its workgroups per tensor at 256). */
const GRAD_NORM_SLOTS_PER_TENSOR = 256;
/** Rows per layernorm dweight/dbias partial (ops/layernorm.ts LAYERNORM_ROWS_PER_BLOCK). */
const LAYERNORM_ROWS_PER_PARTIAL = 32;

function checkRequest(request: PlanRequest): void {
  validateModelConfig(request.config);
  const { batchSize: B, sequenceLength: T, config } = request;
  if (!Number.isSafeInteger(B) || B < 1) throw new RangeError(`batch size must be a positive integer, got ${B}`);
  if (!Number.isSafeInteger(T) || T < 1) throw new RangeError(`sequence length must be a positive integer, got ${T}`);
  if (T > config.nPositions) {
    throw new TunelabError(
      'too-large',
      `sequence length ${T} is longer than the model's context of ${config.nPositions} tokens; use at most ${config.nPositions}`,
    );
  }
  const mode = request.mode;
  if (mode.kind === 'selective') {
    if (!Number.isSafeInteger(mode.lastBlocks) || mode.lastBlocks < 0 || mode.lastBlocks > config.nLayer) {
      throw new RangeError(`selective fine-tuning: lastBlocks must be 0..${config.nLayer}, got ${mode.lastBlocks}`);
    }
  }
  if (mode.kind === 'lora') {
    if (!Number.isSafeInteger(mode.rank) || mode.rank < 1) throw new RangeError(`LoRA rank must be ≥ 1, got ${mode.rank}`);
    loraSitesOf(config, mode); // validates targets, layers or sites
  }
  if (request.classifierChunk !== undefined && (!Number.isSafeInteger(request.classifierChunk) || request.classifierChunk < 1)) {
    throw new RangeError(`classifier chunk must be a positive integer, got ${request.classifierChunk}`);
  }
  if (request.paddedVocab !== undefined && !(Number.isSafeInteger(request.paddedVocab) && request.paddedVocab >= config.vocabSize)) {
    throw new RangeError(`padded vocabulary ${request.paddedVocab} must be an integer ≥ ${config.vocabSize}`);
  }
}

/** Block indices a LayerSelection names, ascending. */
export function loraLayers(config: ModelConfig, layers: LayerSelection): number[] {
  const L = config.nLayer;
  if (layers === 'all') return [...Array(L).keys()];
  if (!Array.isArray(layers)) {
    const last = (layers as { last: number }).last;
    if (!Number.isSafeInteger(last) || last < 1 || last > L) throw new RangeError(`LoRA: last must be 1..${L}, got ${last}`);
    return [...Array(last).keys()].map((i) => L - last + i);
  }
  const list = [...new Set(layers as readonly number[])].sort((a, b) => a - b);
  if (!list.length) throw new RangeError('LoRA: the layer list is empty');
  for (const l of list) {
    if (!Number.isSafeInteger(l) || l < 0 || l >= L) throw new RangeError(`LoRA: layer ${l} does not exist (0..${L - 1})`);
  }
  return list;
}

type LoraSelection = { targets: readonly LoraTarget[]; layers: LayerSelection; sites?: readonly LoraSiteRef[] };

/** The adapted (layer, module) pairs: layer-major, module order within a layer, whatever order they were given in. */
export function loraSitesOf(config: ModelConfig, lora: LoraSelection): LoraSiteRef[] {
  let sites: LoraSiteRef[];
  if (lora.sites) {
    sites = lora.sites.map((s) => ({ layer: s.layer, module: s.module }));
    for (const s of sites) {
      if (!Number.isSafeInteger(s.layer) || s.layer < 0 || s.layer >= config.nLayer) {
        throw new RangeError(`LoRA: layer ${s.layer} does not exist (0..${config.nLayer - 1})`);
      }
      if (!LINEAR_MODULES.includes(s.module)) throw new RangeError(`LoRA: unknown module ${s.module}`);
    }
  } else {
    for (const t of lora.targets) {
      if (!LORA_TARGETS.includes(t)) throw new RangeError(`unknown LoRA target ${t}; use ${LORA_TARGETS.join(', ')}`);
    }
    const modules = LORA_TARGETS.filter((t) => lora.targets.includes(t)).map((t) => TARGET_MODULE[t]);
    sites = loraLayers(config, lora.layers).flatMap((layer) => modules.map((module) => ({ layer, module })));
  }
  sites.sort((a, b) => a.layer - b.layer || LINEAR_MODULES.indexOf(a.module) - LINEAR_MODULES.indexOf(b.module));
  if (!sites.length) throw new RangeError('LoRA needs at least one target module');
  for (let i = 1; i < sites.length; i++) {
    if (sites[i].layer === sites[i - 1].layer && sites[i].module === sites[i - 1].module) {
      throw new RangeError(`LoRA site h.${sites[i].layer}.${sites[i].module} is listed twice`);
    }
  }
  return sites;
}

/** LoRA tensors in PEFT's shapes: h.N.<module>.lora_A (R,in), h.N.<module>.lora_B (out,R); layer-major order. */
export function loraParameterSpecs(config: ModelConfig, lora: LoraSelection & { rank: number }): ParameterSpec[] {
  const specs: ParameterSpec[] = [];
  for (const { layer, module } of loraSitesOf(config, lora)) {
    const [inDim, outDim] = linearShape(config, module);
    const base = `h.${layer}.${module}`;
    specs.push({ name: `${base}.lora_A`, shape: [lora.rank, inDim], elementCount: lora.rank * inDim, layer, kind: 'linear-weight' });
    specs.push({ name: `${base}.lora_B`, shape: [outDim, lora.rank], elementCount: outDim * lora.rank, layer, kind: 'linear-weight' });
  }
  return specs;
}

/** Which base tensors train in a mode (none for LoRA). */
function trainableBaseSpecs(layout: ParameterLayout, config: ModelConfig, mode: TrainingMode): ParameterSpec[] {
  if (mode.kind === 'full') return [...layout.entries];
  if (mode.kind === 'lora') return [];
  const firstTrainable = config.nLayer - mode.lastBlocks;
  return layout.entries.filter((e) => (e.layer !== null ? e.layer >= firstTrainable : e.name.startsWith('ln_f.')));
}

/** Rows of logits per classifier chunk when the request does not say: all N tokens, or as many as fit 64 MiB. */
export function defaultClassifierChunk(tokens: number, paddedVocab: number, maxBindingBytes: number): number {
  const rowBytes = paddedVocab * 4;
  const cap = Math.min(CLASSIFIER_CHUNK_BYTES, maxBindingBytes);
  return Math.max(1, Math.min(tokens, Math.floor(cap / rowBytes)));
}

interface ViewRequest {
  name: string;
  shape: number[];
}

/** Packs views into as few buffers ≤ maxBufferSize as order allows; a view too big for any buffer gets its own. */
function packBuffers(group: string, purpose: BufferPurpose, views: ViewRequest[], maxBufferSize: number): PlannedBuffer[] {
  const buffers: { views: PlannedView[]; bytes: number }[] = [];
  let current: { views: PlannedView[]; bytes: number } | undefined;
  for (const v of views) {
    const elements = v.shape.reduce((a, d) => a * d, 1);
    const bytes = elements * 4;
    const size = alignBytes(Math.max(bytes, 4));
    if (!current || (current.bytes + size > maxBufferSize && current.views.length)) {
      current = { views: [], bytes: 0 };
      buffers.push(current);
    }
    current.views.push({ name: v.name, shape: v.shape, elements, bytes, offset: current.bytes });
    current.bytes += size;
  }
  return buffers.map((b, i) => ({
    name: buffers.length === 1 ? group : `${group}.${i}`,
    purpose,
    bytes: b.bytes,
    views: b.views,
  }));
}

/** Flat-layout tensors as views of buffers ≤ maxBufferSize (each tensor already starts on 256 bytes). */
function layoutBuffers(group: string, purpose: BufferPurpose, layout: ParameterLayout, maxBufferSize: number): PlannedBuffer[] {
  // Offsets in a flat layout are the sums of 64-element-aligned sizes, exactly what packBuffers produces.
  return packBuffers(
    group,
    purpose,
    layout.entries.map((e) => ({ name: e.name, shape: [...e.shape] })),
    maxBufferSize,
  );
}

/** Plans every buffer of a training run. Pure arithmetic: never allocates, never throws for limits (see check). */
export function planMemory(request: PlanRequest): MemoryPlan {
  checkRequest(request);
  const { config, batchSize: B, sequenceLength: T, mode, limits } = request;
  const C = config.nEmbd;
  const NH = config.nHead;
  const L = config.nLayer;
  const N = B * T;
  const Vp = request.paddedVocab ?? config.vocabSize;
  const chunk = Math.min(N, request.classifierChunk ?? defaultClassifierChunk(N, Vp, limits.maxStorageBufferBindingSize));
  const maxBuffer = limits.maxBufferSize;
  const buffers: PlannedBuffer[] = [];

  // Parameters, gradients and optimizer state.
  const layout = gpt2ParameterLayout(config);
  buffers.push(...layoutBuffers('params', 'params', layout, maxBuffer));
  const loraSpecs = mode.kind === 'lora' ? loraParameterSpecs(config, mode) : [];
  const loraLayout = layoutParameters(loraSpecs);
  if (loraSpecs.length) buffers.push(...layoutBuffers('lora', 'params', loraLayout, maxBuffer));
  const trainable = layoutParameters(mode.kind === 'lora' ? loraSpecs : trainableBaseSpecs(layout, config, mode));
  if (trainable.entries.length) {
    buffers.push(...layoutBuffers('grads', 'grads', trainable, maxBuffer));
    buffers.push(...layoutBuffers('adam.m', 'optimizer', trainable, maxBuffer));
    buffers.push(...layoutBuffers('adam.v', 'optimizer', trainable, maxBuffer));
  }

  // Activations kept from the forward pass for the backward pass.
  const act = (kind: string, shape: number[]) => buffers.push(...packBuffers(`act.${kind}`, 'activations', [{ name: kind, shape }], maxBuffer));
  const perLayer = (kind: string, shape: number[], layers: readonly number[] = [...Array(L).keys()]) =>
    buffers.push(
      ...packBuffers(`act.${kind}`, 'activations', layers.map((l) => ({ name: `h${l}.${kind}`, shape })), maxBuffer),
    );
  act('inputs', [B, T]); // u32 token ids
  act('encoded', [N, C]);
  perLayer('ln1', [N, C]);
  perLayer('ln1Mean', [N]);
  perLayer('ln1Rstd', [N]);
  perLayer('qkv', [N, 3 * C]);
  perLayer('atty', [N, C]);
  perLayer('attLse', [B, NH, T]);
  perLayer('attproj', [N, C]);
  perLayer('residual2', [N, C]);
  perLayer('ln2', [N, C]);
  perLayer('ln2Mean', [N]);
  perLayer('ln2Rstd', [N]);
  perLayer('fch', [N, 4 * C]);
  perLayer('fchGelu', [N, 4 * C]);
  perLayer('fcproj', [N, C]);
  perLayer('residual3', [N, C]);
  if (mode.kind === 'lora') {
    const sites = loraSitesOf(config, mode);
    for (const module of LINEAR_MODULES) {
      const layers = sites.filter((s) => s.module === module).map((s) => s.layer);
      if (layers.length) perLayer(`lora.${module}.u`, [N, mode.rank], layers);
    }
  }
  act('lnf', [N, C]);
  act('lnfMean', [N]);
  act('lnfRstd', [N]);
  act('logits', [chunk, Vp]); // one chunk at a time; overwritten in place by dlogits
  act('targets', [N]); // u32
  act('lossMask', [N]);
  act('losses', [N]);
  act('correct', [N]);

  // Scratch: activation gradients and kernel workspaces, reused by every layer.
  const scratch = (kind: string, shape: number[]) =>
    buffers.push(...packBuffers(`scratch.${kind}`, 'scratch', [{ name: kind, shape }], maxBuffer));
  scratch('dresidual', [N, C]);
  scratch('btc', [N, C]); // dln1, datty, dln2, dlnf in turn
  scratch('bt4c', [N, 4 * C]); // dfchGelu, then dqkv
  scratch('bt4cGelu', [N, 4 * C]); // dfch: gelu backward writes out of place
  scratch('attDelta', [B, NH, T]);
  scratch('layernormPartials', [Math.ceil(N / LAYERNORM_ROWS_PER_PARTIAL), 2, C]);
  if (mode.kind === 'lora') scratch('loraDu', [N, mode.rank]);
  if (trainable.entries.length) {
    scratch('gradNormPartials', [trainable.entries.length * GRAD_NORM_SLOTS_PER_TENSOR]);
    scratch('gradNormResult', [2]);
  }
  scratch('lossResult', [4]);
  if (trainable.byName.has('wte.weight')) {
    // dwte sums token positions grouped by token id (ops/embedding.ts): tokens (N), offsets (N+1), positions (N).
    scratch('embeddingSegmentTokens', [N]);
    scratch('embeddingSegmentOffsets', [N + 1]);
    scratch('embeddingSegmentPositions', [N]);
  }

  const bytesByPurpose = Object.fromEntries(BUFFER_PURPOSES.map((p) => [p, 0])) as Record<BufferPurpose, number>;
  let totalBytes = 0;
  for (const b of buffers) {
    bytesByPurpose[b.purpose] += b.bytes;
    totalBytes += b.bytes;
  }
  return {
    request: { ...request, classifierChunk: chunk, paddedVocab: Vp },
    buffers,
    totalBytes,
    bytesByPurpose,
    parameterCount: layout.parameterCount,
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
  readonly mode: TrainingMode;
  /** "batch size 2 (sequence length 512 unchanged)" */
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
const FALLBACK_LORA: TrainingMode = { kind: 'lora', rank: 8, targets: ['c_attn'], layers: 'all' };

function describeMode(mode: TrainingMode): string {
  if (mode.kind === 'full') return 'full fine-tuning';
  if (mode.kind === 'selective') return `training only the last ${mode.lastBlocks} blocks`;
  return mode.sites ? `LoRA rank ${mode.rank} on ${mode.sites.length} modules` : `LoRA rank ${mode.rank} on ${mode.targets.join(', ')}`;
}

/**
 * Searches downward for a setting that fits: a smaller batch at the same sequence length, then batch 1 with a
 * shorter sequence; for a classifier chunk that breaks the binding limit, the largest chunk that fits; for full
 * training whose weights alone do not fit, LoRA. Null when even that does not fit (the model is too big).
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
      const chunk = largestFitting(request.classifierChunk - 1, (c) => fits({ ...request, classifierChunk: c }) !== null);
      return chunk ? suggestion({ classifierChunk: chunk }, `classifier chunk ${chunk} tokens`) : null;
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
      if (request.mode.kind === 'lora') return null;
      const withLora = { ...request, mode: FALLBACK_LORA };
      if (fits(withLora)) return suggestion({ mode: FALLBACK_LORA }, `${describeMode(FALLBACK_LORA)} instead of ${describeMode(request.mode)}`);
      const b = largestFitting(B - 1, (value) => fits({ ...withLora, batchSize: value }) !== null);
      return b
        ? suggestion({ mode: FALLBACK_LORA, batchSize: b }, `${describeMode(FALLBACK_LORA)} with batch size ${b}`)
        : null;
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
