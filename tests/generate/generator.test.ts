// Generation with the KV cache (src/engine/generate/generator.ts) on WebGPU, with a tiny random GPT-2 (2 layers,
// C = 32, NH = 4, byte-level V = 257, context 32) and a random LoRA adapter on all four modules with non-zero B.
//
// Oracle: the float64 reference model (src/engine/reference/gpt2.ts) over the whole sequence so far, whose last row
// must equal the decoder's logits at every step; and once the GPU's own full-sequence forward (Gpt2Run). Tolerance:
// 1e-4 absolute on logits (f32 arithmetic of the same math in a different order; measured errors are ~1e-7, see
// the report in the test output). Comparisons of the GPU with itself (adapter off vs no adapter, same seed twice)
// are exact: the same kernels run on the same inputs in the same order.

import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { TunelabError } from '../../src/engine/errors.ts';
import { Gpt2Decoder, Generator, nextChunkSize, type GenerationResult } from '../../src/engine/generate/generator.ts';
import { argmaxToken, nextTokenDistribution, samplingOptions } from '../../src/engine/generate/sampling.ts';
import type { GpuContext } from '../../src/engine/gpu/context.ts';
import { modelConfig } from '../../src/engine/model/config.ts';
import { Gpt2Model, Gpt2Run } from '../../src/engine/model/gpt2.ts';
import { initGpt2Parameters } from '../../src/engine/model/init.ts';
import { LoraAdapter, loraConfig, loraScale, loraSites } from '../../src/engine/model/lora.ts';
import { linearShape } from '../../src/engine/model/weights.ts';
import { Rng } from '../../src/engine/random.ts';
import { gpt2ReferenceForward, type Gpt2ReferenceLora } from '../../src/engine/reference/gpt2.ts';
import { Tokenizer, byteLevelTokenizer, byteLevelTokenizerJson, byteToCharTable } from '../../src/engine/tokenizer/index.ts';
import { expectClose, type Tolerance } from '../helpers/check.ts';
import { testGpu } from '../helpers/gpu.ts';

const LOGITS: Tolerance = { atol: 1e-4, rtol: 0 };

const config = modelConfig({ nLayer: 2, nHead: 4, nEmbd: 32, nPositions: 32, vocabSize: 257, bosTokenId: 256, eosTokenId: 256 });
const maxT = config.nPositions;
const V = config.vocabSize;
const parameters = initGpt2Parameters(config, 5);
const referenceWeights = new Map(
  parameters.layout.entries.map((e) => [e.name, Float64Array.from(parameters.data.subarray(e.offset, e.offset + e.elementCount))]),
);
const lora = loraConfig({ rank: 4, alpha: 8, targets: ['c_attn', 'attn.c_proj', 'c_fc', 'mlp.c_proj'] });
const loraTensors = new Map<string, Float32Array>();
const referenceLora: Gpt2ReferenceLora = { scale: loraScale(lora), modules: new Map() };
{
  const rng = new Rng(11);
  for (const site of loraSites(config, lora)) {
    const [inDim, outDim] = linearShape(config, site.module);
    const a = Float32Array.from({ length: lora.rank * inDim }, () => 0.3 * rng.normal());
    const b = Float32Array.from({ length: outDim * lora.rank }, () => 0.1 * rng.normal());
    loraTensors.set(`h.${site.layer}.${site.module}.lora_A`, a).set(`h.${site.layer}.${site.module}.lora_B`, b);
    (referenceLora.modules as Map<string, unknown>).set(`h.${site.layer}.${site.module}`, { a: Float64Array.from(a), b: Float64Array.from(b) });
  }
}

/** Logits (B,V) of the last position of each of B sequences (B,T), by the float64 reference over the whole sequences. */
function referenceLastLogits(ids: readonly number[], B = 1, withLora = false): Float64Array {
  const T = ids.length / B;
  const { logits } = gpt2ReferenceForward(config, referenceWeights, withLora ? referenceLora : null, { B, T, ids });
  const out = new Float64Array(B * V);
  for (let b = 0; b < B; b++) out.set(logits.subarray((b * T + T - 1) * V, (b * T + T) * V), b * V);
  return out;
}

function maxError(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let worst = 0;
  for (let i = 0; i < b.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
  return worst;
}

function randomIds(rng: Rng, n: number): number[] {
  return Array.from({ length: n }, () => rng.int(256));
}

let gpu: GpuContext;
let model: Gpt2Model;
let adapter: LoraAdapter;
const tokenizer = byteLevelTokenizer();
/** Worst logit error per check, printed at the end for the report. */
const measured: Record<string, number> = {};

beforeAll(async () => {
  gpu = await testGpu();
  model = Gpt2Model.create(gpu, config, parameters);
  adapter = LoraAdapter.create(gpu, config, lora, { tensors: loraTensors });
});

afterAll(() => {
  adapter?.destroy();
  model?.destroy();
  console.log('worst |logit error| against the float64 reference:', measured);
});

/** Prefills `prompt` and steps `feed` one token at a time, checking every step's logits against the reference. */
async function checkSteps(decoder: Gpt2Decoder, prompt: number[], feed: number[], useAdapter: boolean, label: string): Promise<Float32Array[]> {
  const seen: Float32Array[] = [];
  const sequence = [...prompt];
  let logits = await decoder.prefill(prompt, { useAdapter });
  let worst = 0;
  for (let k = 0; ; k++) {
    const expected = referenceLastLogits(sequence, 1, useAdapter);
    expectClose(logits, expected, LOGITS, `${label}: logits after ${sequence.length} tokens`);
    worst = Math.max(worst, maxError(logits, expected));
    seen.push(logits);
    if (k === feed.length) break;
    sequence.push(feed[k]);
    logits = await decoder.step([feed[k]]);
  }
  measured[label] = Math.max(measured[label] ?? 0, worst);
  return seen;
}

describe('KV-cache decoding against a full forward', () => {
  it('base model: every step from a 13-token prompt (chunks of 8) to a full context equals the reference', async () => {
    const decoder = await Gpt2Decoder.create(gpu, model, { prefillChunk: 8 });
    try {
      const rng = new Rng(1);
      const prompt = randomIds(rng, 13);
      await checkSteps(decoder, prompt, randomIds(rng, maxT - 13), false, 'base');
      expect(decoder.position).toBe(maxT);
      await expect(decoder.step([1])).rejects.toThrow(/context of 32 positions is full/);
      // A new prefill starts over; a one-token prompt is a single step-sized pass.
      await checkSteps(decoder, [7], randomIds(rng, 3), false, 'base');
    } finally {
      decoder.destroy();
    }
    // Chunks of 9 over a full context: the last chunk (5 positions at 27) runs in an 8-row pass that overhangs the
    // context, so its padding rows have no position at all.
    const odd = await Gpt2Decoder.create(gpu, model, { prefillChunk: 9 });
    try {
      await checkSteps(odd, randomIds(new Rng(5), maxT), [], false, 'base');
    } finally {
      odd.destroy();
    }
  });

  it('with the LoRA adapter: every step equals the reference; off equals the base model exactly', async () => {
    const withAdapter = await Gpt2Decoder.create(gpu, model, { adapter });
    const base = await Gpt2Decoder.create(gpu, model);
    try {
      const rng = new Rng(2);
      const prompt = randomIds(rng, 21);
      const feed = randomIds(rng, maxT - 21);
      const on = await checkSteps(withAdapter, prompt, feed, true, 'lora');
      expect(withAdapter.usingAdapter).toBe(true);
      const off = await checkSteps(withAdapter, prompt, feed, false, 'lora off');
      const plain = await checkSteps(base, prompt, feed, false, 'base');
      for (let k = 0; k < on.length; k++) {
        expect(off[k]).toEqual(plain[k]);
        expect(maxError(on[k], off[k])).toBeGreaterThan(0.05); // the adapter really changes the answer
      }

      // The GPU's own full-sequence forward (inference run, adapter applied) agrees with the last step too.
      const run = await Gpt2Run.create(gpu, model, { batchSize: 1, sequenceLength: maxT, mode: { kind: 'inference' }, keepLogits: true, adapter });
      try {
        run.setBatch({ ids: [...prompt, ...feed] });
        await run.step();
        const full = await run.readLogits();
        expectClose(on[on.length - 1], full.subarray((maxT - 1) * V), LOGITS, 'decode vs Gpt2Run');
        measured['lora vs Gpt2Run'] = maxError(on[on.length - 1], full.subarray((maxT - 1) * V));
      } finally {
        run.destroy();
      }
    } finally {
      withAdapter.destroy();
      base.destroy();
    }
  });

  it('two sequences side by side (B = 2), adapter on', async () => {
    const decoder = await Gpt2Decoder.create(gpu, model, { adapter, batchSize: 2, prefillChunk: 4 });
    try {
      const rng = new Rng(3);
      const rows = [randomIds(rng, 6), randomIds(rng, 6)];
      let logits = await decoder.prefill([...rows[0], ...rows[1]]);
      for (let k = 0; k < 4; k++) {
        const expected = referenceLastLogits([...rows[0], ...rows[1]], 2, true);
        expectClose(logits, expected, LOGITS, `B=2 after ${rows[0].length} tokens`);
        measured['lora B=2'] = Math.max(measured['lora B=2'] ?? 0, maxError(logits, expected));
        const next = [rng.int(256), rng.int(256)];
        rows[0].push(next[0]);
        rows[1].push(next[1]);
        logits = await decoder.step(next);
      }
      await expect(decoder.prefill([1, 2, 3])).rejects.toThrow(/do not make 2 prompts/);
    } finally {
      decoder.destroy();
    }
  });
});

/** Runs a generation and records every streaming call. */
async function generateStreaming(generator: Generator, prompt: string | number[], options: Parameters<Generator['generate']>[1], signal?: AbortSignal) {
  const calls: { token: number; text: string }[] = [];
  const result = await generator.generate(prompt, options, (token, text) => calls.push({ token, text }), signal);
  return { result, calls };
}

/** Streaming calls: one per sampled token, texts growing (each a prefix of the next), the last equal to the result. */
function expectStreamed(calls: { token: number; text: string }[], result: GenerationResult, endOfTextId: number): void {
  const sampled = result.stopReason === 'end-of-text' ? [...result.ids, endOfTextId] : result.ids;
  expect(calls.map((c) => c.token)).toEqual(sampled);
  for (let k = 1; k < calls.length; k++) expect(calls[k].text.startsWith(calls[k - 1].text)).toBe(true);
  expect(calls[calls.length - 1].text).toBe(result.text);
}

describe('Generator', () => {
  let generator: Generator;
  let baseGenerator: Generator;
  const rng = new Rng(4);
  const prompt = randomIds(rng, 9);
  /** Greedy continuation of `prompt` by the float64 reference, re-run over the whole sequence each token. */
  const referenceGreedy = (start: number[], n: number, withLora: boolean) => {
    const sequence = [...start];
    for (let k = 0; k < n; k++) sequence.push(argmaxToken(referenceLastLogits(sequence, 1, withLora)));
    return sequence.slice(start.length);
  };

  beforeAll(async () => {
    // Chunks double whatever the pace (SwiftShader is slow), so the tests below can count submits.
    generator = await Generator.create(gpu, model, { tokenizer, adapter, chunkMs: Infinity });
    baseGenerator = await Generator.create(gpu, model, { tokenizer });
  });
  afterAll(() => {
    generator?.destroy();
    baseGenerator?.destroy();
  });

  it('greedy generation equals the argmax sequence of full forwards, with and without the adapter', async () => {
    const greedy = { temperature: 0, maxNewTokens: 12, stopAtEndOfText: false };
    const { result, calls } = await generateStreaming(generator, prompt, greedy);
    expect(result.ids).toEqual(referenceGreedy(prompt, 12, true));
    expect(result.stopReason).toBe('max-new-tokens');
    expect(result.text).toBe(tokenizer.decode(result.ids));
    expect(result.promptTokens).toBe(9);
    expect(result.tokensPerSecond).toBeGreaterThan(0);
    expectStreamed(calls, result, tokenizer.endOfTextId);

    const off = await generator.generate(prompt, { ...greedy, useAdapter: false });
    expect(off.ids).toEqual(referenceGreedy(prompt, 12, false));
    expect(off.ids).toEqual((await baseGenerator.generate(prompt, greedy)).ids);
    expect(off.ids).not.toEqual(result.ids);
    await expect(baseGenerator.generate(prompt, { ...greedy, useAdapter: true })).rejects.toThrow(/no adapter/);
  });

  it('same seed, same text; another seed, another text', async () => {
    const sample = { temperature: 1, topK: 0, maxNewTokens: 10, stopAtEndOfText: false };
    const first = await generator.generate(prompt, { ...sample, seed: 7 });
    const again = await generator.generate(prompt, { ...sample, seed: 7 });
    const other = await generator.generate(prompt, { ...sample, seed: 8 });
    expect(again.ids).toEqual(first.ids);
    expect(again.text).toBe(first.text);
    expect(other.ids).not.toEqual(first.ids);
  });

  it('a text prompt is encoded as it is; an empty prompt starts from the beginning-of-text token', async () => {
    const greedy = { temperature: 0, maxNewTokens: 4 };
    expect((await generator.generate('Hi there', greedy)).ids).toEqual((await generator.generate(tokenizer.encode('Hi there'), greedy)).ids);
    expect((await generator.generate('', greedy)).ids).toEqual((await generator.generate([config.bosTokenId], greedy)).ids);
  });

  it('stops at the end-of-text token, which is left out of ids and text', async () => {
    const free = await generator.generate(prompt, { temperature: 0, maxNewTokens: 12, stopAtEndOfText: false });
    // Pretend the first token that was not generated before is end-of-text: a tokenizer that says so.
    const k = free.ids.findIndex((id, i) => i >= 2 && !free.ids.slice(0, i).includes(id));
    expect(k).toBeGreaterThan(0);
    const eot = free.ids[k];
    const special = Tokenizer.fromJson(byteLevelTokenizerJson(), { endOfText: byteToCharTable()[eot] });
    expect(special.endOfTextId).toBe(eot);
    const stopping = await Generator.create(gpu, model, { tokenizer: special, adapter });
    try {
      const { result, calls } = await generateStreaming(stopping, prompt, { temperature: 0, maxNewTokens: 12 });
      expect(result.stopReason).toBe('end-of-text');
      expect(result.ids).toEqual(free.ids.slice(0, k));
      expect(result.text).toBe(special.decode(free.ids.slice(0, k)));
      expectStreamed(calls, result, eot);
    } finally {
      stopping.destroy();
    }
  });

  it('stops at a stop string, cutting the text before it and never streaming any of it', async () => {
    const greedy = { temperature: 0, maxNewTokens: 20, stopAtEndOfText: false };
    const free = await generator.generate(prompt, greedy);
    // A two-character stop string from the middle of the output, made of whole characters.
    const text = free.text;
    let at = -1;
    for (let i = 2; i + 2 <= text.length && at < 0; i++) {
      const candidate = text.slice(i, i + 2);
      if (!candidate.includes('\uFFFD') && text.indexOf(candidate) === i) at = i;
    }
    expect(at).toBeGreaterThan(0);
    const stop = text.slice(at, at + 2);
    const k = free.ids.findIndex((_, i) => tokenizer.decode(free.ids.slice(0, i + 1)).includes(stop)) + 1;
    const { result, calls } = await generateStreaming(generator, prompt, { ...greedy, stopStrings: ['never here', stop] });
    expect(result.stopReason).toBe('stop-string');
    expect(result.ids).toEqual(free.ids.slice(0, k));
    expect(result.text).toBe(text.slice(0, at));
    expectStreamed(calls, result, tokenizer.endOfTextId);
    for (const c of calls) expect(c.text.includes(stop)).toBe(false);
  });

  it('stops at maxNewTokens, and at the context limit with its own reason', async () => {
    const max = await generator.generate(prompt, { maxNewTokens: 5, stopAtEndOfText: false, seed: 3 });
    expect(max.stopReason).toBe('max-new-tokens');
    expect(max.ids).toHaveLength(5);

    const long = randomIds(rng, 28);
    const full = await generator.generate(long, { maxNewTokens: 64, stopAtEndOfText: false, temperature: 0 });
    expect(full.stopReason).toBe('context-full');
    // Positions 28..31 are fed back; the token predicted from position 31 is the last.
    expect(full.ids).toEqual(referenceGreedy(long, maxT - 28 + 1, true));
    const exactlyFull = await generator.generate(randomIds(rng, maxT), { maxNewTokens: 64, stopAtEndOfText: false });
    expect(exactlyFull.stopReason).toBe('context-full');
    expect(exactlyFull.ids).toHaveLength(1);
    const tooLong = generator.generate(randomIds(rng, maxT + 1), {});
    await expect(tooLong).rejects.toThrow(TunelabError);
    await expect(tooLong).rejects.toThrow(/at most 32/);
    await expect(generator.generate([300], {})).rejects.toThrow(/outside the vocabulary/);
  });

  it('an AbortSignal stops between tokens and keeps what was generated', async () => {
    const controller = new AbortController();
    const calls: number[] = [];
    const result = await generator.generate(prompt, { maxNewTokens: 20, stopAtEndOfText: false }, (token) => {
      calls.push(token);
      if (calls.length === 3) controller.abort();
    }, controller.signal);
    expect(result.stopReason).toBe('aborted');
    expect(result.ids).toEqual(calls);
    expect(result.ids).toHaveLength(3);
    const before = await generator.generate(prompt, {}, undefined, controller.signal);
    expect(before).toMatchObject({ stopReason: 'aborted', ids: [], text: '' });
  });

  it('binds once: a generation creates no bind group or pipeline, and submits once per token', async () => {
    // Top-p over the whole vocabulary (top-k 0) is the CPU sampler's: the logits come back for every token.
    const options = { maxNewTokens: 7, stopAtEndOfText: false, seed: 1, topK: 0, topP: 0.9 };
    await generator.generate(prompt, options); // the prompt's pass size is bound by now
    const prepare = vi.spyOn(gpu, 'prepare');
    const pipeline = vi.spyOn(gpu, 'pipeline');
    const submit = vi.spyOn(gpu, 'submit');
    const createBindGroup = vi.spyOn(gpu.device, 'createBindGroup');
    try {
      const result = await generator.generate(prompt, options);
      expect(prepare).not.toHaveBeenCalled();
      expect(pipeline).not.toHaveBeenCalled();
      expect(createBindGroup).not.toHaveBeenCalled();
      // The prompt (9 ≤ the prefill chunk) is one submit and yields the first token; each later token is one more.
      expect(submit).toHaveBeenCalledTimes(result.ids.length);
    } finally {
      vi.restoreAllMocks();
    }
  });

  it('greedy decoding chooses its tokens on the GPU, 2, 4, 8 … per submit, and stops mid-chunk', async () => {
    expect(generator.decoder.greedyOnGpu).toBe(true);
    const greedy = { temperature: 0, maxNewTokens: 12, stopAtEndOfText: false };
    await generator.generate(prompt, greedy);
    const submit = vi.spyOn(gpu, 'submit');
    try {
      const result = await generator.generate(prompt, greedy);
      expect(result.ids).toEqual(referenceGreedy(prompt, 12, true));
      // The prefill gives token 1; then chunks of 2, 4 and the 5 left.
      expect(submit).toHaveBeenCalledTimes(4);
    } finally {
      vi.restoreAllMocks();
    }
    // An abort seen while a chunk's tokens stream stops right there, as between single steps.
    const controller = new AbortController();
    const calls: number[] = [];
    const aborted = await generator.generate(prompt, { ...greedy, maxNewTokens: 30 }, (token) => {
      calls.push(token);
      if (calls.length === 5) controller.abort();
    }, controller.signal);
    expect(aborted.stopReason).toBe('aborted');
    expect(aborted.ids).toEqual(referenceGreedy(prompt, 5, true));
    // A stop string inside a chunk ends the text there; the chunk's later tokens are dropped.
    const full = await generator.generate(prompt, greedy);
    const stopAt = tokenizer.decode(full.ids.slice(4, 5));
    const stopped = await generator.generate(prompt, { ...greedy, stopStrings: [stopAt] });
    expect(stopped.stopReason).toBe('stop-string');
    expect(full.text.startsWith(stopped.text)).toBe(true);
    expect(stopped.ids.length).toBeLessThan(12);
  });

  it('sampling with the playground settings draws on the GPU in chunks: reproducible, seed-dependent, in the nucleus', async () => {
    const sample = { temperature: 0.7, topK: 50, topP: 0.95, repetitionPenalty: 1.1, maxNewTokens: 15, stopAtEndOfText: false };
    await generator.generate(prompt, { ...sample, seed: 5 }); // binds the sampler
    const submit = vi.spyOn(gpu, 'submit');
    let first: GenerationResult;
    try {
      first = await generator.generate(prompt, { ...sample, seed: 5 });
      expect(submit).toHaveBeenCalledTimes(4); // prefill (token 1), then 2, 4 and 8 tokens
    } finally {
      vi.restoreAllMocks();
    }
    expect((await generator.generate(prompt, { ...sample, seed: 5 })).ids).toEqual(first.ids);
    expect((await generator.generate(prompt, { ...sample, seed: 6 })).ids).not.toEqual(first.ids);
    // Every token drawn has a non-zero probability under sampling.ts's distribution over the float64 model's logits
    // (penalty over the context so far), and its tokens outside the nucleus never appear.
    const sequence = [...prompt];
    for (const token of first.ids) {
      const p = nextTokenDistribution(referenceLastLogits(sequence, 1, true), sequence, samplingOptions(sample));
      expect(p[token], `token ${token} after ${sequence.length} tokens`).toBeGreaterThan(0);
      sequence.push(token);
    }
  });

  it('a slow GPU gets smaller chunks; the tokens do not depend on the chunking', async () => {
    expect(nextChunkSize(1, undefined, 150)).toBe(2);
    expect(nextChunkSize(16, 1, 150)).toBe(32); // fast: doubling, capped at 32
    expect(nextChunkSize(32, 0.5, 150)).toBe(32);
    expect(nextChunkSize(8, 20, 150)).toBe(7); // 20 ms a token: 7 tokens a burst
    expect(nextChunkSize(8, 400, 150)).toBe(1);
    const paced = await Generator.create(gpu, model, { tokenizer, adapter, chunkMs: 1e-3 });
    try {
      for (const settings of [{ temperature: 0 }, { temperature: 0.8, topK: 5, topP: 0.9, repetitionPenalty: 1.2, seed: 3 }]) {
        const options = { ...settings, maxNewTokens: 6, stopAtEndOfText: false };
        const submit = vi.spyOn(gpu, 'submit');
        let result: GenerationResult;
        try {
          result = await paced.generate(prompt, options);
          expect(submit).toHaveBeenCalledTimes(5); // prefill, a chunk of 2 (no pace yet), then one token a chunk
        } finally {
          vi.restoreAllMocks();
        }
        expect(result.ids).toEqual((await generator.generate(prompt, options)).ids);
      }
    } finally {
      paced.destroy();
    }
    await expect(Generator.create(gpu, model, { tokenizer, chunkMs: 0 })).rejects.toThrow(/chunkMs/);
  });

  it('a GPU whose compiler refuses the fused kernels still generates: general pass, or CPU sampling', async () => {
    const realPrepare = gpu.prepare.bind(gpu);
    const refuse = (prefix: string) =>
      vi.spyOn(gpu, 'prepare').mockImplementation(((spec: { name: string }, args: never) =>
        spec.name.startsWith(prefix)
          ? Promise.reject(new TunelabError('kernel-compile', `kernel ${spec.name} failed to compile:\nfake`))
          : realPrepare(spec as never, args)) as typeof gpu.prepare);
    const greedy = { temperature: 0, maxNewTokens: 5, stopAtEndOfText: false };
    refuse('decode_linear');
    let fallback: Generator | undefined;
    try {
      fallback = await Generator.create(gpu, model, { tokenizer, adapter });
    } finally {
      vi.restoreAllMocks();
    }
    try {
      expect(fallback.decoder.fastStepUnavailable).toMatch(/did not compile on this GPU \(kernel decode_linear/);
      expect((await fallback.generate(prompt, greedy)).ids).toEqual(referenceGreedy(prompt, 5, true));
    } finally {
      fallback.destroy();
    }

    const sampler = await Generator.create(gpu, model, { tokenizer, adapter, chunkMs: Infinity });
    const sample = { temperature: 0.8, topK: 5, maxNewTokens: 6, stopAtEndOfText: false, seed: 2 };
    refuse('decode_sample');
    const submit = vi.spyOn(gpu, 'submit');
    try {
      const result = await sampler.generate(prompt, sample);
      expect(result.ids).toHaveLength(6);
      expect(submit).toHaveBeenCalledTimes(6); // the prefill, then one step per token after the refused chunk
    } finally {
      vi.restoreAllMocks();
      sampler.destroy();
    }
  });

  it('one generation at a time per generator', async () => {
    const first = generator.generate(prompt, { maxNewTokens: 3 });
    await expect(generator.generate(prompt, {})).rejects.toThrow(/already generating/);
    await first;
  });
});

describe('the fused single-sequence step (ops/decode-step.ts) against the general pass', () => {
  for (const frozenWeights of ['f32', 'f16'] as const) {
    it(`${frozenWeights} weights: logits of every step, and greedy() equals step-by-step argmax`, async () => {
      const packed = frozenWeights === 'f16' ? Gpt2Model.create(gpu, config, parameters, { frozenWeights }) : model;
      const fast = await Gpt2Decoder.create(gpu, packed, { adapter });
      const general = await Gpt2Decoder.create(gpu, packed, { adapter, fastStep: false });
      try {
        expect(fast.fastStepUnavailable).toBeNull();
        expect(general.fastStepUnavailable).toMatch(/turned off/);
        const rng = new Rng(21);
        const prompt = randomIds(rng, 6);
        let a = await fast.prefill(prompt);
        let b = await general.prefill(prompt);
        for (const token of randomIds(rng, 5)) {
          expectClose(a, b, LOGITS, 'fast vs general step');
          a = await fast.step([token]);
          b = await general.step([token]);
        }
        expectClose(a, b, LOGITS, 'fast vs general step');
        // From here both decode greedily to the end of the context: the GPU's choices, then the CPU's argmax.
        let next = argmaxToken(a);
        const expected: number[] = [];
        let token = next;
        while (general.position < maxT) {
          token = argmaxToken(await general.step([token]));
          expected.push(token);
        }
        const chosen = [...(await fast.greedy(next, 3)), ...(await fast.greedy(0, 1))];
        expect(chosen.slice(0, 3)).toEqual(expected.slice(0, 3));
        next = chosen[3];
        expect(fast.position).toBe(prompt.length + 5 + 4);
        await expect(fast.greedy(next, maxT - fast.position + 1)).rejects.toThrow(/overrun the context/);
        await expect(fast.greedy(next, 33)).rejects.toThrow(/count must be 1\.\.32/);
        expect(await fast.greedy(next, maxT - fast.position)).toHaveLength(maxT - prompt.length - 9);
      } finally {
        fast.destroy();
        general.destroy();
        if (packed !== model) packed.destroy();
      }
    });
  }

  it('other shapes and batches keep the general pass, and say why', async () => {
    const two = await Gpt2Decoder.create(gpu, model, { batchSize: 2 });
    try {
      expect(two.fastStepUnavailable).toMatch(/one sequence/);
      expect(two.greedyOnGpu).toBe(false);
      await expect(two.greedy(1, 1)).rejects.toThrow(/more than one sequence/);
    } finally {
      two.destroy();
    }
    const odd = modelConfig({ nLayer: 1, nHead: 3, nEmbd: 36, nPositions: 8, vocabSize: 50, bosTokenId: 49, eosTokenId: 49 });
    const oddModel = Gpt2Model.create(gpu, odd, initGpt2Parameters(odd, 2));
    const decoder = await Gpt2Decoder.create(gpu, oddModel);
    try {
      expect(decoder.fastStepUnavailable).toMatch(/head size 12/);
      // greedy() still works, one step and one argmax per token.
      await decoder.prefill([1, 2, 3]);
      expect(await decoder.greedy(4, 3)).toHaveLength(3);
    } finally {
      decoder.destroy();
      oddModel.destroy();
    }
  });
});

describe('Generator memory', () => {
  it('gives back every byte of the pool after destroy (several pass sizes bound)', async () => {
    const before = gpu.pool.bytesInUse;
    const generator = await Generator.create(gpu, model, { tokenizer, adapter, prefillChunk: 16 });
    expect(gpu.pool.bytesInUse - before).toBeGreaterThanOrEqual(generator.bytes);
    const rng = new Rng(9);
    for (const length of [3, 11, 20]) await generator.generate(randomIds(rng, length), { maxNewTokens: 2 });
    generator.destroy();
    expect(gpu.pool.bytesInUse).toBe(before);
  });
});
