import { beforeAll, describe, expect, it } from 'vitest';
import type { GpuContext, GpuTensor } from '../src/engine/gpu/context.ts';
import { adamwCount, adamwUniforms, adamwUpdate } from '../src/engine/ops/adamw.ts';
import { GRAD_NORM_RESULT, gradNorm, planGradNorm } from '../src/engine/ops/gradnorm.ts';
import * as ref from '../src/engine/reference/adamw.ts';
import { clipScale, globalGradNorm } from '../src/engine/reference/gradnorm.ts';
import { Rng, uniformArray } from '../src/engine/random.ts';
import { ELEMENTWISE, expectClose } from './helpers/check.ts';
import { runAndRead, testGpu } from './helpers/gpu.ts';

const HYPER: ref.AdamWHyperparameters = { lr: 1e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.1 };

/**
 * The moments are small (v ~ (1−β2)·g² ≈ 1e-4 and below, smaller still after clipping), under ELEMENTWISE's atol of
 * 1e-5, which would accept zeros; what matters is their relative error (f32 rounding of 1 − β2 alone is 1.3e-5, the
 * clip scale adds ~1e-6), hence rtol 1e-4. The absolute floors differ: m sums terms of both signs, so an m near zero
 * keeps the rounding of its O(0.05) terms (a few 1e-9 per step); v only adds positive terms.
 */
const FIRST_MOMENT = { atol: 1e-7, rtol: 1e-4 };
const SECOND_MOMENT = { atol: 1e-10, rtol: 1e-4 };

/** f32-rounded copy: the values the GPU starts from. */
function asF32(a: Float64Array): Float64Array {
  return Float64Array.from(Float32Array.from(a));
}

describe('AdamW reference', () => {
  it('first step from zero moments moves each weight by lr·sign(g) plus the decay', () => {
    const rng = new Rng(2);
    const n = 9;
    const param = uniformArray(rng, n);
    const grad = uniformArray(rng, n);
    const clip = 0.5;
    const expected = param.map((p, i) => {
      const g = grad[i] * clip;
      return p - HYPER.lr * (g / (Math.abs(g) + HYPER.eps) + HYPER.weightDecay * p);
    });
    ref.adamwStep(param, grad, new Float64Array(n), new Float64Array(n), HYPER, 1, clip);
    expectClose(param, expected, { atol: 1e-14, rtol: 1e-12 }, 'param');
  });

  it('with a zero gradient only the decoupled weight decay acts', () => {
    const param = Float64Array.of(2, -3);
    for (let step = 1; step <= 3; step++) {
      ref.adamwStep(param, new Float64Array(2), new Float64Array(2), new Float64Array(2), HYPER, step);
    }
    const decay = Math.pow(1 - HYPER.lr * HYPER.weightDecay, 3);
    expectClose(param, [2 * decay, -3 * decay], { atol: 1e-14, rtol: 1e-12 }, 'param');
  });

  it('clip scale 0 skips the step: param, m and v untouched, for NaN, infinite and finite gradients alike', () => {
    for (const bad of [NaN, Infinity, -Infinity, 0.25]) {
      const param = Float64Array.of(0.5, -1.5, 2);
      const m = Float64Array.of(0.01, -0.02, 0.03);
      const v = Float64Array.of(1e-4, 2e-4, 3e-4);
      const before = [Array.from(param), Array.from(m), Array.from(v)];
      ref.adamwStep(param, Float64Array.of(0.1, bad, -0.3), m, v, HYPER, 4, 0);
      expect([Array.from(param), Array.from(m), Array.from(v)], `gradient with ${bad}`).toEqual(before);
    }
  });
});

describe('AdamW kernel on WebGPU', () => {
  let gpu: GpuContext;
  beforeAll(async () => {
    gpu = await testGpu();
  });

  function freeAll(tensors: readonly GpuTensor[]): void {
    for (const tensor of tensors) gpu.free(tensor);
    expect(gpu.pool.bytesInUse).toBe(0);
  }

  for (const n of [1, 7, 1000, 70001]) {
    it(`five steps with weight decay, clip scale 0.5 and a learning-rate schedule, n=${n}`, async () => {
      const rng = new Rng(n);
      const steps = 5;
      const clip = 0.5;
      const param = asF32(uniformArray(rng, n));
      const m = new Float64Array(n);
      const v = new Float64Array(n);
      const grads = Array.from({ length: steps }, () => asF32(uniformArray(rng, n)));

      const t = {
        param: gpu.upload(param, 'param'),
        grad: gpu.tensor(n, 'grad'),
        m: gpu.tensor(n, 'm'),
        v: gpu.tensor(n, 'v'),
        clipScale: gpu.upload([clip], 'clip scale'),
        stepCount: gpu.tensor(1, 'step count'),
      };
      const update = await adamwUpdate(gpu, t, n, HYPER);
      // The step count (t − 1 of the bias corrections) advances on the GPU, after the update.
      const count = await adamwCount(gpu, t);
      for (let step = 1; step <= steps; step++) {
        const hyper = { ...HYPER, lr: HYPER.lr * (1 - step / 10) }; // a decaying schedule: lr changes every step
        ref.adamwStep(param, grads[step - 1], m, v, hyper, step, clip);
        gpu.write(t.grad, grads[step - 1]);
        update.setUniforms(adamwUniforms(hyper));
        gpu.submit([update, count]);
      }
      const [gParam, gM, gV, gGrad, gCount] = await runAndRead(gpu, [], t.param, t.m, t.v, t.grad, t.stepCount);
      update.release();
      count.release();
      expect(Array.from(gCount), 'updates counted').toEqual([steps]);
      expectClose(gParam, param, ELEMENTWISE, 'param');
      expectClose(gM, m, FIRST_MOMENT, 'm');
      expectClose(gV, v, SECOND_MOMENT, 'v');
      expectClose(gGrad, new Float64Array(n), { atol: 0, rtol: 0 }, 'grad cleared after the update');
      freeAll(Object.values(t));
    });
  }

  // Step 7 and 700: the bias corrections 1 − β^t come from the series and from 1 − exp (β1 from t = 5 on, β2 from
  // t = 500 on) inside the kernel; both must match the reference's double precision.
  for (const step of [7, 700]) it(`keeps the gradient with zeroGrad off, and unfolds a 2D grid (step ${step})`, async () => {
    const n = 1000;
    const rng = new Rng(4);
    const param = asF32(uniformArray(rng, n));
    const grad = asF32(uniformArray(rng, n));
    const m = asF32(uniformArray(rng, n, -0.1, 0.1));
    const v = asF32(uniformArray(rng, n, 0, 0.01));
    const t = {
      param: gpu.upload(param, 'param'),
      grad: gpu.upload(grad, 'grad'),
      m: gpu.upload(m, 'm'),
      v: gpu.upload(v, 'v'),
      clipScale: gpu.upload([1], 'clip scale'),
      stepCount: gpu.upload([step - 1], 'step count'),
    };
    const update = await adamwUpdate(gpu, t, n, HYPER, { zeroGrad: false });
    update.workgroups = [2, 2, 1]; // 4 groups of 256 ≥ 1000 values, folded as the grid of a huge tensor would be
    const [gParam, gM, gV, gGrad] = await runAndRead(gpu, [update], t.param, t.m, t.v, t.grad);
    ref.adamwStep(param, grad, m, v, HYPER, step);
    expectClose(gParam, param, ELEMENTWISE, 'param');
    expectClose(gM, m, FIRST_MOMENT, 'm');
    expectClose(gV, v, SECOND_MOMENT, 'v');
    expectClose(gGrad, grad, { atol: 0, rtol: 0 }, 'grad kept');
    freeAll(Object.values(t));
  });

  it('clips by the global norm from gradnorm in the same submit, with no readback in between', async () => {
    const rng = new Rng(8);
    const lengths = [37, 5003];
    const params = lengths.map((n) => asF32(uniformArray(rng, n)));
    const grads = lengths.map((n) => asF32(uniformArray(rng, n, -3, 3)));
    const maxNorm = 1;
    const scale = clipScale(globalGradNorm(grads), maxNorm);
    expect(scale).toBeLessThan(0.05); // really clipping

    const gParams = params.map((p, i) => gpu.upload(p, `param ${i}`));
    const gGrads = grads.map((g, i) => gpu.upload(g, `grad ${i}`));
    const moments = lengths.flatMap((n, i) => [gpu.tensor(n, `m ${i}`), gpu.tensor(n, `v ${i}`)]);
    const partials = gpu.tensor(planGradNorm(lengths).partialsLength, 'partials');
    const result = gpu.tensor(GRAD_NORM_RESULT.length, 'grad norm');
    const norm = await gradNorm(gpu, { grads: gGrads, partials, result }, maxNorm);
    const stepCount = gpu.tensor(1, 'step count');
    const updates = await Promise.all(
      lengths.map((n, i) =>
        adamwUpdate(gpu, { param: gParams[i], grad: gGrads[i], m: moments[2 * i], v: moments[2 * i + 1], clipScale: result, stepCount }, n, HYPER),
      ),
    );
    const read = await runAndRead(gpu, [...norm.all, ...updates], ...gParams, ...moments);
    lengths.forEach((n, i) => {
      const m = new Float64Array(n);
      const v = new Float64Array(n);
      ref.adamwStep(params[i], grads[i], m, v, HYPER, 1, scale);
      // Adam's step is nearly invariant to a gradient scale, so the clipping shows in m and v.
      expectClose(read[i], params[i], ELEMENTWISE, `param ${i}`);
      expectClose(read[lengths.length + 2 * i], m, FIRST_MOMENT, `m ${i}`);
      expectClose(read[lengths.length + 2 * i + 1], v, SECOND_MOMENT, `v ${i}`);
    });
    for (const d of [...norm.all, ...updates]) d.release();
    freeAll([...gParams, ...gGrads, ...moments, partials, result, stepCount]);
  });

  // gradnorm gives scale 0 for a non-finite norm (clipping on or off), and the update must then write nothing but
  // the cleared gradient: grad·0 would still be NaN. Compared bit for bit, as the step must not happen at all.
  for (const zeroGrad of [true, false]) {
    for (const maxNorm of [1, 0]) {
      it(`skips the step on NaN and ±Infinity gradients, maxNorm ${maxNorm}, zeroGrad ${zeroGrad}`, async () => {
        const lengths = [7, 37];
        for (const bad of [NaN, Infinity, -Infinity]) {
          const rng = new Rng(21);
          const params = lengths.map((n) => Float32Array.from(uniformArray(rng, n)));
          const grads = lengths.map((n) => Float32Array.from(uniformArray(rng, n)));
          grads[1][30] = bad; // one bad value in one tensor poisons the global norm, so both tensors skip
          const ms = lengths.map((n) => Float32Array.from(uniformArray(rng, n, -0.1, 0.1)));
          const vs = lengths.map((n) => Float32Array.from(uniformArray(rng, n, 1e-4, 0.01)));

          const gParams = params.map((p, i) => gpu.upload(p, `param ${i}`));
          const gGrads = grads.map((g, i) => gpu.upload(g, `grad ${i}`));
          const gMs = ms.map((m, i) => gpu.upload(m, `m ${i}`));
          const gVs = vs.map((v, i) => gpu.upload(v, `v ${i}`));
          const partials = gpu.tensor(planGradNorm(lengths).partialsLength, 'partials');
          const result = gpu.tensor(GRAD_NORM_RESULT.length, 'grad norm');
          const norm = await gradNorm(gpu, { grads: gGrads, partials, result }, maxNorm);
          const stepCount = gpu.upload([2], 'step count');
          const updates = await Promise.all(
            lengths.map((n, i) =>
              adamwUpdate(gpu, { param: gParams[i], grad: gGrads[i], m: gMs[i], v: gVs[i], clipScale: result, stepCount }, n, HYPER, { zeroGrad }),
            ),
          );
          const count = await adamwCount(gpu, { clipScale: result, stepCount });
          gpu.submit([...norm.all, ...updates, count]);

          const [scale] = await gpu.read(result);
          expect(scale, `clip scale with ${bad}`).toBe(0);
          // A skipped step is not counted: the next update's bias corrections are still those of step 3.
          expect(Array.from(await gpu.read(stepCount)), `step count with ${bad}`).toEqual([2]);
          const bits = (a: Float32Array) => Array.from(new Uint32Array(a.buffer, a.byteOffset, a.length));
          for (let i = 0; i < lengths.length; i++) {
            expect(Array.from(await gpu.readU32(gParams[i])), `param ${i} with ${bad}`).toEqual(bits(params[i]));
            expect(Array.from(await gpu.readU32(gMs[i])), `m ${i} with ${bad}`).toEqual(bits(ms[i]));
            expect(Array.from(await gpu.readU32(gVs[i])), `v ${i} with ${bad}`).toEqual(bits(vs[i]));
            const gradAfter = zeroGrad ? new Float32Array(lengths[i]) : grads[i];
            expect(Array.from(await gpu.readU32(gGrads[i])), `grad ${i} with ${bad}`).toEqual(bits(gradAfter));
          }
          for (const d of [...norm.all, ...updates, count]) d.release();
          freeAll([...gParams, ...gGrads, ...gMs, ...gVs, partials, result, stepCount]);
        }
      });
    }
  }
});
