// The whole-model reference (src/engine/reference/gpt2.ts) against the PyTorch fixture in tests/fixtures/gpt2-lora/,
// and its backward against central differences of its own forward.
//
// Tolerances against the fixture: PyTorch computed in float64 from the same f32 weights and stored its outputs as
// f32, so the only expected difference is that final rounding, at most half an f32 ulp (2^-24 relative). The bound
// FIXTURE_F32 allows one ulp (2^-23 ≈ 1.2e-7 relative) plus 1e-12 absolute for float64 summation-order noise on
// gradients near zero. Measured: logits and loss within 0.5 ulp, gradients likewise (see the logged figures).

import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parseSafetensors, readTensorF32, type SafetensorsFile } from '../src/engine/io/safetensors.ts';
import {
  gpt2ReferenceBackward,
  gpt2ReferenceForward,
  gpt2ReferenceParameterShapes,
  loraModulePath,
  randomGpt2ReferenceWeights,
  REFERENCE_LINEAR_MODULES,
  referenceLinearShape,
  type Gpt2ReferenceBatch,
  type Gpt2ReferenceConfig,
  type Gpt2ReferenceLora,
  type ReferenceLoraPair,
} from '../src/engine/reference/gpt2.ts';
import { Rng } from '../src/engine/random.ts';
import { expectClose, type Tolerance } from './helpers/check.ts';

const FIXTURE = new URL('./fixtures/gpt2-lora/', import.meta.url);
const FIXTURE_F32: Tolerance = { atol: 1e-12, rtol: 2 ** -23 };
/** Central differences (eps 1e-6) of a float64 loss of size ~4: truncation ~eps², cancellation ~1e-16·4/eps. */
const FINITE_DIFFERENCE: Tolerance = { atol: 1e-8, rtol: 1e-6 };

function readFixture(path: string): SafetensorsFile {
  return parseSafetensors(readFileSync(new URL(path, FIXTURE)));
}

function f64(file: SafetensorsFile, name: string): Float64Array {
  return Float64Array.from(readTensorF32(file, name));
}

/** Largest |a − e| / |e| over elements with |e| > 1e-6 (the relative agreement the header comment reports). */
function worstRelative(actual: Float64Array, expected: Float64Array): number {
  let worst = 0;
  for (let i = 0; i < expected.length; i++) {
    if (Math.abs(expected[i]) > 1e-6) worst = Math.max(worst, Math.abs(actual[i] - expected[i]) / Math.abs(expected[i]));
  }
  return worst;
}

function loadFixture() {
  const model = readFixture('model/model.safetensors');
  const adapter = readFixture('adapter/adapter_model.safetensors');
  const expected = readFixture('expected.safetensors');
  const configJson = JSON.parse(readFileSync(new URL('model/config.json', FIXTURE), 'utf8'));
  const adapterJson = JSON.parse(readFileSync(new URL('adapter/adapter_config.json', FIXTURE), 'utf8'));
  const config: Gpt2ReferenceConfig = {
    nLayer: configJson.n_layer,
    nHead: configJson.n_head,
    nEmbd: configJson.n_embd,
    nPositions: configJson.n_positions,
    vocabSize: configJson.vocab_size,
    layerNormEpsilon: configJson.layer_norm_epsilon,
  };
  const weights = new Map<string, Float64Array>();
  for (const name of model.tensors.keys()) weights.set(name, f64(model, name));

  // Adapted modules from the tensor names: base_model.model.transformer.h.N.<module>.lora_A.weight.
  const modules = new Map<string, ReferenceLoraPair>();
  const peftKeys = new Map<string, string>();
  for (const name of adapter.tensors.keys()) {
    const match = /^base_model\.model\.transformer\.(h\.\d+\.(?:attn|mlp)\.\w+)\.lora_A\.weight$/.exec(name);
    if (!match) continue;
    const path = match[1];
    const prefix = name.slice(0, -'.lora_A.weight'.length);
    modules.set(path, { a: f64(adapter, `${prefix}.lora_A.weight`), b: f64(adapter, `${prefix}.lora_B.weight`) });
    peftKeys.set(path, prefix);
  }
  const lora: Gpt2ReferenceLora = { scale: adapterJson.lora_alpha / adapterJson.r, modules };

  const [B, T] = expected.tensors.get('input_ids')!.shape;
  const batch: Gpt2ReferenceBatch = {
    B,
    T,
    ids: Array.from(readTensorF32(expected, 'input_ids')),
    targets: Array.from(readTensorF32(expected, 'targets')),
    mask: Array.from(readTensorF32(expected, 'loss_mask')),
  };
  return { config, weights, lora, peftKeys, batch, expected, adaptedModules: JSON.parse(expected.metadata.adapted_modules) };
}

describe('reference GPT-2 against the PyTorch fixture', () => {
  const fixture = loadFixture();
  const { config, weights, lora, batch, expected } = fixture;

  it('reads the adapter the fixture describes', () => {
    expect([...lora.modules.keys()].map((p) => `transformer.${p}`).sort()).toEqual([...fixture.adaptedModules].sort());
    expect(lora.scale).toBe(Number(expected.metadata.lora_scale));
  });

  it('base model: logits, masked loss and d wte', () => {
    const forward = gpt2ReferenceForward(config, weights, null, batch);
    expectClose(forward.logits, f64(expected, 'logits_base'), FIXTURE_F32, 'logits_base');
    expectClose([forward.loss], f64(expected, 'loss_base'), FIXTURE_F32, 'loss_base');
    const grads = gpt2ReferenceBackward(config, weights, null, batch, forward);
    expect(grads.lora.size).toBe(0);
    expectClose(grads.params.get('wte.weight')!, f64(expected, 'grad_base.wte.weight'), FIXTURE_F32, 'grad_base.wte');
    console.log(
      `base: worst relative error logits ${worstRelative(forward.logits, f64(expected, 'logits_base')).toExponential(2)}, ` +
        `d wte ${worstRelative(grads.params.get('wte.weight')!, f64(expected, 'grad_base.wte.weight')).toExponential(2)}`,
    );
  });

  it('with LoRA: logits, masked loss, d A and d B of every adapted module, and d wte', () => {
    const forward = gpt2ReferenceForward(config, weights, lora, batch);
    expectClose(forward.logits, f64(expected, 'logits_lora'), FIXTURE_F32, 'logits_lora');
    expectClose([forward.loss], f64(expected, 'loss_lora'), FIXTURE_F32, 'loss_lora');
    const grads = gpt2ReferenceBackward(config, weights, lora, batch, forward);
    expect(grads.lora.size).toBe(5);
    let worst = worstRelative(forward.logits, f64(expected, 'logits_lora'));
    for (const [path, prefix] of fixture.peftKeys) {
      const d = grads.lora.get(path)!;
      const dA = f64(expected, `grad.${prefix}.lora_A.weight`);
      const dB = f64(expected, `grad.${prefix}.lora_B.weight`);
      expectClose(d.a, dA, FIXTURE_F32, `d ${path}.lora_A`);
      expectClose(d.b, dB, FIXTURE_F32, `d ${path}.lora_B`);
      worst = Math.max(worst, worstRelative(d.a, dA), worstRelative(d.b, dB));
    }
    const dwte = f64(expected, 'grad.wte.weight');
    expectClose(grads.params.get('wte.weight')!, dwte, FIXTURE_F32, 'grad.wte');
    worst = Math.max(worst, worstRelative(grads.params.get('wte.weight')!, dwte));
    console.log(`LoRA: worst relative error over logits and all gradients ${worst.toExponential(2)}`);
  });

  it('with every B zero, gives exactly the base logits', () => {
    const zeroB = new Map([...lora.modules].map(([path, pair]) => [path, { a: pair.a, b: new Float64Array(pair.b.length) }]));
    const adapted = gpt2ReferenceForward(config, weights, { scale: lora.scale, modules: zeroB }, batch);
    const base = gpt2ReferenceForward(config, weights, null, batch);
    expect(adapted.logits).toEqual(base.logits);
    expect(adapted.loss).toBe(base.loss);
  });

  it('accepts names with the transformer. prefix and bare wte / wpe', () => {
    const renamed = new Map<string, Float64Array>();
    for (const [name, value] of weights) renamed.set(`transformer.${name.replace(/^(wte|wpe)\.weight$/, '$1')}`, value);
    const a = gpt2ReferenceForward(config, weights, lora, batch);
    const b = gpt2ReferenceForward(config, Object.fromEntries(renamed), lora, batch);
    expect(b.logits).toEqual(a.logits);
  });

  it('names a missing or misshapen weight', () => {
    const missing = new Map(weights);
    missing.delete('h.1.mlp.c_fc.bias');
    expect(() => gpt2ReferenceForward(config, missing, null, batch)).toThrow(/h\.1\.mlp\.c_fc\.bias/);
    const misshapen = new Map(weights);
    misshapen.set('h.0.ln_2.weight', new Float64Array(3));
    expect(() => gpt2ReferenceForward(config, misshapen, null, batch)).toThrow(/h\.0\.ln_2\.weight/);
  });
});

/** Central difference of the loss in one element of `x` (perturbed in place, then restored). */
function centralDifference(loss: () => number, x: Float64Array, index: number, eps = 1e-6): number {
  const saved = x[index];
  x[index] = saved + eps;
  const plus = loss();
  x[index] = saved - eps;
  const minus = loss();
  x[index] = saved;
  return (plus - minus) / (2 * eps);
}

/** Checks `count` random elements of `x`'s analytic gradient against central differences. */
function checkSampled(label: string, analytic: Float64Array, x: Float64Array, loss: () => number, rng: Rng, count: number) {
  const indices = Array.from({ length: Math.min(count, x.length) }, () => rng.int(x.length));
  const numeric = indices.map((i) => centralDifference(loss, x, i));
  expectClose(
    indices.map((i) => analytic[i]),
    numeric,
    FINITE_DIFFERENCE,
    `${label}[${indices.join(',')}]`,
  );
}

describe('reference GPT-2 backward against finite differences', () => {
  it('fixture model with its LoRA adapter: sampled elements of every A, B and base parameter', () => {
    const { config, weights, lora, batch } = loadFixture();
    const loss = () => gpt2ReferenceForward(config, weights, lora, batch).loss;
    const grads = gpt2ReferenceBackward(config, weights, lora, batch, gpt2ReferenceForward(config, weights, lora, batch));
    const rng = new Rng(7);
    for (const [path, pair] of lora.modules) {
      checkSampled(`d ${path}.A`, grads.lora.get(path)!.a, pair.a, loss, rng, 4);
      checkSampled(`d ${path}.B`, grads.lora.get(path)!.b, pair.b, loss, rng, 4);
    }
    for (const name of gpt2ReferenceParameterShapes(config).keys()) {
      checkSampled(`d ${name}`, grads.params.get(name)!, weights.get(name)!, loss, rng, 3);
    }
  });

  it('awkward random config (C=12, NH=3, V=11, T=5, no mask zeros) with LoRA of mixed layers and modules', () => {
    const config: Gpt2ReferenceConfig = { nLayer: 2, nHead: 3, nEmbd: 12, nPositions: 6, vocabSize: 11, layerNormEpsilon: 1e-5 };
    const rng = new Rng(2024);
    const weights = randomGpt2ReferenceWeights(config, rng, 0.3);
    const R = 3;
    const modules = new Map<string, ReferenceLoraPair>();
    const adapt = (layer: number, module: (typeof REFERENCE_LINEAR_MODULES)[number]) => {
      const [K, OC] = referenceLinearShape(config.nEmbd, module);
      const random = (n: number) => Float64Array.from({ length: n }, () => 0.3 * rng.normal());
      modules.set(loraModulePath(layer, module), { a: random(R * K), b: random(OC * R) });
    };
    adapt(0, 'mlp.c_proj');
    adapt(0, 'attn.c_proj');
    adapt(1, 'attn.c_attn');
    adapt(1, 'mlp.c_fc');
    const lora: Gpt2ReferenceLora = { scale: 8 / Math.sqrt(R), modules };
    const B = 2;
    const T = 5;
    const batch: Gpt2ReferenceBatch = {
      B,
      T,
      ids: Array.from({ length: B * T }, () => rng.int(config.vocabSize)),
      targets: Array.from({ length: B * T }, () => rng.int(config.vocabSize)),
    };
    const loss = () => gpt2ReferenceForward(config, weights, lora, batch).loss;
    const forward = gpt2ReferenceForward(config, weights, lora, batch);
    expect(forward.logits.length).toBe(B * T * config.vocabSize);
    const grads = gpt2ReferenceBackward(config, weights, lora, batch, forward);
    for (const [path, pair] of modules) {
      checkSampled(`d ${path}.A`, grads.lora.get(path)!.a, pair.a, loss, rng, 5);
      checkSampled(`d ${path}.B`, grads.lora.get(path)!.b, pair.b, loss, rng, 5);
    }
    for (const name of ['wte.weight', 'wpe.weight', 'h.0.ln_1.weight', 'h.1.attn.c_attn.bias', 'h.1.mlp.c_proj.weight', 'ln_f.bias']) {
      checkSampled(`d ${name}`, grads.params.get(name)!, weights.get(name)!, loss, rng, 5);
    }
  });
});
