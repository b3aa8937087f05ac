// GPT-2's parameters: the fixed list (names and shapes from the config), a flat layout that puts them all in one
// Float32Array with every tensor starting on a 64-element (256-byte) boundary so each can be bound as a GPU view,
// and the mapping of a safetensors checkpoint (Hugging Face names, with or without `transformer.`) onto it.
//
// Shapes use: V vocabulary, maxT context (wpe rows), C width, L layers. Conv1D weights are [in, out], as Hugging
// Face stores them, so a linear layer is out = inp · W + b.

import { TunelabError } from '../errors.ts';
import { decodeTensorInto, type SafetensorsFile } from '../io/safetensors.ts';
import type { ModelConfig } from './config.ts';

export type ParameterKind = 'embedding' | 'layernorm-weight' | 'layernorm-bias' | 'linear-weight' | 'linear-bias';

export interface ParameterSpec {
  /** Hugging Face state-dict name without `transformer.`: 'wte.weight', 'h.3.attn.c_attn.weight', 'ln_f.bias'. */
  readonly name: string;
  readonly shape: readonly number[];
  readonly elementCount: number;
  /** Block index for h.N.* tensors, null for wte, wpe and ln_f. */
  readonly layer: number | null;
  readonly kind: ParameterKind;
}

/** Elements per alignment step: 64 f32 = 256 bytes, WebGPU's storage-buffer offset alignment. */
export const PARAMETER_ALIGN_ELEMENTS = 64;

/** The module names of a block that hold a linear (Conv1D) layer, in parameter order. */
export const LINEAR_MODULES = ['attn.c_attn', 'attn.c_proj', 'mlp.c_fc', 'mlp.c_proj'] as const;
export type LinearModule = (typeof LINEAR_MODULES)[number];

/** [in, out] of each block's linear layers. */
export function linearShape(config: ModelConfig, module: LinearModule): [number, number] {
  const C = config.nEmbd;
  switch (module) {
    case 'attn.c_attn':
      return [C, 3 * C];
    case 'attn.c_proj':
      return [C, C];
    case 'mlp.c_fc':
      return [C, 4 * C];
    case 'mlp.c_proj':
      return [4 * C, C];
  }
}

/** Every parameter in the fixed order: wte, wpe, h.0 … h.(L-1), ln_f. */
export function gpt2ParameterSpecs(config: ModelConfig): ParameterSpec[] {
  const C = config.nEmbd;
  const specs: ParameterSpec[] = [];
  const add = (name: string, shape: number[], layer: number | null, kind: ParameterKind) =>
    specs.push({ name, shape, elementCount: shape.reduce((a, d) => a * d, 1), layer, kind });
  add('wte.weight', [config.vocabSize, C], null, 'embedding'); // (V,C)
  add('wpe.weight', [config.nPositions, C], null, 'embedding'); // (maxT,C)
  for (let l = 0; l < config.nLayer; l++) {
    const p = `h.${l}`;
    add(`${p}.ln_1.weight`, [C], l, 'layernorm-weight');
    add(`${p}.ln_1.bias`, [C], l, 'layernorm-bias');
    for (const module of LINEAR_MODULES) {
      if (module === 'mlp.c_fc') {
        add(`${p}.ln_2.weight`, [C], l, 'layernorm-weight');
        add(`${p}.ln_2.bias`, [C], l, 'layernorm-bias');
      }
      const [inDim, outDim] = linearShape(config, module);
      add(`${p}.${module}.weight`, [inDim, outDim], l, 'linear-weight');
      add(`${p}.${module}.bias`, [outDim], l, 'linear-bias');
    }
  }
  add('ln_f.weight', [C], null, 'layernorm-weight');
  add('ln_f.bias', [C], null, 'layernorm-bias');
  return specs;
}

/** Number of parameters (GPT-2 small: 124,439,808). */
export function parameterCount(config: ModelConfig): number {
  return gpt2ParameterSpecs(config).reduce((sum, s) => sum + s.elementCount, 0);
}

export interface LayoutEntry extends ParameterSpec {
  /** Element offset in the flat array; a multiple of PARAMETER_ALIGN_ELEMENTS. */
  readonly offset: number;
}

export interface ParameterLayout {
  readonly entries: readonly LayoutEntry[];
  readonly byName: ReadonlyMap<string, LayoutEntry>;
  /** Length of the flat array, padding included (a multiple of PARAMETER_ALIGN_ELEMENTS). */
  readonly totalElements: number;
  /** Sum of the tensors' element counts, padding excluded. */
  readonly parameterCount: number;
}

export function alignElements(n: number, align = PARAMETER_ALIGN_ELEMENTS): number {
  return Math.ceil(n / align) * align;
}

/** Places tensors one after the other, each on a 64-element boundary. Works for any list (LoRA adapters too). */
export function layoutParameters(specs: readonly ParameterSpec[]): ParameterLayout {
  let offset = 0;
  let count = 0;
  const entries: LayoutEntry[] = [];
  for (const spec of specs) {
    entries.push({ ...spec, offset });
    offset = alignElements(offset + spec.elementCount);
    count += spec.elementCount;
  }
  return { entries, byName: new Map(entries.map((e) => [e.name, e])), totalElements: offset, parameterCount: count };
}

export function gpt2ParameterLayout(config: ModelConfig): ParameterLayout {
  return layoutParameters(gpt2ParameterSpecs(config));
}

/** A flat parameter array with its layout. */
export interface ParameterSet {
  readonly layout: ParameterLayout;
  /** (layout.totalElements) f32; padding between tensors is zero. */
  readonly data: Float32Array;
}

/** The view of one tensor inside a ParameterSet. */
export function parameterView(set: ParameterSet, name: string): Float32Array {
  const entry = set.layout.byName.get(name);
  if (!entry) throw new RangeError(`no parameter named ${name}`);
  return set.data.subarray(entry.offset, entry.offset + entry.elementCount);
}

export interface LayoutSegment {
  /** First element of the segment in the flat array (a tensor start, so 256-byte aligned). */
  readonly firstElement: number;
  readonly elementCount: number;
  readonly entries: readonly LayoutEntry[];
}

/**
 * Cuts a layout into consecutive segments of at most `maxBytes` (the device's maxBufferSize), each starting at a
 * tensor, so the engine uploads one GPU buffer per segment and binds tensors as views of it. A single tensor larger
 * than `maxBytes` cannot be placed: that is a TunelabError('too-large'), which the memory planner reports earlier.
 */
export function partitionLayout(layout: ParameterLayout, maxBytes: number): LayoutSegment[] {
  const maxElements = Math.floor(maxBytes / 4 / PARAMETER_ALIGN_ELEMENTS) * PARAMETER_ALIGN_ELEMENTS;
  const segments: LayoutSegment[] = [];
  let current: LayoutEntry[] = [];
  let start = 0;
  const close = (end: number) => {
    if (current.length) segments.push({ firstElement: start, elementCount: end - start, entries: current });
    current = [];
    start = end;
  };
  for (const entry of layout.entries) {
    const padded = alignElements(entry.elementCount);
    if (padded > maxElements) {
      throw new TunelabError(
        'too-large',
        `parameter ${entry.name} needs ${entry.elementCount * 4} bytes, more than this device's largest buffer ` +
          `(${maxBytes} bytes); choose a smaller model`,
      );
    }
    if (entry.offset + padded - start > maxElements) close(entry.offset);
    current.push(entry);
  }
  close(layout.totalElements);
  return segments;
}

// ---- mapping a checkpoint onto the layout ------------------------------------------------------------------------

const PREFIX = 'transformer.';
/** Bare embedding names some exporters write, mapped to the state-dict names. */
const ALIASES: Readonly<Record<string, string>> = { wte: 'wte.weight', wpe: 'wpe.weight' };

/** A checkpoint name as it appears in the layout: without `transformer.`, embeddings with `.weight`. */
export function canonicalParameterName(name: string): string {
  const bare = name.startsWith(PREFIX) ? name.slice(PREFIX.length) : name;
  return ALIASES[bare] ?? bare;
}

/** Buffers Hugging Face's GPT-2 saves that are not parameters (the causal mask and its fill value). */
function isAttentionBuffer(name: string): boolean {
  return /^h\.\d+\.attn\.(bias|masked_bias)$/.test(name);
}

export interface MappedWeights extends ParameterSet {
  /** Things a learner may want to know that do not stop loading (unexpected extra tensors). */
  readonly warnings: string[];
}

function shapeText(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}

/**
 * Decodes a checkpoint into the flat layout. Fails naming the missing tensor, or the misshapen tensor with both
 * shapes; ignores HF's attention-mask buffers and an `lm_head.weight` equal to wte (a tied head); warns about any
 * other extra tensor.
 */
export function mapCheckpoint(file: SafetensorsFile, config: ModelConfig): MappedWeights {
  const layout = gpt2ParameterLayout(config);
  const warnings: string[] = [];
  // Canonical name (no prefix) → name in the file.
  const fileNames = new Map<string, string>();
  for (const name of file.tensors.keys()) {
    const canonical = canonicalParameterName(name);
    const earlier = fileNames.get(canonical);
    if (earlier !== undefined) {
      throw new TunelabError(
        'bad-model',
        `the checkpoint holds both "${earlier}" and "${name}"; keep one of them`,
      );
    }
    fileNames.set(canonical, name);
  }

  const missing = layout.entries.filter((e) => !fileNames.has(e.name)).map((e) => e.name);
  if (missing.length) {
    const shown = missing.slice(0, 5).join(', ');
    const more = missing.length > 5 ? ` and ${missing.length - 5} more` : '';
    throw new TunelabError(
      'bad-model',
      `the checkpoint has no tensor ${shown}${more}; it does not match config.json ` +
        `(${config.nLayer} layers, width ${config.nEmbd}) or is not a GPT-2 checkpoint`,
    );
  }

  for (const entry of layout.entries) {
    const info = file.tensors.get(fileNames.get(entry.name)!)!;
    const same = info.shape.length === entry.shape.length && info.shape.every((d, i) => d === entry.shape[i]);
    if (!same) {
      throw new TunelabError(
        'bad-model',
        `tensor ${info.name} has shape ${shapeText(info.shape)} but config.json implies ${shapeText(entry.shape)}; ` +
          'the checkpoint and config.json disagree',
      );
    }
  }

  const data = new Float32Array(layout.totalElements);
  for (const entry of layout.entries) decodeTensorInto(file, fileNames.get(entry.name)!, data, entry.offset);

  for (const [canonical, name] of fileNames) {
    if (layout.byName.has(canonical) || isAttentionBuffer(canonical)) continue;
    if (canonical === 'lm_head.weight') {
      const wte = layout.byName.get('wte.weight')!;
      checkTiedHead(file, name, data.subarray(wte.offset, wte.offset + wte.elementCount), wte.shape);
      continue;
    }
    warnings.push(`ignoring tensor ${name}, which GPT-2 does not use`);
  }
  return { layout, data, warnings };
}

/** An output head stored next to wte must be a copy of it: Tunelab's head is tied. */
function checkTiedHead(file: SafetensorsFile, name: string, wte: Float32Array, wteShape: readonly number[]): void {
  const info = file.tensors.get(name)!;
  const sameShape = info.shape.length === 2 && info.shape[0] === wteShape[0] && info.shape[1] === wteShape[1];
  let equal = sameShape;
  if (sameShape) {
    const head = new Float32Array(info.elementCount);
    decodeTensorInto(file, name, head, 0);
    for (let i = 0; i < head.length && equal; i++) equal = head[i] === wte[i];
  }
  if (!equal) {
    throw new TunelabError(
      'bad-model',
      `tensor ${name} differs from wte.weight; Tunelab supports only GPT-2 with the output head tied to the token embedding`,
    );
  }
}

/** The tensors of a ParameterSet in checkpoint form (HF names without prefix), for writing safetensors. */
export function parameterTensors(set: ParameterSet): { name: string; shape: readonly number[]; data: Float32Array }[] {
  return set.layout.entries.map((e) => ({ name: e.name, shape: e.shape, data: parameterView(set, e.name) }));
}
