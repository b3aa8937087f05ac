// AdamW over a list of trainable tensors, on the GPU, prepared once per run: the global gradient norm and clip
// scale (ops/gradnorm.ts, no readback), then one AdamW update per tensor (ops/adamw.ts) that reads the clip scale,
// updates the weights and clears the gradients for the next step's accumulation. `dispatches` go at the end of the
// model's training step, so forward + backward + clip + update is one submit. The moments m and v live in pooled
// buffers (one for m and one for v unless the device's buffer size splits them; every tensor a 256-byte-aligned view,
// like the planner's adam.m / adam.v), and are exported and imported for checkpoints together with the step count.
//
// The step count (t of the bias corrections 1 − β^t) lives on the GPU: a step whose gradient norm was not finite is
// skipped by the update kernels, and the count then stays put, as PyTorch's does when GradScaler skips
// optimizer.step(). The CPU cannot know which steps happened without a readback, so it only counts steps prepared.
//
// Weight decay follows Hugging Face's Trainer (and so TRL/PEFT runs): matrices decay — linear weights, embeddings,
// LoRA A (R,in) and B (out,R) — while biases and LayerNorm gains/shifts (1-D tensors) do not.

import { type Dispatch, type GpuContext, type GpuTensor } from '../gpu/context.ts';
import { adamwCount, adamwUniforms, adamwUpdate, type AdamWHyperparameters } from '../ops/adamw.ts';
import { GRAD_NORM_RESULT, gradNorm, planGradNorm, type GradNormDispatches } from '../ops/gradnorm.ts';
import { alignElements } from '../model/weights.ts';

export { GRAD_NORM_RESULT } from '../ops/gradnorm.ts';

/** One tensor the optimizer updates. `param` and `grad` hold the same number of values. */
export interface TrainableTensor {
  /** 'h.1.attn.c_attn.lora_A', 'ln_f.weight' … (names the tensor in checkpoints and errors). */
  readonly name: string;
  readonly param: GpuTensor;
  readonly grad: GpuTensor;
  /** Shape of the tensor; decides weight decay when `decay` is not given (2-D and up decay). */
  readonly shape: readonly number[];
  /** Whether weight decay applies; default: decaysByDefault(name, shape). */
  readonly decay?: boolean;
}

export interface OptimizerSettings {
  /** β1 (0.9). */
  beta1: number;
  /** β2 (0.999). */
  beta2: number;
  /** ε (1e-8). */
  eps: number;
  /** Decoupled weight decay, applied to the tensors that decay (0). */
  weightDecay: number;
  /** Clip the global gradient norm to this; ≤ 0 turns clipping off (1.0). */
  maxGradNorm: number;
}

export const DEFAULT_OPTIMIZER: Readonly<OptimizerSettings> = Object.freeze({
  beta1: 0.9,
  beta2: 0.999,
  eps: 1e-8,
  weightDecay: 0,
  maxGradNorm: 1,
});

/** Biases and LayerNorm parameters (1-D) do not decay; matrices (weights, embeddings, LoRA A and B) do. */
export function decaysByDefault(name: string, shape: readonly number[]): boolean {
  if (/(^|\.)(ln_\d|ln_f)\./.test(name) || /\.bias$/.test(name)) return false;
  return shape.length >= 2;
}

/** Moments of one tensor, as stored in a checkpoint. */
export interface OptimizerTensorState {
  readonly name: string;
  readonly m: Float32Array;
  readonly v: Float32Array;
}

export interface OptimizerState {
  /** Updates done so far, skipped steps not counted (the next update uses step + 1 in its bias corrections). */
  readonly step: number;
  readonly tensors: readonly OptimizerTensorState[];
}

interface MomentSlot {
  readonly name: string;
  readonly m: GpuTensor;
  readonly v: GpuTensor;
  readonly decay: boolean;
  /** Which moment buffer and where in it; used to slice an exported buffer. */
  readonly buffer: number;
  readonly offset: number;
  readonly length: number;
}

/**
 * Packs tensors of these lengths into as few buffers of at most maxBytes as order allows, each tensor starting on a
 * 64-element (256-byte) boundary so it binds as a view.
 */
function packMoments(lengths: readonly number[], maxBytes: number): { buffers: number[]; places: { buffer: number; offset: number }[] } {
  const maxElements = Math.floor(maxBytes / 4);
  const buffers: number[] = [];
  const places: { buffer: number; offset: number }[] = [];
  for (const length of lengths) {
    const padded = alignElements(Math.max(length, 1));
    if (!buffers.length || (buffers[buffers.length - 1] + padded > maxElements && buffers[buffers.length - 1] > 0)) buffers.push(0);
    const buffer = buffers.length - 1;
    places.push({ buffer, offset: buffers[buffer] });
    buffers[buffer] += padded;
  }
  return { buffers, places };
}

export class AdamWOptimizer {
  /**
   * Gradient norm (partials, finalize), one AdamW update per tensor, then the step count's advance: append these to
   * the training step.
   */
  readonly dispatches: readonly Dispatch[];
  /** (2) f32 [clipScale, norm] of the latest step (GRAD_NORM_RESULT); copy it out with the step's metrics. */
  readonly gradNormResult: GpuTensor;
  private prepared = 0;

  private constructor(
    private readonly gpu: GpuContext,
    readonly tensors: readonly TrainableTensor[],
    private settings: OptimizerSettings,
    private readonly parts: {
      momentBuffers: { m: GpuTensor[]; v: GpuTensor[] };
      slots: readonly MomentSlot[];
      partials: GpuTensor;
      result: GpuTensor;
      /** (1) updates done (f32 holding a whole number), advanced by `count` on the GPU. */
      stepCount: GpuTensor;
      norm: GradNormDispatches;
      updates: readonly Dispatch[];
      count: Dispatch;
    },
  ) {
    this.gradNormResult = parts.result;
    this.dispatches = [...parts.norm.all, ...parts.updates, parts.count];
  }

  /**
   * Allocates m, v (zero), the norm partials and result from the pool and prepares every dispatch. `tensors` must
   * be non-empty; names must be unique (they key the checkpoint).
   */
  static async create(
    gpu: GpuContext,
    tensors: readonly TrainableTensor[],
    settings: Partial<OptimizerSettings> = {},
  ): Promise<AdamWOptimizer> {
    const s: OptimizerSettings = { ...DEFAULT_OPTIMIZER, ...settings };
    checkSettings(s);
    if (!tensors.length) throw new RangeError('AdamW: there are no trainable tensors');
    const seen = new Set<string>();
    for (const t of tensors) {
      if (seen.has(t.name)) throw new RangeError(`AdamW: tensor ${t.name} is listed twice`);
      seen.add(t.name);
      if (t.param.length !== t.grad.length) {
        throw new RangeError(`AdamW: ${t.name} has ${t.param.length} values but its gradient ${t.grad.length}`);
      }
    }

    const maxBytes = Math.min(gpu.device.limits.maxBufferSize, gpu.device.limits.maxStorageBufferBindingSize);
    const packing = packMoments(tensors.map((t) => t.param.length), maxBytes);
    const momentBuffers = {
      m: packing.buffers.map((n, i) => gpu.tensor(n, `adam.m.${i}`)),
      v: packing.buffers.map((n, i) => gpu.tensor(n, `adam.v.${i}`)),
    };
    const slots: MomentSlot[] = tensors.map((t, i) => {
      const { buffer, offset } = packing.places[i];
      const length = t.param.length;
      return {
        name: t.name,
        m: gpu.view(momentBuffers.m[buffer], offset, length, `adam.m:${t.name}`),
        v: gpu.view(momentBuffers.v[buffer], offset, length, `adam.v:${t.name}`),
        decay: t.decay ?? decaysByDefault(t.name, t.shape),
        buffer,
        offset,
        length,
      };
    });

    const grads = tensors.map((t) => t.grad);
    const partials = gpu.tensor(planGradNorm(grads.map((g) => g.length)).partialsLength, 'gradnorm.partials');
    const result = gpu.tensor(GRAD_NORM_RESULT.length, 'gradnorm.result');
    const stepCount = gpu.tensor(1, 'adam.step');
    const norm = await gradNorm(gpu, { grads, partials, result }, s.maxGradNorm);
    const updates = await Promise.all(
      tensors.map((t, i) =>
        adamwUpdate(
          gpu,
          { param: t.param, grad: t.grad, m: slots[i].m, v: slots[i].v, clipScale: result, stepCount },
          t.param.length,
          hyperFor(s, 0, slots[i].decay),
        ),
      ),
    );
    const count = await adamwCount(gpu, { clipScale: result, stepCount });
    return new AdamWOptimizer(gpu, tensors, s, { momentBuffers, slots, partials, result, stepCount, norm, updates, count });
  }

  /** Steps prepared so far, skipped ones included (exportState() reads the updates done from the GPU). */
  get stepsPrepared(): number {
    return this.prepared;
  }

  get currentSettings(): Readonly<OptimizerSettings> {
    return this.settings;
  }

  /**
   * Writes the uniforms of the next update (learning rate and the current settings) and returns the steps prepared
   * so far, this one included. Call once per optimizer step, just before the submit that carries `dispatches`.
   */
  prepareStep(lr: number): number {
    if (!(lr >= 0) || !Number.isFinite(lr)) throw new RangeError(`AdamW: learning rate must be ≥ 0, got ${lr}`);
    this.parts.updates.forEach((update, i) => update.setUniforms(adamwUniforms(hyperFor(this.settings, lr, this.parts.slots[i].decay))));
    return ++this.prepared;
  }

  /** Changes β, ε, weight decay or the clip norm from the next step on (moments are kept). */
  updateSettings(changes: Partial<OptimizerSettings>): void {
    const next = { ...this.settings, ...changes };
    checkSettings(next);
    this.settings = next;
    if (changes.maxGradNorm !== undefined) this.parts.norm.finalize.setUniforms({ maxNorm: next.maxGradNorm });
  }

  /** Reads m, v and the step count back (one readback per buffer). Not inside a step: it waits for the GPU. */
  async exportState(): Promise<OptimizerState> {
    const [m, v, [step]] = await Promise.all([
      Promise.all(this.parts.momentBuffers.m.map((b) => this.gpu.read(b))),
      Promise.all(this.parts.momentBuffers.v.map((b) => this.gpu.read(b))),
      this.gpu.read(this.parts.stepCount),
    ]);
    return {
      step,
      tensors: this.parts.slots.map((s) => ({
        name: s.name,
        m: m[s.buffer].slice(s.offset, s.offset + s.length),
        v: v[s.buffer].slice(s.offset, s.offset + s.length),
      })),
    };
  }

  /** Restores moments and step count exactly; the state must name the same tensors with the same sizes. */
  importState(state: OptimizerState): void {
    // The GPU keeps the count in an f32, exact up to 2^24.
    if (!(Number.isSafeInteger(state.step) && state.step >= 0 && state.step <= 2 ** 24)) throw new RangeError(`AdamW: bad step ${state.step}`);
    const byName = new Map(state.tensors.map((t) => [t.name, t]));
    for (const slot of this.parts.slots) {
      const saved = byName.get(slot.name);
      if (!saved) throw new RangeError(`AdamW: the saved optimizer state has no moments for ${slot.name}`);
      if (saved.m.length !== slot.length || saved.v.length !== slot.length) {
        throw new RangeError(
          `AdamW: saved moments of ${slot.name} hold ${saved.m.length}/${saved.v.length} values, the tensor ${slot.length}`,
        );
      }
    }
    if (byName.size !== this.parts.slots.length) {
      const extra = [...byName.keys()].filter((n) => !this.parts.slots.some((s) => s.name === n));
      throw new RangeError(`AdamW: the saved optimizer state has moments for unknown tensors: ${extra.join(', ')}`);
    }
    for (const slot of this.parts.slots) {
      const saved = byName.get(slot.name)!;
      this.gpu.write(slot.m, saved.m);
      this.gpu.write(slot.v, saved.v);
    }
    this.gpu.write(this.parts.stepCount, [state.step]);
    this.prepared = state.step;
  }

  /** Gives buffers and uniform buffers back to the pool. The tensors (param, grad) belong to the caller. */
  release(): void {
    for (const d of this.dispatches) d.release();
    for (const b of [...this.parts.momentBuffers.m, ...this.parts.momentBuffers.v, this.parts.partials, this.parts.result, this.parts.stepCount]) this.gpu.free(b);
  }
}

function hyperFor(s: OptimizerSettings, lr: number, decay: boolean): AdamWHyperparameters {
  return { lr, beta1: s.beta1, beta2: s.beta2, eps: s.eps, weightDecay: decay ? s.weightDecay : 0 };
}

function checkSettings(s: OptimizerSettings): void {
  const inUnit = (x: number) => x >= 0 && x < 1;
  if (!inUnit(s.beta1) || !inUnit(s.beta2)) throw new RangeError(`AdamW: betas must be in [0, 1), got ${s.beta1}, ${s.beta2}`);
  if (!(s.eps > 0)) throw new RangeError(`AdamW: eps must be > 0, got ${s.eps}`);
  if (!(s.weightDecay >= 0)) throw new RangeError(`AdamW: weight decay must be ≥ 0, got ${s.weightDecay}`);
  if (!Number.isFinite(s.maxGradNorm)) throw new RangeError(`AdamW: max grad norm must be finite, got ${s.maxGradNorm}`);
}
