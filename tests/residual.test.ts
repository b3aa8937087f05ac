import { beforeAll, describe, expect, it } from 'vitest';
import type { GpuContext } from '../src/engine/gpu/context.ts';
import { residualBackward, residualForward } from '../src/engine/ops/residual.ts';
import * as ref from '../src/engine/reference/residual.ts';
import { Rng, uniformArray } from '../src/engine/random.ts';
import { ELEMENTWISE, expectClose } from './helpers/check.ts';
import { dot, expectGradient } from './helpers/gradcheck.ts';
import { runAndRead, testGpu } from './helpers/gpu.ts';

describe('residual reference', () => {
  it('backward matches finite differences', () => {
    const rng = new Rng(1);
    const n = 13;
    const a = uniformArray(rng, n);
    const b = uniformArray(rng, n);
    const w = uniformArray(rng, n);
    const loss = () => {
      const out = new Float64Array(n);
      ref.residualForward(out, a, b);
      return dot(out, w);
    };
    const da = new Float64Array(n);
    const db = new Float64Array(n);
    ref.residualBackward(da, db, w);
    expectGradient(da, loss, a, 'a');
    expectGradient(db, loss, b, 'b');
  });
});

describe('residual kernels on WebGPU', () => {
  let gpu: GpuContext;
  beforeAll(async () => {
    gpu = await testGpu();
  });

  for (const n of [1, 7, 36, 1000, 70001]) {
    it(`forward and backward, N=${n}`, async () => {
      const rng = new Rng(n);
      const a = uniformArray(rng, n);
      const b = uniformArray(rng, n);
      const dout = uniformArray(rng, n);
      const da0 = uniformArray(rng, n);
      const db0 = uniformArray(rng, n);

      const out = new Float64Array(n);
      ref.residualForward(out, a, b);
      const da = da0.slice();
      const db = db0.slice();
      ref.residualBackward(da, db, dout);

      const t = {
        a: gpu.upload(a, 'a'),
        b: gpu.upload(b, 'b'),
        out: gpu.tensor(n, 'out'),
        dout: gpu.upload(dout, 'dout'),
        da: gpu.upload(da0, 'da'),
        db: gpu.upload(db0, 'db'),
      };
      const [gOut, gDa, gDb] = await runAndRead(
        gpu,
        [await residualForward(gpu, t, n), await residualBackward(gpu, t, n)],
        t.out,
        t.da,
        t.db,
      );
      expectClose(gOut, out, ELEMENTWISE, 'out');
      expectClose(gDa, da, ELEMENTWISE, 'da');
      expectClose(gDb, db, ELEMENTWISE, 'db');
      for (const tensor of Object.values(t)) gpu.free(tensor);
      expect(gpu.pool.bytesInUse).toBe(0);
    });
  }
});
