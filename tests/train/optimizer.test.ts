// The trainer's AdamW (src/engine/train/optimizer.ts) on WebGPU against the double-precision references of AdamW and
// the global gradient norm: several tensors of awkward sizes, weight decay only on matrices, clipping on the global
// norm, a changing learning rate, an export/import of the optimizer state that continues exactly, and a step with a
// non-finite gradient that is skipped without counting for the bias corrections.

import { beforeAll, describe, expect, it } from 'vitest';
import type { GpuContext } from '../../src/engine/gpu/context.ts';
import { adamwStep } from '../../src/engine/reference/adamw.ts';
import { clipScale, globalGradNorm } from '../../src/engine/reference/gradnorm.ts';
import { Rng, uniformArray } from '../../src/engine/random.ts';
import { AdamWOptimizer, decaysByDefault, GRAD_NORM_RESULT, type TrainableTensor } from '../../src/engine/train/optimizer.ts';
import { expectClose, REDUCTION } from '../helpers/check.ts';
import { testGpu } from '../helpers/gpu.ts';

/** Shapes like a LoRA adapter and a trained LayerNorm: matrices decay, 1-D tensors do not. */
const SHAPES: { name: string; shape: number[] }[] = [
  { name: 'h.0.attn.c_attn.lora_A', shape: [3, 36] },
  { name: 'h.0.attn.c_attn.lora_B', shape: [108, 3] },
  { name: 'h.0.ln_1.weight', shape: [36] },
  { name: 'h.0.attn.c_attn.bias', shape: [7] },
  { name: 'wte', shape: [41, 9] },
];

const SETTINGS = { beta1: 0.9, beta2: 0.99, eps: 1e-8, weightDecay: 0.1, maxGradNorm: 1 };

/**
 * Weights after a few Adam steps: each step moves a weight by about lr, so the f32 rounding of the update terms
 * (ratios m̂/√v̂ near ±1, a clip scale computed from a float norm) stays around 1e-7·lr per step; the weights are O(1),
 * so ELEMENTWISE-sized bounds hold with margin. The clip scale goes through a reduction, hence REDUCTION's rtol for
 * the norm itself.
 */
const WEIGHTS = { atol: 1e-5, rtol: 1e-4 };

const f32 = (a: Float64Array) => Float64Array.from(Float32Array.from(a));

describe('decaysByDefault', () => {
  it('decays matrices and LoRA factors, not biases or LayerNorm parameters', () => {
    expect(SHAPES.map((s) => decaysByDefault(s.name, s.shape))).toEqual([true, true, false, false, true]);
    expect(decaysByDefault('ln_f.weight', [64])).toBe(false);
    expect(decaysByDefault('h.3.mlp.c_fc.weight', [64, 256])).toBe(true);
  });
});

describe('AdamWOptimizer on WebGPU', () => {
  let gpu: GpuContext;
  beforeAll(async () => {
    gpu = await testGpu();
  });

  /** Uploads params and a zero gradient per shape; returns the CPU copies too. */
  function makeTensors(rng: Rng) {
    const params = SHAPES.map((s) => f32(uniformArray(rng, s.shape.reduce((a, d) => a * d, 1))));
    const tensors: TrainableTensor[] = SHAPES.map((s, i) => ({
      name: s.name,
      shape: s.shape,
      param: gpu.upload(params[i], `param:${s.name}`),
      grad: gpu.tensor(params[i].length, `grad:${s.name}`),
    }));
    return { params, tensors };
  }

  /** Steps of gradients large enough that clipping (max norm 1) is active on some steps and not on others. */
  function makeGrads(rng: Rng, steps: number): Float64Array[][] {
    return Array.from({ length: steps }, (_, step) =>
      SHAPES.map((s) => f32(uniformArray(rng, s.shape.reduce((a, d) => a * d, 1), step % 2 ? -0.02 : -0.5, step % 2 ? 0.02 : 0.5))),
    );
  }

  function referenceSteps(params: Float64Array[], grads: Float64Array[][], lrs: number[], firstStep = 1, moments?: { m: Float64Array[]; v: Float64Array[] }) {
    const m = moments?.m ?? params.map((p) => new Float64Array(p.length));
    const v = moments?.v ?? params.map((p) => new Float64Array(p.length));
    const norms: number[] = [];
    grads.forEach((stepGrads, k) => {
      const norm = globalGradNorm(stepGrads);
      norms.push(norm);
      const scale = clipScale(norm, SETTINGS.maxGradNorm);
      params.forEach((p, i) => {
        const decay = decaysByDefault(SHAPES[i].name, SHAPES[i].shape) ? SETTINGS.weightDecay : 0;
        adamwStep(p, stepGrads[i], m[i], v[i], { ...SETTINGS, lr: lrs[k], weightDecay: decay }, firstStep + k, scale);
      });
    });
    return { m, v, norms };
  }

  it('matches the reference over 6 steps with clipping, per-tensor decay and a changing learning rate', async () => {
    const rng = new Rng(11);
    const { params, tensors } = makeTensors(rng);
    const grads = makeGrads(rng, 6);
    const lrs = grads.map((_, k) => 0.01 * (1 - k / 8));
    const optimizer = await AdamWOptimizer.create(gpu, tensors, SETTINGS);
    const gpuNorms: number[] = [];
    for (let k = 0; k < grads.length; k++) {
      tensors.forEach((t, i) => gpu.write(t.grad, grads[k][i]));
      expect(optimizer.prepareStep(lrs[k])).toBe(k + 1);
      gpu.submit(optimizer.dispatches);
      gpuNorms.push((await gpu.read(optimizer.gradNormResult))[GRAD_NORM_RESULT.norm]);
    }
    const expected = referenceSteps(params, grads, lrs);
    expectClose(gpuNorms, expected.norms, REDUCTION, 'gradient norms');
    expect(expected.norms.some((n) => n > 1) && expected.norms.some((n) => n < 1)).toBe(true);
    for (let i = 0; i < tensors.length; i++) {
      expectClose(await gpu.read(tensors[i].param), params[i], WEIGHTS, `param ${SHAPES[i].name}`);
      expectClose(await gpu.read(tensors[i].grad), new Float64Array(params[i].length), { atol: 0, rtol: 0 }, 'grad cleared');
    }
    optimizer.release();
    for (const t of tensors) {
      gpu.free(t.param);
      gpu.free(t.grad);
    }
    expect(gpu.pool.bytesInUse).toBe(0);
  });

  it('exports and imports its state: a fresh optimizer continues bit-for-bit like the original', async () => {
    const rng = new Rng(12);
    const a = makeTensors(rng);
    const grads = makeGrads(rng, 5);
    const lr = 0.01;
    const original = await AdamWOptimizer.create(gpu, a.tensors, SETTINGS);
    const run = (opt: AdamWOptimizer, tensors: TrainableTensor[], from: number, to: number) => {
      for (let k = from; k < to; k++) {
        tensors.forEach((t, i) => gpu.write(t.grad, grads[k][i]));
        opt.prepareStep(lr);
        gpu.submit(opt.dispatches);
      }
    };
    run(original, a.tensors, 0, 3);
    const state = await original.exportState();
    expect(state.step).toBe(3);
    expect(state.tensors.map((t) => t.name)).toEqual(SHAPES.map((s) => s.name));
    expect(state.tensors[0].v.some((x) => x > 0)).toBe(true);
    const weightsAt3 = await Promise.all(a.tensors.map((t) => gpu.read(t.param)));
    run(original, a.tensors, 3, 5);
    const uninterrupted = await Promise.all(a.tensors.map((t) => gpu.read(t.param)));

    // A fresh set of tensors holding the step-3 weights, and a fresh optimizer given the exported state.
    const b: TrainableTensor[] = SHAPES.map((s, i) => ({
      name: s.name,
      shape: s.shape,
      param: gpu.upload(weightsAt3[i], `resumed:${s.name}`),
      grad: gpu.tensor(weightsAt3[i].length, `resumed grad:${s.name}`),
    }));
    const resumed = await AdamWOptimizer.create(gpu, b, SETTINGS);
    resumed.importState(state);
    expect(resumed.stepsPrepared).toBe(3);
    run(resumed, b, 3, 5);
    for (let i = 0; i < b.length; i++) {
      expectClose(await gpu.read(b[i].param), uninterrupted[i], { atol: 0, rtol: 0 }, `resumed ${SHAPES[i].name}`);
    }
    expect(() => resumed.importState({ ...state, tensors: state.tensors.slice(1) })).toThrow(/no moments for/);
    original.release();
    resumed.release();
    for (const t of [...a.tensors, ...b]) {
      gpu.free(t.param);
      gpu.free(t.grad);
    }
  });

  // PyTorch's GradScaler skips optimizer.step() on a non-finite gradient, so its step count (t of 1 − β^t) stays put;
  // counting the skipped step would make every later update use the bias corrections of one step too many.
  it('skips a step whose gradient is not finite without counting it: later steps continue as if it never came', async () => {
    const rng = new Rng(14);
    const { params, tensors } = makeTensors(rng);
    const grads = makeGrads(rng, 5);
    const lrs = grads.map((_, k) => 0.01 * (1 - k / 8));
    const skipped = 2;
    const optimizer = await AdamWOptimizer.create(gpu, tensors, SETTINGS);
    for (let k = 0; k < grads.length; k++) {
      tensors.forEach((t, i) => gpu.write(t.grad, grads[k][i]));
      if (k === skipped) gpu.write(tensors[1].grad, [NaN], 5);
      optimizer.prepareStep(lrs[k]);
      gpu.submit(optimizer.dispatches);
    }
    const state = await optimizer.exportState();
    expect(state.step).toBe(grads.length - 1);
    expect(optimizer.stepsPrepared).toBe(grads.length);
    const keep = (_: unknown, k: number) => k !== skipped;
    referenceSteps(params, grads.filter(keep), lrs.filter(keep));
    for (let i = 0; i < tensors.length; i++) {
      expectClose(await gpu.read(tensors[i].param), params[i], WEIGHTS, `param ${SHAPES[i].name}`);
    }
    optimizer.release();
    for (const t of tensors) {
      gpu.free(t.param);
      gpu.free(t.grad);
    }
    expect(gpu.pool.bytesInUse).toBe(0);
  });

  it('leaves the gradient unscaled when clipping is off, and refuses a duplicated tensor', async () => {
    const rng = new Rng(13);
    const { params, tensors } = makeTensors(rng);
    const grads = makeGrads(rng, 1);
    const noClip = { ...SETTINGS, maxGradNorm: 0 };
    const optimizer = await AdamWOptimizer.create(gpu, tensors, noClip);
    tensors.forEach((t, i) => gpu.write(t.grad, grads[0][i]));
    optimizer.prepareStep(0.01);
    gpu.submit(optimizer.dispatches);
    const result = await gpu.read(optimizer.gradNormResult);
    expect(result[GRAD_NORM_RESULT.clipScale]).toBe(1);
    expect(globalGradNorm(grads[0])).toBeGreaterThan(1);
    for (let i = 0; i < params.length; i++) {
      const decay = decaysByDefault(SHAPES[i].name, SHAPES[i].shape) ? SETTINGS.weightDecay : 0;
      adamwStep(params[i], grads[0][i], new Float64Array(params[i].length), new Float64Array(params[i].length), { ...noClip, lr: 0.01, weightDecay: decay }, 1);
      expectClose(await gpu.read(tensors[i].param), params[i], WEIGHTS, `param ${SHAPES[i].name}`);
    }
    optimizer.release();
    await expect(AdamWOptimizer.create(gpu, [tensors[0], tensors[0]], SETTINGS)).rejects.toThrow(/twice/);
    for (const t of tensors) {
      gpu.free(t.param);
      gpu.free(t.grad);
    }
  });
});
