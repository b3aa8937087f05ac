import { beforeAll, describe, expect, it } from 'vitest';
import type { GpuContext, GpuTensor } from '../src/engine/gpu/context.ts';
import { GRAD_NORM_RESULT, gradNorm, planGradNorm } from '../src/engine/ops/gradnorm.ts';
import * as ref from '../src/engine/reference/gradnorm.ts';
import { Rng, uniformArray } from '../src/engine/random.ts';
import { ELEMENTWISE, REDUCTION, expectClose } from './helpers/check.ts';
import { runAndRead, testGpu } from './helpers/gpu.ts';

describe('gradient norm reference', () => {
  it('is the L2 norm of all tensors as one vector', () => {
    expect(ref.globalGradNorm([Float64Array.of(3), Float64Array.of(0, 4)])).toBe(5);
    expect(ref.globalGradNorm([])).toBe(0);
  });

  it('clip scale: off for maxNorm ≤ 0, 1 under the limit, maxNorm/norm over it, 0 for a non-finite norm', () => {
    expect(ref.clipScale(10, 0)).toBe(1);
    expect(ref.clipScale(10, -1)).toBe(1);
    expect(ref.clipScale(0.5, 1)).toBe(1);
    expect(ref.clipScale(4, 1)).toBeCloseTo(0.25, 6);
    // Non-finite: 0 (skip the step) with clipping on and off alike.
    for (const maxNorm of [1, 0, -1]) {
      expect(ref.clipScale(Infinity, maxNorm), `Infinity, maxNorm ${maxNorm}`).toBe(0);
      expect(ref.clipScale(NaN, maxNorm), `NaN, maxNorm ${maxNorm}`).toBe(0);
    }
  });
});

describe('gradient norm kernels on WebGPU', () => {
  let gpu: GpuContext;
  beforeAll(async () => {
    gpu = await testGpu();
  });

  function freeAll(tensors: readonly GpuTensor[]): void {
    for (const tensor of tensors) gpu.free(tensor);
    expect(gpu.pool.bytesInUse).toBe(0);
  }

  it('plans one partial per workgroup, capped per tensor', () => {
    const plan = planGradNorm([1, 4096, 4097, 5_000_000]);
    expect(plan.slots).toEqual([
      { offset: 0, groups: 1 },
      { offset: 1, groups: 1 },
      { offset: 2, groups: 2 },
      { offset: 4, groups: 256 },
    ]);
    expect(plan.partialsLength).toBe(260);
    expect(planGradNorm([]).partialsLength).toBe(1);
  });

  // 1 100 003 elements needs more than the 256-group cap, so each thread of that tensor loops over several strides.
  const lengths = [1, 7, 1000, 5003, 70001, 1_100_003];

  it(`norm and clip scale over tensors of ${lengths.join(', ')} values, deterministic run to run`, async () => {
    const rng = new Rng(11);
    const grads = lengths.map((n) => uniformArray(rng, n));
    const norm = ref.globalGradNorm(grads.map((g) => Float64Array.from(Float32Array.from(g))));

    const gGrads = grads.map((g, i) => gpu.upload(g, `grad ${i}`));
    const partials = gpu.tensor(planGradNorm(lengths).partialsLength, 'partials');
    const result = gpu.tensor(GRAD_NORM_RESULT.length, 'result');
    const dispatches = await gradNorm(gpu, { grads: gGrads, partials, result }, 0);

    // maxNorm 0 (off), half the norm (clips to ~0.5), twice the norm (no clipping): one prepared set, new uniforms.
    for (const maxNorm of [0, norm / 2, norm * 2]) {
      dispatches.finalize.setUniforms({ maxNorm });
      gpu.submit(dispatches.all);
      const first = await gpu.read(result);
      gpu.submit(dispatches.all);
      const second = await gpu.read(result);
      // The sum of 1.2M squares in f32 (per-thread strides, tree reductions, one fixed-order total).
      expectClose([first[GRAD_NORM_RESULT.norm]], [norm], REDUCTION, `norm (maxNorm ${maxNorm})`);
      expectClose([first[GRAD_NORM_RESULT.clipScale]], [ref.clipScale(norm, maxNorm)], REDUCTION, `clip scale (maxNorm ${maxNorm})`);
      expect(Array.from(second), 'a second run gives the same bits').toEqual(Array.from(first));
    }
    for (const d of dispatches.all) d.release();
    freeAll([...gGrads, partials, result]);
  });

  it('gives scale 0 on a non-finite gradient whether clipping is on or off', async () => {
    for (const bad of [Infinity, -Infinity, NaN]) {
      const grads = [gpu.upload([0.5, -1, 2], 'grad a'), gpu.upload([1, bad, 3, 4, 5], 'grad b')];
      const partials = gpu.tensor(planGradNorm([3, 5]).partialsLength, 'partials');
      const result = gpu.tensor(GRAD_NORM_RESULT.length, 'result');
      const clipping = await gradNorm(gpu, { grads, partials, result }, 1);
      const [clipped] = await runAndRead(gpu, clipping.all, result);
      expect(clipped[GRAD_NORM_RESULT.clipScale], `clip scale with ${bad}`).toBe(0);
      expect(Number.isFinite(clipped[GRAD_NORM_RESULT.norm])).toBe(false);
      const unclipped = await gradNorm(gpu, { grads, partials, result }, 0);
      const [off] = await runAndRead(gpu, unclipped.all, result);
      expect(off[GRAD_NORM_RESULT.clipScale], `scale with clipping off and ${bad}`).toBe(0);
      expect(Number.isFinite(off[GRAD_NORM_RESULT.norm])).toBe(false);
      freeAll([...grads, partials, result]);
    }
  });

  it('an empty list gives norm 0 and scale 1; a tiny norm under maxNorm is not scaled', async () => {
    const partials = gpu.tensor(planGradNorm([]).partialsLength, 'partials');
    const result = gpu.upload([7, 7], 'result');
    const [empty] = await runAndRead(gpu, (await gradNorm(gpu, { grads: [], partials, result }, 1)).all, result);
    expectClose(empty, [1, 0], ELEMENTWISE, 'empty');
    const grad = gpu.upload([3e-4, 4e-4], 'grad');
    const [small] = await runAndRead(gpu, (await gradNorm(gpu, { grads: [grad], partials, result }, 1)).all, result);
    expectClose(small, [1, 5e-4], ELEMENTWISE, 'small');
    freeAll([partials, result, grad]);
  });
});
