// LoRA adapters for GPT-2: the adapter configuration (rank, alpha, dropout, rsLoRA, which modules of which layers),
// PEFT's names and initialization, and the adapter's tensors on the GPU: A (R,in) and B (out,R) of every adapted
// module ("site") in one flat buffer, each a 256-byte-aligned view, set from and read back to named Float32Arrays.
//
// An adapted Conv1D computes y = x·W + b + scale·(dropout(x)·Aᵀ)·Bᵀ with scale = alpha/R (alpha/√R for rsLoRA).
// PEFT names the tensors `base_model.model.transformer.h.N.<module>.lora_A.weight`; inside Tunelab they are
// `h.N.<module>.lora_A` (the names the memory planner uses). Everything about PEFT's files (adapter_config.json,
// tensor names, module selection) lives in interop/peft.ts; LoraAdapter.fromPeft and toPeft only convert between its
// neutral form (AdapterSpec, AdapterTensors) and an adapter on the GPU.

import { TunelabError } from '../errors.ts';
import type { GpuContext, GpuTensor } from '../gpu/context.ts';
import { adapterModulePath, peftTensorName, type AdapterSpec, type AdapterTensors } from '../interop/peft.ts';
import { LORA_MAX_RANK } from '../ops/lora.ts';
import { Rng } from '../random.ts';
import type { ModelConfig } from './config.ts';
import {
  LINEAR_MODULES,
  layoutParameters,
  linearShape,
  type LinearModule,
  type ParameterLayout,
  type ParameterSet,
  type ParameterSpec,
} from './weights.ts';

/** LoRA target modules, as the issue and PEFT's GPT-2 configs name them. */
export type LoraTarget = 'c_attn' | 'attn.c_proj' | 'c_fc' | 'mlp.c_proj';
export const LORA_TARGETS: readonly LoraTarget[] = ['c_attn', 'attn.c_proj', 'c_fc', 'mlp.c_proj'];

/** Which blocks get LoRA: all, the last N, or a list of indices. */
export type LayerSelection = 'all' | { last: number } | readonly number[];

/** One adapted linear layer: block `layer`, module path inside the block. */
export interface LoraSite {
  readonly layer: number;
  readonly module: LinearModule;
}

export interface LoraConfig {
  /** R: rank of A and B (8). */
  rank: number;
  /** Scale numerator (16): scale = alpha/R, or alpha/√R with rsLora. */
  alpha: number;
  /** Dropout probability on each adapted layer's input, in [0, 1), training only (0). */
  dropout: number;
  /** rsLoRA: scale by alpha/√R so that a larger rank does not shrink the update (false). */
  rsLora: boolean;
  /** Modules adapted in every selected layer (['c_attn']). */
  targets: readonly LoraTarget[];
  /** Which blocks: 'all', the last N, or a list of indices ('all'). */
  layers: LayerSelection;
  /**
   * Exact (layer, module) sites; when given, `targets` and `layers` are ignored. For adapters whose layers have
   * different modules (PEFT's regex target_modules), such as the oracle fixture's.
   */
  sites?: readonly LoraSite[];
}

export const DEFAULT_LORA: Readonly<LoraConfig> = Object.freeze({
  rank: 8,
  alpha: 16,
  dropout: 0,
  rsLora: false,
  targets: ['c_attn'] as readonly LoraTarget[],
  layers: 'all' as LayerSelection,
});

/** The module path inside a block for each LoRA target name. */
export const TARGET_MODULE: Readonly<Record<LoraTarget, LinearModule>> = {
  c_attn: 'attn.c_attn',
  'attn.c_proj': 'attn.c_proj',
  c_fc: 'mlp.c_fc',
  'mlp.c_proj': 'mlp.c_proj',
};

function badAdapter(message: string): TunelabError {
  return new TunelabError('bad-model', `LoRA adapter: ${message}`);
}

/** What decides an adapter's tensors and their sizes (not its scale or dropout): what the memory planner needs. */
export type LoraShape = Pick<LoraConfig, 'rank' | 'targets' | 'layers' | 'sites'>;

/** Throws unless 1 ≤ rank ≤ the LoRA kernels' maximum. */
export function checkLoraRank(rank: number): void {
  if (!Number.isSafeInteger(rank) || rank < 1 || rank > LORA_MAX_RANK) {
    throw new RangeError(`LoRA rank must be an integer from 1 to ${LORA_MAX_RANK}, got ${rank}`);
  }
}

function checkLoraTargets(targets: readonly string[]): void {
  for (const t of targets) {
    if (!LORA_TARGETS.includes(t as LoraTarget)) throw new RangeError(`unknown LoRA target ${t}; use ${LORA_TARGETS.join(', ')}`);
  }
}

/** Block indices a LayerSelection names, ascending. */
export function loraLayers(model: ModelConfig, layers: LayerSelection): number[] {
  const L = model.nLayer;
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

/** The default config with some fields overridden, validated against nothing model-specific yet. */
export function loraConfig(overrides: Partial<LoraConfig> = {}): LoraConfig {
  const config: LoraConfig = { ...DEFAULT_LORA, ...overrides };
  checkLoraRank(config.rank);
  if (!(Number.isFinite(config.alpha) && config.alpha > 0)) throw new RangeError(`LoRA alpha must be positive, got ${config.alpha}`);
  if (!(config.dropout >= 0 && config.dropout < 1)) throw new RangeError(`LoRA dropout must be in [0, 1), got ${config.dropout}`);
  checkLoraTargets(config.targets);
  return config;
}

/** alpha/R, or alpha/√R for rsLoRA. */
export function loraScale(config: Pick<LoraConfig, 'rank' | 'alpha' | 'rsLora'>): number {
  return config.rsLora ? config.alpha / Math.sqrt(config.rank) : config.alpha / config.rank;
}

/** The adapted sites, layer-major and in module order within a layer, whatever order the config lists them in. */
export function loraSites(model: ModelConfig, lora: Pick<LoraConfig, 'targets' | 'layers' | 'sites'>): LoraSite[] {
  let sites: LoraSite[];
  if (lora.sites) {
    sites = lora.sites.map((s) => ({ layer: s.layer, module: s.module }));
    for (const s of sites) {
      if (!Number.isSafeInteger(s.layer) || s.layer < 0 || s.layer >= model.nLayer) {
        throw new RangeError(`LoRA site h.${s.layer}.${s.module}: the model has layers 0..${model.nLayer - 1}`);
      }
      if (!LINEAR_MODULES.includes(s.module)) throw new RangeError(`LoRA site: unknown module ${s.module}`);
    }
  } else {
    if (!lora.targets.length) throw new RangeError('LoRA needs at least one target module');
    checkLoraTargets(lora.targets);
    const modules = LINEAR_MODULES.filter((m) => lora.targets.some((t) => TARGET_MODULE[t] === m));
    sites = loraLayers(model, lora.layers).flatMap((layer) => modules.map((module) => ({ layer, module })));
  }
  sites.sort((a, b) => a.layer - b.layer || LINEAR_MODULES.indexOf(a.module) - LINEAR_MODULES.indexOf(b.module));
  for (let i = 1; i < sites.length; i++) {
    if (sites[i].layer === sites[i - 1].layer && sites[i].module === sites[i - 1].module) {
      throw new RangeError(`LoRA site h.${sites[i].layer}.${sites[i].module} is listed twice`);
    }
  }
  if (!sites.length) throw new RangeError('LoRA adapts no module');
  return sites;
}

/** 'h.1.mlp.c_fc.lora_A' */
export function loraTensorName(site: LoraSite, which: 'A' | 'B'): string {
  return `h.${site.layer}.${site.module}.lora_${which}`;
}

const TENSOR_NAME = /^(?:base_model\.model\.)?(?:transformer\.)?h\.(\d+)\.(attn\.c_attn|attn\.c_proj|mlp\.c_fc|mlp\.c_proj)\.lora_(A|B)(?:\.weight)?$/;

/** The site and matrix a PEFT or Tunelab LoRA tensor name refers to, or null for any other name. */
export function parseLoraTensorName(name: string): { site: LoraSite; which: 'A' | 'B' } | null {
  const match = TENSOR_NAME.exec(name);
  if (!match) return null;
  return { site: { layer: Number(match[1]), module: match[2] as LinearModule }, which: match[3] as 'A' | 'B' };
}

/** A (R,in) and B (out,R) of every site, in site order. */
export function loraParameterSpecs(model: ModelConfig, lora: LoraShape): ParameterSpec[] {
  const R = lora.rank;
  return loraSites(model, lora).flatMap((site) => {
    const [inDim, outDim] = linearShape(model, site.module);
    return [
      { name: loraTensorName(site, 'A'), shape: [R, inDim], elementCount: R * inDim, layer: site.layer, kind: 'linear-weight' as const },
      { name: loraTensorName(site, 'B'), shape: [outDim, R], elementCount: outDim * R, layer: site.layer, kind: 'linear-weight' as const },
    ];
  });
}

/**
 * PEFT's initialization on the CPU: A Kaiming-uniform with a = √5, i.e. uniform in ±1/√in, drawn site by site in
 * row-major order from Rng(seed); B zero, so the adapted model starts out equal to the base model.
 */
export function initLoraParameters(model: ModelConfig, lora: LoraConfig, seed: number): ParameterSet {
  const layout = layoutParameters(loraParameterSpecs(model, lora));
  const data = new Float32Array(layout.totalElements);
  const rng = new Rng(seed);
  for (const entry of layout.entries) {
    if (!entry.name.endsWith('lora_A')) continue;
    const bound = 1 / Math.sqrt(entry.shape[1]);
    for (let i = 0; i < entry.elementCount; i++) data[entry.offset + i] = rng.uniform(-bound, bound);
  }
  return { layout, data };
}

/** The canonical name for a Tunelab or PEFT LoRA tensor name. */
function canonicalName(name: string): string | null {
  const parsed = parseLoraTensorName(name);
  return parsed && loraTensorName(parsed.site, parsed.which);
}

/**
 * A LoRA adapter on the GPU: every A and B in one flat buffer (`parameters`), each a view starting on 256 bytes.
 * The trainer updates the views in place; `read()` gives them back for saving.
 */
export class LoraAdapter {
  readonly sites: readonly LoraSite[];
  readonly scale: number;
  readonly layout: ParameterLayout;
  /** The whole flat buffer (layout.totalElements f32). */
  readonly parameters: GpuTensor;
  private readonly views = new Map<string, GpuTensor>();

  private constructor(
    private readonly gpu: GpuContext,
    readonly model: ModelConfig,
    readonly config: LoraConfig,
  ) {
    this.sites = loraSites(model, config);
    this.scale = loraScale(config);
    this.layout = layoutParameters(loraParameterSpecs(model, config));
    const maxBinding = gpu.device.limits.maxStorageBufferBindingSize;
    if (this.layout.totalElements * 4 > gpu.device.limits.maxBufferSize) {
      throw new TunelabError('too-large', `the LoRA adapter needs ${this.layout.totalElements * 4} bytes, more than one GPU buffer holds`);
    }
    this.parameters = gpu.tensor(this.layout.totalElements, 'lora');
    for (const e of this.layout.entries) {
      if (e.elementCount * 4 > maxBinding) throw new TunelabError('too-large', `LoRA tensor ${e.name} exceeds this GPU's binding size`);
      this.views.set(e.name, gpu.view(this.parameters, e.offset, e.elementCount, `lora.${e.name}`));
    }
  }

  /**
   * A new adapter: PEFT-initialized from `init.seed`, or with the given tensors (Tunelab or PEFT names; every tensor
   * of the config must be present).
   */
  static create(
    gpu: GpuContext,
    model: ModelConfig,
    config: LoraConfig,
    init: { seed: number } | { tensors: ReadonlyMap<string, ArrayLike<number>> | Readonly<Record<string, ArrayLike<number>>> },
  ): LoraAdapter {
    const adapter = new LoraAdapter(gpu, model, config);
    if ('seed' in init) gpu.write(adapter.parameters, initLoraParameters(model, config, init.seed).data);
    else adapter.setTensors(init.tensors);
    return adapter;
  }

  /**
   * An adapter read by interop/peft.ts's importPeftAdapter, on the GPU: its exact sites, rank, alpha, dropout and
   * rsLoRA. One the LoRA kernels cannot hold (a rank above their maximum) is a TunelabError('bad-model').
   */
  static fromPeft(gpu: GpuContext, model: ModelConfig, imported: { spec: AdapterSpec; tensors: AdapterTensors }): LoraAdapter {
    const { spec } = imported;
    const tensors = new Map<string, Float32Array>();
    const sites: LoraSite[] = [];
    for (const [path, pair] of imported.tensors) {
      const parsed = parseLoraTensorName(`${path}.lora_A`);
      if (!parsed) throw badAdapter(`${path} is not a module path like h.0.attn.c_attn`);
      sites.push(parsed.site);
      tensors.set(loraTensorName(parsed.site, 'A'), pair.a);
      tensors.set(loraTensorName(parsed.site, 'B'), pair.b);
    }
    let config: LoraConfig;
    try {
      config = loraConfig({
        rank: spec.rank,
        alpha: spec.alpha,
        dropout: spec.dropout,
        rsLora: spec.useRslora,
        targets: spec.targetModules,
        layers: [...new Set(sites.map((s) => s.layer))],
        sites,
      });
      loraSites(model, config);
    } catch (error) {
      if (error instanceof RangeError) throw badAdapter(error.message);
      throw error;
    }
    return LoraAdapter.create(gpu, model, config, { tensors });
  }

  /** Its spec and tensors, read back, as interop/peft.ts's exportPeftAdapter takes them. */
  async toPeft(baseModel = ''): Promise<{ spec: AdapterSpec; tensors: AdapterTensors }> {
    const values = await this.read();
    const tensors: AdapterTensors = new Map();
    for (const site of this.sites) {
      tensors.set(`h.${site.layer}.${site.module}`, { a: values.get(loraTensorName(site, 'A'))!, b: values.get(loraTensorName(site, 'B'))! });
    }
    const layers = [...new Set(this.sites.map((s) => s.layer))];
    const spec: AdapterSpec = {
      rank: this.config.rank,
      alpha: this.config.alpha,
      dropout: this.config.dropout,
      useRslora: this.config.rsLora,
      targetModules: LORA_TARGETS.filter((t) => this.sites.some((s) => s.module === TARGET_MODULE[t])),
      layers: layers.length === this.model.nLayer ? null : layers,
      baseModel,
    };
    return { spec, tensors };
  }

  /** The view of A or B of a site. */
  tensor(site: LoraSite, which: 'A' | 'B'): GpuTensor {
    const view = this.views.get(loraTensorName(site, which));
    if (!view) throw new RangeError(`the adapter has no ${loraTensorName(site, which)}`);
    return view;
  }

  /** Views by Tunelab name, in layout order. */
  tensors(): ReadonlyMap<string, GpuTensor> {
    return this.views;
  }

  /**
   * Replaces every tensor (queued writes). Names may be Tunelab's or PEFT's; each tensor of the adapter must be
   * given exactly once with the right number of values, and no other LoRA tensor may appear.
   */
  setTensors(tensors: ReadonlyMap<string, ArrayLike<number>> | Readonly<Record<string, ArrayLike<number>>>): void {
    const entries = tensors instanceof Map ? [...tensors.entries()] : Object.entries(tensors);
    const data = new Float32Array(this.layout.totalElements);
    const given = new Set<string>();
    for (const [name, values] of entries) {
      const canonical = canonicalName(name);
      const entry = canonical ? this.layout.byName.get(canonical) : undefined;
      if (!canonical || !entry) throw badAdapter(`tensor ${name} is not part of this adapter (${this.sites.length} adapted modules)`);
      if (given.has(canonical)) throw badAdapter(`tensor ${canonical} is given twice`);
      if (values.length !== entry.elementCount) {
        throw badAdapter(`tensor ${name} has ${values.length} values; [${entry.shape.join(', ')}] needs ${entry.elementCount}`);
      }
      given.add(canonical);
      data.set(values, entry.offset);
    }
    const missing = this.layout.entries.filter((e) => !given.has(e.name)).map((e) => e.name);
    if (missing.length) throw badAdapter(`no values for ${missing.join(', ')}`);
    this.gpu.write(this.parameters, data);
  }

  /** Every tensor, read back, by Tunelab name ('h.0.attn.c_attn.lora_A') or PEFT name. */
  async read(names: 'tunelab' | 'peft' = 'tunelab'): Promise<Map<string, Float32Array>> {
    const flat = await this.gpu.read(this.parameters);
    const out = new Map<string, Float32Array>();
    for (const e of this.layout.entries) {
      const parsed = parseLoraTensorName(e.name)!;
      const name = names === 'peft' ? peftTensorName(adapterModulePath(parsed.site.layer, parsed.site.module), parsed.which) : e.name;
      out.set(name, flat.slice(e.offset, e.offset + e.elementCount));
    }
    return out;
  }

  /** Bytes of its GPU buffer. */
  get bytes(): number {
    return this.parameters.buffer.size;
  }

  destroy(): void {
    this.gpu.free(this.parameters);
    this.views.clear();
  }
}
