// Fuzz test of PEFT adapter import (importPeftAdapter): thousands of seeded adapters whose adapter_config.json,
// adapter_model.safetensors (bytes, header fields, tensor names) or assumed model shape were damaged or randomized.
// Each ends in an imported adapter whose tensors fit the model, or a TunelabError('bad-model'), quickly.

import { describe, expect, it } from 'vitest';
import { parseSafetensors } from '../../src/engine/io/safetensors.ts';
import {
  adapterModuleShape,
  exportPeftAdapter,
  importPeftAdapter,
  parseAdapterModulePath,
  type AdapterModelShape,
  type AdapterSpec,
  type AdapterTensors,
  type ImportedAdapter,
} from '../../src/engine/interop/peft.ts';
import type { Rng } from '../../src/engine/random.ts';
import { fixtureBytes, fixtureText } from '../interop/fixture.ts';
import { rawSafetensors } from '../io/raw.ts';
import {
  caseRng,
  encodeUtf8,
  expectEachResultOrTunelabError,
  fuzz,
  mutateBytes,
  mutateJson,
  mutateText,
  pick,
  preview,
  randomJson,
  resultOrTunelabError,
  summary,
  withDeepValue,
} from './helpers.ts';
import { HANG_MS } from './helpers.ts';

const MODEL: AdapterModelShape = { nLayer: 2, nEmbd: 16 }; // the fixture's model

interface AdapterInput {
  config: string | Uint8Array | Record<string, unknown>;
  model: Uint8Array;
  shape: AdapterModelShape;
}

function tensorsFor(sites: string[], rank: number, shape: AdapterModelShape, rng: Rng): AdapterTensors {
  const tensors: AdapterTensors = new Map();
  for (const path of sites) {
    const [inDim, outDim] = adapterModuleShape(shape, parseAdapterModulePath(path)!.module);
    tensors.set(path, {
      a: Float32Array.from({ length: rank * inDim }, () => rng.uniform(-1, 1)),
      b: Float32Array.from({ length: outDim * rank }, () => rng.uniform(-1, 1)),
    });
  }
  return tensors;
}

/** Well-formed adapters of several kinds: all modules, some layers, an irregular set (regex), rsLoRA in F16, PEFT's own. */
function baseAdapters(): { config: string; model: Uint8Array }[] {
  const rng = caseRng(3303, -1);
  const spec = (over: Partial<AdapterSpec>): AdapterSpec => ({
    rank: 2, alpha: 4, dropout: 0.05, useRslora: false, targetModules: ['c_attn', 'attn.c_proj', 'c_fc', 'mlp.c_proj'], layers: null, baseModel: 'gpt2', ...over,
  });
  const everything = ['h.0.attn.c_attn', 'h.0.attn.c_proj', 'h.0.mlp.c_fc', 'h.0.mlp.c_proj', 'h.1.attn.c_attn', 'h.1.attn.c_proj', 'h.1.mlp.c_fc', 'h.1.mlp.c_proj'];
  const made = [
    exportPeftAdapter(spec({}), tensorsFor(everything, 2, MODEL, rng), MODEL),
    exportPeftAdapter(spec({ targetModules: ['c_attn'], layers: [1], rank: 1 }), tensorsFor(['h.1.attn.c_attn'], 1, MODEL, rng), MODEL),
    exportPeftAdapter(spec({ targetModules: ['c_attn', 'c_fc'] }), tensorsFor(['h.0.attn.c_attn', 'h.1.mlp.c_fc'], 2, MODEL, rng), MODEL),
    exportPeftAdapter(spec({ useRslora: true, targetModules: ['mlp.c_proj'], rank: 3 }), tensorsFor(['h.0.mlp.c_proj', 'h.1.mlp.c_proj'], 3, MODEL, rng), MODEL, { dtype: 'F16' }),
  ];
  return [
    ...made.map((files) => ({ config: files.adapterConfigJson, model: files.adapterModel })),
    { config: fixtureText('adapter/adapter_config.json'), model: fixtureBytes('adapter/adapter_model.safetensors') },
  ];
}

const BASES = baseAdapters();

/** Fields of adapter_config.json the importer reads. */
const CONFIG_KEYS = [
  'peft_type', 'task_type', 'r', 'lora_alpha', 'lora_dropout', 'target_modules', 'exclude_modules', 'layers_to_transform',
  'layers_pattern', 'fan_in_fan_out', 'bias', 'lora_bias', 'use_rslora', 'use_dora', 'modules_to_save', 'rank_pattern',
  'alpha_pattern', 'layer_replication', 'target_parameters', 'trainable_token_indices', 'base_model_name_or_path',
];
const CONFIG_VALUES = [
  'LORA', 'LOHA', 'CAUSAL_LM', 'none', 'all', 'lora_only', 'all-linear', 'ALL-LINEAR', 'c_attn', 'attn.c_proj', 'c_fc',
  'mlp.c_proj', 'c_proj', 'h', 'layers', 'transformer.h.0.attn.c_attn', '.*c_attn', '.*', '.*\\.h\\.(0|1)\\..*',
  '(?P<n>x)', '(', ['c_attn'], ['c_attn', 'c_fc'], ['h'], [0], [1], [0, 1], [5], [-1], ['1'], 8, 16, 0.1, 0.99,
];

/** Header-level damage: a field of one tensor's entry, or its name (prefix, adapter name, layer, kind). */
function mutateHeader(rng: Rng, model: Uint8Array): Uint8Array {
  const file = parseSafetensors(model);
  const headerLength = file.headerBytes;
  const header = JSON.parse(new TextDecoder().decode(model.subarray(8, 8 + headerLength))) as Record<string, unknown>;
  const names = Object.keys(header).filter((n) => n !== '__metadata__');
  const name = pick(rng, names);
  if (rng.next() < 0.5) {
    const renamed = pick(rng, [
      name.replace('base_model.model.', ''),
      name.replace('transformer.', ''),
      name.replace('.weight', '.default.weight'),
      name.replace('.weight', '.other.weight'),
      name.replace(/h\.\d+/, `h.${pick(rng, [2, 7, 99, 123456789])}`),
      name.replace('lora_A', 'lora_B'),
      name.replace('lora_A', 'lora_embedding_A'),
      name.replace(/lora_[AB]/, 'lora_magnitude_vector'),
      name.replace('.weight', '.bias'),
      name.replace(/attn\.c_attn|mlp\.c_fc/, 'attn.q_proj'),
      `${name}.extra`,
      '',
    ]);
    header[renamed] = header[name];
    if (renamed !== name) delete header[name];
  } else {
    header[name] = mutateJson(rng, header[name], ['dtype', 'shape', 'data_offsets'], ['F32', 'F16', 'BF16', 'I64', 'U8', 'F64', [2, 16], [16, 2], [48, 2], [2], []]);
  }
  return rawSafetensors(header, file.data);
}

function generate(rng: Rng): AdapterInput {
  const base = pick(rng, BASES);
  const parsedConfig = JSON.parse(base.config) as Record<string, unknown>;
  let config: AdapterInput['config'] = base.config;
  let model = base.model;
  let shape = MODEL;
  const damage = rng.int(10);
  if (damage <= 3) config = mutateJson(rng, parsedConfig, CONFIG_KEYS, CONFIG_VALUES) as Record<string, unknown>;
  else if (damage === 4) config = mutateText(rng, base.config);
  else if (damage === 5) config = rng.next() < 0.5 ? encodeUtf8(mutateText(rng, base.config)) : mutateBytes(rng, encodeUtf8(base.config));
  else if (damage === 6) config = randomJson(rng, CONFIG_KEYS, CONFIG_VALUES) as Record<string, unknown>;
  if (damage >= 3 && damage <= 8 && rng.next() < 0.5) model = rng.next() < 0.5 ? mutateHeader(rng, base.model) : mutateBytes(rng, base.model);
  if (rng.next() < 0.1) shape = { nLayer: pick(rng, [1, 2, 3, 12]), nEmbd: pick(rng, [8, 16, 32]) };
  // The config as a parsed object is what a caller that read it first passes; as text or bytes, what a file gives.
  return { config, model, shape };
}

function showInput(input: AdapterInput): string {
  return `shape ${JSON.stringify(input.shape)}\nadapter_config.json: ${preview(input.config)}\nadapter_model.safetensors: ${preview(input.model, 300)}`;
}

function checkImported(result: unknown, input: AdapterInput): void {
  const { spec, tensors } = result as ImportedAdapter;
  expect(Number.isSafeInteger(spec.rank) && spec.rank >= 1).toBe(true);
  expect(Number.isFinite(spec.alpha)).toBe(true);
  expect(spec.dropout >= 0 && spec.dropout < 1).toBe(true);
  expect(tensors.size).toBeGreaterThan(0);
  for (const [path, pair] of tensors) {
    const site = parseAdapterModulePath(path)!;
    expect(site.layer).toBeLessThan(input.shape.nLayer);
    const [inDim, outDim] = adapterModuleShape(input.shape, site.module);
    expect(pair.a.length).toBe(spec.rank * inDim);
    expect(pair.b.length).toBe(outDim * spec.rank);
  }
}

const CASES = 8000;

describe('fuzz: PEFT adapter import', () => {
  it('the base adapters import (so the fuzzer starts from working files)', () => {
    for (const base of BASES) checkImported(importPeftAdapter(base.config, base.model, MODEL), { ...base, shape: MODEL });
  });

  it(`gives a fitting adapter or a bad-model TunelabError (${CASES} seeded inputs)`, async () => {
    const outcome = await fuzz<AdapterInput>({
      seed: 3303,
      cases: CASES,
      generate,
      parse: (input) => importPeftAdapter(input.config, input.model, input.shape),
      show: showInput,
      check: checkImported,
    });
    console.log(summary('PEFT adapter', outcome));
    expect(outcome.accepted).toBeGreaterThan(400);
    expect(outcome.refused).toBeGreaterThan(1500);
    expect(outcome.refusals.size).toBeGreaterThan(25);
    expect(outcome.slowestMs).toBeLessThan(HANG_MS);
  });

  it('a target_modules regex with nested quantifiers cannot stall the import (catastrophic backtracking)', async () => {
    // PEFT full-matches target_modules against every module path. "(.*){7}x" backtracks through ~7⁷ ways to split
    // each 25-character path (seconds for this 2-layer model); "(.*)*x" takes about a minute per path.
    const base = BASES[0];
    const config = { ...(JSON.parse(base.config) as Record<string, unknown>), target_modules: '(.*){7}x' };
    const started = performance.now();
    await resultOrTunelabError('target_modules "(.*){7}x"', () => importPeftAdapter(config, base.model, MODEL));
    expect(performance.now() - started).toBeLessThan(500);
  });

  it('a config field nested thousands deep ends in an adapter or a TunelabError, not a stack overflow', async () => {
    const base = BASES[0];
    const parsed = JSON.parse(base.config) as Record<string, unknown>;
    await expectEachResultOrTunelabError(
      CONFIG_KEYS.flatMap((key) =>
        [false, true].map((asObject) => ({
          label: `"${key}" nested 10000 deep (${asObject ? 'objects' : 'arrays'})`,
          call: () => importPeftAdapter(withDeepValue(parsed, [key], 10_000, asObject), base.model, MODEL),
        })),
      ),
    );
  });
});
