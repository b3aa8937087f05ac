// Text generation with a KV cache on the GPU. `Gpt2Decoder` runs GPT-2 over new positions only: a prefill pass over
// the prompt (in chunks) writes every layer's K and V into a cache, then each generated token is one pass over a
// single position that appends its K/V and attends over everything cached. `Generator` drives it: it samples each
// next token on the CPU (sampling.ts) from the one row of logits read back per token, stops at end-of-text, a stop
// string, a token limit or a full context, and streams the text as it grows. With the fused step, greedy decoding and
// sampling (the same penalty, temperature, top-k and top-p; top-p only after a top-k ≤ 256) instead let the GPU
// choose the tokens, a chunk of them per submit (Gpt2Decoder.greedy / sample), and read back only their ids.
//
// The token step of a single sequence runs on the fused kernels of ops/decode-step.ts (five dispatches per block:
// layernorms, biases, LoRA, GELU and residual adds fused into the linear layers, the KV append into attention), its
// token and position read from a small GPU `stepState` so steps can follow each other without the CPU. Batches,
// and models whose shapes those kernels do not take (fastStepUnavailable says why), step with the general pass.
//
// Letters: B sequences, Tq query rows of a pass (a power of two, the last chunk of a prompt padded up to it), P prompt
// length, maxT the model's context, C width, V vocabulary, NH heads, L layers, R LoRA rank.
//
// Everything is bound once per decoder: activation buffers sized for the largest pass, one cache (2,B,NH,maxT,HS) per
// layer, and a dispatch list per pass size Tq, built the first time that size is needed and kept. A token step
// writes its token id and the pass position (uniforms, via setDecodePosition), records one encoder — a compute pass
// over the blocks, a copy of each sequence's last row, a second pass for ln_f and the tied classifier on those B rows
// only — submits once and maps B·V floats back. No bind group or buffer is created per token.
//
// Position embeddings: the embedding kernel adds wpe[row], so the encoder first copies wpe rows offset.. into a
// small `positions` buffer that stands in for wpe; token id and position of a pass then need no new bindings.
// LoRA: an adapter's dispatches are recorded only when the generation asks for it, so "adapter off" runs exactly the
// base model's kernels (the playground compares the two); dropout is never applied here.

import { TunelabError } from '../errors.ts';
import type { Dispatch, GpuContext, GpuTensor } from '../gpu/context.ts';
import { attentionDecode, kvCacheLength, kvCacheWrite, setDecodePosition, type DecodeShape } from '../ops/decode.ts';
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
  presenceLength,
  sampleUniforms,
  type DecodeEpilogue,
  type GpuSampling,
} from '../ops/decode-step.ts';
import { embeddingForward } from '../ops/embedding.ts';
import { embeddingForwardF16W } from '../ops/embedding-f16.ts';
import { geluForward } from '../ops/gelu.ts';
import { layernormForward } from '../ops/layernorm.ts';
import { loraForward } from '../ops/lora.ts';
import { matmulBackwardInput, matmulForward, type MatmulEpilogue, type MatmulTiles } from '../ops/matmul.ts';
import { matmulBackwardInputF16W, matmulForwardF16W } from '../ops/matmul-f16.ts';
import { residualForward } from '../ops/residual.ts';
import { residualLayernormForward } from '../ops/residual-layernorm.ts';
import type { ModelConfig } from '../model/config.ts';
import type { Gpt2Model } from '../model/gpt2.ts';
import type { LoraAdapter } from '../model/lora.ts';
import { linearShape, type LinearModule } from '../model/weights.ts';
import { Rng } from '../random.ts';
import type { Tokenizer } from '../tokenizer/tokenizer.ts';
import {
  argmaxToken,
  checkStop,
  isGreedy,
  sampleNextToken,
  samplingOptions,
  stopCriteria,
  streamableLength,
  type SamplingOptions,
  type StopDecision,
  type StopReason,
} from './sampling.ts';

// ---- the decoder: GPT-2 over new positions, with a KV cache ------------------------------------------------------

export interface DecoderOptions {
  /** Required to generate with the adapter; applied per call (prefill's useAdapter), without dropout. */
  adapter?: LoraAdapter;
  /** B: sequences decoded side by side, all with prompts of one length (1). */
  batchSize?: number;
  /** Most prompt positions per prefill pass; activation buffers are sized for it (default min(128, context)). */
  prefillChunk?: number;
  /**
   * Token steps of a single sequence on the fused kernels of ops/decode-step.ts, with greedy() available (default:
   * whenever the model fits them). False keeps the general pass, as batches and other models use.
   */
  fastStep?: boolean;
}

/** Most greedy tokens one greedy() call makes in one submit. */
export const MAX_GREEDY_CHUNK = 32;

/** The dispatches of one pass size, bound once. */
interface DecodePass {
  readonly Tq: number;
  /** Every dispatch in recording order, the adapter's included. */
  readonly withAdapter: readonly Dispatch[];
  /** The same list without the adapter's dispatches: the base model. */
  readonly base: readonly Dispatch[];
  /** kv_cache_write and attention_decode of every layer: the dispatches whose position changes per pass. */
  readonly positioned: readonly Dispatch[];
}

const DEFAULT_PREFILL_CHUNK = 128;

/**
 * Matmul row tile for M rows: a token step has B rows, so the default 64-row tile would be almost all padding.
 * Larger passes keep the default tiles (the pipelines training compiles already).
 */
function rowTiles(M: number): Partial<MatmulTiles> {
  return M <= 4 ? { TILE_ROWS: 4 } : {};
}

/** The prefill pass size for a chunk of `count` positions: the next power of two, at most `chunk`. */
function passRows(count: number, chunk: number): number {
  let rows = 1;
  while (rows < count) rows *= 2;
  return Math.min(rows, chunk);
}

/**
 * GPT-2 with a KV cache: prefill(), then step() per token. Each returns the logits (B,V) of every sequence's last
 * position. The model's (and adapter's) weights are bound, not copied: a model or adapter trained after the decoder
 * was made is used as it is at each call.
 */
export class Gpt2Decoder {
  readonly config: ModelConfig;
  readonly B: number;
  /** The model's context: positions the cache holds. */
  readonly maxT: number;
  readonly prefillChunk: number;
  private readonly tensors = new Map<string, GpuTensor>();
  private readonly caches: GpuTensor[] = [];
  private readonly passes = new Map<number, Promise<DecodePass>>();
  /** Passes whose build finished: what destroy() releases. */
  private readonly built: DecodePass[] = [];
  private head: Dispatch[] = [];
  /** Why token steps take the general pass (null: the fused single-sequence step, ops/decode-step.ts). */
  private fastStepWhyNot: string | null;
  /** The fused step's dispatches, base model and with the adapter, bound on first use. */
  private readonly fastPasses = new Map<boolean, Promise<Dispatch[]>>();
  private readonly fastBuilt: Dispatch[][] = [];
  /** decode_sample, bound on the first sample() and re-set per call. */
  private sampler: Promise<Dispatch> | undefined;
  private samplerBuilt: Dispatch | undefined;
  private readback: GPUBuffer | undefined;
  private tokenReadback: GPUBuffer | undefined;
  private cached = 0;
  /** The readback's map while one is in flight. */
  private mapping: Promise<unknown> | undefined;
  private adapterOn = false;
  private destroyed = false;

  private constructor(
    private readonly gpu: GpuContext,
    readonly model: Gpt2Model,
    readonly adapter: LoraAdapter | undefined,
    options: DecoderOptions,
  ) {
    this.config = model.config;
    const { nEmbd: C, vocabSize: V, nPositions } = this.config;
    this.B = options.batchSize ?? 1;
    this.maxT = nPositions;
    this.prefillChunk = options.prefillChunk ?? Math.min(DEFAULT_PREFILL_CHUNK, nPositions);
    if (!Number.isSafeInteger(this.B) || this.B < 1) throw new RangeError(`decoder: batch size must be a positive integer, got ${this.B}`);
    if (!Number.isSafeInteger(this.prefillChunk) || this.prefillChunk < 1 || this.prefillChunk > nPositions) {
      throw new RangeError(`decoder: prefillChunk must be 1..${nPositions} (the context), got ${this.prefillChunk}`);
    }
    if (adapter) {
      const a = adapter.model;
      if (a.nLayer !== this.config.nLayer || a.nEmbd !== C || a.nHead !== this.config.nHead || a.vocabSize !== V) {
        throw new RangeError('decoder: the adapter was made for a different model config');
      }
    }
    this.fastStepWhyNot =
      options.fastStep === false
        ? 'turned off (fastStep: false)'
        : this.B !== 1
          ? 'it decodes one sequence at a time'
          : decodeStepSupport(gpu, { C, NH: this.config.nHead, V, maxT: nPositions });
    const rows = this.B * this.prefillChunk;
    const sizes: [string, number][] = [
      ['ids', rows], // u32
      ['positions', this.prefillChunk * C], // wpe rows of the pass
      ['residual', rows * C], // block input, and output (residual3)
      ['residual2', rows * C],
      ['ln', rows * C], // ln_1 and ln_2 outputs
      ['lnMean', rows],
      ['lnRstd', rows],
      ['qkv', rows * 3 * C],
      ['atty', rows * C],
      ['proj', rows * C], // attn.c_proj and mlp.c_proj outputs
      ['fch', rows * 4 * C],
      ['fchGelu', rows * 4 * C],
      ['lastHidden', this.B * C], // each sequence's last row of the final residual
      ['lnf', this.B * C],
      ['lnfMean', this.B],
      ['lnfRstd', this.B],
      ['logits', this.B * V],
    ];
    if (adapter) sizes.push(['loraU', rows * adapter.config.rank]);
    if (this.fastStepUnavailable === null) {
      sizes.push(
        ['stepState', DECODE_STATE_LENGTH],
        ['stepTokens', MAX_GREEDY_CHUNK],
        ['stepBest', 2 * decodeHeadGroups(V)],
        ['stepPresence', presenceLength(V)],
      );
    }
    const maxBinding = gpu.device.limits.maxStorageBufferBindingSize;
    const cacheLength = kvCacheLength({ B: this.B, C, maxT: this.maxT });
    for (const [name, length] of [...sizes, ['cache', cacheLength] as [string, number]]) {
      if (length * 4 > maxBinding) {
        throw new TunelabError(
          'too-large',
          `generation: ${name} needs ${length * 4} bytes, more than this GPU's largest binding (${maxBinding} bytes); ` +
            `use a smaller prefill chunk or batch`,
        );
      }
    }
    try {
      for (const [name, length] of sizes) this.tensors.set(name, gpu.tensor(length, `decode.${name}`));
      for (let l = 0; l < this.config.nLayer; l++) this.caches.push(gpu.tensor(cacheLength, `decode.kv.${l}`));
      this.readback = gpu.pool.acquire(this.B * V * 4, GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST, 'decode.readback');
      if (this.fastStepUnavailable === null) {
        this.tokenReadback = gpu.pool.acquire(MAX_GREEDY_CHUNK * 4, GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST, 'decode.tokens');
      }
    } catch (error) {
      this.destroy();
      throw error;
    }
  }

  /** Allocates the decoder's buffers and binds the step pass and the classifier head. */
  static async create(gpu: GpuContext, model: Gpt2Model, options: DecoderOptions = {}): Promise<Gpt2Decoder> {
    const decoder = new Gpt2Decoder(gpu, model, options.adapter, options);
    try {
      decoder.head = await decoder.buildHead();
      if (decoder.fastStepUnavailable === null) {
        try {
          await decoder.fastPass(options.adapter !== undefined);
        } catch (error) {
          // A browser whose WGSL compiler refuses the fused kernels still generates, on the general pass.
          if (!(error instanceof TunelabError && error.code === 'kernel-compile')) throw error;
          decoder.fastStepWhyNot = `its kernels did not compile on this GPU (${error.message.split('\n')[0]})`;
        }
      }
      if (decoder.fastStepUnavailable !== null) await decoder.pass(1);
    } catch (error) {
      decoder.destroy();
      throw error;
    }
    return decoder;
  }

  /** Why token steps take the general pass (null: the fused single-sequence step, ops/decode-step.ts). */
  get fastStepUnavailable(): string | null {
    return this.fastStepWhyNot;
  }

  /** Positions cached per sequence: the prompt and the tokens stepped so far. */
  get position(): number {
    return this.cached;
  }

  /** Whether the cached sequence was computed with the adapter. */
  get usingAdapter(): boolean {
    return this.adapterOn;
  }

  /** Bytes of the decoder's buffers: activations, caches and readback (not the dispatches' small uniforms). */
  get bytes(): number {
    let sum = (this.readback?.size ?? 0) + (this.tokenReadback?.size ?? 0);
    for (const t of [...this.tensors.values(), ...this.caches]) sum += t.buffer.size;
    return sum;
  }

  private t(name: string): GpuTensor {
    return this.tensors.get(name)!;
  }

  /** The ln_f + classifier dispatches over the B rows of lastHidden: logits (B,V) = ln_f(x)·wteᵀ. */
  private async buildHead(): Promise<Dispatch[]> {
    const { gpu, B } = this;
    const { nEmbd: C, vocabSize: V, layerNormEpsilon: eps } = this.config;
    const head: Dispatch[] = [];
    try {
      head.push(
        await layernormForward(
          gpu,
          {
            out: this.t('lnf'),
            mean: this.t('lnfMean'),
            rstd: this.t('lnfRstd'),
            inp: this.t('lastHidden'),
            weight: this.model.tensor('ln_f.weight'),
            bias: this.model.tensor('ln_f.bias'),
          },
          { N: B, C, eps },
        ),
      );
      // logits (B,V) = lnf (B,C) · wteᵀ: the "backward input" layout with wte (V,C) as the (K=V, N=C) weight, read
      // packed when the model keeps a frozen wte as f16 (same tiles: the f16 kernel plans them as the f32 one does).
      const logits = { dinp: this.t('logits'), dout: this.t('lnf') };
      const packedWte = this.model.f16Weight('wte.weight');
      const options = { tiles: rowTiles(B) };
      head.push(
        packedWte
          ? await matmulBackwardInputF16W(gpu, { ...logits, weight: packedWte }, { M: B, N: C, K: V }, options)
          : await matmulBackwardInput(gpu, { ...logits, weight: this.model.tensor('wte.weight') }, { M: B, N: C, K: V }, options),
      );
    } catch (error) {
      for (const d of head) d.release();
      throw error;
    }
    return head;
  }

  /** The pass of Tq rows per sequence, bound on first use and kept. */
  private pass(Tq: number): Promise<DecodePass> {
    let pass = this.passes.get(Tq);
    if (!pass) {
      pass = this.buildPass(Tq).then((built) => {
        // A pass still being built when the decoder is destroyed gives its uniforms back as soon as it exists.
        if (this.destroyed) built.withAdapter.forEach((d) => d.release());
        else this.built.push(built);
        return built;
      });
      this.passes.set(Tq, pass);
      pass.catch(() => this.passes.delete(Tq));
    }
    return pass;
  }

  /**
   * The blocks over Tq new positions per sequence: embedding, block 0's ln_1; per layer c_attn (+LoRA), K/V into the
   * cache, attention over the cache, attn.c_proj (+LoRA), residual + ln_2 (one dispatch), c_fc (+LoRA) with its GELU
   * (fused into the matmul unless LoRA adapts c_fc), mlp.c_proj (+LoRA), residual + the next block's ln_1 (one
   * dispatch; the last block's residual alone). The final residual stream is left in `residual` (B·Tq, C).
   */
  private async buildPass(Tq: number): Promise<DecodePass> {
    const { gpu, B, config, adapter } = this;
    const { nEmbd: C, nHead: NH, vocabSize: V, layerNormEpsilon: eps } = config;
    const M = B * Tq;
    const shape: DecodeShape = { B, Tq, C, NH, maxT: this.maxT };
    const all: Dispatch[] = [];
    const fromAdapter = new Set<Dispatch>();
    const positioned: Dispatch[] = [];
    const tiles = rowTiles(M);
    const t = (name: string) => this.t(name);
    const sites = new Map(adapter?.sites.map((site) => [`${site.layer}.${site.module}`, site]) ?? []);

    /**
     * out (M,N) = inp·W + b, then the adapter's scale·(inp·Aᵀ)·Bᵀ when the module is adapted; with `activated`, also
     * activated = gelu(out), fused into the matmul's store unless the adapter adds to out after it.
     */
    const linear = async (l: number, module: LinearModule, inp: GpuTensor, out: GpuTensor, activated?: GpuTensor) => {
      const [K, N] = linearShape(config, module);
      const bias = this.model.tensor(`h.${l}.${module}.bias`);
      const site = sites.get(`${l}.${module}`);
      const epilogue: MatmulEpilogue | undefined = activated && !(site && adapter) ? { kind: 'gelu', activated } : undefined;
      // A model with frozenWeights 'f16' keeps this weight only packed (same tiles: few rows take its rows kernel too).
      const packed = this.model.f16Weight(`h.${l}.${module}.weight`);
      if (packed) all.push(await matmulForwardF16W(gpu, { out, inp, weight: packed, bias, epilogue }, { M, N, K }, tiles));
      else all.push(await matmulForward(gpu, { out, inp, weight: this.model.tensor(`h.${l}.${module}.weight`), bias, epilogue }, { M, N, K }, tiles));
      if (site && adapter) {
        const lora = await loraForward(
          gpu,
          { out, u: t('loraU'), inp, a: adapter.tensor(site, 'A'), b: adapter.tensor(site, 'B') },
          { M, N, K, R: adapter.config.rank },
          { scale: adapter.scale, dropout: 0, seed: 0 },
        );
        for (const d of lora.dispatches) {
          all.push(d);
          fromAdapter.add(d);
        }
        if (activated) all.push(await geluForward(gpu, { out: activated, inp: out }, { n: M * N }));
      }
    };

    try {
      const embedding = { out: t('residual'), ids: t('ids'), wpe: t('positions') };
      const packedWte = this.model.f16Weight('wte.weight'); // a frozen wte kept only as f16 (frozenWeights 'f16')
      if (packedWte) all.push(await embeddingForwardF16W(gpu, { ...embedding, wte: packedWte }, { B, T: Tq, C, V }));
      else all.push(await embeddingForward(gpu, { ...embedding, wte: this.model.tensor('wte.weight') }, { B, T: Tq, C, V }));
      /** ln (M,C) and its statistics, with block l's ln_1 or ln_2. */
      const lnOf = (l: number, ln: 'ln_1' | 'ln_2') => ({
        out: t('ln'),
        mean: t('lnMean'),
        rstd: t('lnRstd'),
        weight: this.model.tensor(`h.${l}.${ln}.weight`),
        bias: this.model.tensor(`h.${l}.${ln}.bias`),
      });
      const lnShape = { N: M, C, eps };
      // Block 0's ln_1 reads the embedding; every later LayerNorm is fused with the residual add that feeds it.
      all.push(await layernormForward(gpu, { ...lnOf(0, 'ln_1'), inp: t('residual') }, lnShape));
      for (let l = 0; l < config.nLayer; l++) {
        await linear(l, 'attn.c_attn', t('ln'), t('qkv'));
        const write = await kvCacheWrite(gpu, { cache: this.caches[l], qkv: t('qkv') }, shape, { count: 1, offset: 0 });
        all.push(write);
        const attend = await attentionDecode(gpu, { out: t('atty'), qkv: t('qkv'), cache: this.caches[l] }, shape, { count: 1, offset: 0 });
        all.push(attend);
        positioned.push(write, attend);
        await linear(l, 'attn.c_proj', t('atty'), t('proj'));
        all.push(await residualLayernormForward(gpu, { residual: t('residual2'), a: t('residual'), b: t('proj'), ...lnOf(l, 'ln_2') }, lnShape));
        await linear(l, 'mlp.c_fc', t('ln'), t('fch'), t('fchGelu'));
        await linear(l, 'mlp.c_proj', t('fchGelu'), t('proj'));
        // residual3 overwrites the block input, which nothing reads any more: the next block's input (and its ln_1;
        // ln_f runs in the head, over the last rows only).
        const residual3 = { residual: t('residual'), a: t('residual2'), b: t('proj') };
        if (l + 1 < config.nLayer) all.push(await residualLayernormForward(gpu, { ...residual3, ...lnOf(l + 1, 'ln_1') }, lnShape));
        else all.push(await residualForward(gpu, { out: residual3.residual, a: residual3.a, b: residual3.b }, M * C));
      }
    } catch (error) {
      for (const d of all) d.release();
      throw error;
    }
    return { Tq, withAdapter: all, base: all.filter((d) => !fromAdapter.has(d)), positioned };
  }

  /** The fused single-sequence step (ops/decode-step.ts), with or without the adapter, bound on first use and kept. */
  private fastPass(withAdapter: boolean): Promise<Dispatch[]> {
    let pass = this.fastPasses.get(withAdapter);
    if (!pass) {
      pass = this.buildFastPass(withAdapter).then((built) => {
        if (this.destroyed) built.forEach((d) => d.release());
        else this.fastBuilt.push(built);
        return built;
      });
      this.fastPasses.set(withAdapter, pass);
      pass.catch(() => this.fastPasses.delete(withAdapter));
    }
    return pass;
  }

  /**
   * One token of one sequence, reading its token and position from stepState: embedding; per block c_attn (ln_1 in
   * front), attention with the KV append, attn.c_proj added into the residual, c_fc (ln_2 in front, GELU behind),
   * mlp.c_proj added into the residual, each with its LoRA pair when adapted; then ln_f + the classifier into
   * `logits`, and the greedy token into stepState / stepTokens.
   */
  private async buildFastPass(withAdapter: boolean): Promise<Dispatch[]> {
    const { gpu, config } = this;
    const adapter = withAdapter ? this.adapter : undefined;
    const { nEmbd: C, nHead: NH, vocabSize: V, layerNormEpsilon: eps } = config;
    const t = (name: string) => this.t(name);
    const m = (name: string) => this.model.tensor(name);
    const sites = new Map(adapter?.sites.map((site) => [`${site.layer}.${site.module}`, site]) ?? []);
    const all: Dispatch[] = [];
    try {
      const wte = this.model.f16Weight('wte.weight') ?? m('wte.weight');
      const state = t('stepState');
      all.push(await decodeEmbed(gpu, { state, wte, wpe: m('wpe.weight'), out: t('residual') }, { C, V, maxT: this.maxT }));
      for (let l = 0; l < config.nLayer; l++) {
        const linear = async (module: LinearModule, x: GpuTensor, out: GpuTensor, epilogue: DecodeEpilogue, ln?: 'ln_1' | 'ln_2') => {
          const [K, N] = linearShape(config, module);
          const name = `h.${l}.${module}`;
          const site = sites.get(`${l}.${module}`);
          return decodeLinear(
            gpu,
            {
              x,
              weight: this.model.f16Weight(`${name}.weight`) ?? m(`${name}.weight`),
              bias: m(`${name}.bias`),
              out,
              ln: ln ? { weight: m(`h.${l}.${ln}.weight`), bias: m(`h.${l}.${ln}.bias`), eps } : undefined,
              lora:
                site && adapter
                  ? { a: adapter.tensor(site, 'A'), b: adapter.tensor(site, 'B'), rank: adapter.config.rank, scale: adapter.scale }
                  : undefined,
            },
            { K, N },
            epilogue,
          );
        };
        all.push(await linear('attn.c_attn', t('residual'), t('qkv'), 'store', 'ln_1'));
        all.push(await decodeAttention(gpu, { state, qkv: t('qkv'), cache: this.caches[l], out: t('atty') }, { C, NH, maxT: this.maxT }));
        all.push(await linear('attn.c_proj', t('atty'), t('residual'), 'add'));
        all.push(await linear('mlp.c_fc', t('residual'), t('fch'), 'gelu', 'ln_2'));
        all.push(await linear('mlp.c_proj', t('fch'), t('residual'), 'add'));
      }
      all.push(
        await decodeHead(
          gpu,
          { x: t('residual'), wte, lnWeight: m('ln_f.weight'), lnBias: m('ln_f.bias'), logits: t('logits'), best: t('stepBest') },
          { V, C, eps },
        ),
      );
      all.push(await decodeSelect(gpu, { best: t('stepBest'), state, tokens: t('stepTokens') }, { groups: decodeHeadGroups(V) }));
    } catch (error) {
      for (const d of all) d.release();
      throw error;
    }
    return all;
  }

  private checkUsable(): void {
    if (this.destroyed) throw new Error('this decoder was destroyed');
  }

  private checkIds(ids: ArrayLike<number>, what: string): void {
    const V = this.config.vocabSize;
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i];
      if (!(Number.isInteger(id) && id >= 0 && id < V)) {
        throw new TunelabError('bad-data', `${what}: token id ${id} at ${i} is outside the vocabulary (0..${V - 1})`);
      }
    }
  }

  /**
   * Runs one pass: `count` real rows per sequence at positions offset.., ids (B,Tq) already laid out. With `last`,
   * the same encoder then copies each sequence's row count−1 to lastHidden, runs the head in a second compute pass
   * and copies the logits into the readback buffer. One submit.
   */
  private run(pass: DecodePass, ids: Uint32Array, count: number, offset: number, last: boolean): void {
    const { gpu, B } = this;
    const C = this.config.nEmbd;
    const Tq = pass.Tq;
    setDecodePosition(pass.positioned, { B, Tq, C, NH: this.config.nHead, maxT: this.maxT }, { count, offset });
    gpu.writeU32(this.t('ids'), ids);
    const wpe = this.model.tensor('wpe.weight');
    const positions = this.t('positions');
    const residual = this.t('residual');
    const lastHidden = this.t('lastHidden');
    const logits = this.t('logits');
    const rowBytes = C * 4;
    // Padding rows past the context get no position row (their outputs are never used).
    const positionRows = Math.min(Tq, this.maxT - offset);
    gpu.submit([this.adapterOn ? pass.withAdapter : pass.base], 'decode', {
      before: (encoder) => {
        encoder.copyBufferToBuffer(wpe.buffer, wpe.offset + offset * rowBytes, positions.buffer, positions.offset, positionRows * rowBytes);
      },
      after: last
        ? (encoder) => {
            for (let b = 0; b < B; b++) {
              const row = b * Tq + count - 1;
              const from = residual.offset + row * rowBytes;
              encoder.copyBufferToBuffer(residual.buffer, from, lastHidden.buffer, lastHidden.offset + b * rowBytes, rowBytes);
            }
            const head = encoder.beginComputePass({ label: 'decode.head' });
            for (const d of this.head) {
              head.setPipeline(d.pipeline);
              head.setBindGroup(0, d.bindGroup);
              head.dispatchWorkgroups(...d.workgroups);
            }
            head.end();
            encoder.copyBufferToBuffer(logits.buffer, logits.offset, this.readback!, 0, logits.length * 4);
          }
        : undefined,
    });
  }

  /** A copy of the first `bytes` of a readback buffer, once the submitted work that fills it is done. */
  private async readBack(buffer: GPUBuffer, bytes: number): Promise<ArrayBuffer> {
    const mapped = buffer.mapAsync(GPUMapMode.READ, 0, bytes);
    this.mapping = mapped.catch(() => undefined);
    try {
      await mapped;
    } finally {
      this.mapping = undefined;
    }
    if (this.destroyed) {
      buffer.unmap();
      throw new Error('the decoder was destroyed during generation');
    }
    const copy = buffer.getMappedRange(0, bytes).slice(0);
    buffer.unmap();
    return copy;
  }

  private async readLogits(): Promise<Float32Array> {
    return new Float32Array(await this.readBack(this.readback!, this.B * this.config.vocabSize * 4));
  }

  /**
   * Starts new sequences: ids (B,P) row-major, 1 ≤ P ≤ maxT, cached in chunks of at most prefillChunk positions.
   * Returns the logits (B,V) that predict position P. `useAdapter` (default: when the decoder has one) holds for the
   * steps that follow, until the next prefill.
   */
  async prefill(ids: ArrayLike<number>, options: { useAdapter?: boolean } = {}): Promise<Float32Array> {
    this.checkUsable();
    const { B, maxT } = this;
    const P = ids.length / B;
    if (!Number.isInteger(P) || P < 1) throw new RangeError(`prefill: ${ids.length} ids do not make ${B} prompts of one length ≥ 1`);
    if (P > maxT) {
      throw new TunelabError('bad-data', `the prompt has ${P} tokens; this model reads at most ${maxT} (its context). Shorten the prompt.`);
    }
    this.checkIds(ids, 'prompt');
    const useAdapter = options.useAdapter ?? this.adapter !== undefined;
    if (useAdapter && !this.adapter) throw new RangeError('prefill: this decoder has no adapter');
    this.adapterOn = useAdapter;
    this.cached = 0;
    for (let start = 0; start < P; start += this.prefillChunk) {
      const count = Math.min(this.prefillChunk, P - start);
      const pass = await this.pass(passRows(count, this.prefillChunk));
      this.checkUsable();
      const chunk = new Uint32Array(B * pass.Tq); // padding rows read token 0
      for (let b = 0; b < B; b++) {
        for (let i = 0; i < count; i++) chunk[b * pass.Tq + i] = ids[b * P + start + i];
      }
      this.run(pass, chunk, count, start, start + count === P);
      this.cached = start + count;
    }
    return this.readLogits();
  }

  /** Appends one token per sequence (B ids) at the next position; returns the logits (B,V) that predict the next. */
  async step(tokens: ArrayLike<number>): Promise<Float32Array> {
    this.checkUsable();
    if (tokens.length !== this.B) throw new RangeError(`step: ${tokens.length} tokens for ${this.B} sequences`);
    if (this.cached === 0) throw new Error('step: prefill a prompt first');
    if (this.cached >= this.maxT) throw new RangeError(`step: the context of ${this.maxT} positions is full`);
    this.checkIds(tokens, 'step');
    if (this.fastStepUnavailable === null) {
      const pass = await this.fastPass(this.adapterOn);
      this.checkUsable();
      this.gpu.writeU32(this.t('stepState'), [tokens[0], this.cached, 0, 0]);
      const logits = this.t('logits');
      this.gpu.submit(pass, 'decode.step', {
        after: (encoder) => encoder.copyBufferToBuffer(logits.buffer, logits.offset, this.readback!, 0, logits.length * 4),
      });
    } else {
      const pass = await this.pass(1);
      this.checkUsable();
      this.run(pass, Uint32Array.from(tokens), 1, this.cached, true);
    }
    this.cached++;
    return this.readLogits();
  }

  /** Dispatches one token step records with the current adapter setting (the fused pass, or the general one + head). */
  async dispatchesPerToken(): Promise<number> {
    if (this.fastStepUnavailable === null) return (await this.fastPass(this.adapterOn)).length;
    const pass = await this.pass(1);
    return (this.adapterOn ? pass.withAdapter : pass.base).length + this.head.length;
  }

  /** Whether greedy() and sample() run their steps on the GPU in one submit (the fused step: else greedy() steps and
   * reads logits per token, and sample() is unavailable). */
  get greedyOnGpu(): boolean {
    return this.fastStepUnavailable === null;
  }

  /** The checks of a chunk of `count` steps from the next position, feeding `token` first. */
  private checkChunk(token: number, count: number, what: string): void {
    this.checkUsable();
    if (this.B !== 1) throw new RangeError(`${what}: the decoder holds more than one sequence; use step()`);
    if (this.cached === 0) throw new Error(`${what}: prefill a prompt first`);
    if (!Number.isSafeInteger(count) || count < 1 || count > MAX_GREEDY_CHUNK) {
      throw new RangeError(`${what}: count must be 1..${MAX_GREEDY_CHUNK}, got ${count}`);
    }
    if (this.cached + count > this.maxT) {
      throw new RangeError(`${what}: ${count} steps from position ${this.cached} overrun the context of ${this.maxT}`);
    }
    this.checkIds([token], what);
  }

  /** `count` fused steps (`step`: the pass with its choosing kernel last) in one submit; the tokens chosen. */
  private async chooseOnGpu(token: number, count: number, step: readonly Dispatch[], label: string): Promise<number[]> {
    this.gpu.writeU32(this.t('stepState'), [token, this.cached, 0, 0]);
    const tokens = this.t('stepTokens');
    const readback = this.tokenReadback!;
    this.gpu.submit(Array.from({ length: count }, () => step), label, {
      after: (encoder) => encoder.copyBufferToBuffer(tokens.buffer, tokens.offset, readback, 0, count * 4),
    });
    this.cached += count;
    return Array.from(new Uint32Array(await this.readBack(readback, count * 4)));
  }

  /**
   * Greedy decoding of one sequence: feeds `token` at the next position, then each token chosen (the likeliest,
   * the lowest id on ties), `count` times (1..MAX_GREEDY_CHUNK, within the context), and returns the `count` tokens
   * chosen. The last one is not fed: pass it to the next step(), greedy() or sample(). With the fused step all of it
   * is one submit and one small readback; otherwise one step() and an argmax per token.
   */
  async greedy(token: number, count: number): Promise<number[]> {
    this.checkChunk(token, count, 'greedy');
    if (this.fastStepUnavailable !== null) {
      const chosen: number[] = [];
      let next = token;
      for (let i = 0; i < count; i++) {
        next = argmaxToken(await this.step([next]));
        chosen.push(next);
      }
      return chosen;
    }
    const pass = await this.fastPass(this.adapterOn);
    this.checkUsable();
    return this.chooseOnGpu(token, count, pass, 'decode.greedy');
  }

  /**
   * As greedy(), but each token is drawn on the GPU as sampling.ts draws it (ops/decode-step.ts decodeSample:
   * repetition penalty over `context` and the tokens drawn since, temperature, top-k, top-p; Gumbel-max from a hash
   * of the seed and the position): the same seed, prompt and model give the same tokens. `context` is every token
   * so far, `token` included. Needs the fused step (greedyOnGpu) and settings gpuSamplingUnsupported accepts.
   */
  async sample(token: number, count: number, sampling: GpuSampling, context: ArrayLike<number> = [token]): Promise<number[]> {
    this.checkChunk(token, count, 'sample');
    if (this.fastStepUnavailable !== null) throw new Error(`sample: the fused step is unavailable (${this.fastStepUnavailable})`);
    const V = this.config.vocabSize;
    const uniforms = sampleUniforms(V, sampling);
    const pass = await this.fastPass(this.adapterOn);
    const t = (name: string) => this.t(name);
    this.sampler ??= decodeSample(this.gpu, { logits: t('logits'), state: t('stepState'), tokens: t('stepTokens'), presence: t('stepPresence') }, V, sampling).then(
      (d) => {
        if (this.destroyed) d.release();
        else this.samplerBuilt = d;
        return d;
      },
    );
    const sampler = await this.sampler;
    this.checkUsable();
    sampler.setUniforms(uniforms);
    this.gpu.writeU32(t('stepPresence'), presenceBits(V, context));
    // The fused pass ends with its greedy choice; the draw takes its place.
    return this.chooseOnGpu(token, count, [...pass.slice(0, -1), sampler], 'decode.sample');
  }

  /** Gives every buffer and uniform back to the pool. The model and adapter are not touched. */
  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    for (const d of this.head) d.release();
    this.head = [];
    for (const pass of this.built) pass.withAdapter.forEach((d) => d.release());
    this.built.length = 0;
    this.passes.clear();
    for (const pass of this.fastBuilt) pass.forEach((d) => d.release());
    this.fastBuilt.length = 0;
    this.fastPasses.clear();
    this.samplerBuilt?.release();
    this.samplerBuilt = undefined;
    this.sampler = undefined;
    for (const t of [...this.tensors.values(), ...this.caches]) this.gpu.free(t);
    this.tensors.clear();
    this.caches.length = 0;
    const tokenReadback = this.tokenReadback;
    this.tokenReadback = undefined;
    const readback = this.readback;
    this.readback = undefined;
    // A readback still being mapped goes back once its map settles; the pool may hand it out again only then.
    for (const buffer of [readback, tokenReadback]) {
      if (!buffer) continue;
      if (this.mapping) {
        void this.mapping.then(() => {
          if (buffer.mapState === 'mapped') buffer.unmap();
          this.gpu.pool.release(buffer);
        });
      } else {
        this.gpu.pool.release(buffer);
      }
    }
  }
}

// ---- the generator: sampling, stopping and streaming -------------------------------------------------------------

export interface GenerateOptions extends Partial<SamplingOptions> {
  /** Apply the generator's LoRA adapter (default: when it has one). False gives the base model's answer. */
  useAdapter?: boolean;
}

/** Why a generation ended: sampling.ts's reasons, the model's context being full, or the caller's AbortSignal. */
export type GenerationStopReason = StopReason | 'context-full' | 'aborted';

export interface GenerationResult {
  /** Every new token sampled, except a final end-of-text token (tokens of a stop string stay in). */
  ids: number[];
  /** The new tokens as text, cut before a stop string. */
  text: string;
  stopReason: GenerationStopReason;
  /** New tokens (end-of-text included) per second, prefill included. */
  tokensPerSecond: number;
  promptTokens: number;
  elapsedMs: number;
}

/**
 * Called once per sampled token (end-of-text included) with the text so far: a growing prefix of the output, which
 * holds back a tail that may still become a stop string or an incomplete character. The last call gets the final text.
 */
export type TokenCallback = (token: number, text: string) => void;

export interface GeneratorOptions extends DecoderOptions {
  tokenizer: Tokenizer;
  /**
   * About how long one chunk of GPU-chosen tokens may take (DEFAULT_CHUNK_MS), so that a slow GPU still streams
   * in small bursts; Infinity lets chunks double up to MAX_GREEDY_CHUNK whatever the pace.
   */
  chunkMs?: number;
}

/** Default GeneratorOptions.chunkMs: a burst every ~150 ms reads as steady streaming. */
export const DEFAULT_CHUNK_MS = 150;

/**
 * The next chunk of GPU-chosen tokens: twice the last, at most MAX_GREEDY_CHUNK, and no more than take `targetMs`
 * at the pace measured so far (ms per token; undefined before the first chunk), but at least one.
 */
export function nextChunkSize(previous: number, msPerToken: number | undefined, targetMs: number): number {
  const doubled = Math.min(2 * previous, MAX_GREEDY_CHUNK);
  if (msPerToken === undefined || !(msPerToken > 0)) return doubled;
  return Math.max(1, Math.min(doubled, Math.floor(targetMs / msPerToken)));
}

/** The text of `text` a stream may show now: no possible stop-string start, no unfinished UTF-8 character at the end. */
function streamableText(text: string, stopStrings: readonly string[]): string {
  let shown = text.slice(0, streamableLength(text, stopStrings));
  while (shown.endsWith('\uFFFD')) shown = shown.slice(0, -1);
  return shown;
}

/** Generates text from a GPT-2 (and optionally its LoRA adapter) with a KV cache; one generation at a time. */
export class Generator {
  readonly tokenizer: Tokenizer;
  private busy = false;

  private constructor(
    readonly decoder: Gpt2Decoder,
    tokenizer: Tokenizer,
    private readonly chunkMs: number,
  ) {
    this.tokenizer = tokenizer;
  }

  static async create(gpu: GpuContext, model: Gpt2Model, options: GeneratorOptions): Promise<Generator> {
    if (options.batchSize !== undefined && options.batchSize !== 1) {
      throw new RangeError('Generator decodes one sequence; use Gpt2Decoder for batches');
    }
    const chunkMs = options.chunkMs ?? DEFAULT_CHUNK_MS;
    if (!(chunkMs > 0)) throw new RangeError(`Generator: chunkMs must be positive (Infinity: no limit), got ${chunkMs}`);
    return new Generator(await Gpt2Decoder.create(gpu, model, { ...options, batchSize: 1 }), options.tokenizer, chunkMs);
  }

  get hasAdapter(): boolean {
    return this.decoder.adapter !== undefined;
  }

  /** Bytes the generator holds on the GPU (its decoder's). */
  get bytes(): number {
    return this.decoder.bytes;
  }

  /**
   * Continues `prompt` (text, encoded as it is, or token ids; an empty prompt starts from the model's
   * beginning-of-text token) until end-of-text, a stop string, maxNewTokens or the model's context. Same options and
   * seed, same model: same text.
   */
  async generate(
    prompt: string | ArrayLike<number>,
    options: GenerateOptions = {},
    onToken?: TokenCallback,
    signal?: AbortSignal,
  ): Promise<GenerationResult> {
    if (this.busy) throw new Error('this generator is already generating; wait for it or use another');
    const { useAdapter, ...sampling } = options;
    const settings = samplingOptions(sampling);
    this.busy = true;
    try {
      return await this.run(prompt, settings, useAdapter ?? this.hasAdapter, onToken, signal);
    } finally {
      this.busy = false;
    }
  }

  private async run(
    prompt: string | ArrayLike<number>,
    options: SamplingOptions,
    useAdapter: boolean,
    onToken: TokenCallback | undefined,
    signal: AbortSignal | undefined,
  ): Promise<GenerationResult> {
    const started = performance.now();
    const { decoder, tokenizer } = this;
    let promptIds = typeof prompt === 'string' ? tokenizer.encode(prompt) : Array.from(prompt);
    if (promptIds.length === 0) promptIds = [decoder.config.bosTokenId];
    const criteria = stopCriteria(options, tokenizer.endOfTextId);
    const rng = new Rng(options.seed);
    const context = [...promptIds];
    const ids: number[] = [];
    let sampled = 0;
    let text = '';
    const finish = (stopReason: GenerationStopReason, finalText: string): GenerationResult => {
      const elapsedMs = performance.now() - started;
      return {
        ids,
        text: finalText,
        stopReason,
        tokensPerSecond: elapsedMs > 0 ? (sampled * 1000) / elapsedMs : 0,
        promptTokens: promptIds.length,
        elapsedMs,
      };
    };
    if (signal?.aborted) return finish('aborted', '');

    // With the fused step, greedy decoding (without a repetition penalty) and sampling (top-p only after a top-k of at
    // most 256) choose their tokens on the GPU in chunks (decoder.greedy / sample: one submit, a few bytes read back), 2, 4, … up to
    // MAX_GREEDY_CHUNK tokens (fewer when the GPU is slow: nextChunkSize), so the first words stream at once and the
    // rest at full speed. Tokens a chunk makes past a stop are dropped (the next generation prefills anew); the tokens
    // do not depend on the chunking (greedy choices, and draws seeded by position). Otherwise the logits come back
    // for every token.
    const greedy = isGreedy(options);
    let chunked = decoder.greedyOnGpu && (greedy ? options.repetitionPenalty === 1 : gpuSamplingUnsupported(options) === null);
    let chunk = 1;
    let msPerToken: number | undefined;
    const logits = await decoder.prefill(promptIds, { useAdapter });
    // Each token with the cache's length once it was chosen: the prompt, then one more per token fed before it.
    let pending = [{ token: sampleNextToken(logits, context, options, rng), cached: decoder.position }];
    for (;;) {
      for (const { token, cached } of pending) {
        sampled++;
        context.push(token);
        if (token !== criteria.endOfTextId) {
          ids.push(token);
          text = tokenizer.decode(ids);
        }
        let stop: StopDecision | { reason: 'context-full'; text: string } | null = checkStop(
          { lastToken: token, newTokenCount: sampled, text },
          criteria,
        );
        // The cache holds maxT positions: a token sampled after the last of them cannot be fed back.
        if (!stop && cached >= decoder.maxT) stop = { reason: 'context-full', text };
        onToken?.(token, stop ? stop.text : streamableText(text, options.stopStrings));
        if (stop) return finish(stop.reason, stop.text);
        if (signal?.aborted) return finish('aborted', text);
      }
      const last = context[context.length - 1];
      const from = decoder.position;
      if (chunked) {
        chunk = Math.min(nextChunkSize(chunk, msPerToken, this.chunkMs), decoder.maxT - from, criteria.maxNewTokens - sampled);
        const begin = performance.now();
        let tokens: number[] | undefined;
        try {
          tokens = greedy ? await decoder.greedy(last, chunk) : await decoder.sample(last, chunk, options, context);
        } catch (error) {
          // decode_sample refused by this GPU's compiler (before anything ran): sample on the CPU from here on.
          if (!(error instanceof TunelabError && error.code === 'kernel-compile')) throw error;
          chunked = false;
        }
        if (tokens) {
          msPerToken = (performance.now() - begin) / chunk;
          pending = tokens.map((token, i) => ({ token, cached: from + i + 1 }));
          continue;
        }
      }
      const next = await decoder.step([last]);
      pending = [{ token: sampleNextToken(next, context, options, rng), cached: decoder.position }];
    }
  }

  destroy(): void {
    this.decoder.destroy();
  }
}

/** A convenience over Generator.create. */
export function createGenerator(gpu: GpuContext, model: Gpt2Model, options: GeneratorOptions): Promise<Generator> {
  return Generator.create(gpu, model, options);
}
