import { beforeAll, describe, expect, it } from 'vitest';
import type { GpuContext } from '../src/engine/gpu/context.ts';
import { layernormBackward, layernormForward, layernormScratchLength } from '../src/engine/ops/layernorm.ts';
import * as ref from '../src/engine/reference/layernorm.ts';
import { Rng, uniformArray } from '../src/engine/random.ts';
import { ELEMENTWISE, REDUCTION, expectClose } from './helpers/check.ts';
import { dot, expectGradient } from './helpers/gradcheck.ts';
import { runAndRead, testGpu } from './helpers/gpu.ts';

const EPS = 1e-5;

/** Rows with a non-zero mean and varied spread, so that centring and scaling both matter. */
function layernormInput(rng: Rng, N: number, C: number): Float64Array {
  const x = new Float64Array(N * C);
  for (let n = 0; n < N; n++) {
    const shift = rng.uniform(-3, 3);
    const scale = rng.uniform(0.2, 2);
    for (let c = 0; c < C; c++) x[n * C + c] = shift + scale * rng.uniform(-1, 1);
  }
  return x;
}

describe('layernorm reference', () => {
  it('backward matches finite differences for inp, weight and bias', () => {
    const rng = new Rng(11);
    const N = 3;
    const C = 5;
    const inp = layernormInput(rng, N, C);
    const weight = uniformArray(rng, C, 0.5, 1.5);
    const bias = uniformArray(rng, C);
    const w = uniformArray(rng, N * C);
    const loss = () => {
      const out = new Float64Array(N * C);
      ref.layernormForward(out, new Float64Array(N), new Float64Array(N), inp, weight, bias, N, C, EPS);
      return dot(out, w);
    };
    const out = new Float64Array(N * C);
    const mean = new Float64Array(N);
    const rstd = new Float64Array(N);
    ref.layernormForward(out, mean, rstd, inp, weight, bias, N, C, EPS);
    const dinp = uniformArray(rng, N * C); // garbage that assign mode must overwrite
    const dweight = new Float64Array(C);
    const dbias = new Float64Array(C);
    ref.layernormBackward(dinp, dweight, dbias, w, inp, weight, mean, rstd, N, C, false);
    expectGradient(dinp, loss, inp, 'inp');
    expectGradient(dweight, loss, weight, 'weight');
    expectGradient(dbias, loss, bias, 'bias');
  });

  it('accumulate adds dinp and parameter gradients always add', () => {
    const rng = new Rng(12);
    const N = 2;
    const C = 4;
    const inp = layernormInput(rng, N, C);
    const weight = uniformArray(rng, C);
    const dout = uniformArray(rng, N * C);
    const mean = new Float64Array(N);
    const rstd = new Float64Array(N);
    ref.layernormForward(new Float64Array(N * C), mean, rstd, inp, weight, new Float64Array(C), N, C, EPS);
    const fresh = { dinp: new Float64Array(N * C), dweight: new Float64Array(C), dbias: new Float64Array(C) };
    ref.layernormBackward(fresh.dinp, fresh.dweight, fresh.dbias, dout, inp, weight, mean, rstd, N, C, false);
    const dinp = new Float64Array(N * C).fill(1);
    const dweight = new Float64Array(C).fill(2);
    const dbias = new Float64Array(C).fill(3);
    ref.layernormBackward(dinp, dweight, dbias, dout, inp, weight, mean, rstd, N, C, true);
    expectClose(dinp, fresh.dinp.map((v) => v + 1), ELEMENTWISE, 'dinp');
    expectClose(dweight, fresh.dweight.map((v) => v + 2), ELEMENTWISE, 'dweight');
    expectClose(dbias, fresh.dbias.map((v) => v + 3), ELEMENTWISE, 'dbias');
  });
});

describe('layernorm kernels on WebGPU', () => {
  let gpu: GpuContext;
  beforeAll(async () => {
    gpu = await testGpu();
  });

  // C = 1 (zero variance), 36 (not a multiple of 4), 100 and 768 (several columns per thread); N = 70 leaves a partial
  // row block in the dweight/dbias reduction (blocks of 32), N = 64 fills two exactly.
  const shapes = [
    { N: 7, C: 36, accumulate: false },
    { N: 5, C: 1, accumulate: true },
    { N: 70, C: 100, accumulate: true },
    { N: 64, C: 768, accumulate: false },
  ];
  for (const { N, C, accumulate } of shapes) {
    it(`forward and backward, N=${N} C=${C} accumulate=${accumulate}`, async () => {
      const rng = new Rng(N * 1000 + C);
      const inp = layernormInput(rng, N, C);
      const weight = uniformArray(rng, C, 0.5, 1.5);
      const bias = uniformArray(rng, C);
      const dout = uniformArray(rng, N * C);
      const dinp0 = uniformArray(rng, N * C);
      const dweight0 = uniformArray(rng, C);
      const dbias0 = uniformArray(rng, C);

      const out = new Float64Array(N * C);
      const mean = new Float64Array(N);
      const rstd = new Float64Array(N);
      ref.layernormForward(out, mean, rstd, inp, weight, bias, N, C, EPS);
      const dinp = dinp0.slice();
      const dweight = dweight0.slice();
      const dbias = dbias0.slice();
      ref.layernormBackward(dinp, dweight, dbias, dout, inp, weight, mean, rstd, N, C, accumulate);

      const bytesAtStart = gpu.pool.bytesInUse;
      const t = {
        inp: gpu.upload(inp, 'inp'),
        weight: gpu.upload(weight, 'weight'),
        bias: gpu.upload(bias, 'bias'),
        out: gpu.tensor(N * C, 'out'),
        mean: gpu.tensor(N, 'mean'),
        rstd: gpu.tensor(N, 'rstd'),
        dout: gpu.upload(dout, 'dout'),
        dinp: gpu.upload(dinp0, 'dinp'),
        dweight: gpu.upload(dweight0, 'dweight'),
        dbias: gpu.upload(dbias0, 'dbias'),
        scratch: gpu.tensor(layernormScratchLength(N, C), 'scratch'),
      };
      try {
        const forward = await layernormForward(gpu, t, { N, C, eps: EPS });
        const backward = await layernormBackward(gpu, t, { N, C, accumulate });
        const [gOut, gMean, gRstd, gDinp, gDweight, gDbias] = await runAndRead(
          gpu,
          [forward, ...backward],
          t.out,
          t.mean,
          t.rstd,
          t.dinp,
          t.dweight,
          t.dbias,
        );
        // out: a few f32 roundings after row statistics that are accurate to ~1e-7 relative.
        expectClose(gOut, out, ELEMENTWISE, 'out');
        expectClose(gMean, mean, REDUCTION, 'mean');
        // rstd of a C = 1 row is 1/√eps ≈ 316, so it is compared relatively.
        expectClose(gRstd, rstd, REDUCTION, 'rstd');
        expectClose(gDinp, dinp, REDUCTION, 'dinp');
        expectClose(gDweight, dweight, REDUCTION, 'dweight');
        expectClose(gDbias, dbias, REDUCTION, 'dbias');
      } finally {
        for (const tensor of Object.values(t)) gpu.free(tensor);
      }
      expect(gpu.pool.bytesInUse).toBe(bytesAtStart);
    });
  }

  it('a frozen LayerNorm (no dweight/dbias) records only the dinp dispatch and still gets dinp right', async () => {
    const N = 3;
    const C = 36;
    const rng = new Rng(5);
    const inp = layernormInput(rng, N, C);
    const weight = uniformArray(rng, C);
    const dout = uniformArray(rng, N * C);
    const mean = new Float64Array(N);
    const rstd = new Float64Array(N);
    ref.layernormForward(new Float64Array(N * C), mean, rstd, inp, weight, new Float64Array(C), N, C, EPS);
    const dinp = new Float64Array(N * C);
    ref.layernormBackward(dinp, new Float64Array(C), new Float64Array(C), dout, inp, weight, mean, rstd, N, C, false);

    const t = {
      dout: gpu.upload(dout, 'dout'),
      inp: gpu.upload(inp, 'inp'),
      weight: gpu.upload(weight, 'weight'),
      mean: gpu.upload(mean, 'mean'),
      rstd: gpu.upload(rstd, 'rstd'),
      dinp: gpu.upload(uniformArray(rng, N * C), 'dinp'),
    };
    const backward = await layernormBackward(gpu, t, { N, C, accumulate: false });
    expect(backward).toHaveLength(1);
    const [gDinp] = await runAndRead(gpu, backward, t.dinp);
    expectClose(gDinp, dinp, REDUCTION, 'dinp');
    for (const tensor of Object.values(t)) gpu.free(tensor);
  });

  it('dweight and dbias are bit-for-bit the same on every run', async () => {
    const N = 70;
    const C = 36;
    const rng = new Rng(6);
    const inp = layernormInput(rng, N, C);
    const mean = new Float64Array(N);
    const rstd = new Float64Array(N);
    const weight = uniformArray(rng, C);
    ref.layernormForward(new Float64Array(N * C), mean, rstd, inp, weight, new Float64Array(C), N, C, EPS);
    const t = {
      dout: gpu.upload(uniformArray(rng, N * C), 'dout'),
      inp: gpu.upload(inp, 'inp'),
      weight: gpu.upload(weight, 'weight'),
      mean: gpu.upload(mean, 'mean'),
      rstd: gpu.upload(rstd, 'rstd'),
      dinp: gpu.tensor(N * C, 'dinp'),
      dweight: gpu.tensor(C, 'dweight'),
      dbias: gpu.tensor(C, 'dbias'),
      scratch: gpu.tensor(layernormScratchLength(N, C), 'scratch'),
    };
    const runs: Float32Array[][] = [];
    for (let run = 0; run < 2; run++) {
      gpu.zero(t.dweight);
      gpu.zero(t.dbias);
      runs.push(await runAndRead(gpu, await layernormBackward(gpu, t, { N, C, accumulate: false }), t.dweight, t.dbias));
    }
    expect(Array.from(runs[1][0])).toEqual(Array.from(runs[0][0]));
    expect(Array.from(runs[1][1])).toEqual(Array.from(runs[0][1]));
    for (const tensor of Object.values(t)) gpu.free(tensor);
  });
});
