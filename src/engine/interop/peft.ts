// LoRA adapters in Hugging Face PEFT's file format, so that an adapter trained in Tunelab loads with
// `PeftModel.from_pretrained` and an adapter trained with PEFT on a GPT-2 model loads in Tunelab.
//
// The two files: `adapter_config.json` (a LoraConfig) and `adapter_model.safetensors` holding, for every adapted
// Conv1D, `base_model.model.transformer.h.N.<module>.lora_A.weight` (R,in) and `….lora_B.weight` (out,R). The
// adapted layer computes y = x·W + b + scale·(x·Aᵀ)·Bᵀ, scale = alpha/R (alpha/√R with rsLoRA).
//
// The neutral types here (AdapterSpec, AdapterTensors) are what the GPU LoRA module converts to and from. The
// tensors' keys are the exact adapted modules ("sites"); the spec's targetModules and layers describe their union,
// because PEFT can also adapt an irregular set (a regex target_modules), as the oracle fixture does.

import { describeValue } from '../describe.ts';
import { TunelabError } from '../errors.ts';
import { parseSafetensors, readTensorF32, writeSafetensors, type WriteDtype } from '../io/safetensors.ts';
import type { ModelConfig } from '../model/config.ts';

/** The LoRA targets, by the names Tunelab's UI and PEFT's target_modules list use. */
export type AdapterTarget = 'c_attn' | 'attn.c_proj' | 'c_fc' | 'mlp.c_proj';
export const ADAPTER_TARGETS: readonly AdapterTarget[] = ['c_attn', 'attn.c_proj', 'c_fc', 'mlp.c_proj'];

/** The module path inside a block `h.N` of each target. */
export const TARGET_MODULE_PATH: Readonly<Record<AdapterTarget, AdapterModule>> = {
  c_attn: 'attn.c_attn',
  'attn.c_proj': 'attn.c_proj',
  c_fc: 'mlp.c_fc',
  'mlp.c_proj': 'mlp.c_proj',
};

/** GPT-2's Conv1D modules inside a block, in the order of the block's parameters. */
export type AdapterModule = 'attn.c_attn' | 'attn.c_proj' | 'mlp.c_fc' | 'mlp.c_proj';
const MODULES: readonly AdapterModule[] = ['attn.c_attn', 'attn.c_proj', 'mlp.c_fc', 'mlp.c_proj'];
const TARGET_OF_MODULE: Readonly<Record<AdapterModule, AdapterTarget>> = {
  'attn.c_attn': 'c_attn',
  'attn.c_proj': 'attn.c_proj',
  'mlp.c_fc': 'c_fc',
  'mlp.c_proj': 'mlp.c_proj',
};

export interface AdapterSpec {
  /** R: rows of A, columns of B. */
  rank: number;
  /** scale = alpha/R, or alpha/√R with rsLoRA. */
  alpha: number;
  /** Dropout on each adapted layer's input during training (0 at inference). */
  dropout: number;
  useRslora: boolean;
  /** Adapted modules (the union over layers), in ADAPTER_TARGETS order after an import. */
  targetModules: AdapterTarget[];
  /** Adapted blocks, ascending; null = all. */
  layers: number[] | null;
  /** base_model_name_or_path: the Hub id or name of the model the adapter was trained on ('' if unknown). */
  baseModel: string;
}

/** A (R,in) and B (out,R), row-major as PEFT stores them. */
export interface AdapterPair {
  a: Float32Array;
  b: Float32Array;
}

/** Adapted modules by module path, e.g. 'h.1.mlp.c_fc' (no `transformer.` prefix). */
export type AdapterTensors = Map<string, AdapterPair>;

export interface AdapterSite {
  layer: number;
  module: AdapterModule;
}

/** The sizes an adapter must fit: a ModelConfig fits this shape. */
export type AdapterModelShape = Pick<ModelConfig, 'nLayer' | 'nEmbd'>;

/** 'h.3.attn.c_attn', the key of an adapted module in AdapterTensors. */
export function adapterModulePath(layer: number, module: AdapterModule): string {
  return `h.${layer}.${module}`;
}

/** The (layer, module) of a module path 'h.N.<module>', or null when it is not one. */
export function parseAdapterModulePath(path: string): AdapterSite | null {
  const match = /^h\.(\d+)\.(attn\.c_attn|attn\.c_proj|mlp\.c_fc|mlp\.c_proj)$/.exec(path);
  return match ? { layer: Number(match[1]), module: match[2] as AdapterModule } : null;
}

/** [in, out] of a block's Conv1D module. */
export function adapterModuleShape(model: AdapterModelShape, module: AdapterModule): [number, number] {
  const C = model.nEmbd;
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

/** The factor of the LoRA term: alpha/R, or alpha/√R with rsLoRA. */
export function adapterScale(spec: Pick<AdapterSpec, 'rank' | 'alpha' | 'useRslora'>): number {
  return spec.useRslora ? spec.alpha / Math.sqrt(spec.rank) : spec.alpha / spec.rank;
}

function bad(message: string): TunelabError {
  return new TunelabError('bad-model', `PEFT adapter: ${message}`);
}

function sortSites(sites: AdapterSite[]): AdapterSite[] {
  return sites.sort((a, b) => a.layer - b.layer || MODULES.indexOf(a.module) - MODULES.indexOf(b.module));
}

/** The sites of a tensor map, checked: valid paths, layers inside the model, A (R,in) and B (out,R). */
function checkedSites(tensors: AdapterTensors, model: AdapterModelShape, rank: number): AdapterSite[] {
  const sites: AdapterSite[] = [];
  for (const [path, pair] of tensors) {
    const site = parseAdapterModulePath(path);
    if (!site) {
      throw bad(`"${path}" is not a module path like h.0.attn.c_attn (modules: ${MODULES.join(', ')})`);
    }
    if (site.layer >= model.nLayer) throw bad(`"${path}" names block ${site.layer}, but the model has ${model.nLayer}`);
    const [inDim, outDim] = adapterModuleShape(model, site.module);
    if (pair.a.length !== rank * inDim || pair.b.length !== outDim * rank) {
      throw bad(
        `"${path}" has A of ${pair.a.length} and B of ${pair.b.length} values; rank ${rank} needs ` +
          `A (${rank},${inDim}) = ${rank * inDim} and B (${outDim},${rank}) = ${outDim * rank}`,
      );
    }
    sites.push(site);
  }
  return sortSites(sites);
}

function checkSpecNumbers(spec: AdapterSpec): void {
  if (!Number.isSafeInteger(spec.rank) || spec.rank < 1) throw bad(`rank must be a positive integer, got ${describeValue(spec.rank)}`);
  if (!(typeof spec.alpha === 'number' && Number.isFinite(spec.alpha))) throw bad(`alpha must be a number, got ${describeValue(spec.alpha)}`);
  if (!(spec.dropout >= 0 && spec.dropout < 1)) throw bad(`dropout must be in [0, 1), got ${describeValue(spec.dropout)}`);
}

/** `[2, 3]`; only the first few dimensions of a damaged shape with thousands of them. */
function shapeText(shape: readonly number[]): string {
  return `[${shape.slice(0, 8).join(', ')}${shape.length > 8 ? ', …' : ''}]`;
}

/** 'a, b, c, d and 3 more' */
function listSome(items: readonly string[], shown = 4): string {
  const more = items.length > shown ? ` and ${items.length - shown} more` : '';
  return items.slice(0, shown).join(', ') + more;
}

function escapeRegex(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

// ---- export ------------------------------------------------------------------------------------------------------

/** adapter_config.json as PEFT's LoraConfig writes it. Fields PEFT reads but Tunelab has no use for get defaults. */
export interface PeftLoraConfigJson {
  [key: string]: unknown;
  peft_type: 'LORA';
  task_type: 'CAUSAL_LM';
  r: number;
  lora_alpha: number;
  lora_dropout: number;
  target_modules: string[] | string;
  layers_to_transform: number[] | null;
  layers_pattern: string | null;
  fan_in_fan_out: true;
  bias: 'none';
  use_rslora: boolean;
  base_model_name_or_path: string | null;
}

/**
 * The adapter_config.json object for a spec and its tensors. When the tensors are exactly the spec's grid
 * (targetModules × layers), target_modules is a list (with layers_to_transform and layers_pattern "h" when only
 * some layers are adapted); when they are an irregular subset, target_modules is a regex PEFT full-matches
 * against module paths like `transformer.h.1.mlp.c_fc`, listing exactly the adapted modules.
 */
export function peftAdapterConfig(spec: AdapterSpec, tensors: AdapterTensors, model: AdapterModelShape): PeftLoraConfigJson {
  checkSpecNumbers(spec);
  const sites = checkedSites(tensors, model, spec.rank);
  if (sites.length === 0) throw bad('the adapter has no tensors');
  const targets = ADAPTER_TARGETS.filter((t) => spec.targetModules.includes(t));
  for (const t of spec.targetModules) {
    if (!ADAPTER_TARGETS.includes(t)) throw bad(`unknown target module ${describeValue(t)}; use ${ADAPTER_TARGETS.join(', ')}`);
  }
  const allLayers = Array.from({ length: model.nLayer }, (_, l) => l);
  const layers = spec.layers === null ? allLayers : [...new Set(spec.layers)].sort((a, b) => a - b);
  for (const l of layers) {
    if (!(Number.isSafeInteger(l) && l >= 0 && l < model.nLayer)) {
      throw bad(`layer ${describeValue(l)} is not a block of a ${model.nLayer}-layer model`);
    }
  }
  // The tensors must lie in the spec's grid and cover its every module and layer at least once.
  const modulesUsed = new Set(sites.map((s) => TARGET_OF_MODULE[s.module]));
  const layersUsed = new Set(sites.map((s) => s.layer));
  for (const s of sites) {
    if (!targets.includes(TARGET_OF_MODULE[s.module]) || !layers.includes(s.layer)) {
      throw bad(`tensors for ${adapterModulePath(s.layer, s.module)} lie outside the spec's target modules and layers`);
    }
  }
  const unusedTarget = targets.find((t) => !modulesUsed.has(t));
  if (unusedTarget) throw bad(`the spec targets ${unusedTarget} but no tensor adapts it`);
  const unusedLayer = layers.find((l) => !layersUsed.has(l));
  if (unusedLayer !== undefined) throw bad(`the spec selects layer ${unusedLayer} but no tensor adapts it`);

  const isGrid = sites.length === targets.length * layers.length;
  let targetModules: string[] | string;
  let layersToTransform: number[] | null = null;
  if (isGrid) {
    targetModules = [...targets];
    if (spec.layers !== null) layersToTransform = layers;
  } else {
    // One alternative per layer, like `transformer\.h\.1\.(attn\.c_attn|mlp\.c_fc)`.
    const byLayer = new Map<number, AdapterModule[]>();
    for (const s of sites) byLayer.set(s.layer, [...(byLayer.get(s.layer) ?? []), s.module]);
    targetModules = [...byLayer]
      .map(([layer, modules]) => `${escapeRegex(`transformer.h.${layer}.`)}(${modules.map(escapeRegex).join('|')})`)
      .join('|');
  }
  return {
    alpha_pattern: {},
    auto_mapping: null,
    base_model_name_or_path: spec.baseModel === '' ? null : spec.baseModel,
    bias: 'none',
    fan_in_fan_out: true,
    inference_mode: true,
    init_lora_weights: true,
    layers_pattern: layersToTransform === null ? null : 'h',
    layers_to_transform: layersToTransform,
    loftq_config: {},
    lora_alpha: spec.alpha,
    lora_dropout: spec.dropout,
    megatron_config: null,
    megatron_core: 'megatron.core',
    modules_to_save: null,
    peft_type: 'LORA',
    r: spec.rank,
    rank_pattern: {},
    revision: null,
    target_modules: targetModules,
    task_type: 'CAUSAL_LM',
    use_dora: false,
    use_rslora: spec.useRslora,
  };
}

/** PEFT's tensor name of A or B for a module path ('h.0.attn.c_attn' → 'base_model.model.transformer.h.0.…'). */
export function peftTensorName(path: string, which: 'A' | 'B'): string {
  return `base_model.model.transformer.${path}.lora_${which}.weight`;
}

export interface PeftAdapterFiles {
  /** adapter_config.json, pretty-printed like PEFT writes it. */
  adapterConfigJson: string;
  /** adapter_model.safetensors. */
  adapterModel: Uint8Array;
}

export interface PeftExportOptions {
  /** Storage dtype of A and B (F32). */
  dtype?: WriteDtype;
}

/** The two files of a PEFT adapter directory. */
export function exportPeftAdapter(
  spec: AdapterSpec,
  tensors: AdapterTensors,
  model: AdapterModelShape,
  options: PeftExportOptions = {},
): PeftAdapterFiles {
  const config = peftAdapterConfig(spec, tensors, model);
  const [inDims, outDims] = [new Map<string, number>(), new Map<string, number>()];
  for (const path of tensors.keys()) {
    const [inDim, outDim] = adapterModuleShape(model, parseAdapterModulePath(path)!.module);
    inDims.set(path, inDim);
    outDims.set(path, outDim);
  }
  const written = [...tensors].flatMap(([path, pair]) => [
    { name: peftTensorName(path, 'A'), shape: [spec.rank, inDims.get(path)!], data: pair.a },
    { name: peftTensorName(path, 'B'), shape: [outDims.get(path)!, spec.rank], data: pair.b },
  ]);
  // transformers and PEFT check that safetensors files say they hold PyTorch tensors.
  const adapterModel = writeSafetensors(written, { dtype: options.dtype ?? 'F32', metadata: { format: 'pt' } });
  return { adapterConfigJson: `${JSON.stringify(config, null, 2)}\n`, adapterModel };
}

// ---- import ------------------------------------------------------------------------------------------------------

export interface ImportedAdapter {
  spec: AdapterSpec;
  tensors: AdapterTensors;
  /** Things worth telling the learner that do not stop the import. */
  warnings: string[];
}

/** A tensor key of a PEFT LoRA adapter on GPT-2: optional prefixes, the module, A or B, an optional adapter name. */
const LORA_KEY =
  /^(?:base_model\.model\.)?(?:transformer\.)?h\.(\d+)\.(attn\.c_attn|attn\.c_proj|mlp\.c_fc|mlp\.c_proj)\.lora_([AB])(?:\.([^.]+))?\.weight$/;

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function isEmpty(value: unknown): boolean {
  if (value === undefined || value === null || value === false) return true;
  if (Array.isArray(value)) return value.length === 0;
  if (isPlainObject(value)) return Object.keys(value).length === 0;
  return false;
}

function parseConfigJson(input: unknown): Record<string, unknown> {
  let json = input;
  if (input instanceof Uint8Array) {
    try {
      json = new TextDecoder('utf-8', { fatal: true }).decode(input);
    } catch {
      throw bad('adapter_config.json is not UTF-8 text');
    }
  }
  if (typeof json === 'string') {
    try {
      json = JSON.parse(json);
    } catch (error) {
      throw bad(`adapter_config.json is not valid JSON (${error instanceof Error ? error.message : String(error)})`);
    }
  }
  if (!isPlainObject(json)) throw bad('adapter_config.json is not a JSON object');
  return json;
}

/** Settings Tunelab cannot reproduce; each makes PEFT compute something other than plain LoRA on Conv1D weights. */
function checkSupported(c: Record<string, unknown>): void {
  const peftType = c.peft_type;
  if (peftType !== 'LORA') {
    throw bad(`peft_type is ${describeValue(peftType)}; Tunelab reads LoRA adapters (peft_type "LORA") only`);
  }
  if (c.use_dora === true) {
    throw bad('use_dora is true: DoRA adapters (a learned magnitude per output) are not supported; train plain LoRA');
  }
  if (c.lora_bias === true) throw bad('lora_bias is true: LoRA adapters with a bias on B are not supported');
  if (c.bias !== undefined && c.bias !== null && c.bias !== 'none') {
    throw bad(`bias is ${describeValue(c.bias)}: adapters that also train the model's biases are not supported (use "none")`);
  }
  if (!isEmpty(c.modules_to_save)) {
    throw bad(
      `modules_to_save is ${describeValue(c.modules_to_save)}: adapters that carry fully trained modules are not supported`,
    );
  }
  if (!isEmpty(c.rank_pattern) || !isEmpty(c.alpha_pattern)) {
    throw bad('rank_pattern / alpha_pattern give some modules their own rank or alpha; Tunelab uses one r and lora_alpha');
  }
  if (!isEmpty(c.layer_replication)) throw bad('layer_replication is not supported: it changes the number of blocks');
  if (!isEmpty(c.target_parameters)) throw bad('target_parameters (LoRA on raw parameters) is not supported');
  if (!isEmpty(c.trainable_token_indices)) throw bad('trainable_token_indices (trained embedding rows) is not supported');
}

function positiveInteger(value: unknown, what: string): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 1) {
    throw bad(`${what} must be a positive integer, got ${describeValue(value)}`);
  }
  return value;
}

/** PEFT's module selection, reproduced for GPT-2's Conv1D modules: which sites would the config adapt? */
function sitesSelectedByConfig(
  c: Record<string, unknown>,
  model: AdapterModelShape,
  warnings: string[],
): { sites: AdapterSite[] | null; layersToTransform: number[] | null } {
  try {
    return sitesSelectedByRegexes(c, model);
  } catch (error) {
    if (!(error instanceof UnusableRegex)) throw error;
    // Python regex syntax JavaScript lacks (e.g. (?P<name>…)), or a pattern that could backtrack for minutes:
    // rely on the tensor names alone.
    warnings.push(`${error.message}; the adapted modules are taken from the tensor names`);
    return { sites: null, layersToTransform: null };
  }
}

/** A regex of the config that JavaScript cannot compile or cannot run safely; the import then trusts the tensors. */
class UnusableRegex extends Error {}

function stringList(value: unknown[], what: string): string[] {
  if (!value.every((v) => typeof v === 'string')) throw bad(`${what} must list names (strings), got ${describeValue(value)}`);
  return value as string[];
}

function sitesSelectedByRegexes(
  c: Record<string, unknown>,
  model: AdapterModelShape,
): { sites: AdapterSite[] | null; layersToTransform: number[] | null } {
  const allSites: AdapterSite[] = [];
  for (let layer = 0; layer < model.nLayer; layer++) for (const module of MODULES) allSites.push({ layer, module });
  const key = (s: AdapterSite) => `transformer.h.${s.layer}.${s.module}`;

  let exclude: (k: string) => boolean = () => false;
  const excludeModules = c.exclude_modules;
  if (typeof excludeModules === 'string') {
    const re = compileFullMatch(excludeModules, 'exclude_modules');
    exclude = (k) => re.test(k);
  } else if (Array.isArray(excludeModules) && excludeModules.length) {
    const names = stringList(excludeModules, 'exclude_modules');
    exclude = (k) => names.some((n) => k === n || k.endsWith(`.${n}`));
  }

  let targets = c.target_modules;
  if (typeof targets === 'string' && targets.toLowerCase() === 'all-linear') {
    // PEFT turns it into the names of every Conv1D/Linear but the output head, then matches them as a list.
    targets = ['c_attn', 'c_proj', 'c_fc'];
  }
  if (typeof targets === 'string') {
    const re = compileFullMatch(targets, 'target_modules');
    return { sites: allSites.filter((s) => !exclude(key(s)) && re.test(key(s))), layersToTransform: null };
  }
  if (!Array.isArray(targets) || targets.length === 0 || !targets.every((t) => typeof t === 'string')) {
    throw bad(`target_modules must be a list of module names or a regex string, got ${describeValue(targets)}`);
  }

  let layersToTransform: number[] | null = null;
  const ltt = c.layers_to_transform;
  if (typeof ltt === 'number') layersToTransform = [ltt];
  else if (Array.isArray(ltt) && ltt.every((v) => typeof v === 'number')) layersToTransform = ltt as number[];
  else if (ltt !== undefined && ltt !== null) {
    throw bad(`layers_to_transform must be a layer index or a list of them, got ${describeValue(ltt)}`);
  }
  if (layersToTransform) {
    for (const l of layersToTransform) {
      if (!(Number.isSafeInteger(l) && l >= 0 && l < model.nLayer)) {
        throw bad(`layers_to_transform names layer ${describeValue(l)}, but the model has ${model.nLayer} blocks`);
      }
    }
    layersToTransform = [...new Set(layersToTransform)].sort((a, b) => a - b);
  }
  const patterns = c.layers_pattern;
  let patternList: string[];
  if (patterns === undefined || patterns === null) patternList = [];
  else if (typeof patterns === 'string') patternList = [patterns];
  else if (Array.isArray(patterns)) patternList = stringList(patterns, 'layers_pattern');
  else throw bad(`layers_pattern must be a string or a list, got ${describeValue(patterns)}`);
  // PEFT: re.match(f".*\.{layer_pattern}\.(\d+)\.", key), i.e. the number after that name.
  const layerRegexes = patternList.map((p) => compileChecked(`^.*\\.${p}\\.(\\d+)\\.`, p, 'layers_pattern'));
  if (layerRegexes.length === 0) layerRegexes.push(/^.*\.[^.]*\.(\d+)\./);
  const layerIndexOf = (k: string): number | null => {
    // PEFT: without a pattern, the number after any dotted name; with one, the number after that name.
    for (const re of layerRegexes) {
      const m = re.exec(k);
      if (m) return Number(m[1]);
    }
    return null;
  };

  const names = targets as string[];
  const sites = allSites.filter((s) => {
    const k = key(s);
    if (exclude(k)) return false;
    if (names.includes(k)) return true; // a full path is taken as is, whatever the layer selection
    if (!names.some((n) => k.endsWith(`.${n}`))) return false;
    if (!layersToTransform) return true;
    const index = layerIndexOf(k);
    return index !== null && layersToTransform.includes(index);
  });
  return { sites, layersToTransform };
}

/** Longer patterns are not run: the exporter's longest (every module of 48 blocks listed) is about 3,500 characters. */
const MAX_PATTERN_CHARS = 10_000;
/** More quantifiers than this are not run: `.*` six times over already costs most of a second on GPT-2 XL's paths. */
const MAX_QUANTIFIERS = 4;

/**
 * Why running `pattern` could backtrack catastrophically, or null when its shape is safe. Conservative: refuses a
 * repeated group whose body holds a quantifier or alternatives (`(.*)*x`, `(.*){7}x`, `(a|a)*`), more than
 * MAX_QUANTIFIERS quantifiers (`.*.*.*.*.*x`), overlong patterns and unbalanced parentheses (which would escape the
 * full-match wrapper). Regexes PEFT configs use (`.*\.h\.\d+\.attn\.c_attn`, alternatives of module paths) pass.
 */
export function regexHazard(pattern: string): string | null {
  if (pattern.length > MAX_PATTERN_CHARS) {
    return `it is ${pattern.length} characters long (at most ${MAX_PATTERN_CHARS} are run)`;
  }
  // One entry per open group: whether its body so far holds a quantifier or a "|".
  const open: boolean[] = [];
  let quantifiers = 0;
  let canRepeat = false; // something that a quantifier here would apply to precedes
  let previousGroupRisky = false; // …and it is a group whose body quantifies or alternates
  let i = 0;
  while (i < pattern.length) {
    const ch = pattern[i];
    const quantifier = canRepeat ? quantifierAt(pattern, i) : null;
    if (quantifier) {
      quantifiers++;
      open.fill(true);
      if (quantifier.repeats && previousGroupRisky) {
        return (
          'it repeats a group that itself holds a quantifier or alternatives ' +
          '(nested quantifiers can backtrack for minutes)'
        );
      }
      i += quantifier.length;
      if (pattern[i] === '?') i++; // lazy: not another quantifier
      canRepeat = false;
      previousGroupRisky = false;
      continue;
    }
    previousGroupRisky = false;
    canRepeat = true;
    if (ch === '\\') {
      i += 2;
    } else if (ch === '[') {
      // A character class is one atom: skip to its closing bracket (JavaScript's rules: "[]" is an empty class).
      i++;
      if (pattern[i] === '^') i++;
      while (i < pattern.length && pattern[i] !== ']') i += pattern[i] === '\\' ? 2 : 1;
      i++;
    } else if (ch === '(') {
      open.push(false);
      canRepeat = false;
      i += pattern[i + 1] === '?' ? 2 : 1; // (?:, (?=, (?<name>: that "?" is no quantifier
    } else if (ch === ')') {
      if (open.length === 0) return 'its parentheses do not balance';
      previousGroupRisky = open.pop()!;
      i++;
    } else if (ch === '|') {
      open.fill(true);
      canRepeat = false;
      i++;
    } else {
      if (ch === '^' || ch === '$') canRepeat = false;
      i++;
    }
  }
  if (quantifiers > MAX_QUANTIFIERS) {
    return `it has ${quantifiers} quantifiers (at most ${MAX_QUANTIFIERS} are run; each multiplies the backtracking)`;
  }
  return null;
}

/** The quantifier starting at `i`, if any: `*`, `+`, `?` or a valid `{n}`, `{n,}`, `{n,m}`; `repeats` unless at most once. */
function quantifierAt(pattern: string, i: number): { length: number; repeats: boolean } | null {
  const ch = pattern[i];
  if (ch === '*' || ch === '+') return { length: 1, repeats: true };
  if (ch === '?') return { length: 1, repeats: false };
  if (ch !== '{') return null;
  const braces = /^\{(\d+)(,(\d*))?\}/.exec(pattern.slice(i, i + 40));
  if (!braces) return null; // a literal "{"
  const max = braces[2] === undefined ? Number(braces[1]) : braces[3] === '' ? Infinity : Number(braces[3]);
  return { length: braces[0].length, repeats: max > 1 };
}

/** A RegExp of `source`, built around the user's `pattern`, once the pattern is known to compile and run safely. */
function compileChecked(source: string, pattern: string, what: string): RegExp {
  const hazard = regexHazard(pattern);
  if (hazard) throw new UnusableRegex(`PEFT adapter: ${what} ${describeValue(pattern)} is not run: ${hazard}`);
  try {
    return new RegExp(source);
  } catch {
    throw new UnusableRegex(
      `PEFT adapter: ${what} ${describeValue(pattern)} is not a regular expression JavaScript understands`,
    );
  }
}

/** Python's re.fullmatch(pattern, key) as a JavaScript RegExp. */
function compileFullMatch(pattern: string, what: string): RegExp {
  return compileChecked(`^(?:${pattern})$`, pattern, what);
}

/**
 * Reads a PEFT LoRA adapter for a GPT-2 model: adapter_config.json (text, bytes or parsed) and
 * adapter_model.safetensors. The adapted modules come from the tensor names and must be exactly those the config
 * selects (PEFT's rules: list entries match module-path suffixes, a string is a full-match regex,
 * layers_to_transform / layers_pattern / exclude_modules apply). Accepts keys with or without an adapter name
 * (`.lora_A.default.weight`) and without `transformer.`; F16/BF16 tensors are widened to f32.
 */
export function importPeftAdapter(
  adapterConfig: string | Uint8Array | Record<string, unknown>,
  adapterModel: Uint8Array | ArrayBuffer,
  model: AdapterModelShape,
): ImportedAdapter {
  const c = parseConfigJson(adapterConfig);
  checkSupported(c);
  const warnings: string[] = [];
  const rank = positiveInteger(c.r ?? 8, 'r'); // PEFT's defaults: r 8, lora_alpha 8, lora_dropout 0
  const alpha = c.lora_alpha ?? 8;
  if (typeof alpha !== 'number' || !Number.isFinite(alpha)) throw bad(`lora_alpha must be a number, got ${describeValue(alpha)}`);
  const dropout = c.lora_dropout ?? 0;
  if (typeof dropout !== 'number' || !(dropout >= 0 && dropout < 1)) {
    throw bad(`lora_dropout must be a number in [0, 1), got ${describeValue(dropout)}`);
  }
  const useRslora = c.use_rslora === true;
  if (c.fan_in_fan_out === false) {
    // PEFT sets it to true itself for GPT-2's Conv1D (with a warning); the stored A and B are the same either way.
    warnings.push('fan_in_fan_out is false; GPT-2 uses Conv1D, so it is taken as true, as PEFT does');
  }
  const baseModel = typeof c.base_model_name_or_path === 'string' ? c.base_model_name_or_path : '';

  const file = parseSafetensors(adapterModel instanceof Uint8Array ? adapterModel : new Uint8Array(adapterModel));
  const names = new Map<string, { a?: string; b?: string }>();
  let adapterName: string | undefined;
  for (const name of file.tensors.keys()) {
    const match = LORA_KEY.exec(name);
    if (!match) {
      const shown = describeValue(name, 120);
      if (/lora_magnitude_vector/.test(name)) throw bad(`tensor ${shown} is a DoRA magnitude; DoRA adapters are not supported`);
      if (/lora_embedding_[AB]/.test(name)) throw bad(`tensor ${shown} adapts an embedding; Tunelab adapts only Conv1D layers`);
      if (/\.lora_B(\.[^.]+)?\.bias$/.test(name)) throw bad(`tensor ${shown} is a LoRA bias (lora_bias); not supported`);
      throw bad(
        `tensor ${shown} is not a LoRA A or B of a GPT-2 block (expected names like ` +
          `${peftTensorName('h.0.attn.c_attn', 'A')}); the adapter is for another architecture or carries other weights`,
      );
    }
    const [, layerText, module, which, nameInKey] = match;
    const thisAdapter = nameInKey ?? '';
    if (adapterName !== undefined && adapterName !== thisAdapter) {
      const [first, second] = [adapterName, thisAdapter].map((n) => describeValue(n || '(unnamed)', 60));
      throw bad(`the file mixes adapters ${first} and ${second}; save one adapter`);
    }
    adapterName = thisAdapter;
    const layer = Number(layerText);
    if (layer >= model.nLayer) {
      throw bad(`tensor ${describeValue(name, 120)} adapts block ${layer}, but the model has ${model.nLayer} blocks`);
    }
    const path = adapterModulePath(layer, module as AdapterModule);
    const entry = names.get(path) ?? {};
    if ((which === 'A' ? entry.a : entry.b) !== undefined) {
      throw bad(`tensor ${describeValue(name, 120)} appears twice (with and without a prefix?)`);
    }
    if (which === 'A') entry.a = name;
    else entry.b = name;
    names.set(path, entry);
  }
  if (names.size === 0) throw bad('adapter_model.safetensors holds no LoRA tensors');

  const tensors: AdapterTensors = new Map();
  for (const site of sortSites([...names.keys()].map((p) => parseAdapterModulePath(p)!))) {
    const path = adapterModulePath(site.layer, site.module);
    const entry = names.get(path)!;
    if (!entry.a || !entry.b) {
      throw bad(`${path} has lora_${entry.a ? 'A' : 'B'} but no lora_${entry.a ? 'B' : 'A'}`);
    }
    const [inDim, outDim] = adapterModuleShape(model, site.module);
    const expect = (tensorName: string, shape: [number, number]) => {
      const info = file.tensors.get(tensorName)!;
      if (info.shape.length !== 2 || info.shape[0] !== shape[0] || info.shape[1] !== shape[1]) {
        throw bad(
          `tensor ${describeValue(tensorName, 120)} has shape ${shapeText(info.shape)} but r=${rank} and the model ` +
            `(width ${model.nEmbd}) ` +
            `need [${shape.join(', ')}]; the adapter belongs to another model or another rank`,
        );
      }
      return readTensorF32(file, tensorName, { requireFinite: true });
    };
    tensors.set(path, { a: expect(entry.a, [rank, inDim]), b: expect(entry.b, [outDim, rank]) });
  }

  const sites = [...tensors.keys()].map((p) => parseAdapterModulePath(p)!);
  const selected = sitesSelectedByConfig(c, model, warnings);
  if (selected.sites) {
    const inFile = new Set(tensors.keys());
    const inConfig = new Set(selected.sites.map((s) => adapterModulePath(s.layer, s.module)));
    const missing = [...inConfig].filter((p) => !inFile.has(p));
    if (missing.length) {
      throw bad(
        `adapter_config.json targets ${listSome(missing)} but adapter_model.safetensors has no tensors for them; ` +
          'the files do not belong together or the file is incomplete',
      );
    }
    const extra = [...inFile].filter((p) => !inConfig.has(p));
    if (extra.length) {
      throw bad(
        `adapter_model.safetensors has tensors for ${listSome(extra)}, ` +
          "which adapter_config.json's target_modules / layers_to_transform do not select",
      );
    }
  }

  const targetModules = ADAPTER_TARGETS.filter((t) => sites.some((s) => TARGET_OF_MODULE[s.module] === t));
  // The union of adapted layers; null for "all" unless the config lists layers (so [0, 1] stays [0, 1]).
  const used = [...new Set(sites.map((s) => s.layer))].sort((a, b) => a - b);
  const layers = selected.layersToTransform === null && used.length === model.nLayer ? null : used;
  return {
    spec: { rank, alpha, dropout, useRslora, targetModules, layers, baseModel },
    tensors,
    warnings,
  };
}
