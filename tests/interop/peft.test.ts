// PEFT adapter files: import of the PyTorch-made fixture adapter (checked through the reference model against
// PyTorch's logits), export → import round trips (identical spec, tensors and logits), PEFT's module selection
// rules (list suffixes, regex full match, layers_to_transform, exclude_modules, all-linear, adapter names), the
// refusals a learner can meet, and regexes that could backtrack for minutes, which fall back to the tensor names.
//
// Tolerance against the fixture's logits: FIXTURE_F32 as in tests/reference-gpt2.test.ts (PyTorch float64 rounded
// to f32 once: one ulp relative). Round trips are compared bit for bit.

import { describe, expect, it } from 'vitest';
import { TunelabError } from '../../src/engine/errors.ts';
import { parseSafetensors, readTensorF32, writeSafetensors, type TensorToWrite } from '../../src/engine/io/safetensors.ts';
import { modelConfig } from '../../src/engine/model/config.ts';
import {
  adapterModulePath,
  adapterModuleShape,
  adapterScale,
  exportPeftAdapter,
  importPeftAdapter,
  parseAdapterModulePath,
  peftAdapterConfig,
  peftTensorName,
  regexHazard,
  type AdapterSpec,
  type AdapterTensors,
} from '../../src/engine/interop/peft.ts';
import { Rng } from '../../src/engine/random.ts';
import { gpt2ReferenceForward } from '../../src/engine/reference/gpt2.ts';
import { expectClose, type Tolerance } from '../helpers/check.ts';
import { expectBadModel, loadFixture, referenceLora, toFloat64 } from './fixture.ts';

const FIXTURE_F32: Tolerance = { atol: 1e-12, rtol: 2 ** -23 };
const fixture = loadFixture();
const MODEL = fixture.config; // L=2, C=16

function randomTensors(sites: string[], rank: number, rng: Rng): AdapterTensors {
  const tensors: AdapterTensors = new Map();
  for (const path of sites) {
    const [inDim, outDim] = adapterModuleShape(MODEL, parseAdapterModulePath(path)!.module);
    const random = (n: number) => Float32Array.from({ length: n }, () => 0.2 * rng.normal());
    tensors.set(path, { a: random(rank * inDim), b: random(outDim * rank) });
  }
  return tensors;
}

function expectSameTensors(actual: AdapterTensors, expected: AdapterTensors): void {
  expect([...actual.keys()]).toEqual([...expected.keys()]);
  for (const [path, pair] of expected) {
    expect(actual.get(path)!.a, `${path} A`).toEqual(pair.a);
    expect(actual.get(path)!.b, `${path} B`).toEqual(pair.b);
  }
}

/** The fixture adapter's tensors under other names, with a config — for import variants. */
function adapterFile(rename: (peftName: string) => string | null, extra: TensorToWrite[] = []): Uint8Array {
  const file = parseSafetensors(fixture.adapterModel);
  const tensors: TensorToWrite[] = [];
  for (const [name, info] of file.tensors) {
    const renamed = rename(name);
    if (renamed !== null) tensors.push({ name: renamed, shape: info.shape, data: readTensorF32(file, name) });
  }
  return writeSafetensors([...tensors, ...extra]);
}

const fixtureConfig = JSON.parse(fixture.adapterConfigJson) as Record<string, unknown>;

describe('importing the PyTorch fixture adapter', () => {
  const imported = importPeftAdapter(fixture.adapterConfigJson, fixture.adapterModel, MODEL);

  it('reads its spec and exactly the modules its regex target_modules selects', () => {
    expect(imported.spec).toEqual({
      rank: 4,
      alpha: 8,
      dropout: 0,
      useRslora: false,
      targetModules: ['c_attn', 'attn.c_proj', 'c_fc', 'mlp.c_proj'],
      layers: null,
      baseModel: 'gpt2-lora-fixture',
    });
    expect(imported.warnings).toEqual([]);
    expect([...imported.tensors.keys()].map((p) => `transformer.${p}`)).toEqual(fixture.adaptedModules);
    const raw = parseSafetensors(fixture.adapterModel);
    for (const [path, pair] of imported.tensors) {
      expect(pair.a).toEqual(readTensorF32(raw, peftTensorName(path, 'A')));
      expect(pair.b).toEqual(readTensorF32(raw, peftTensorName(path, 'B')));
    }
  });

  it("gives PyTorch's logits in the reference model", () => {
    const lora = referenceLora(imported.tensors, adapterScale(imported.spec));
    const forward = gpt2ReferenceForward(MODEL, toFloat64(fixture.weights), lora, { B: fixture.B, T: fixture.T, ids: fixture.ids });
    expectClose(forward.logits, readTensorF32(fixture.expected, 'logits_lora'), FIXTURE_F32, 'logits_lora');
  });

  it('exports it again as a regex adapter that imports to the same spec, tensors and logits', () => {
    const files = exportPeftAdapter(imported.spec, imported.tensors, MODEL);
    const config = JSON.parse(files.adapterConfigJson);
    expect(typeof config.target_modules).toBe('string');
    const pattern = new RegExp(`^(?:${config.target_modules})$`);
    const selected = [0, 1].flatMap((l) =>
      ['attn.c_attn', 'attn.c_proj', 'mlp.c_fc', 'mlp.c_proj'].map((m) => `transformer.h.${l}.${m}`).filter((k) => pattern.test(k)),
    );
    expect(selected).toEqual(fixture.adaptedModules);
    expect(config.layers_to_transform).toBeNull();

    const again = importPeftAdapter(files.adapterConfigJson, files.adapterModel, MODEL);
    expect(again.spec).toEqual(imported.spec);
    expectSameTensors(again.tensors, imported.tensors);
    const batch = { B: fixture.B, T: fixture.T, ids: fixture.ids };
    const weights = toFloat64(fixture.weights);
    const before = gpt2ReferenceForward(MODEL, weights, referenceLora(imported.tensors, 2), batch).logits;
    const after = gpt2ReferenceForward(MODEL, weights, referenceLora(again.tensors, adapterScale(again.spec)), batch).logits;
    expect(after).toEqual(before);
  });
});

describe('export → import round trip', () => {
  it('some modules of some layers, rsLoRA, dropout: list target_modules with layers_to_transform', () => {
    const spec: AdapterSpec = {
      rank: 3,
      alpha: 6,
      dropout: 0.05,
      useRslora: true,
      targetModules: ['c_attn', 'mlp.c_proj'],
      layers: [1],
      baseModel: 'openai-community/gpt2',
    };
    const tensors = randomTensors(['h.1.attn.c_attn', 'h.1.mlp.c_proj'], 3, new Rng(1));
    const files = exportPeftAdapter(spec, tensors, MODEL);
    const config = JSON.parse(files.adapterConfigJson);
    expect(config).toMatchObject({
      peft_type: 'LORA',
      task_type: 'CAUSAL_LM',
      r: 3,
      lora_alpha: 6,
      lora_dropout: 0.05,
      target_modules: ['c_attn', 'mlp.c_proj'],
      layers_to_transform: [1],
      layers_pattern: 'h',
      fan_in_fan_out: true,
      bias: 'none',
      use_rslora: true,
      use_dora: false,
      base_model_name_or_path: 'openai-community/gpt2',
      inference_mode: true,
      modules_to_save: null,
    });
    const file = parseSafetensors(files.adapterModel);
    expect(file.metadata).toEqual({ format: 'pt' });
    expect(file.tensors.get('base_model.model.transformer.h.1.attn.c_attn.lora_A.weight')!.shape).toEqual([3, 16]);
    expect(file.tensors.get('base_model.model.transformer.h.1.attn.c_attn.lora_B.weight')!.shape).toEqual([48, 3]);
    expect(file.tensors.get('base_model.model.transformer.h.1.mlp.c_proj.lora_A.weight')!.shape).toEqual([3, 64]);
    expect(file.tensors.get('base_model.model.transformer.h.1.mlp.c_proj.lora_B.weight')!.shape).toEqual([16, 3]);

    const imported = importPeftAdapter(files.adapterConfigJson, files.adapterModel, MODEL);
    expect(imported.spec).toEqual(spec);
    expectSameTensors(imported.tensors, tensors);
    expect(adapterScale(imported.spec)).toBeCloseTo(6 / Math.sqrt(3), 14);
  });

  it('every layer: no layers_to_transform; F16 storage rounds the values once', () => {
    const spec: AdapterSpec = {
      rank: 2,
      alpha: 16,
      dropout: 0,
      useRslora: false,
      targetModules: ['attn.c_proj', 'c_fc'],
      layers: null,
      baseModel: '',
    };
    const sites = ['h.0.attn.c_proj', 'h.0.mlp.c_fc', 'h.1.attn.c_proj', 'h.1.mlp.c_fc'];
    const tensors = randomTensors(sites, 2, new Rng(2));
    const config = peftAdapterConfig(spec, tensors, MODEL);
    expect(config.target_modules).toEqual(['attn.c_proj', 'c_fc']);
    expect(config.layers_to_transform).toBeNull();
    expect(config.layers_pattern).toBeNull();
    expect(config.base_model_name_or_path).toBeNull();

    const exact = importPeftAdapter(JSON.stringify(config), exportPeftAdapter(spec, tensors, MODEL).adapterModel, MODEL);
    expect(exact.spec).toEqual(spec);
    expectSameTensors(exact.tensors, tensors);

    const half = importPeftAdapter(JSON.stringify(config), exportPeftAdapter(spec, tensors, MODEL, { dtype: 'F16' }).adapterModel, MODEL);
    for (const [path, pair] of tensors) {
      expectClose(half.tensors.get(path)!.a, pair.a, { atol: 1e-7, rtol: 2 ** -11 }, `${path} A in f16`);
      expect(half.tensors.get(path)!.a).not.toEqual(pair.a);
    }
  });

  it('refuses tensors the spec does not describe', () => {
    const spec: AdapterSpec = { rank: 2, alpha: 4, dropout: 0, useRslora: false, targetModules: ['c_attn'], layers: [0], baseModel: '' };
    expectBadModel(() => peftAdapterConfig(spec, randomTensors(['h.1.attn.c_attn'], 2, new Rng(3)), MODEL), /outside the spec/);
    expectBadModel(
      () => peftAdapterConfig({ ...spec, targetModules: ['c_attn', 'c_fc'] }, randomTensors(['h.0.attn.c_attn'], 2, new Rng(3)), MODEL),
      /targets c_fc but no tensor/,
    );
    expectBadModel(() => peftAdapterConfig(spec, randomTensors(['h.0.attn.c_attn'], 3, new Rng(3)), MODEL), /rank 2 needs A \(2,16\)/);
    expectBadModel(() => peftAdapterConfig(spec, new Map([['h.0.attn.q_proj', { a: new Float32Array(), b: new Float32Array() }]]), MODEL), /not a module path/);
  });
});

describe("PEFT's module selection on import", () => {
  const withConfig = (changes: Record<string, unknown>, model = fixture.adapterModel) =>
    importPeftAdapter({ ...fixtureConfig, ...changes }, model, MODEL);
  const layer1Only = adapterFile((n) => (n.includes('.h.0.') ? null : n));

  it("list entries match module-path suffixes: 'c_proj' selects attn.c_proj and mlp.c_proj", () => {
    const imported = withConfig({ target_modules: ['c_attn', 'c_proj', 'c_fc'], layers_to_transform: 1 }, layer1Only);
    expect(imported.spec.targetModules).toEqual(['c_attn', 'attn.c_proj', 'c_fc', 'mlp.c_proj']);
    expect(imported.spec.layers).toEqual([1]);
    expect([...imported.tensors.keys()]).toEqual(['h.1.attn.c_attn', 'h.1.attn.c_proj', 'h.1.mlp.c_fc', 'h.1.mlp.c_proj']);
    // layers_pattern 'h' (string or list) selects the same layers as PEFT's default layer pattern.
    expect(withConfig({ target_modules: ['c_attn', 'c_proj', 'c_fc'], layers_to_transform: [1], layers_pattern: ['h'] }, layer1Only).spec.layers).toEqual([1]);
  });

  it('a full module path is taken as is; exclude_modules removes modules; all-linear is every Conv1D', () => {
    const imported = withConfig(
      { target_modules: ['transformer.h.0.attn.c_attn', 'c_attn', 'c_proj', 'c_fc'], layers_to_transform: [1] },
      fixture.adapterModel,
    );
    expect(imported.tensors.size).toBe(5);
    expect(withConfig({ target_modules: 'all-linear', exclude_modules: 'transformer\\.h\\.0\\.(attn\\.c_proj|mlp\\..*)' }).tensors.size).toBe(5);
    expect(withConfig({ target_modules: ['c_attn', 'c_proj', 'c_fc'], exclude_modules: ['h.0.attn.c_proj', 'h.0.mlp.c_fc', 'h.0.mlp.c_proj'] }).tensors.size).toBe(5);
    // PEFT expands all-linear into a list of names, so layers_to_transform applies to it.
    const lastLayer = withConfig({ target_modules: 'ALL-LINEAR', layers_to_transform: [1] }, layer1Only);
    expect(lastLayer.tensors.size).toBe(4);
    expect(lastLayer.spec.layers).toEqual([1]);
  });

  it("a layers_pattern that names no block selects nothing, so the file's tensors are unexpected", () => {
    expectBadModel(
      () => withConfig({ target_modules: ['c_attn', 'c_proj', 'c_fc'], layers_to_transform: [1], layers_pattern: 'layers' }, layer1Only),
      /do not select/,
    );
  });

  it('accepts keys with an adapter name (.default) and without transformer.', () => {
    const named = adapterFile((n) => n.replace(/\.lora_([AB])\.weight$/, '.lora_$1.default.weight'));
    const bare = adapterFile((n) => n.replace('base_model.model.transformer.', 'base_model.model.'));
    const reference = withConfig({});
    for (const model of [named, bare]) expectSameTensors(withConfig({}, model).tensors, reference.tensors);
  });

  it('falls back to the tensor names, with a warning, for a regex JavaScript cannot compile', () => {
    const imported = withConfig({ target_modules: '(?P<block>transformer\\.h\\.\\d+)\\.attn\\.c_attn' });
    expect(imported.tensors.size).toBe(5);
    expect(imported.warnings.join()).toMatch(/taken from the tensor names/);
  });

  it('warns about fan_in_fan_out false and otherwise reads the same adapter', () => {
    const imported = withConfig({ fan_in_fan_out: false });
    expect(imported.warnings.join()).toMatch(/fan_in_fan_out/);
    expect(imported.tensors.size).toBe(5);
  });
});

describe('refusals on import', () => {
  const refuse = (changes: Record<string, unknown>, pattern: RegExp, model = fixture.adapterModel) =>
    expectBadModel(() => importPeftAdapter({ ...fixtureConfig, ...changes }, model, MODEL), pattern);

  it('unsupported PEFT settings', () => {
    refuse({ use_dora: true }, /DoRA/);
    refuse({ lora_bias: true }, /lora_bias/);
    refuse({ bias: 'lora_only' }, /biases/);
    refuse({ modules_to_save: ['lm_head'] }, /modules_to_save/);
    refuse({ rank_pattern: { 'h.0.attn.c_attn': 8 } }, /rank_pattern/);
    refuse({ peft_type: 'IA3' }, /peft_type/);
    refuse({ r: 0 }, /positive integer/);
    refuse({ lora_dropout: 1.5 }, /lora_dropout/);
    refuse({ target_modules: 42 }, /target_modules must be/);
    refuse({ target_modules: ['c_attn'], layers_to_transform: [5] }, /layer 5/);
    expectBadModel(() => importPeftAdapter('{"peft_type": "LORA",', fixture.adapterModel, MODEL), /not valid JSON/);
  });

  it('a config that selects modules the file lacks, or a file with modules the config does not select', () => {
    refuse({ target_modules: ['c_attn', 'c_proj', 'c_fc'] }, /targets h\.0\.attn\.c_proj/);
    refuse({ target_modules: ['c_attn'] }, /do not select/);
  });

  it('missing, misshapen and foreign tensors', () => {
    const keep = (drop: RegExp) => adapterFile((n) => (drop.test(n) ? null : n));
    refuse({}, /h\.1\.mlp\.c_fc has lora_A but no lora_B/, keep(/h\.1\.mlp\.c_fc\.lora_B/));
    refuse({ r: 8 }, /has shape \[4, 16\] but r=8/);
    const wrongWidth = importPeftAdapter.bind(null, fixtureConfig, fixture.adapterModel, modelConfig({ nLayer: 2, nHead: 2, nEmbd: 32 }));
    expectBadModel(wrongWidth, /need \[4, 32\]/);
    expectBadModel(() => importPeftAdapter(fixtureConfig, fixture.adapterModel, { nLayer: 1, nEmbd: 16 }), /block 1, but the model has 1/);
    const extra = (name: string, shape: number[]) => adapterFile((n) => n, [{ name, shape, data: new Float32Array(shape.reduce((a, d) => a * d, 1)) }]);
    refuse({}, /DoRA magnitude/, extra('base_model.model.transformer.h.0.attn.c_attn.lora_magnitude_vector', [48]));
    refuse({}, /LoRA bias/, extra('base_model.model.transformer.h.0.attn.c_attn.lora_B.bias', [48]));
    refuse({}, /not a LoRA A or B of a GPT-2 block/, extra('base_model.model.lm_head.weight', [37, 16]));
    const mixed = adapterFile((n) => (n.includes('.h.0.') ? n.replace('.lora_A.weight', '.lora_A.other.weight').replace('.lora_B.weight', '.lora_B.other.weight') : n));
    refuse({}, /mixes adapters "other" and "\(unnamed\)"|mixes adapters "\(unnamed\)" and "other"/, mixed);
    refuse({}, /holds no LoRA tensors/, writeSafetensors([]));
  });
});

describe('regexes from adapter_config.json are run only when they cannot backtrack for long', () => {
  const withConfig = (changes: Record<string, unknown>) => importPeftAdapter({ ...fixtureConfig, ...changes }, fixture.adapterModel, MODEL);

  it('regexHazard passes the shapes PEFT configs use and names what is wrong with catastrophic ones', () => {
    for (const safe of [
      fixtureConfig.target_modules as string,
      '.*\\.h\\.\\d+\\.attn\\.c_attn',
      '.*(attn|mlp)\\.c_(attn|proj|fc)',
      'transformer\\.h\\.(0|1)\\.mlp\\.c_fc',
      '(?:transformer\\.)?h\\.\\d{1,2}\\.attn\\.c_attn',
      '(\\.\\d+)?c_attn', // an optional group may hold a quantifier: it runs at most once
      '[(*+]+c_attn', // quantifier characters inside a class are literals
    ]) {
      expect(regexHazard(safe), safe).toBeNull();
    }
    for (const nested of ['(.*)*x', '(.*){7}x', '(a|a)*', '((ab)*c)+', '(?:x+)+y', '(a?){25}a']) {
      expect(regexHazard(nested), nested).toMatch(/repeats a group that itself holds a quantifier or alternatives/);
    }
    expect(regexHazard('.*.*.*.*.*x')).toMatch(/it has 5 quantifiers \(at most 4/);
    expect(regexHazard('a)|(b')).toMatch(/parentheses do not balance/);
    expect(regexHazard('a'.repeat(10_001))).toMatch(/10001 characters long/);
  });

  it('a catastrophic target_modules falls back to the tensor names with a warning, at once', () => {
    for (const pattern of ['(.*)*x', '(.*){7}x', '.*.*.*.*.*.*.*x']) {
      const started = performance.now();
      const imported = withConfig({ target_modules: pattern });
      expect(performance.now() - started, pattern).toBeLessThan(2000);
      expect(imported.tensors.size).toBe(5);
      expect(imported.warnings.join()).toMatch(/target_modules ".*" is not run: .*; the adapted modules are taken from the tensor names/);
    }
  });

  it('so do a catastrophic exclude_modules or layers_pattern', () => {
    const excluded = withConfig({ exclude_modules: '(h|h)*x' });
    expect(excluded.tensors.size).toBe(5);
    expect(excluded.warnings.join()).toMatch(/exclude_modules "\(h\|h\)\*x" is not run/);
    const layered = withConfig({ target_modules: ['c_attn', 'c_proj', 'c_fc'], layers_to_transform: [1], layers_pattern: '(h*)*' });
    expect(layered.warnings.join()).toMatch(/layers_pattern "\(h\*\)\*" is not run/);
  });

  it('fields nested 10000 deep are refused with short messages, not stack overflows', () => {
    const deep = JSON.parse(`${'['.repeat(10_000)}"c_attn"${']'.repeat(10_000)}`) as unknown;
    for (const [field, pattern] of [
      ['peft_type', /peft_type is \[\[\[\[…\]\]\]\]; Tunelab reads LoRA/],
      ['r', /r must be a positive integer, got \[\[\[\[…\]\]\]\]/],
      ['target_modules', /target_modules must be a list of module names or a regex string, got \[\[\[\[…\]\]\]\]/],
      ['exclude_modules', /exclude_modules must list names \(strings\), got \[\[\[\[…\]\]\]\]/],
      ['layers_to_transform', /layers_to_transform must be a layer index or a list of them, got \[\[\[\[…\]\]\]\]/],
      ['layers_pattern', /layers_pattern must list names \(strings\), got \[\[\[\[…\]\]\]\]/],
    ] as const) {
      // layers_* are read only for a list target_modules with a layer selection.
      const selection = field.startsWith('layers_') ? { target_modules: ['c_attn'], layers_to_transform: [1] } : {};
      expectBadModel(() => withConfig({ ...selection, [field]: deep }), pattern);
    }
  });

  it('refuses an adapter whose tensors hold NaN or infinities, naming the tensor', () => {
    const file = parseSafetensors(fixture.adapterModel);
    const name = peftTensorName('h.1.mlp.c_fc', 'B');
    const tensors: TensorToWrite[] = [...file.tensors.keys()].map((n) => ({ name: n, shape: file.tensors.get(n)!.shape, data: readTensorF32(file, n) }));
    const poisoned = tensors.find((t) => t.name === name)!;
    (poisoned.data as Float32Array)[7] = NaN;
    let caught: unknown;
    try {
      importPeftAdapter(fixtureConfig, writeSafetensors(tensors), MODEL);
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(TunelabError);
    expect((caught as Error).message).toContain(`tensor "${name}" holds NaN at element 7`);
  });
});

describe('module paths', () => {
  it('are h.N.<module> and parse back', () => {
    expect(adapterModulePath(3, 'mlp.c_fc')).toBe('h.3.mlp.c_fc');
    expect(parseAdapterModulePath('h.3.mlp.c_fc')).toEqual({ layer: 3, module: 'mlp.c_fc' });
    expect(parseAdapterModulePath('transformer.h.3.mlp.c_fc')).toBeNull();
    expect(peftTensorName('h.0.attn.c_attn', 'B')).toBe('base_model.model.transformer.h.0.attn.c_attn.lora_B.weight');
  });
});
