// Merging an adapter into GPT-2's weights and saving a Hugging Face checkpoint. The oracle is the reference model:
// base weights + adapter (computed as a separate LoRA term, in float64) against the merged weights with no adapter.
//
// Tolerance MERGED: the merged weights are rounded once to f32 (relative error ≤ 2^-24 ≈ 6e-8 per weight, weights
// ≈ 0.5), which moves logits (|logits| < 4) by about 1e-6 at most through two blocks; atol 1e-5 + rtol 1e-5 allows
// a margin of ten. The measured figure is logged.

import { describe, expect, it } from 'vitest';
import { parseSafetensors, readTensorF32 } from '../../src/engine/io/safetensors.ts';
import { parseModelConfig } from '../../src/engine/model/config.ts';
import { loadModel, memorySource } from '../../src/engine/model/load.ts';
import { parameterView } from '../../src/engine/model/weights.ts';
import { huggingFaceCheckpoint, mergeAdapter } from '../../src/engine/interop/merge.ts';
import { adapterModuleShape, adapterScale, importPeftAdapter, parseAdapterModulePath, type AdapterTensors } from '../../src/engine/interop/peft.ts';
import { Rng } from '../../src/engine/random.ts';
import { gpt2ReferenceForward } from '../../src/engine/reference/gpt2.ts';
import { expectClose, type Tolerance } from '../helpers/check.ts';
import { expectBadModel, loadFixture, maxAbsError, referenceLora, toFloat64 } from './fixture.ts';

const MERGED: Tolerance = { atol: 1e-5, rtol: 1e-5 };
const fixture = loadFixture();
const { config } = fixture;
const adapter = importPeftAdapter(fixture.adapterConfigJson, fixture.adapterModel, config);
const batch = { B: fixture.B, T: fixture.T, ids: fixture.ids };

describe('merging an adapter into the weights', () => {
  it('fixture: merged logits equal base + adapter in the reference model, and PyTorch', () => {
    const merged = mergeAdapter(config, fixture.weights, adapter.spec, adapter.tensors);
    const mergedLogits = gpt2ReferenceForward(config, toFloat64(merged), null, batch).logits;
    const lora = referenceLora(adapter.tensors, adapterScale(adapter.spec));
    const adapted = gpt2ReferenceForward(config, toFloat64(fixture.weights), lora, batch).logits;
    const base = readTensorF32(fixture.expected, 'logits_base');
    expectClose(mergedLogits, adapted, MERGED, 'merged vs base + adapter');
    expectClose(mergedLogits, readTensorF32(fixture.expected, 'logits_lora'), MERGED, 'merged vs PyTorch logits_lora');
    // The adapter matters: merging nothing would be far outside the tolerance.
    expect(maxAbsError(mergedLogits, base)).toBeGreaterThan(0.1);
    console.log(`merge: max |merged − (base + adapter)| = ${maxAbsError(mergedLogits, adapted).toExponential(2)}`);
  });

  it('changes exactly the adapted weights, leaving the caller’s arrays alone', () => {
    const snapshot = new Map([...fixture.weights].map(([n, v]) => [n, Float32Array.from(v)]));
    const merged = mergeAdapter(config, fixture.weights, adapter.spec, adapter.tensors);
    expect([...merged.keys()].sort()).toEqual([...fixture.weights.keys()].sort());
    for (const [name, value] of merged) {
      const adapted = adapter.tensors.has(name.replace(/\.weight$/, ''));
      if (adapted) expect(value, name).not.toEqual(snapshot.get(name));
      else expect(value, name).toBe(fixture.weights.get(name));
    }
    for (const [name, value] of fixture.weights) expect(value, name).toEqual(snapshot.get(name));
  });

  it('rsLoRA scale, awkward rank, names with the transformer. prefix', () => {
    const rng = new Rng(5);
    const R = 3;
    const tensors: AdapterTensors = new Map();
    for (const path of ['h.0.mlp.c_proj', 'h.1.attn.c_proj', 'h.1.mlp.c_fc']) {
      const [inDim, outDim] = adapterModuleShape(config, parseAdapterModulePath(path)!.module);
      const random = (n: number) => Float32Array.from({ length: n }, () => 0.3 * rng.normal());
      tensors.set(path, { a: random(R * inDim), b: random(outDim * R) });
    }
    const spec = { rank: R, alpha: 5, useRslora: true };
    const prefixed = new Map([...fixture.weights].map(([n, v]) => [`transformer.${n}`, v]));
    const merged = mergeAdapter(config, prefixed, spec, tensors);
    expect(merged.has('h.1.mlp.c_fc.weight')).toBe(true);
    const mergedLogits = gpt2ReferenceForward(config, toFloat64(merged), null, batch).logits;
    const adapted = gpt2ReferenceForward(config, toFloat64(fixture.weights), referenceLora(tensors, 5 / Math.sqrt(R)), batch).logits;
    expectClose(mergedLogits, adapted, MERGED, 'rsLoRA merge');
    // With alpha/R instead of alpha/√R the logits differ clearly.
    const plain = gpt2ReferenceForward(config, toFloat64(mergeAdapter(config, fixture.weights, { ...spec, useRslora: false }, tensors)), null, batch);
    expect(maxAbsError(plain.logits, adapted)).toBeGreaterThan(1e-2);
  });

  it('refuses adapters that do not fit the weights', () => {
    const wrongRank = { ...adapter.spec, rank: 2 };
    expectBadModel(() => mergeAdapter(config, fixture.weights, wrongRank, adapter.tensors), /needs A \(2,16\)/);
    const missing = new Map(fixture.weights);
    missing.delete('h.1.mlp.c_fc.weight');
    expectBadModel(() => mergeAdapter(config, missing, adapter.spec, adapter.tensors), /no h\.1\.mlp\.c_fc\.weight/);
    const beyond: AdapterTensors = new Map([['h.2.attn.c_attn', adapter.tensors.get('h.1.attn.c_attn')!]]);
    expectBadModel(() => mergeAdapter(config, fixture.weights, adapter.spec, beyond), /not a linear module/);
  });
});

describe('saving a Hugging Face checkpoint', () => {
  const tokenizerJson = { version: '1.0', model: { type: 'BPE', vocab: { a: 0, b: 1, '<|endoftext|>': 36 }, merges: [] }, added_tokens: [] };

  it('writes config.json, model.safetensors and tokenizer.json that load back in Tunelab', async () => {
    const merged = mergeAdapter(config, fixture.weights, adapter.spec, adapter.tensors);
    const files = huggingFaceCheckpoint(config, merged, { tokenizerJson, configBase: { _name_or_path: 'fixture-merged' } });
    expect([...files.keys()].sort()).toEqual(['config.json', 'model.safetensors', 'tokenizer.json']);

    const configJson = JSON.parse(new TextDecoder().decode(files.get('config.json')));
    expect(configJson).toMatchObject({ model_type: 'gpt2', architectures: ['GPT2LMHeadModel'], torch_dtype: 'float32', _name_or_path: 'fixture-merged' });
    expect(parseModelConfig(configJson)).toEqual(config);

    const checkpoint = parseSafetensors(files.get('model.safetensors')!);
    expect(checkpoint.metadata).toEqual({ format: 'pt' });
    expect([...checkpoint.tensors.keys()].sort()).toEqual([...merged.keys()].sort());
    for (const [name, value] of merged) expect(readTensorF32(checkpoint, name), name).toEqual(value);

    const loaded = await loadModel(memorySource(Object.fromEntries(files)));
    expect(loaded.config).toEqual(config);
    expect(loaded.warnings).toEqual([]);
    expect(parameterView(loaded.weights, 'h.1.mlp.c_fc.weight')).toEqual(merged.get('h.1.mlp.c_fc.weight'));
    expect(loaded.tokenizerJson).toEqual(tokenizerJson);
  });

  it('F16 storage, no tokenizer; a missing or misshapen weight is named', () => {
    const files = huggingFaceCheckpoint(config, fixture.weights, { dtype: 'F16' });
    expect(files.has('tokenizer.json')).toBe(false);
    expect(JSON.parse(new TextDecoder().decode(files.get('config.json'))).torch_dtype).toBe('float16');
    const wte = readTensorF32(parseSafetensors(files.get('model.safetensors')!), 'wte.weight');
    expectClose(wte, fixture.weights.get('wte.weight')!, { atol: 1e-7, rtol: 2 ** -11 }, 'wte in f16');

    const missing = new Map(fixture.weights);
    missing.delete('ln_f.bias');
    expectBadModel(() => huggingFaceCheckpoint(config, missing), /no ln_f\.bias/);
    const misshapen = new Map(fixture.weights).set('h.0.ln_1.weight', new Float32Array(3));
    expectBadModel(() => huggingFaceCheckpoint(config, misshapen), /h\.0\.ln_1\.weight has 3 values/);
  });
});
