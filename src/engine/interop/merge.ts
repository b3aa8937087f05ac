// Folding a LoRA adapter into GPT-2's weights, and saving weights as a Hugging Face checkpoint (config.json,
// model.safetensors, tokenizer.json) that transformers' GPT2LMHeadModel.from_pretrained and Tunelab both load.
//
// An adapted Conv1D computes x·W + b + scale·(x·Aᵀ)·Bᵀ = x·(W + scale·(B·A)ᵀ) + b, so the merged weight, in
// Conv1D's [in, out] layout, is W'[i,o] = W[i,o] + scale·Σ_r B[o,r]·A[r,i], with A (R,in), B (out,R).

import { TunelabError } from '../errors.ts';
import { writeSafetensors, type WriteDtype } from '../io/safetensors.ts';
import { modelConfigToJson, type ModelConfig } from '../model/config.ts';
import { canonicalParameterName, gpt2ParameterSpecs } from '../model/weights.ts';
import {
  adapterModuleShape,
  adapterScale,
  parseAdapterModulePath,
  type AdapterModelShape,
  type AdapterSpec,
  type AdapterTensors,
} from './peft.ts';

/** GPT-2 weights by Hugging Face name ('wte.weight', 'h.0.attn.c_attn.weight', …; a `transformer.` prefix is fine). */
export type WeightMap = ReadonlyMap<string, Float32Array>;

function bad(message: string): TunelabError {
  return new TunelabError('bad-model', message);
}

/** The weights under canonical names (no `transformer.` prefix, embeddings with `.weight`). */
export function canonicalWeights(weights: WeightMap): Map<string, Float32Array> {
  const out = new Map<string, Float32Array>();
  for (const [name, value] of weights) {
    const canonical = canonicalParameterName(name);
    if (out.has(canonical)) throw bad(`the weights hold "${canonical}" twice (with and without a prefix?)`);
    out.set(canonical, value);
  }
  return out;
}

/**
 * W' = W + scale·(B·A)ᵀ for every adapted module; returns all weights under canonical names. Merged tensors are
 * new arrays (computed in double precision, rounded once to f32); the others are the caller's arrays, not copies.
 */
export function mergeAdapter(
  model: AdapterModelShape,
  weights: WeightMap,
  spec: Pick<AdapterSpec, 'rank' | 'alpha' | 'useRslora'>,
  tensors: AdapterTensors,
): Map<string, Float32Array> {
  const merged = canonicalWeights(weights);
  const scale = adapterScale(spec);
  const R = spec.rank;
  for (const [path, { a, b }] of tensors) {
    const site = parseAdapterModulePath(path);
    if (!site || site.layer >= model.nLayer) throw bad(`LoRA merge: "${path}" is not a linear module of this model`);
    const [K, OC] = adapterModuleShape(model, site.module); // W (K,OC) = [in, out]
    if (a.length !== R * K || b.length !== OC * R) {
      throw bad(`LoRA merge: ${path} needs A (${R},${K}) and B (${OC},${R}), got ${a.length} and ${b.length} values`);
    }
    const name = `${path}.weight`;
    const w = merged.get(name);
    if (!w) throw bad(`LoRA merge: the weights have no ${name}`);
    if (w.length !== K * OC) throw bad(`LoRA merge: ${name} has ${w.length} values, expected [${K}, ${OC}]`);
    const out = new Float32Array(w.length);
    const column = new Float64Array(R); // A[:, i]
    for (let i = 0; i < K; i++) {
      for (let r = 0; r < R; r++) column[r] = a[r * K + i];
      for (let o = 0; o < OC; o++) {
        let delta = 0;
        for (let r = 0; r < R; r++) delta += b[o * R + r] * column[r];
        out[i * OC + o] = w[i * OC + o] + scale * delta;
      }
    }
    merged.set(name, out);
  }
  return merged;
}

export interface CheckpointOptions {
  /** tokenizer.json to include (text, bytes or parsed); without it the checkpoint has no tokenizer. */
  tokenizerJson?: string | Uint8Array | Record<string, unknown>;
  /** A loaded config.json whose fields Tunelab does not model are kept (model card fields, task params). */
  configBase?: Record<string, unknown>;
  /** Storage dtype of the weights (F32). */
  dtype?: WriteDtype;
}

/**
 * The files of a Hugging Face GPT-2 checkpoint by file name: 'config.json', 'model.safetensors' (HF names without
 * `transformer.`, like the `gpt2` checkpoint on the Hub; tied head, so no lm_head.weight) and 'tokenizer.json'
 * when given. Every GPT-2 parameter must be present with its config's shape.
 */
export function huggingFaceCheckpoint(
  config: ModelConfig,
  weights: WeightMap,
  options: CheckpointOptions = {},
): Map<string, Uint8Array> {
  const canonical = canonicalWeights(weights);
  const tensors = gpt2ParameterSpecs(config).map((spec) => {
    const data = canonical.get(spec.name);
    if (!data) throw bad(`checkpoint: the weights have no ${spec.name}`);
    if (data.length !== spec.elementCount) {
      throw bad(`checkpoint: ${spec.name} has ${data.length} values, but config implies [${spec.shape.join(', ')}]`);
    }
    return { name: spec.name, shape: spec.shape, data };
  });
  const dtype = options.dtype ?? 'F32';
  const files = new Map<string, Uint8Array>();
  const configJson = modelConfigToJson(config, {
    ...options.configBase,
    torch_dtype: dtype === 'F16' ? 'float16' : 'float32',
  });
  const encoder = new TextEncoder();
  files.set('config.json', encoder.encode(`${JSON.stringify(configJson, null, 2)}\n`));
  // transformers refuses safetensors files whose metadata does not name a framework.
  files.set('model.safetensors', writeSafetensors(tensors, { dtype, metadata: { format: 'pt' } }));
  const tokenizer = options.tokenizerJson;
  if (tokenizer !== undefined) {
    const bytes =
      tokenizer instanceof Uint8Array
        ? tokenizer
        : encoder.encode(typeof tokenizer === 'string' ? tokenizer : JSON.stringify(tokenizer));
    files.set('tokenizer.json', bytes);
  }
  return files;
}
