// GPT-2 on the GPU: the model's parameters in flat buffers with named views, and a "run" built once for a batch
// shape and training mode that owns every activation, gradient and prepared dispatch. gpt2Forward is a straight
// list of kernel dispatches in the spirit of llm.c's gpt2_forward; gpt2Backward is the same list reversed. A training
// step is one command encoder, one compute pass, one submit; its metrics come back through a small ring of readback
// buffers a step or two later.
//
// Letters: B batch, T positions, BT = B·T tokens, C width, V vocabulary, NH heads, L layers, R LoRA rank.
// Layouts: activations (BT, C) row-major; Conv1D weights [in, out] so a linear layer is out = inp·W + b; the tied
// classifier is logits = lnf·wteᵀ (BT, V), computed chunk by chunk of tokens so that full logits never exist at once
// in training: each chunk's cross-entropy overwrites its logits with dlogits, and the chunk's classifier backward
// (dlnf, and dwte when wte trains) runs right after it.
//
// The run's buffers and views are planner.ts's planGpt2Run, allocated exactly as planned; a run that breaks a device
// limit is refused by the planner before anything is allocated. WebGPU forbids binding one buffer read-only and
// writable in the same dispatch, so each kind of activation has its own buffer(s) with one view per layer; gradients
// of all trainable tensors share buffers (only written there).

import { TunelabError } from '../errors.ts';
import { type Dispatch, type GpuContext, type GpuTensor } from '../gpu/context.ts';
import { attentionBackward, attentionForward } from '../ops/attention.ts';
import { CROSS_ENTROPY_RESULT, crossEntropyForwardBackward, crossEntropyMetrics } from '../ops/crossentropy.ts';
import { buildTokenSegments, embeddingBackward, embeddingForward, writeTokenSegments, type TokenSegmentTensors } from '../ops/embedding.ts';
import { embeddingForwardF16W } from '../ops/embedding-f16.ts';
import { geluBackward, geluForward } from '../ops/gelu.ts';
import { layernormBackward, layernormForward } from '../ops/layernorm.ts';
import { loraBackward, loraForward, type LoraDispatches } from '../ops/lora.ts';
import {
  matmulBackwardBias,
  matmulBackwardInput,
  matmulBackwardWeight,
  matmulForward,
  matmulForwardSplitK,
  splitKFor,
  type MatmulEpilogue,
} from '../ops/matmul.ts';
import { matmulBackwardInputF16W, matmulForwardF16W, matmulForwardF16WSplitK, packF16, type F16Weights } from '../ops/matmul-f16.ts';
import { residualLayernormForward } from '../ops/residual-layernorm.ts';
import { validateModelConfig, type ModelConfig } from './config.ts';
import { loraScale, type LoraAdapter, type LoraSite } from './lora.ts';
import {
  activationSlot,
  METRICS_SLOT_FLOATS,
  planModelWeights,
  planTraining,
  runPlanRequest,
  type FrozenWeightStorage,
  type Gpt2Mode,
  type Gpt2RunPlan,
  type Gpt2RunShape,
  type RunBufferPlan,
} from './planner.ts';
import {
  gpt2ParameterLayout,
  linearShape,
  parameterView,
  partitionLayout,
  type LinearModule,
  type ParameterLayout,
  type ParameterSet,
} from './weights.ts';

/** The embedding tables' names in weights.ts's layout (Hugging Face's state-dict names). */
const WTE = 'wte.weight';
const WPE = 'wpe.weight';

// ---- the model's parameters on the GPU ---------------------------------------------------------------------------

export interface Gpt2ModelOptions {
  /**
   * 'f32' (default): every weight in f32. 'f16': the Conv1D weights and the tied wte that `training` leaves frozen are
   * kept only as packed f16 (half their memory; the kernels unpack to f32), so the model computes with f16-rounded
   * weights.
   */
  frozenWeights?: FrozenWeightStorage;
  /**
   * The training the model will serve, which decides what 'f16' packs: LoRA or inference (default) freezes wte and
   * every Conv1D weight; selective keeps the last blocks' weights f32 (wte stays frozen); full packs nothing. A run that would train a packed
   * weight is refused.
   */
  training?: Gpt2Mode;
}

/**
 * GPT-2's parameters on the GPU: the f32 tensors in the flat layout of weights.ts cut into buffers ≤ maxBufferSize,
 * one view each, and (frozenWeights 'f16') the frozen Conv1D weights and wte packed in 'params.f16.N' buffers, as planned by
 * planner.ts's planModelWeights.
 */
export class Gpt2Model {
  /** The full parameter layout (every tensor, whatever its storage): what read() returns. */
  readonly layout: ParameterLayout;
  readonly frozenWeights: FrozenWeightStorage;
  /** The layout of the tensors stored in f32 (all of them unless frozenWeights is 'f16'). */
  private readonly f32Layout: ParameterLayout;
  private readonly segments: { tensor: GpuTensor; firstElement: number }[] = [];
  private readonly packedBuffers: GpuTensor[] = [];
  private readonly views = new Map<string, GpuTensor>();
  private readonly packedViews = new Map<string, F16Weights>();

  private constructor(
    private readonly gpu: GpuContext,
    readonly config: ModelConfig,
    weights: ParameterSet,
    options: Gpt2ModelOptions,
  ) {
    validateModelConfig(config);
    this.layout = gpt2ParameterLayout(config);
    this.frozenWeights = options.frozenWeights ?? 'f32';
    if (this.frozenWeights !== 'f32' && this.frozenWeights !== 'f16') {
      throw new RangeError(`frozenWeights must be 'f32' or 'f16', got ${String(this.frozenWeights)}`);
    }
    if (weights.layout.totalElements !== this.layout.totalElements || weights.data.length < this.layout.totalElements) {
      throw new RangeError(`Gpt2Model: the weights' layout (${weights.layout.totalElements} elements) does not match the config`);
    }
    const limits = gpu.device.limits;
    const plan = planModelWeights(config, limits.maxBufferSize, this.frozenWeights, options.training ?? { kind: 'inference' });
    this.f32Layout = plan.f32;
    // Checked before anything is uploaded (partitionLayout checks maxBufferSize the same way).
    const bindings: [string, number][] = [
      ...plan.f32.entries.map((e): [string, number] => [e.name, e.elementCount * 4]),
      ...plan.f16.flatMap((b) => b.views.map((v): [string, number] => [v.name, v.length * 4])),
    ];
    for (const [name, bytes] of bindings) {
      if (bytes > limits.maxStorageBufferBindingSize) {
        throw new TunelabError(
          'too-large',
          `parameter ${name} (${bytes} bytes) exceeds this GPU's largest binding ` +
            `(${limits.maxStorageBufferBindingSize} bytes); choose a smaller model`,
        );
      }
    }
    const segments = partitionLayout(plan.f32, limits.maxBufferSize);
    try {
      // Each tensor is written into its place (tensor() zero-fills the padding), so no f32 copy of the subset is made.
      for (const segment of segments) {
        const tensor = gpu.tensor(segment.elementCount, `params.${this.segments.length}`);
        this.segments.push({ tensor, firstElement: segment.firstElement });
        for (const entry of segment.entries) {
          const at = entry.offset - segment.firstElement;
          gpu.write(tensor, parameterView(weights, entry.name), at);
          this.views.set(entry.name, gpu.view(tensor, at, entry.elementCount, `params.${entry.name}`));
        }
      }
      plan.f16.forEach((planned, i) => {
        const tensor = gpu.tensor(planned.elements, `params.f16.${i}`);
        this.packedBuffers.push(tensor);
        for (const v of planned.views) {
          gpu.writeU32(tensor, packF16(parameterView(weights, v.name), v.N), v.offset);
          this.packedViews.set(v.name, { packed: gpu.view(tensor, v.offset, v.length, `params.f16.${v.name}`), K: v.K, N: v.N });
        }
      });
    } catch (error) {
      this.destroy();
      throw error;
    }
  }

  /**
   * Uploads `weights` (the flat layout of weights.ts for `config`, e.g. from loadModel or initGpt2Parameters);
   * `options.frozenWeights: 'f16'` packs the frozen Conv1D weights (Gpt2ModelOptions).
   */
  static create(gpu: GpuContext, config: ModelConfig, weights: ParameterSet, options: Gpt2ModelOptions = {}): Gpt2Model {
    return new Gpt2Model(gpu, config, weights, options);
  }

  /** The f32 view of one parameter by weights.ts name: 'wte.weight', 'h.0.attn.c_attn.weight', 'ln_f.bias'. */
  tensor(name: string): GpuTensor {
    const view = this.views.get(name);
    if (view) return view;
    if (this.packedViews.has(name)) {
      throw new RangeError(`${name} is stored as packed f16 (frozenWeights 'f16'): read it with f16Weight(), or create the model with 'f32'`);
    }
    throw new RangeError(`GPT-2 has no parameter ${name}`);
  }

  /** The packed f16 weight of a frozen Conv1D layer or of a frozen wte (K = V, N = C), or undefined when `name` is f32. */
  f16Weight(name: string): F16Weights | undefined {
    return this.packedViews.get(name);
  }

  /** Names of the weights stored as packed f16 (none with frozenWeights 'f32'). */
  get packedWeights(): string[] {
    return [...this.packedViews.keys()];
  }

  /**
   * Every parameter read back into the flat layout (after training, for saving). Packed weights hold f16-rounded
   * values, never exact ones: their values come from `frozen` (the CPU weights the model was created from, which a
   * frozen weight still equals); without it a model with packed weights refuses.
   */
  async read(frozen?: ParameterSet): Promise<ParameterSet> {
    if (this.packedViews.size && !frozen) {
      throw new TunelabError(
        'bad-model',
        'this model keeps its frozen weights as f16 (--f16-weights), which are rounded: pass the original weights to read() ' +
          'to save it exactly, or load the model without --f16-weights',
      );
    }
    if (frozen && frozen.layout.totalElements !== this.layout.totalElements) {
      throw new RangeError(`Gpt2Model.read: the frozen weights' layout (${frozen.layout.totalElements} elements) does not match the model`);
    }
    const data = new Float32Array(this.layout.totalElements);
    for (const s of this.segments) {
      const values = await this.gpu.read(s.tensor);
      for (const entry of this.f32Layout.entries) {
        const at = entry.offset - s.firstElement;
        if (at < 0 || at >= s.tensor.length) continue;
        data.set(values.subarray(at, at + entry.elementCount), this.layout.byName.get(entry.name)!.offset);
      }
    }
    for (const name of this.packedViews.keys()) data.set(parameterView(frozen!, name), this.layout.byName.get(name)!.offset);
    return { layout: this.layout, data };
  }

  /** Bytes of every buffer the model holds (f32 segments and packed f16 buffers). */
  get bytes(): number {
    return [...this.segments.map((s) => s.tensor), ...this.packedBuffers].reduce((sum, t) => sum + t.buffer.size, 0);
  }

  destroy(): void {
    for (const s of this.segments) this.gpu.free(s.tensor);
    for (const t of this.packedBuffers) this.gpu.free(t);
    this.segments.length = 0;
    this.packedBuffers.length = 0;
    this.views.clear();
    this.packedViews.clear();
  }
}

// ---- run plan: planner.ts plans every buffer of a run; the run allocates exactly that ------------------------------

export { planGpt2Run, type FrozenWeightStorage, type Gpt2Mode, type Gpt2RunPlan, type Gpt2RunShape, type RunBufferPlan, type RunBufferPurpose } from './planner.ts';

// ---- the run -----------------------------------------------------------------------------------------------------

/** One batch: token ids and, to get a loss, next-token targets and loss weights. */
export interface Gpt2Batch {
  /** (B,T) token ids. */
  ids: ArrayLike<number>;
  /** (B,T) next-token ids; needed for a loss (always in training). Ignored where mask is 0. */
  targets?: ArrayLike<number>;
  /** (B,T) loss weights (1 counts, 0 ignored); all ones when absent and targets are given. */
  mask?: ArrayLike<number>;
  /**
   * The loss is Σ mask·ce / lossDenominator. Default Σ mask of this batch; with gradient accumulation pass Σ mask
   * over all micro-batches of the optimizer step, so their gradients add up to the step's mean.
   */
  lossDenominator?: number;
  /** u32 seed of this step's LoRA dropout masks (change it every step; default 0). */
  dropoutSeed?: number;
}

export interface Gpt2Metrics {
  /** Σ mask·ce / Σ mask of this batch (NaN when the mask is empty). */
  loss: number;
  /** Fraction of counted tokens whose argmax is the target. */
  accuracy: number;
  /** Σ mask. */
  tokens: number;
  lossSum: number;
  correct: number;
}

export interface Gpt2StepMetrics extends Gpt2Metrics {
  /** 1 for the first step submitted by this run. */
  step: number;
  /** The `readback` tensors of step(), concatenated. */
  extra: Float32Array;
}

export interface Gpt2StepOptions {
  /** Clear every gradient before the pass (default true). False accumulates into the previous gradients. */
  zeroGradients?: boolean;
  /** Dispatches recorded after the backward, in the same pass: gradient norm, AdamW updates. */
  after?: readonly Dispatch[];
  /** Small tensors (≤ 60 floats together, e.g. the gradient norm) copied with the metrics into the readback ring. */
  readback?: readonly GpuTensor[];
}

/** A trainable tensor and its gradient, for the optimizer. */
export interface TrainableTensor {
  readonly name: string;
  readonly param: GpuTensor;
  readonly grad: GpuTensor;
}

export interface Gpt2RunOptions extends Gpt2RunShape {
  /** Required for mode lora (its tensors train); optional for inference (applied without dropout). */
  adapter?: LoraAdapter;
}

interface RingSlot {
  buffer: GPUBuffer;
  pending?: Promise<void>;
}

/** A LoRA site's dispatches whose dropout seed changes per step. */
interface SeededSite {
  index: number;
  lora: LoraDispatches;
}

/**
 * A run: activations, gradients and every dispatch, prepared once for (B, T, mode). Per step: setBatch(), then
 * step(). Destroy it to give its buffers back to the pool (the model and adapter stay).
 */
export class Gpt2Run {
  readonly config: ModelConfig;
  readonly B: number;
  readonly T: number;
  readonly mode: Gpt2Mode;
  readonly plan: Gpt2RunPlan;
  private forwardList: Dispatch[] = [];
  private backwardList: Dispatch[] = [];
  private trainableList: TrainableTensor[] = [];

  private readonly buffers: GpuTensor[] = [];
  /** The buffers holding gradients, with their plans: cleared at the start of a step. */
  private readonly gradientBuffers: { tensor: GpuTensor; plan: RunBufferPlan }[] = [];
  private readonly views = new Map<string, GpuTensor>();
  private readonly ring: RingSlot[] = [];
  private readonly completed: Gpt2StepMetrics[] = [];
  private readonly lossScaled: Dispatch[] = [];
  private readonly seeded: SeededSite[] = [];
  private segments?: TokenSegmentTensors;
  private submitted = 0;
  private failure: unknown;
  private destroyed = false;

  private constructor(
    private readonly gpu: GpuContext,
    readonly model: Gpt2Model,
    readonly adapter: LoraAdapter | undefined,
    plan: Gpt2RunPlan,
  ) {
    this.config = model.config;
    this.plan = plan;
    this.B = plan.B;
    this.T = plan.T;
    this.mode = plan.mode;
    for (const planned of plan.buffers) {
      const buffer = gpu.tensor(planned.elements, planned.name);
      this.buffers.push(buffer);
      if (planned.purpose === 'gradients') this.gradientBuffers.push({ tensor: buffer, plan: planned });
      for (const v of planned.views) this.views.set(v.name, gpu.view(buffer, v.offset, v.length, v.name));
    }
    for (let i = 0; i < plan.metricsRing; i++) {
      this.ring.push({
        buffer: gpu.pool.acquire(METRICS_SLOT_FLOATS * 4, GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST, `gpt2.metrics.${i}`),
      });
    }
    if (this.plan.trainable.byName.has(WTE)) this.segments = tokenSegmentViews((name) => this.view(name), this.B * this.T);
  }

  /**
   * Allocates and prepares a run over `model` (and `adapter`). A run that breaks a device limit is refused before
   * anything is allocated, with the memory planner's MemoryRefusal (the buffer, the limit, a setting that fits).
   */
  static async create(gpu: GpuContext, model: Gpt2Model, options: Gpt2RunOptions): Promise<Gpt2Run> {
    if (options.mode.kind === 'lora' && !options.adapter) throw new RangeError('a LoRA run needs an adapter');
    if (options.adapter && options.adapter.model !== model.config && !sameConfig(options.adapter.model, model.config)) {
      throw new RangeError('the adapter was made for a different model config');
    }
    const memory = planTraining(runPlanRequest(model.config, options, gpu.device.limits, options.adapter?.config, model.frozenWeights));
    const packedTrainable = memory.run.trainable.entries.find((e) => model.f16Weight(e.name));
    if (packedTrainable) {
      throw new TunelabError(
        'bad-model',
        `a ${options.mode.kind} run trains ${packedTrainable.name}, which this model keeps as frozen f16: create the model ` +
          `with training: { kind: '${options.mode.kind}' … } (or frozenWeights 'f32') for this mode`,
      );
    }
    const run = new Gpt2Run(gpu, model, options.adapter, memory.run);
    const builder = new RunBuilder(gpu, model, options.adapter, run.plan, (name) => run.view(name));
    try {
      run.forwardList = await gpt2Forward(builder);
      if (run.mode.kind !== 'inference') run.backwardList = await gpt2Backward(builder);
      run.lossScaled.push(...builder.lossScaled);
      run.seeded.push(...builder.seeded);
      run.trainableList = run.plan.trainable.entries.map((e) => ({ name: e.name, param: builder.param(e.name), grad: run.view(e.name) }));
    } catch (error) {
      builder.releaseAll();
      run.forwardList = [];
      run.backwardList = [];
      run.destroy();
      throw error;
    }
    return run;
  }

  /** gpt2Forward: embedding … classifier chunks (with their backward when training) … metrics. */
  get forward(): readonly Dispatch[] {
    return this.forwardList;
  }

  /** gpt2Backward: ln_f … blocks in reverse … embedding; empty for inference. */
  get backward(): readonly Dispatch[] {
    return this.backwardList;
  }

  /** What an optimizer updates (parameter view and gradient view), in gradient layout order; empty for inference. */
  get trainable(): readonly TrainableTensor[] {
    return this.trainableList;
  }

  /** A planned view by name ('h1.qkv', 'lnf', 'grads' views by tensor name …). */
  view(name: string): GpuTensor {
    const view = this.views.get(name);
    if (!view) throw new RangeError(`this run has no tensor ${name}`);
    return view;
  }

  /** The gradient of a trainable tensor (weights.ts or LoRA name). */
  gradient(name: string): GpuTensor {
    if (!this.plan.trainable.byName.has(name)) throw new RangeError(`${name} does not train in this run`);
    return this.view(name);
  }

  /** Bytes of every buffer the run holds (planned buffers and the readback ring; not the dispatches' uniforms). */
  get bytes(): number {
    return this.plan.totalBytes + this.ring.length * METRICS_SLOT_FLOATS * 4;
  }

  /** Queues a batch's inputs and per-step uniforms (loss scale, dropout seeds); call before step(). */
  setBatch(batch: Gpt2Batch): void {
    const BT = this.B * this.T;
    const V = this.config.vocabSize;
    const check = (values: ArrayLike<number> | undefined, what: string) => {
      if (values && values.length !== BT) throw new TunelabError('bad-data', `${what} has ${values.length} values; the run takes B·T = ${BT}`);
    };
    check(batch.ids, 'ids');
    check(batch.targets, 'targets');
    check(batch.mask, 'mask');
    const ids = new Uint32Array(BT);
    for (let i = 0; i < BT; i++) {
      const id = batch.ids[i];
      if (!(Number.isInteger(id) && id >= 0 && id < V)) throw new TunelabError('bad-data', `token id ${id} at ${i} is outside the vocabulary (0..${V - 1})`);
      ids[i] = id;
    }
    if (this.mode.kind !== 'inference' && !batch.targets) throw new TunelabError('bad-data', 'a training batch needs targets');
    const targets = new Uint32Array(BT);
    const mask = new Float32Array(BT);
    let maskSum = 0;
    if (batch.targets) {
      for (let i = 0; i < BT; i++) {
        const weight = batch.mask ? Number(batch.mask[i]) : 1;
        if (!(weight >= 0 && Number.isFinite(weight))) throw new TunelabError('bad-data', `mask value ${weight} at ${i} is not a weight ≥ 0`);
        if (weight === 0) continue;
        const target = batch.targets[i];
        if (!(Number.isInteger(target) && target >= 0 && target < V)) {
          throw new TunelabError('bad-data', `target ${target} at ${i} is outside the vocabulary (0..${V - 1})`);
        }
        targets[i] = target;
        mask[i] = weight;
        maskSum += weight;
      }
    }
    const denominator = batch.lossDenominator ?? maskSum;
    if (!(denominator >= 0 && Number.isFinite(denominator))) throw new RangeError(`lossDenominator must be ≥ 0, got ${denominator}`);
    const dlossScale = denominator > 0 ? 1 / denominator : 0;

    this.gpu.writeU32(this.view('ids'), ids);
    this.gpu.writeU32(this.view('targets'), targets);
    this.gpu.write(this.view('mask'), mask);
    for (const d of this.lossScaled) d.setUniforms({ dlossScale });
    if (this.segments) writeTokenSegments(this.gpu, this.segments, buildTokenSegments(ids, V, BT));
    const seed = (batch.dropoutSeed ?? 0) >>> 0;
    for (const { index, lora } of this.seeded) lora.setSeed(siteSeed(seed, index));
  }

  /**
   * Records and submits one step: clear gradients (training), forward, backward, `after`, then copies the metrics
   * (and `readback`) into the next ring slot. One encoder, one pass, one submit. Waits only when the ring slot is
   * still in flight, i.e. when the CPU is `metricsRing` steps ahead of the GPU.
   */
  async step(options: Gpt2StepOptions = {}): Promise<void> {
    if (this.destroyed) throw new Error('this run was destroyed');
    const slot = this.ring[this.submitted % this.ring.length];
    if (slot.pending) await slot.pending;
    if (this.failure) throw this.failure;
    if (this.gpu.lost) throw new TunelabError('device-lost', 'The GPU device was lost during training');
    const readback = options.readback ?? [];
    const extraFloats = readback.reduce((s, t) => s + t.length, 0);
    if (extraFloats > METRICS_SLOT_FLOATS - CROSS_ENTROPY_RESULT.length) {
      throw new RangeError(`readback of ${extraFloats} floats exceeds ${METRICS_SLOT_FLOATS - CROSS_ENTROPY_RESULT.length}`);
    }

    const metrics = this.view('metrics');
    let at = metrics.length * 4;
    this.gpu.submit([this.forward, this.backward, options.after ?? []], 'gpt2.step', {
      before: (encoder) => {
        if (this.mode.kind !== 'inference' && options.zeroGradients !== false) {
          for (const { tensor } of this.gradientBuffers) encoder.clearBuffer(tensor.buffer, tensor.offset, tensor.length * 4);
        }
      },
      after: (encoder) => {
        encoder.copyBufferToBuffer(metrics.buffer, metrics.offset, slot.buffer, 0, metrics.length * 4);
        for (const t of readback) {
          encoder.copyBufferToBuffer(t.buffer, t.offset, slot.buffer, at, t.length * 4);
          at += t.length * 4;
        }
      },
    });

    const step = ++this.submitted;
    slot.pending = slot.buffer
      .mapAsync(GPUMapMode.READ)
      .then(() => {
        const values = new Float32Array(slot.buffer.getMappedRange(0, at).slice(0));
        slot.buffer.unmap();
        this.completed.push({ step, ...metricsFrom(values), extra: values.slice(CROSS_ENTROPY_RESULT.length) });
      })
      .catch((error: unknown) => {
        this.failure ??= error;
      })
      .finally(() => {
        slot.pending = undefined;
      });
  }

  /** Metrics of the steps whose readback has arrived since the last call, oldest first (never waits). */
  takeMetrics(): Gpt2StepMetrics[] {
    if (this.failure) throw this.failure;
    return this.completed.splice(0);
  }

  /** Waits for every submitted step's readback, then takeMetrics(). */
  async flushMetrics(): Promise<Gpt2StepMetrics[]> {
    await Promise.all(this.ring.map((s) => s.pending));
    return this.takeMetrics();
  }

  /** The metrics of the last submitted step, waiting for it (tests, evaluation; not inside a training loop). */
  async readMetrics(): Promise<Gpt2Metrics> {
    return metricsFrom(await this.gpu.read(this.view('metrics')));
  }

  /** (B,T,V) logits of the last step; inference runs with keepLogits only. */
  async readLogits(): Promise<Float32Array> {
    if (!this.plan.keepLogits) throw new Error('readLogits needs an inference run created with keepLogits: true');
    return this.gpu.read(this.view('logits'));
  }

  /** Every gradient, read back by tensor name (tests, debugging). */
  async readGradients(): Promise<Map<string, Float32Array>> {
    const out = new Map<string, Float32Array>();
    for (const { tensor, plan } of this.gradientBuffers) {
      const flat = await this.gpu.read(tensor);
      for (const v of plan.views) out.set(v.name, flat.slice(v.offset, v.offset + v.length));
    }
    return out;
  }

  /** Releases every dispatch's uniforms and every buffer to the pool. The model and adapter are not touched. */
  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    for (const d of [...this.forwardList, ...this.backwardList]) d.release();
    this.forwardList = [];
    this.backwardList = [];
    this.trainableList = [];
    for (const b of this.buffers) this.gpu.free(b);
    this.buffers.length = 0;
    this.gradientBuffers.length = 0;
    this.views.clear();
    // A slot still being mapped goes back once its map settles; the pool may hand it out again only then.
    for (const slot of this.ring) {
      const give = () => this.gpu.pool.release(slot.buffer);
      if (slot.pending) void slot.pending.then(give);
      else give();
    }
  }
}

/** A convenience over Gpt2Run.create. */
export function createGpt2Run(gpu: GpuContext, model: Gpt2Model, options: Gpt2RunOptions): Promise<Gpt2Run> {
  return Gpt2Run.create(gpu, model, options);
}

function sameConfig(a: ModelConfig, b: ModelConfig): boolean {
  return a.nLayer === b.nLayer && a.nEmbd === b.nEmbd && a.nHead === b.nHead && a.vocabSize === b.vocabSize;
}

function metricsFrom(values: Float32Array): Gpt2Metrics {
  const lossSum = values[CROSS_ENTROPY_RESULT.lossSum];
  const correct = values[CROSS_ENTROPY_RESULT.correct];
  const tokens = values[CROSS_ENTROPY_RESULT.tokens];
  return { loss: tokens > 0 ? lossSum / tokens : NaN, accuracy: tokens > 0 ? correct / tokens : NaN, tokens, lossSum, correct };
}

/** The planned views that hold a batch's token segments for dwte (ops/embedding.ts). */
function tokenSegmentViews(view: (name: string) => GpuTensor, capacity: number): TokenSegmentTensors {
  return { capacity, tokens: view('segmentTokens'), offsets: view('segmentOffsets'), positions: view('segmentPositions') };
}

/** A distinct u32 dropout seed per LoRA site and step. */
function siteSeed(stepSeed: number, siteIndex: number): number {
  return (Math.imul(siteIndex + 1, 0x9e3779b9) ^ stepSeed) >>> 0;
}

// ---- building the dispatch lists ---------------------------------------------------------------------------------

/** What gpt2Forward and gpt2Backward read: shapes, views by role, and the lists of per-step uniforms. */
class RunBuilder {
  readonly config: ModelConfig;
  readonly B: number;
  readonly T: number;
  readonly BT: number;
  readonly training: boolean;
  /** Dispatches whose dlossScale changes per batch. */
  readonly lossScaled: Dispatch[] = [];
  /** LoRA dispatch groups whose dropout seed changes per step. */
  readonly seeded: SeededSite[] = [];
  /** Every dispatch list being built, so a failed build can give all their uniforms back. */
  private readonly lists: Dispatch[][] = [];
  private readonly sites = new Map<string, { index: number; site: LoraSite }>();
  private readonly firstBackwardLayer: number;

  constructor(
    readonly gpu: GpuContext,
    readonly model: Gpt2Model,
    readonly adapter: LoraAdapter | undefined,
    readonly plan: Gpt2RunPlan,
    readonly view: (name: string) => GpuTensor,
  ) {
    this.config = model.config;
    this.B = plan.B;
    this.T = plan.T;
    this.BT = plan.B * plan.T;
    this.training = plan.mode.kind !== 'inference';
    this.firstBackwardLayer = plan.firstBackwardLayer;
    adapter?.sites.forEach((site, index) => this.sites.set(`${site.layer}.${site.module}`, { index, site }));
  }

  /** A new dispatch list, in recording order. */
  newList(): Dispatch[] {
    const list: Dispatch[] = [];
    this.lists.push(list);
    return list;
  }

  /** Releases every dispatch prepared so far (after a failed build). */
  releaseAll(): void {
    for (const list of this.lists) for (const d of list) d.release();
  }

  /** A parameter's view: base weights from the model, LoRA tensors from the adapter. */
  param(name: string): GpuTensor {
    if (name.includes('.lora_')) return this.adapter!.tensors().get(name)!;
    return this.model.tensor(name);
  }

  /** The gradient view of a parameter, or undefined when it is frozen. */
  grad(name: string): GpuTensor | undefined {
    return this.plan.trainable.byName.has(name) ? this.view(name) : undefined;
  }

  /** Activation `kind` of block l (the transient set for blocks the backward never reaches). */
  act(l: number, kind: string): GpuTensor {
    return this.view(`${activationSlot(l, this.firstBackwardLayer)}.${kind}`);
  }

  /** The residual stream entering block l (BT,C). */
  blockInput(l: number): GpuTensor {
    return l === 0 ? this.view('encoded') : this.act(l - 1, 'residual3');
  }

  site(l: number, module: LinearModule): { index: number; site: LoraSite } | undefined {
    return this.sites.get(`${l}.${module}`);
  }

  loraU(l: number, module: LinearModule): GpuTensor {
    return this.view(`${activationSlot(l, this.firstBackwardLayer)}.${module}.u`);
  }

  loraOptions(): { scale: number; dropout: number; seed: number } {
    const config = this.adapter!.config;
    return { scale: loraScale(config), dropout: this.training ? config.dropout : 0, seed: 0 };
  }

  /** Whether the backward produces any gradient at this module marker ('h.3.mlp.c_fc', 'h.3.ln_2', 'embedding'). */
  trains(marker: string): boolean {
    if (marker === 'embedding') return this.plan.trainable.byName.has(WTE) || this.plan.trainable.byName.has(WPE);
    const match = /^h\.(\d+)\.(.+)$/.exec(marker)!;
    const l = Number(match[1]);
    const name = match[2];
    if (name === 'ln_1' || name === 'ln_2') return this.plan.trainable.byName.has(`${marker}.weight`);
    return this.plan.trainable.byName.has(`${marker}.weight`) || this.site(l, name as LinearModule) !== undefined;
  }

  /** Markers in backward order: per block from the top, mlp.c_proj … ln_1, then the embedding. */
  private backwardMarkers(): string[] {
    const markers: string[] = [];
    for (let l = this.config.nLayer - 1; l >= 0; l--) {
      for (const m of ['mlp.c_proj', 'mlp.c_fc', 'ln_2', 'attn.c_proj', 'attn.c_attn', 'ln_1']) markers.push(`h.${l}.${m}`);
    }
    markers.push('embedding');
    return markers;
  }

  private needCache?: Map<string, boolean>;

  /** Whether anything after `marker` in backward order trains, i.e. whether the input gradient there is needed. */
  needsGradientBelow(marker: string): boolean {
    if (!this.needCache) {
      this.needCache = new Map();
      let below = false;
      const markers = this.backwardMarkers();
      for (let i = markers.length - 1; i >= 0; i--) {
        this.needCache.set(markers[i], below);
        below ||= this.trains(markers[i]);
      }
    }
    return this.needCache.get(marker)!;
  }
}

/**
 * out (BT,outDim) = inp·W + b, plus the LoRA update when the site is adapted. With `activated`, also activated =
 * gelu(out) (c_fc): fused into the matmul's store when nothing is added to out after it, else a gelu_forward dispatch
 * after the LoRA update.
 */
async function linearForward(
  r: RunBuilder,
  list: Dispatch[],
  l: number,
  module: LinearModule,
  inp: GpuTensor,
  out: GpuTensor,
  activated?: GpuTensor,
) {
  const [K, N] = linearShape(r.config, module);
  const name = `h.${l}.${module}.weight`;
  const bias = r.param(`h.${l}.${module}.bias`);
  const packed = r.model.f16Weight(name);
  const site = r.site(l, module);
  const epilogue: MatmulEpilogue | undefined = activated && !site ? { kind: 'gelu', activated } : undefined;
  if (packed) list.push(await matmulForwardF16W(r.gpu, { out, inp, weight: packed, bias, epilogue }, { M: r.BT, N, K }));
  else list.push(await matmulForward(r.gpu, { out, inp, weight: r.param(name), bias, epilogue }, { M: r.BT, N, K }));
  if (site) {
    const lora = await loraForward(
      r.gpu,
      { out, u: r.loraU(l, module), inp, a: r.adapter!.tensor(site.site, 'A'), b: r.adapter!.tensor(site.site, 'B') },
      { M: r.BT, N, K, R: r.adapter!.config.rank },
      r.loraOptions(),
    );
    list.push(...lora.dispatches);
    r.seeded.push({ index: site.index, lora });
    if (activated) list.push(await geluForward(r.gpu, { out: activated, inp: out }, { n: r.BT * N }));
  }
}

/**
 * The backward of a linear layer given dout: dinp = dout·Wᵀ (+ the LoRA path) when `needInput`, dW and db when the
 * weights train, dA and dB when the site is adapted.
 */
async function linearBackward(
  r: RunBuilder,
  list: Dispatch[],
  l: number,
  module: LinearModule,
  t: { inp: GpuTensor; dout: GpuTensor; dinp: GpuTensor },
  needInput: boolean,
) {
  const [K, N] = linearShape(r.config, module);
  const name = `h.${l}.${module}`;
  const shape = { M: r.BT, N, K };
  if (needInput) {
    const packed = r.model.f16Weight(`${name}.weight`);
    if (packed) list.push(await matmulBackwardInputF16W(r.gpu, { dinp: t.dinp, dout: t.dout, weight: packed }, shape));
    else list.push(await matmulBackwardInput(r.gpu, { dinp: t.dinp, dout: t.dout, weight: r.param(`${name}.weight`) }, shape));
  }
  const dweight = r.grad(`${name}.weight`);
  const dbias = r.grad(`${name}.bias`);
  if (dweight) list.push(await matmulBackwardWeight(r.gpu, { dweight, inp: t.inp, dout: t.dout }, shape));
  if (dbias) list.push(await matmulBackwardBias(r.gpu, { dbias, dout: t.dout }, shape));
  const site = r.site(l, module);
  if (site) {
    const a = r.adapter!.tensor(site.site, 'A');
    const b = r.adapter!.tensor(site.site, 'B');
    const lora = await loraBackward(
      r.gpu,
      {
        dinp: t.dinp,
        da: r.grad(`${name}.lora_A`)!,
        db: r.grad(`${name}.lora_B`)!,
        du: r.view('loraDu'),
        partial: r.view('loraPartial'),
        dout: t.dout,
        inp: t.inp,
        u: r.loraU(l, module),
        a,
        b,
      },
      { ...shape, R: r.adapter!.config.rank },
      r.loraOptions(),
    );
    // Without a consumer of dinp, the LoRA input-gradient dispatch is skipped (its uniforms still go back).
    for (const d of lora.dispatches) {
      if (needInput || d.kernel !== 'lora_backward_x') list.push(d);
      else d.release();
    }
    r.seeded.push({ index: site.index, lora });
  }
}

/** LayerNorm backward of a block's ln_1 or ln_2: dresidual += the input gradient; dweight, dbias when it trains. */
async function blockLayernormBackward(r: RunBuilder, list: Dispatch[], l: number, ln: 'ln_1' | 'ln_2', inp: GpuTensor) {
  const prefix = ln === 'ln_1' ? 'ln1' : 'ln2';
  const dweight = r.grad(`h.${l}.${ln}.weight`);
  const dbias = r.grad(`h.${l}.${ln}.bias`);
  list.push(
    ...(await layernormBackward(
      r.gpu,
      {
        dinp: r.view('dresidual'),
        dweight,
        dbias,
        dout: r.view('btc'),
        inp,
        weight: r.param(`h.${l}.${ln}.weight`),
        mean: r.act(l, `${prefix}Mean`),
        rstd: r.act(l, `${prefix}Rstd`),
        scratch: dweight ? r.view('lnPartials') : undefined,
      },
      { N: r.BT, C: r.config.nEmbd, accumulate: true },
    )),
  );
}

/**
 * The forward pass: embedding; block 0's ln_1; per block c_attn (+LoRA), attention, attn.c_proj (+LoRA), residual2
 * with ln_2 (one dispatch), c_fc (+LoRA) with its GELU (fused into the matmul unless LoRA adds to c_fc's output),
 * mlp.c_proj (+LoRA), residual3 with the LayerNorm that reads it (the next block's ln_1, or ln_f after the last block;
 * one dispatch); the classifier chunk by chunk (logits = lnf·wteᵀ, fused cross-entropy; in training dlogits in place,
 * dlnf = dlogits·wte and dwte += dlogitsᵀ·lnf right after); metrics.
 */
async function gpt2Forward(r: RunBuilder): Promise<Dispatch[]> {
  const { gpu, config, B, T, BT } = r;
  const C = config.nEmbd;
  const V = config.vocabSize;
  const NH = config.nHead;
  const eps = config.layerNormEpsilon;
  // A frozen wte may be kept only packed (frozenWeights 'f16'): then the lookup and the tied head both read it as f16.
  const packedWte = r.model.f16Weight(WTE);
  const list = r.newList();

  const embedding = { out: r.view('encoded'), ids: r.view('ids'), wpe: r.param(WPE) };
  if (packedWte) list.push(await embeddingForwardF16W(gpu, { ...embedding, wte: packedWte }, { B, T, C, V }));
  else list.push(await embeddingForward(gpu, { ...embedding, wte: r.param(WTE) }, { B, T, C, V }));
  // A LayerNorm's outputs and parameters: block l's ln_1 or ln_2, or ln_f.
  const blockLn = (l: number, ln: 'ln_1' | 'ln_2') => {
    const kind = ln === 'ln_1' ? 'ln1' : 'ln2';
    const [weight, bias] = [r.param(`h.${l}.${ln}.weight`), r.param(`h.${l}.${ln}.bias`)];
    return { out: r.act(l, kind), mean: r.act(l, `${kind}Mean`), rstd: r.act(l, `${kind}Rstd`), weight, bias };
  };
  const lnf = r.view('lnf');
  const finalLn = { out: lnf, mean: r.view('lnfMean'), rstd: r.view('lnfRstd'), weight: r.param('ln_f.weight'), bias: r.param('ln_f.bias') };
  const lnShape = { N: BT, C, eps };

  // Block 0's ln_1 reads the embedding; every later LayerNorm is fused with the residual add that feeds it.
  list.push(await layernormForward(gpu, { ...blockLn(0, 'ln_1'), inp: r.blockInput(0) }, lnShape));
  for (let l = 0; l < config.nLayer; l++) {
    const act = (kind: string) => r.act(l, kind);
    await linearForward(r, list, l, 'attn.c_attn', act('ln1'), act('qkv'));
    list.push(await attentionForward(gpu, { out: act('atty'), lse: act('attLse'), qkv: act('qkv') }, { B, T, C, NH }));
    await linearForward(r, list, l, 'attn.c_proj', act('atty'), act('attproj'));
    // residual2 = block input + attproj, and ln_2 of it.
    const residual2 = { residual: act('residual2'), a: r.blockInput(l), b: act('attproj') };
    list.push(await residualLayernormForward(gpu, { ...residual2, ...blockLn(l, 'ln_2') }, lnShape));
    await linearForward(r, list, l, 'mlp.c_fc', act('ln2'), act('fch'), act('fchGelu'));
    await linearForward(r, list, l, 'mlp.c_proj', act('fchGelu'), act('fcproj'));
    // residual3 = residual2 + fcproj, and the LayerNorm that reads it: the next block's ln_1, or ln_f.
    const residual3 = { residual: act('residual3'), a: act('residual2'), b: act('fcproj') };
    const next = l + 1 < config.nLayer ? blockLn(l + 1, 'ln_1') : finalLn;
    list.push(await residualLayernormForward(gpu, { ...residual3, ...next }, lnShape));
  }

  const logits = r.view('logits'); // (chunk, V); dlogits in place when training
  const dwte = r.grad(WTE);
  const ce = { logits, targets: r.view('targets'), mask: r.view('mask'), loss: r.view('losses'), correct: r.view('correct') };
  for (let start = 0; start < BT; start += r.plan.chunk) {
    const rows = Math.min(r.plan.chunk, BT - start);
    const lnfChunk = gpu.view(lnf, start * C, rows * C, `lnf[${start}:]`); // (rows, C)
    // logits (rows,V) = lnfChunk (rows,C) · wteᵀ: the "backward input" layout with wte (V,C) as the (K=V, N=C) weight.
    const logitsShape = { M: rows, N: C, K: V };
    if (packedWte) list.push(await matmulBackwardInputF16W(gpu, { dinp: logits, dout: lnfChunk, weight: packedWte }, logitsShape));
    else list.push(await matmulBackwardInput(gpu, { dinp: logits, dout: lnfChunk, weight: r.param(WTE) }, logitsShape));
    const crossEntropy = await crossEntropyForwardBackward(gpu, ce, {
      rows,
      vocab: V,
      rowOffset: start,
      dlossScale: 0,
      writeGradient: r.training,
    });
    list.push(crossEntropy);
    r.lossScaled.push(crossEntropy);
    if (r.training) {
      const dlnfChunk = gpu.view(r.view('btc'), start * C, rows * C, `dlnf[${start}:]`);
      // dlnf (rows,C) = dlogits (rows,V) · wte (V,C): the "forward" layout.
      // Few rows reduced over V: split the reduction (splitKFor) so that the GPU has enough workgroups, with bt4c
      // (free until the block backward) holding the partial products.
      const dlnfShape = { M: rows, N: C, K: V };
      const splits = splitKFor('forward', dlnfShape, Math.floor((4 * BT) / rows));
      const scratch = gpu.view(r.view('bt4c'), 0, splits * rows * C, 'dlnf.partial');
      if (packedWte) list.push(...(await matmulForwardF16WSplitK(gpu, { out: dlnfChunk, inp: logits, weight: packedWte, scratch }, dlnfShape, splits)));
      else list.push(...(await matmulForwardSplitK(gpu, { out: dlnfChunk, inp: logits, weight: r.param(WTE), scratch }, dlnfShape, splits)));
      // dwte (V,C) += dlogitsᵀ · lnf: the tied head's share of wte's gradient.
      if (dwte) list.push(await matmulBackwardWeight(gpu, { dweight: dwte, inp: logits, dout: lnfChunk }, { M: rows, N: C, K: V }));
    }
  }
  const metrics = await crossEntropyMetrics(
    gpu,
    { loss: r.view('losses'), correct: r.view('correct'), mask: r.view('mask'), result: r.view('metrics') },
    BT,
    0,
  );
  list.push(metrics);
  r.lossScaled.push(metrics);
  return list;
}

/**
 * The backward pass, gpt2Forward reversed from ln_f down (the classifier's backward already ran chunk by chunk).
 * dresidual carries the residual stream's gradient down the blocks; btc, bt4c and bt4cGelu hold one block's
 * activation gradients in turn. Work whose only consumers are frozen is skipped: the blocks below the lowest
 * trainable tensor, and input gradients nobody below needs.
 */
async function gpt2Backward(r: RunBuilder): Promise<Dispatch[]> {
  const { gpu, config, B, T, BT } = r;
  const C = config.nEmbd;
  const list = r.newList();
  const dresidual = r.view('dresidual');
  const btc = r.view('btc');
  const bt4c = r.view('bt4c');
  const bt4cGelu = r.view('bt4cGelu');
  const dqkv = gpu.view(bt4c, 0, BT * 3 * C, 'dqkv');

  // ln_f: dresidual (assigned) from dlnf, which the classifier chunks left in btc.
  const lnfTrains = r.grad('ln_f.weight');
  list.push(
    ...(await layernormBackward(
      gpu,
      {
        dinp: dresidual,
        dweight: lnfTrains,
        dbias: r.grad('ln_f.bias'),
        dout: btc,
        inp: r.act(config.nLayer - 1, 'residual3'),
        weight: r.param('ln_f.weight'),
        mean: r.view('lnfMean'),
        rstd: r.view('lnfRstd'),
        scratch: lnfTrains ? r.view('lnPartials') : undefined,
      },
      { N: BT, C, accumulate: false },
    )),
  );

  for (let l = config.nLayer - 1; l >= 0; l--) {
    const act = (kind: string) => r.act(l, kind);
    const below = (marker: string) => r.needsGradientBelow(`h.${l}.${marker}`);
    const reached = (marker: string) => r.trains(`h.${l}.${marker}`) || below(marker);

    // mlp.c_proj (dout = dresidual): dfchGelu → bt4c; then gelu: dfch → bt4cGelu.
    if (reached('mlp.c_proj')) {
      await linearBackward(r, list, l, 'mlp.c_proj', { inp: act('fchGelu'), dout: dresidual, dinp: bt4c }, below('mlp.c_proj'));
    }
    if (below('mlp.c_proj')) list.push(await geluBackward(gpu, { dinp: bt4cGelu, dout: bt4c, inp: act('fch') }, { n: BT * 4 * C, accumulate: false }));
    // mlp.c_fc (dout = dfch): dln2 → btc; ln_2 adds its input gradient into dresidual.
    if (reached('mlp.c_fc')) {
      await linearBackward(r, list, l, 'mlp.c_fc', { inp: act('ln2'), dout: bt4cGelu, dinp: btc }, below('mlp.c_fc'));
    }
    if (reached('ln_2')) await blockLayernormBackward(r, list, l, 'ln_2', act('residual2'));
    // attn.c_proj (dout = dresidual): datty → btc; attention: dqkv → bt4c.
    if (reached('attn.c_proj')) {
      await linearBackward(r, list, l, 'attn.c_proj', { inp: act('atty'), dout: dresidual, dinp: btc }, below('attn.c_proj'));
    }
    if (below('attn.c_proj')) {
      list.push(
        ...(await attentionBackward(
          gpu,
          { dqkv, dout: btc, qkv: act('qkv'), out: act('atty'), lse: act('attLse'), delta: r.view('attDelta') },
          { B, T, C, NH: config.nHead },
        )),
      );
    }
    // attn.c_attn (dout = dqkv): dln1 → btc; ln_1 adds its input gradient into dresidual.
    if (reached('attn.c_attn')) {
      await linearBackward(r, list, l, 'attn.c_attn', { inp: act('ln1'), dout: dqkv, dinp: btc }, below('attn.c_attn'));
    }
    if (reached('ln_1')) await blockLayernormBackward(r, list, l, 'ln_1', r.blockInput(l));
  }

  // dresidual is now d encoded: the embedding tables' gradients (full fine-tuning).
  const dwte = r.grad(WTE);
  const dwpe = r.grad(WPE);
  if (dwte || dwpe) {
    const segments = dwte ? tokenSegmentViews(r.view, BT) : undefined;
    list.push(...(await embeddingBackward(gpu, { dwte, dwpe, dout: dresidual, segments }, { B, T, C, V: config.vocabSize })));
  }
  return list;
}

