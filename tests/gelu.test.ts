import { beforeAll, describe, expect, it } from 'vitest';
import type { GpuContext } from '../src/engine/gpu/context.ts';
import { geluBackward, geluForward } from '../src/engine/ops/gelu.ts';
import * as ref from '../src/engine/reference/gelu.ts';
import { Rng, uniformArray } from '../src/engine/random.ts';
import { ELEMENTWISE, expectClose } from './helpers/check.ts';
import { dot, expectGradient } from './helpers/gradcheck.ts';
import { runAndRead, testGpu } from './helpers/gpu.ts';

// Values where tanh saturates; a naive (e^{2u} − 1)/(e^{2u} + 1) overflows to NaN from u ≈ 45 on.
const EXTREMES = [0, -0, 1e4, -1e4, 1e3, -1e3, 100, -100, 30, -30, 10, -10, 5, -5, 1e-4, -1e-4];

describe('gelu reference', () => {
  it('backward matches finite differences', () => {
    const rng = new Rng(21);
    const n = 40;
    const inp = uniformArray(rng, n, -6, 6);
    const w = uniformArray(rng, n);
    const loss = () => {
      const out = new Float64Array(n);
      ref.geluForward(out, inp);
      return dot(out, w);
    };
    const dinp = uniformArray(rng, n); // assign mode must overwrite this
    ref.geluBackward(dinp, w, inp, false);
    expectGradient(dinp, loss, inp, 'inp');
  });

  it('has the known values of gelu_new', () => {
    // gelu(0) = 0, gelu(x) → x for large x and → 0 for very negative x; gelu_new(1) = 0.8411919906082768.
    expect(ref.gelu(0)).toBe(0);
    expect(ref.gelu(1)).toBeCloseTo(0.8411919906082768, 14);
    expect(ref.gelu(10)).toBeCloseTo(10, 12);
    expect(ref.gelu(-10)).toBeCloseTo(0, 12);
    expect(ref.geluDerivative(0)).toBe(0.5);
  });

  it('accumulate adds to dinp', () => {
    const inp = Float64Array.from([-1, 0.5, 2]);
    const dout = Float64Array.from([1, 2, 3]);
    const fresh = new Float64Array(3);
    ref.geluBackward(fresh, dout, inp, false);
    const summed = new Float64Array(3).fill(10);
    ref.geluBackward(summed, dout, inp, true);
    expectClose(summed, fresh.map((v) => v + 10), ELEMENTWISE, 'dinp');
  });
});

describe('gelu kernels on WebGPU', () => {
  let gpu: GpuContext;
  beforeAll(async () => {
    gpu = await testGpu();
  });

  const cases = [
    { n: 1, accumulate: false },
    { n: 37, accumulate: true },
    { n: 1000, accumulate: false },
    { n: 70001, accumulate: true },
  ];
  for (const { n, accumulate } of cases) {
    it(`forward and backward, N=${n} accumulate=${accumulate}, including saturated tanh`, async () => {
      const rng = new Rng(n);
      const inp = uniformArray(rng, n, -6, 6);
      inp.set(EXTREMES.slice(0, n));
      const dout = uniformArray(rng, n);
      const dinp0 = uniformArray(rng, n);

      const out = new Float64Array(n);
      ref.geluForward(out, inp);
      const dinp = dinp0.slice();
      ref.geluBackward(dinp, dout, inp, accumulate);

      const bytesAtStart = gpu.pool.bytesInUse;
      const t = {
        inp: gpu.upload(inp, 'inp'),
        out: gpu.tensor(n, 'out'),
        dout: gpu.upload(dout, 'dout'),
        dinp: gpu.upload(dinp0, 'dinp'),
      };
      try {
        const [gOut, gDinp] = await runAndRead(
          gpu,
          [await geluForward(gpu, t, { n }), await geluBackward(gpu, t, { n, accumulate })],
          t.out,
          t.dinp,
        );
        // Elementwise: a handful of f32 operations per value (tanh through exp, whose error stays ~1e-7 here).
        expectClose(gOut, out, ELEMENTWISE, 'out');
        expectClose(gDinp, dinp, ELEMENTWISE, 'dinp');
        for (let i = 0; i < Math.min(n, EXTREMES.length); i++) {
          expect(Number.isFinite(gOut[i]) && Number.isFinite(gDinp[i]), `finite at x=${inp[i]}`).toBe(true);
        }
      } finally {
        for (const tensor of Object.values(t)) gpu.free(tensor);
      }
      expect(gpu.pool.bytesInUse).toBe(bytesAtStart);
    });
  }
});
