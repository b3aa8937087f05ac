// The fast decoding step's kernels (ops/decode-step.ts) against the double-precision references they fuse:
// layernorm + matmul + LoRA + GELU / residual add, the KV append + attention, the ln_f + tied classifier with the
// greedy choice, and the embedding of a GPU-held token. Shapes are awkward on purpose (K not a multiple of the
// slices, V not a multiple of the head's rows, a head size of 8). Tolerances: REDUCTION (atol 1e-4, rtol 1e-3) for
// everything that sums over K or over keys, ELEMENTWISE for the embedding; the greedy choice must be exact.

import { beforeAll, describe, expect, it } from 'vitest';
import type { GpuContext, GpuTensor } from '../src/engine/gpu/context.ts';
import {
  DECODE_STATE_LENGTH,
  decodeAttention,
  decodeEmbed,
  decodeHead,
  decodeHeadGroups,
  decodeLinear,
  decodeSample,
  decodeSelect,
  decodeStepSupport,
  gpuSamplingUnsupported,
  presenceBits,
  sampleUniforms,
  type DecodeEpilogue,
} from '../src/engine/ops/decode-step.ts';
import { uploadF16Weights } from '../src/engine/ops/matmul-f16.ts';
import { nextTokenDistribution, samplingOptions } from '../src/engine/generate/sampling.ts';
import { attentionDecode, kvCacheWrite } from '../src/engine/reference/decode.ts';
import { roundToF16 } from '../src/engine/reference/f16.ts';
import { gelu } from '../src/engine/reference/gelu.ts';
import { layernormForward } from '../src/engine/reference/layernorm.ts';
import { loraForward } from '../src/engine/reference/lora.ts';
import { matmulForward } from '../src/engine/reference/matmul.ts';
import { Rng, uniformArray } from '../src/engine/random.ts';
import { ELEMENTWISE, REDUCTION, expectClose } from './helpers/check.ts';
import { runAndRead, testGpu } from './helpers/gpu.ts';

let gpu: GpuContext;
beforeAll(async () => {
  gpu = await testGpu();
});

const f64 = (a: Float32Array) => Float64Array.from(a);
const f16Rounded = (a: Float32Array) => Float32Array.from(a, roundToF16);

interface LinearCase {
  K: number;
  N: number;
  ln: boolean;
  epilogue: DecodeEpilogue;
  rank: number; // 0: no LoRA
  f16: boolean;
}

/** The reference of one fused linear: [ln](x)·W + b [+ scale·(x'·Aᵀ)·Bᵀ], then the epilogue over `out0`. */
function referenceLinear(c: LinearCase, x: Float32Array, W: Float32Array, bias: Float32Array, lnW: Float32Array, lnB: Float32Array,
  A: Float32Array, B: Float32Array, scale: number, out0: Float32Array): Float64Array {
  const { K, N } = c;
  let xs = f64(x);
  if (c.ln) {
    const normed = new Float64Array(K);
    layernormForward(normed, new Float64Array(1), new Float64Array(1), xs, f64(lnW), f64(lnB), 1, K, 1e-5);
    xs = normed;
  }
  const y = new Float64Array(N);
  matmulForward(y, xs, f64(W), f64(bias), 1, N, K);
  if (c.rank) loraForward(y, new Float64Array(c.rank), xs, f64(A), f64(B), { M: 1, N, K, R: c.rank }, scale, { p: 0, seed: 0 });
  if (c.epilogue === 'gelu') return y.map(gelu);
  if (c.epilogue === 'add') return y.map((v, n) => v + out0[n]);
  return y;
}

describe('decode_linear: one row through a fused linear layer', () => {
  const cases: LinearCase[] = [
    { K: 37, N: 20, ln: false, epilogue: 'store', rank: 0, f16: false },
    { K: 37, N: 20, ln: true, epilogue: 'store', rank: 3, f16: false },
    { K: 1000, N: 12, ln: false, epilogue: 'add', rank: 0, f16: false }, // four-row loop and its tail
    { K: 64, N: 44, ln: true, epilogue: 'gelu', rank: 0, f16: false },
    { K: 600, N: 8, ln: false, epilogue: 'add', rank: 5, f16: false }, // LoRA without a layernorm
    { K: 36, N: 24, ln: true, epilogue: 'store', rank: 64, f16: false }, // the largest rank
    { K: 70, N: 16, ln: true, epilogue: 'gelu', rank: 2, f16: true },
    { K: 520, N: 12, ln: false, epilogue: 'add', rank: 0, f16: true },
  ];
  for (const c of cases) {
    it(`K ${c.K}, N ${c.N}, ln ${c.ln}, ${c.epilogue}, rank ${c.rank}${c.f16 ? ', f16 weight' : ''}`, async () => {
      const rng = new Rng(c.K * 31 + c.N);
      const { K, N } = c;
      const x = Float32Array.from(uniformArray(rng, K, -2, 2));
      const W = Float32Array.from(uniformArray(rng, K * N, -0.3, 0.3));
      const bias = Float32Array.from(uniformArray(rng, N, -0.5, 0.5));
      const lnW = Float32Array.from(uniformArray(rng, K, 0.5, 1.5));
      const lnB = Float32Array.from(uniformArray(rng, K, -0.2, 0.2));
      const R = Math.max(1, c.rank);
      const A = Float32Array.from(uniformArray(rng, R * K, -0.3, 0.3));
      const B = Float32Array.from(uniformArray(rng, N * R, -0.3, 0.3));
      const out0 = Float32Array.from(uniformArray(rng, N, -1, 1));
      const scale = 1.75;
      const t = (a: ArrayLike<number>) => gpu.upload(a, 'input');
      const out = t(out0);
      const weight = c.f16 ? uploadF16Weights(gpu, W, K, N) : t(W);
      const dispatch = await decodeLinear(
        gpu,
        {
          x: t(x),
          weight,
          bias: t(bias),
          out,
          ln: c.ln ? { weight: t(lnW), bias: t(lnB), eps: 1e-5 } : undefined,
          lora: c.rank ? { a: t(A), b: t(B), rank: c.rank, scale } : undefined,
        },
        { K, N },
        c.epilogue,
      );
      const [got] = await runAndRead(gpu, [dispatch], out);
      const want = referenceLinear(c, x, c.f16 ? f16Rounded(W) : W, bias, lnW, lnB, A, B, scale, out0);
      expectClose(got, want, REDUCTION, 'out');
    });
  }

  it('refuses N that is not a multiple of 4 and a rank above 64', async () => {
    const x = gpu.tensor(8, 'x');
    const w = gpu.tensor(8 * 8, 'w');
    await expect(decodeLinear(gpu, { x, weight: w, bias: gpu.tensor(6, 'b'), out: gpu.tensor(6, 'o') }, { K: 8, N: 6 })).rejects.toThrow(/multiple of 4/);
    const lora = { a: gpu.tensor(65 * 8, 'a'), b: gpu.tensor(65 * 8, 'b'), rank: 65, scale: 1 };
    await expect(decodeLinear(gpu, { x, weight: w, bias: gpu.tensor(8, 'b'), out: gpu.tensor(8, 'o'), lora }, { K: 8, N: 8 })).rejects.toThrow(/rank/);
  });
});

describe('decode_head + decode_select: ln_f, the tied classifier and the greedy token', () => {
  const state = (values: number[]) => gpu.uploadU32(Uint32Array.from(values), 'state');

  async function runHead(V: number, C: number, wte: Float32Array, f16: boolean, x: Float32Array, lnW: Float32Array, lnB: Float32Array) {
    const groups = decodeHeadGroups(V);
    const logits = gpu.tensor(V, 'logits');
    const best = gpu.tensor(2 * groups, 'best');
    const s = state([0, 5, 2, 0]);
    const tokens = gpu.tensor(4, 'tokens');
    const head = await decodeHead(
      gpu,
      { x: gpu.upload(x, 'x'), wte: f16 ? uploadF16Weights(gpu, wte, V, C) : gpu.upload(wte, 'wte'), lnWeight: gpu.upload(lnW, 'lnW'), lnBias: gpu.upload(lnB, 'lnB'), logits, best },
      { V, C, eps: 1e-5 },
    );
    const select = await decodeSelect(gpu, { best, state: s, tokens }, { groups });
    const [got] = await runAndRead(gpu, [head, select], logits);
    return { logits: got, state: await gpu.readU32(s), tokens: await gpu.readU32(tokens) };
  }

  function referenceLogits(V: number, C: number, wte: Float32Array, x: Float32Array, lnW: Float32Array, lnB: Float32Array): Float64Array {
    const normed = new Float64Array(C);
    layernormForward(normed, new Float64Array(1), new Float64Array(1), f64(x), f64(lnW), f64(lnB), 1, C, 1e-5);
    const logits = new Float64Array(V);
    for (let v = 0; v < V; v++) {
      let sum = 0;
      for (let c = 0; c < C; c++) sum += normed[c] * wte[v * C + c];
      logits[v] = sum;
    }
    return logits;
  }

  const argmax = (a: ArrayLike<number>) => {
    let best = 0;
    for (let i = 1; i < a.length; i++) if (a[i] > a[best]) best = i;
    return best;
  };

  for (const [V, C, f16] of [
    [37, 36, false],
    [1000, 68, false],
    [77, 40, true],
  ] as const) {
    it(`V ${V}, C ${C}${f16 ? ', f16 wte' : ''}: logits, and the argmax appended to the tokens`, async () => {
      const rng = new Rng(V + C);
      const wte = Float32Array.from(uniformArray(rng, V * C, -0.5, 0.5));
      const x = Float32Array.from(uniformArray(rng, C, -3, 3));
      const lnW = Float32Array.from(uniformArray(rng, C, 0.5, 1.5));
      const lnB = Float32Array.from(uniformArray(rng, C, -0.2, 0.2));
      const got = await runHead(V, C, wte, f16, x, lnW, lnB);
      const want = referenceLogits(V, C, f16 ? f16Rounded(wte) : wte, x, lnW, lnB);
      expectClose(got.logits, want, REDUCTION, 'logits');
      expect(got.state[0]).toBe(argmax(got.logits)); // exactly the CPU's choice over the GPU's logits
      expect(argmax(got.logits)).toBe(argmax(want));
      expect(Array.from(got.state)).toEqual([got.state[0], 6, 3, 0]); // position and count advanced
      expect(got.tokens[2]).toBe(got.state[0]);
    });
  }

  it('breaks a tie toward the lower token id, across workgroups', async () => {
    const V = 100;
    const C = 8;
    const rng = new Rng(3);
    const wte = Float32Array.from(uniformArray(rng, V * C, -0.1, 0.1));
    const x = Float32Array.from(uniformArray(rng, C, -1, 1));
    const lnW = new Float32Array(C).fill(1);
    const lnB = new Float32Array(C);
    // Rows 71 and 23 (different workgroups of 16) are the same large vector: equal, largest logits.
    const normed = new Float64Array(C);
    layernormForward(normed, new Float64Array(1), new Float64Array(1), f64(x), f64(lnW), f64(lnB), 1, C, 1e-5);
    for (const row of [71, 23]) for (let c = 0; c < C; c++) wte[row * C + c] = Math.sign(normed[c]) * 2;
    const got = await runHead(V, C, wte, false, x, lnW, lnB);
    expect(got.logits[23]).toBe(got.logits[71]);
    expect(got.state[0]).toBe(23);
  });
});

describe('decode_embed: the embedding of a token held on the GPU', () => {
  for (const f16 of [false, true]) {
    it(`wte[token] + wpe[position]${f16 ? ', f16 wte' : ''}`, async () => {
      const [V, C, maxT] = [11, 18, 9];
      const rng = new Rng(8);
      const wte = Float32Array.from(uniformArray(rng, V * C, -1, 1));
      const wpe = Float32Array.from(uniformArray(rng, maxT * C, -1, 1));
      const out = gpu.tensor(C, 'out');
      const state = gpu.uploadU32(Uint32Array.from([7, 8, 0, 0]), 'state');
      const d = await decodeEmbed(
        gpu,
        { state, wte: f16 ? uploadF16Weights(gpu, wte, V, C) : gpu.upload(wte, 'wte'), wpe: gpu.upload(wpe, 'wpe'), out },
        { C, V, maxT },
      );
      const [got] = await runAndRead(gpu, [d], out);
      const table = f16 ? f16Rounded(wte) : wte;
      const want = Array.from({ length: C }, (_, c) => table[7 * C + c] + wpe[8 * C + c]);
      expectClose(got, want, ELEMENTWISE, 'embedding');
    });
  }
});

describe('decode_attention: KV append and attention over the cache', () => {
  const [NH, HS, maxT] = [3, 8, 40];
  const C = NH * HS;
  for (const p of [0, 17, maxT - 1]) {
    it(`position ${p} of ${maxT}`, async () => {
      const rng = new Rng(p + 1);
      const qkv = Float32Array.from(uniformArray(rng, 3 * C, -1.5, 1.5));
      const cache0 = Float32Array.from(uniformArray(rng, 2 * maxT * C, -1.5, 1.5)); // stale values past p must not matter
      const cache = gpu.upload(cache0, 'cache0');
      const out = gpu.tensor(C, 'out');
      const state: GpuTensor = gpu.uploadU32(Uint32Array.from([0, p, 0, 0]), 'state');
      const d = await decodeAttention(gpu, { state, qkv: gpu.upload(qkv, 'qkv'), cache, out }, { C, NH, maxT });
      const [got, gotCache] = await runAndRead(gpu, [d], out, cache);
      const shape = { B: 1, Tq: 1, count: 1, offset: p, C, NH, maxT };
      const wantCache = f64(cache0);
      kvCacheWrite(wantCache, f64(qkv), shape);
      const want = new Float64Array(C);
      attentionDecode(want, f64(qkv), wantCache, shape);
      expectClose(got, want, REDUCTION, 'out');
      expectClose(gotCache, wantCache, ELEMENTWISE, 'cache');
    });
  }

  it('says which shapes it cannot take', () => {
    expect(decodeStepSupport(gpu, { C: 24, NH: 3, V: 10, maxT: 40 })).toBeNull();
    expect(decodeStepSupport(gpu, { C: 36, NH: 3, V: 10, maxT: 40 })).toMatch(/head size 12/); // HS/4 = 3
    expect(decodeStepSupport(gpu, { C: 30, NH: 3, V: 10, maxT: 40 })).toMatch(/multiple of 4/);
    expect(decodeStepSupport(gpu, { C: 24, NH: 3, V: 10, maxT: 100_000 })).toMatch(/context/);
  });
});

describe('decode_sample: top-k and temperature, drawn on the GPU', () => {
  /** `draws` tokens drawn from `logits`, one dispatch per draw (each at the next position, so with new noise). */
  type Settings = { temperature: number; topK: number; seed: number; topP?: number; repetitionPenalty?: number };

  /** The tokens drawn, and the presence bitmap after (it starts as `context`'s). */
  async function drawAndMark(logits: ArrayLike<number>, draws: number, settings: Settings, context: number[] = []) {
    const V = logits.length;
    const sampling = { topP: 1, repetitionPenalty: 1, ...settings };
    const state = gpu.uploadU32(Uint32Array.from([0, 0, 0, 0]), 'state');
    const tokens = gpu.tensor(draws, 'tokens');
    const presence = gpu.uploadU32(presenceBits(V, context), 'presence');
    const d = await decodeSample(gpu, { logits: gpu.upload(logits, 'logits'), state, tokens, presence }, V, sampling);
    gpu.submit(Array.from({ length: draws }, () => d));
    const [got, marked] = [await gpu.readU32(tokens), await gpu.readU32(presence)];
    d.release();
    return { tokens: Array.from(got), presence: marked };
  }

  /** `draws` tokens drawn from `logits`, one dispatch per draw (each at the next position, so with new noise). */
  const draw = async (logits: ArrayLike<number>, draws: number, settings: Settings) => (await drawAndMark(logits, draws, settings)).tokens;

  const counts = (tokens: number[], V: number) => {
    const n = new Array<number>(V).fill(0);
    for (const t of tokens) n[t]++;
    return n;
  };

  it('follows softmax(logits / T) over the top k: frequencies within 5 standard deviations, nothing else drawn', async () => {
    const V = 37;
    const logits = Float32Array.from(uniformArray(new Rng(12), V, -2, 2));
    const draws = 3000;
    const options = { temperature: 0.8, topK: 5, seed: 99 };
    const n = counts(await draw(logits, draws, options), V);
    const p = nextTokenDistribution(logits, [], samplingOptions({ temperature: 0.8, topK: 5 }));
    for (let i = 0; i < V; i++) {
      if (p[i] === 0) expect(n[i], `token ${i} is outside the top 5`).toBe(0);
      else expect(Math.abs(n[i] - draws * p[i]), `token ${i}: ${n[i]} draws, expected ${draws * p[i]}`).toBeLessThan(5 * Math.sqrt(draws * p[i] * (1 - p[i])) + 1);
    }
  });

  it('keeps every token tied with the k-th, finds the k-th exactly among 1000, and keeps all with top-k 0', async () => {
    // Three tokens tie for second place: top-k 2 keeps four. A high temperature makes the kept ones near-uniform.
    const tied = new Float32Array(10).fill(-1);
    tied[7] = 3;
    for (const i of [2, 4, 9]) tied[i] = 1.5;
    expect(new Set(await draw(tied, 400, { temperature: 1000, topK: 2, seed: 1 }))).toEqual(new Set([7, 2, 4, 9]));

    const V = 1000;
    const logits = Float32Array.from(uniformArray(new Rng(5), V, -30, 30));
    const top50 = new Set(Array.from(logits.keys()).sort((a, b) => logits[b] - logits[a]).slice(0, 50));
    expect(new Set(await draw(logits, 2000, { temperature: 1e6, topK: 50, seed: 2 }))).toEqual(top50);

    expect(new Set(await draw(Float32Array.from(uniformArray(new Rng(6), 10)), 400, { temperature: 100, topK: 0, seed: 3 })).size).toBe(10);
  });

  it('a tiny temperature is the argmax; the same seed repeats its draws and another seed does not', async () => {
    const logits = Float32Array.from(uniformArray(new Rng(8), 300, -1, 1));
    let argmax = 0;
    for (let i = 1; i < logits.length; i++) if (logits[i] > logits[argmax]) argmax = i;
    expect(new Set(await draw(logits, 50, { temperature: 1e-6, topK: 0, seed: 4 }))).toEqual(new Set([argmax]));
    const again = (seed: number) => draw(logits, 64, { temperature: 1, topK: 0, seed });
    const first = await again(10);
    expect(await again(10)).toEqual(first);
    expect(await again(11)).not.toEqual(first);
  });

  it('top-p after top-k: the nucleus of sampling.ts, frequencies within 5 standard deviations', async () => {
    const V = 300;
    const logits = Float32Array.from(uniformArray(new Rng(13), V, -3, 3));
    const draws = 3000;
    const settings = { temperature: 0.9, topK: 20, topP: 0.6 };
    const n = counts(await draw(logits, draws, { ...settings, seed: 7 }), V);
    const p = nextTokenDistribution(logits, [], samplingOptions(settings));
    expect(p.filter((x) => x > 0).length).toBeLessThan(20); // the cut really cuts
    for (let i = 0; i < V; i++) {
      if (p[i] === 0) expect(n[i], `token ${i} is outside the nucleus`).toBe(0);
      else expect(Math.abs(n[i] - draws * p[i]), `token ${i}: ${n[i]} draws, expected ${draws * p[i]}`).toBeLessThan(5 * Math.sqrt(draws * p[i] * (1 - p[i])) + 1);
    }
  });

  it('the repetition penalty over the context and every token drawn since, which it marks', async () => {
    // A tiny temperature draws the best penalized score, as sampling.ts's argmax after its penalty would.
    const logits = Float32Array.from([2, 1.9, -0.5, 1.5, -0.1, 0.3]);
    const { tokens, presence } = await drawAndMark(logits, 3, { temperature: 1e-4, topK: 0, seed: 1, repetitionPenalty: 1.5 }, [0]);
    // Token 0 is in the context: 2 / 1.5 = 1.33 < 1.9, so 1; then 1 is penalized too (1.27): 3 (1.5); then 0 (1.33).
    const expected: number[] = [];
    const context = [0];
    for (let k = 0; k < 3; k++) {
      const p = nextTokenDistribution(logits, context, samplingOptions({ temperature: 0, repetitionPenalty: 1.5 }));
      expected.push(p.indexOf(1));
      context.push(expected[k]);
    }
    expect(tokens).toEqual(expected);
    expect(tokens).toEqual([1, 3, 0]);
    expect(presence[0]).toBe(0b1011); // tokens 0, 1 and 3 marked
  });

  it('checks its settings', () => {
    const base = { temperature: 1, topK: 5, topP: 1, repetitionPenalty: 1, seed: 1 };
    expect(() => sampleUniforms(10, { ...base, temperature: 0 })).toThrow(/temperature/);
    expect(() => sampleUniforms(10, { ...base, topK: -1 })).toThrow(/topK/);
    expect(() => sampleUniforms(10, { ...base, topK: 0, topP: 0.9 })).toThrow(/top-k of 1\.\.256/);
    expect(() => sampleUniforms(10, { ...base, repetitionPenalty: 0 })).toThrow(/repetitionPenalty/);
    expect(sampleUniforms(10, { ...base, temperature: 2, topK: 50 })).toMatchObject({ V: 10, topK: 10, invTemperature: 0.5 });
    expect(gpuSamplingUnsupported({ temperature: 0.7, topK: 50, topP: 0.95 })).toBeNull(); // the playground's defaults
  });
});
