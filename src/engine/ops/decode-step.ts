// The kernels of a fast single-sequence decoding step (generate/generator.ts's step pass for B = 1), as prepared
// dispatches. A token costs, per block: c_attn with ln_1 in front (and its LoRA), attention with the KV append,
// attn.c_proj adding into the residual, c_fc with ln_2 in front and GELU behind, mlp.c_proj adding into the
// residual; then ln_f + the tied classifier, and on the GPU the greedy choice. The step's token and position live in
// a small `state` buffer (u32 [token, position, tokens so far, 0]) that the embedding and attention read and
// decode_select advances, so several steps can be recorded into one submit with no readback between them.
//
// `decodeStepSupport` says whether a model fits these kernels (N and head sizes multiples of 4, a context and a
// width that fit workgroup memory); the generator keeps the general pass for the rest.

import { grid1d, type Dispatch, type GpuContext, type GpuTensor } from '../gpu/context.ts';
import {
  decodeAttention as decodeAttentionKernel,
  decodeEmbed as decodeEmbedKernel,
  decodeEmbedF16W as decodeEmbedF16WKernel,
  decodeHead as decodeHeadKernel,
  decodeHeadF16W as decodeHeadF16WKernel,
  decodeLinear as decodeLinearKernel,
  decodeLinearF16W as decodeLinearF16WKernel,
  decodeSample as decodeSampleKernel,
  decodeSelect as decodeSelectKernel,
} from '../../kernels/registry.ts';
import type { F16Weights } from './matmul-f16.ts';

/** u32 elements of the step state: [token, position, tokens appended, unused]. */
export const DECODE_STATE_LENGTH = 4;

const LINEAR_COL_QUADS = 2;
const LINEAR_SLICES = 128;
const LINEAR_THREADS = LINEAR_COL_QUADS * LINEAR_SLICES;
const HEAD_ROWS = 16;
const HEAD_LANES = 16;
const ATTENTION_WG = 256;
const SELECT_WG = 256;
const MAX_LORA_RANK = 64;

/** Bytes of workgroup memory decode_linear needs with a staged x of `staged` floats. */
function linearWorkgroupBytes(staged: number): number {
  return 4 * staged + 16 * LINEAR_THREADS + 4 * LINEAR_THREADS + 4 * MAX_LORA_RANK;
}

/** Bytes of workgroup memory decode_attention needs for a context of maxT and head size HS. */
function attentionWorkgroupBytes(maxT: number, HS: number): number {
  return 4 * maxT + 4 * HS + 4 * ATTENTION_WG + 16 * ATTENTION_WG;
}

export interface DecodeStepShape {
  /** Width C, heads NH, vocabulary V, context maxT. */
  C: number;
  NH: number;
  V: number;
  maxT: number;
}

/** Why a model cannot take the fast step on this GPU, or null when it can. */
export function decodeStepSupport(gpu: GpuContext, { C, NH, maxT }: DecodeStepShape): string | null {
  const HS = C / NH;
  const limit = gpu.device.limits.maxComputeWorkgroupStorageSize;
  if (C % 4 !== 0) return `width ${C} is not a multiple of 4`;
  if (!Number.isInteger(HS) || HS % 4 !== 0) return `head size ${HS} is not a multiple of 4`;
  const HS4 = HS / 4;
  if (HS4 > ATTENTION_WG || (HS4 & (HS4 - 1)) !== 0) return `head size ${HS} is not 4 times a power of two`;
  if (linearWorkgroupBytes(C) > limit) return `width ${C} needs more workgroup memory than this GPU has`;
  if (attentionWorkgroupBytes(maxT, HS) > limit) return `context ${maxT} needs more workgroup memory than this GPU has`;
  return null;
}

function requireLength(name: string, tensor: GpuTensor, length: number, what: string): void {
  if (tensor.length < length) throw new RangeError(`${name}: ${tensor.label} holds ${tensor.length} elements, ${what} needs ${length}`);
}

function isPacked(weight: GpuTensor | F16Weights): weight is F16Weights {
  return 'packed' in weight;
}

export type DecodeEpilogue = 'store' | 'gelu' | 'add';
const EPILOGUES: Record<DecodeEpilogue, number> = { store: 0, gelu: 1, add: 2 };

export interface DecodeLinearTensors {
  /** (K) the layer's input: the residual when `ln` is given. */
  x: GpuTensor;
  /** (K,N) f32, or packed f16. */
  weight: GpuTensor | F16Weights;
  /** (N) */
  bias: GpuTensor;
  /** (N): written, or added to with the 'add' epilogue. */
  out: GpuTensor;
  /** A layernorm applied to x first (weight and bias (K)). */
  ln?: { weight: GpuTensor; bias: GpuTensor; eps: number };
  /** A LoRA pair on the (normalized) input: a (R,K), b (N,R), scaled by `scale`. */
  lora?: { a: GpuTensor; b: GpuTensor; rank: number; scale: number };
}

/** out (N) = [ln](x)·W + b [+ LoRA], then stored, GELU'd or added to out (the residual stream). */
export async function decodeLinear(
  gpu: GpuContext,
  t: DecodeLinearTensors,
  { K, N }: { K: number; N: number },
  epilogue: DecodeEpilogue = 'store',
): Promise<Dispatch> {
  const name = 'decodeLinear';
  if (!Number.isSafeInteger(K) || K < 1 || !Number.isSafeInteger(N) || N < 4 || N % 4 !== 0) {
    throw new RangeError(`${name}: K must be ≥ 1 and N a positive multiple of 4, got K ${K}, N ${N}`);
  }
  requireLength(name, t.x, K, 'x (K)');
  requireLength(name, t.bias, N, 'bias (N)');
  requireLength(name, t.out, N, 'out (N)');
  const packed = isPacked(t.weight);
  if (isPacked(t.weight)) {
    if (t.weight.K !== K || t.weight.N !== N) throw new RangeError(`${name}: packed weight is ${t.weight.K}×${t.weight.N}, not ${K}×${N}`);
  } else {
    requireLength(name, t.weight, K * N, 'weight (K,N)');
  }
  const limit = gpu.device.limits.maxComputeWorkgroupStorageSize;
  if (t.ln) {
    requireLength(name, t.ln.weight, K, 'ln weight (K)');
    requireLength(name, t.ln.bias, K, 'ln bias (K)');
    if (linearWorkgroupBytes(K) > limit) throw new RangeError(`${name}: a layernorm over K = ${K} does not fit workgroup memory`);
  }
  let loraGroup = 32;
  if (t.lora) {
    const R = t.lora.rank;
    if (!Number.isSafeInteger(R) || R < 1 || R > MAX_LORA_RANK) throw new RangeError(`${name}: LoRA rank must be 1..${MAX_LORA_RANK}, got ${R}`);
    requireLength(name, t.lora.a, R * K, 'lora a (R,K)');
    requireLength(name, t.lora.b, N * R, 'lora b (N,R)');
    let ranks = 1;
    while (ranks < R) ranks *= 2;
    loraGroup = LINEAR_THREADS / ranks;
  }
  // Unused bindings still need a buffer: x is read-only and never aliases out (a different tensor).
  const spare = t.x;
  return gpu.prepare(packed ? decodeLinearF16WKernel : decodeLinearKernel, {
    bindings: {
      x: t.x,
      weight: isPacked(t.weight) ? t.weight.packed : t.weight,
      bias: t.bias,
      out: t.out,
      lnWeight: t.ln?.weight ?? spare,
      lnBias: t.ln?.bias ?? spare,
      loraA: t.lora?.a ?? spare,
      loraB: t.lora?.b ?? spare,
    },
    uniforms: { K, N, R: t.lora?.rank ?? 0, eps: t.ln?.eps ?? 0, loraScale: t.lora?.scale ?? 0 },
    overrides: {
      COL_QUADS: LINEAR_COL_QUADS,
      SLICES: LINEAR_SLICES,
      LN: t.ln ? 1 : 0,
      EPILOGUE: EPILOGUES[epilogue],
      HAS_LORA: t.lora ? 1 : 0,
      LORA_GROUP: loraGroup,
      XS_LEN: t.ln ? K : 4,
    },
    workgroups: [Math.ceil(N / 4 / LINEAR_COL_QUADS), 1],
  });
}

/** Workgroups of decode_head for V logits: the length of its `best` output. */
export function decodeHeadGroups(V: number): number {
  return Math.ceil(V / HEAD_ROWS);
}

/**
 * logits (V) = ln_f(x)·wteᵀ, and best (decodeHeadGroups(V) pairs of u32) = each workgroup's largest logit and its
 * index. wte (V,C) f32, or packed f16 with rows of C (K = V, N = C).
 */
export async function decodeHead(
  gpu: GpuContext,
  t: { x: GpuTensor; wte: GpuTensor | F16Weights; lnWeight: GpuTensor; lnBias: GpuTensor; logits: GpuTensor; best: GpuTensor },
  { V, C, eps }: { V: number; C: number; eps: number },
): Promise<Dispatch> {
  const name = 'decodeHead';
  if (!Number.isSafeInteger(C) || C < 4 || C % 4 !== 0) throw new RangeError(`${name}: C must be a positive multiple of 4, got ${C}`);
  if (!Number.isSafeInteger(V) || V < 1) throw new RangeError(`${name}: V must be ≥ 1, got ${V}`);
  requireLength(name, t.x, C, 'x (C)');
  requireLength(name, t.lnWeight, C, 'ln weight (C)');
  requireLength(name, t.lnBias, C, 'ln bias (C)');
  requireLength(name, t.logits, V, 'logits (V)');
  const groups = decodeHeadGroups(V);
  requireLength(name, t.best, 2 * groups, 'best (groups, 2)');
  if (isPacked(t.wte)) {
    if (t.wte.K !== V || t.wte.N !== C) throw new RangeError(`${name}: packed wte is ${t.wte.K}×${t.wte.N}, not ${V}×${C}`);
  } else {
    requireLength(name, t.wte, V * C, 'wte (V,C)');
  }
  return gpu.prepare(isPacked(t.wte) ? decodeHeadF16WKernel : decodeHeadKernel, {
    bindings: {
      x: t.x,
      wte: isPacked(t.wte) ? t.wte.packed : t.wte,
      lnWeight: t.lnWeight,
      lnBias: t.lnBias,
      logits: t.logits,
      best: t.best,
    },
    uniforms: { V, C, eps },
    overrides: { ROWS: HEAD_ROWS, LANES: HEAD_LANES, XS4: C / 4 },
    workgroups: grid1d(groups, 1, gpu.device.limits.maxComputeWorkgroupsPerDimension),
  });
}

/** The greedy token from decode_head's `best` (groups pairs): state[0] = it, tokens[state[2]] = it, state advanced. */
export async function decodeSelect(
  gpu: GpuContext,
  t: { best: GpuTensor; state: GpuTensor; tokens: GpuTensor },
  { groups }: { groups: number },
): Promise<Dispatch> {
  requireLength('decodeSelect', t.best, 2 * groups, 'best (groups, 2)');
  requireLength('decodeSelect', t.state, DECODE_STATE_LENGTH, 'state');
  return gpu.prepare(decodeSelectKernel, {
    bindings: t,
    uniforms: { groups },
    overrides: { WG: SELECT_WG },
    workgroups: [1, 1],
  });
}

/** How decode_sample draws, as sampling.ts's options of the same names (temperature > 0). */
export interface GpuSampling {
  temperature: number;
  /** 0: every token. */
  topK: number;
  /** 1: no cut. Below 1 only with 1 ≤ topK ≤ GPU_TOP_P_MAX_K. */
  topP: number;
  /** 1: off. */
  repetitionPenalty: number;
  seed: number;
}

/** The largest top-k decode_sample applies a top-p cut after (it sorts at most 512 kept tokens, ties included). */
export const GPU_TOP_P_MAX_K = 256;

/** Why decode_sample cannot draw with these settings, or null when it can. */
export function gpuSamplingUnsupported({ temperature, topK, topP }: Pick<GpuSampling, 'temperature' | 'topK' | 'topP'>): string | null {
  if (!(temperature > 0)) return 'greedy settings (temperature 0) choose with decode_select';
  if (topP < 1 && !(topK >= 1 && topK <= GPU_TOP_P_MAX_K)) return `top-p on the GPU needs a top-k of 1..${GPU_TOP_P_MAX_K}`;
  return null;
}

/** Elements (u32) of decode_sample's presence bitmap for V tokens. */
export function presenceLength(V: number): number {
  return Math.ceil(V / 32);
}

/** The presence bitmap of `context` (the tokens the repetition penalty applies to). */
export function presenceBits(V: number, context: ArrayLike<number>): Uint32Array {
  const bits = new Uint32Array(presenceLength(V));
  for (let i = 0; i < context.length; i++) {
    const token = context[i];
    if (Number.isInteger(token) && token >= 0 && token < V) bits[token >>> 5] |= 1 << (token & 31);
  }
  return bits;
}

/** The uniforms of a decodeSample dispatch for `sampling` (set them with Dispatch.setUniforms before a submit). */
export function sampleUniforms(V: number, sampling: GpuSampling): Record<string, number> {
  const { temperature, topK, topP, repetitionPenalty, seed } = sampling;
  if (!(temperature > 0 && Number.isFinite(temperature))) throw new RangeError(`decodeSample: temperature must be positive, got ${temperature}`);
  if (!Number.isSafeInteger(topK) || topK < 0) throw new RangeError(`decodeSample: topK must be a whole number ≥ 0, got ${topK}`);
  if (!(topP > 0 && topP <= 1)) throw new RangeError(`decodeSample: topP must be in (0, 1], got ${topP}`);
  if (!(repetitionPenalty > 0 && Number.isFinite(repetitionPenalty))) {
    throw new RangeError(`decodeSample: repetitionPenalty must be positive, got ${repetitionPenalty}`);
  }
  if (!Number.isSafeInteger(seed)) throw new RangeError(`decodeSample: seed must be a whole number, got ${seed}`);
  const why = gpuSamplingUnsupported(sampling);
  if (why) throw new RangeError(`decodeSample: ${why}`);
  // The seed's high and low words folded into one u32 (seeds beyond 2^32 still differ from their low word alone).
  const folded = ((seed % 2 ** 32) ^ (Math.floor(seed / 2 ** 32) * 0x9e3779b1)) >>> 0;
  return { V, topK: Math.min(topK, V), invTemperature: 1 / temperature, seed: folded, topP, penalty: repetitionPenalty };
}

/**
 * A token drawn as sampling.ts draws it (repetition penalty over the tokens marked in `presence`, temperature, top-k
 * with ties, top-p), on the GPU; then as decodeSelect: state[0] = it, tokens[state[2]] = it, state advanced, and
 * the token marked in presence. Bound with `sampling`; change it later with setUniforms(sampleUniforms(V, …)).
 */
export async function decodeSample(
  gpu: GpuContext,
  t: { logits: GpuTensor; state: GpuTensor; tokens: GpuTensor; presence: GpuTensor },
  V: number,
  sampling: GpuSampling,
): Promise<Dispatch> {
  requireLength('decodeSample', t.logits, V, 'logits (V)');
  requireLength('decodeSample', t.state, DECODE_STATE_LENGTH, 'state');
  requireLength('decodeSample', t.presence, presenceLength(V), 'presence (ceil(V/32))');
  return gpu.prepare(decodeSampleKernel, {
    bindings: t,
    uniforms: sampleUniforms(V, sampling),
    overrides: { WG: SELECT_WG },
    workgroups: [1, 1],
  });
}

/** out (C) = wte[state[0]] + wpe[state[1]]; wte f32 (V,C) or packed f16 with rows of C. */
export async function decodeEmbed(
  gpu: GpuContext,
  t: { state: GpuTensor; wte: GpuTensor | F16Weights; wpe: GpuTensor; out: GpuTensor },
  { C, V, maxT }: { C: number; V: number; maxT: number },
): Promise<Dispatch> {
  const name = 'decodeEmbed';
  requireLength(name, t.state, DECODE_STATE_LENGTH, 'state');
  requireLength(name, t.wpe, maxT * C, 'wpe (maxT,C)');
  requireLength(name, t.out, C, 'out (C)');
  if (isPacked(t.wte)) {
    if (t.wte.K !== V || t.wte.N !== C) throw new RangeError(`${name}: packed wte is ${t.wte.K}×${t.wte.N}, not ${V}×${C}`);
  } else {
    requireLength(name, t.wte, V * C, 'wte (V,C)');
  }
  return gpu.prepare(isPacked(t.wte) ? decodeEmbedF16WKernel : decodeEmbedKernel, {
    bindings: { state: t.state, wte: isPacked(t.wte) ? t.wte.packed : t.wte, wpe: t.wpe, out: t.out },
    uniforms: { C, V, maxT },
    overrides: { WG: 256 },
    workgroups: [Math.ceil(C / 256), 1],
  });
}

/**
 * The step's k and v (from qkv (3C)) into the cache (2,NH,maxT,HS) at position state[1], then out (C) = attention of
 * its q over positions 0..state[1]. Check decodeStepSupport first.
 */
export async function decodeAttention(
  gpu: GpuContext,
  t: { state: GpuTensor; qkv: GpuTensor; cache: GpuTensor; out: GpuTensor },
  { C, NH, maxT }: { C: number; NH: number; maxT: number },
): Promise<Dispatch> {
  const name = 'decodeAttention';
  const why = decodeStepSupport(gpu, { C, NH, V: 1, maxT });
  if (why) throw new RangeError(`${name}: ${why}`);
  requireLength(name, t.state, DECODE_STATE_LENGTH, 'state');
  requireLength(name, t.qkv, 3 * C, 'qkv (3C)');
  requireLength(name, t.cache, 2 * maxT * C, 'cache (2,NH,maxT,HS)');
  requireLength(name, t.out, C, 'out (C)');
  const HS = C / NH;
  return gpu.prepare(decodeAttentionKernel, {
    bindings: t,
    uniforms: { C, NH, HS, maxT },
    overrides: { WG: ATTENTION_WG, MAX_T: maxT, HS4_MAX: HS / 4 },
    workgroups: [NH, 1],
  });
}
