import { beforeAll, describe, expect, it } from 'vitest';
import type { GpuContext } from '../src/engine/gpu/context.ts';
import {
  matmulBackwardBias,
  matmulBackwardInput,
  matmulBackwardWeight,
  matmulForward,
  type MatmulShape,
  type MatmulTiles,
} from '../src/engine/ops/matmul.ts';
import * as ref from '../src/engine/reference/matmul.ts';
import { Rng, uniformArray } from '../src/engine/random.ts';
import { REDUCTION, expectClose } from './helpers/check.ts';
import { dot, expectGradient } from './helpers/gradcheck.ts';
import { runAndRead, testGpu } from './helpers/gpu.ts';

describe('matmul reference', () => {
  it('backward matches finite differences (inp, weight, bias)', () => {
    const rng = new Rng(11);
    const [M, N, K] = [3, 4, 5];
    const inp = uniformArray(rng, M * K);
    const weight = uniformArray(rng, K * N);
    const bias = uniformArray(rng, N);
    const w = uniformArray(rng, M * N);
    const loss = () => {
      const out = new Float64Array(M * N);
      ref.matmulForward(out, inp, weight, bias, M, N, K);
      return dot(out, w);
    };
    const dinp = new Float64Array(M * K);
    const dweight = new Float64Array(K * N);
    const dbias = new Float64Array(N);
    ref.matmulBackward(dinp, dweight, dbias, w, inp, weight, M, N, K);
    expectGradient(dinp, loss, inp, 'inp');
    expectGradient(dweight, loss, weight, 'weight');
    expectGradient(dbias, loss, bias, 'bias');
  });

  it('backward accumulates into existing gradients', () => {
    const rng = new Rng(12);
    const [M, N, K] = [2, 3, 4];
    const inp = uniformArray(rng, M * K);
    const weight = uniformArray(rng, K * N);
    const dout = uniformArray(rng, M * N);
    const fresh = [new Float64Array(M * K), new Float64Array(K * N), new Float64Array(N)] as const;
    ref.matmulBackward(fresh[0], fresh[1], fresh[2], dout, inp, weight, M, N, K);
    const start = [uniformArray(rng, M * K), uniformArray(rng, K * N), uniformArray(rng, N)] as const;
    const acc = start.map((a) => a.slice());
    ref.matmulBackward(acc[0], acc[1], acc[2], dout, inp, weight, M, N, K);
    for (let i = 0; i < 3; i++) {
      const want = start[i].map((v, j) => v + fresh[i][j]);
      expectClose(acc[i], want, { atol: 1e-12, rtol: 1e-12 }, `grad ${i}`);
    }
  });
});

// Tolerance: REDUCTION (atol 1e-4, rtol 1e-3). Inputs are uniform in [-1, 1) and the longest reduction here is 130
// terms, so f32 rounding stays around 1e-5 absolute; REDUCTION is enough for every shape.
describe('matmul kernels on WebGPU', () => {
  let gpu: GpuContext;
  beforeAll(async () => {
    gpu = await testGpu();
  });

  const cases: { shape: MatmulShape; tiles?: Partial<MatmulTiles>; note: string }[] = [
    { shape: { M: 7, N: 36, K: 5 }, note: 'T=7, C=36' },
    { shape: { M: 1, N: 1, K: 1 }, note: 'scalar' },
    { shape: { M: 65, N: 130, K: 67 }, note: 'one past the tile everywhere' },
    { shape: { M: 128, N: 96, K: 64 }, note: 'tile multiples' },
    { shape: { M: 33, N: 20, K: 50 }, note: 'K not a multiple of TILE_DEPTH' },
    { shape: { M: 37, N: 29, K: 45 }, tiles: { TILE_ROWS: 32, TILE_COLS: 16, TILE_DEPTH: 8 }, note: 'other tiles' },
  ];

  for (const { shape, tiles, note } of cases) {
    const { M, N, K } = shape;
    it(`${M}x${N}x${K} (${note}): forward ± bias, backward input = and +=, weight +=, bias +=`, async () => {
      const rng = new Rng(M * 10007 + N * 101 + K);
      const inp = uniformArray(rng, M * K);
      const weight = uniformArray(rng, K * N);
      const bias = uniformArray(rng, N);
      const dout = uniformArray(rng, M * N);
      const dinp0 = uniformArray(rng, M * K);
      const dweight0 = uniformArray(rng, K * N);
      const dbias0 = uniformArray(rng, N);

      const out = new Float64Array(M * N);
      ref.matmulForward(out, inp, weight, bias, M, N, K);
      const outNoBias = new Float64Array(M * N);
      ref.matmulForward(outNoBias, inp, weight, null, M, N, K);
      const dinpAssigned = new Float64Array(M * K);
      const dweightFromZero = new Float64Array(K * N);
      const dbiasFromZero = new Float64Array(N);
      ref.matmulBackward(dinpAssigned, dweightFromZero, dbiasFromZero, dout, inp, weight, M, N, K);
      const dinpAccumulated = dinp0.map((v, i) => v + dinpAssigned[i]);
      const dweight = dweight0.map((v, i) => v + dweightFromZero[i]);
      const dbias = dbias0.map((v, i) => v + dbiasFromZero[i]);

      const t = {
        inp: gpu.upload(inp, 'inp'),
        weight: gpu.upload(weight, 'weight'),
        bias: gpu.upload(bias, 'bias'),
        out: gpu.upload(uniformArray(rng, M * N), 'out'), // garbage: forward must overwrite
        outNoBias: gpu.tensor(M * N, 'outNoBias'),
        dout: gpu.upload(dout, 'dout'),
        dinpAccumulated: gpu.upload(dinp0, 'dinpAccumulated'),
        dinpAssigned: gpu.upload(dinp0, 'dinpAssigned'), // garbage: accumulate = 0 must overwrite
        dweight: gpu.upload(dweight0, 'dweight'),
        dbias: gpu.upload(dbias0, 'dbias'),
      };
      const dispatches = [
        await matmulForward(gpu, { out: t.out, inp: t.inp, weight: t.weight, bias: t.bias }, shape, tiles),
        await matmulForward(gpu, { out: t.outNoBias, inp: t.inp, weight: t.weight }, shape, tiles),
        await matmulBackwardInput(gpu, { dinp: t.dinpAccumulated, dout: t.dout, weight: t.weight }, shape, { accumulate: true, tiles }),
        await matmulBackwardInput(gpu, { dinp: t.dinpAssigned, dout: t.dout, weight: t.weight }, shape, { accumulate: false, tiles }),
        await matmulBackwardWeight(gpu, { dweight: t.dweight, inp: t.inp, dout: t.dout }, shape, tiles),
        await matmulBackwardBias(gpu, { dbias: t.dbias, dout: t.dout }, shape),
      ];
      const [gOut, gOutNoBias, gDinpAcc, gDinpAssigned, gDweight, gDbias] = await runAndRead(
        gpu,
        dispatches,
        t.out,
        t.outNoBias,
        t.dinpAccumulated,
        t.dinpAssigned,
        t.dweight,
        t.dbias,
      );
      expectClose(gOut, out, REDUCTION, 'out (bias)');
      expectClose(gOutNoBias, outNoBias, REDUCTION, 'out (no bias)');
      expectClose(gDinpAcc, dinpAccumulated, REDUCTION, 'dinp (accumulate)');
      expectClose(gDinpAssigned, dinpAssigned, REDUCTION, 'dinp (assign)');
      expectClose(gDweight, dweight, REDUCTION, 'dweight');
      expectClose(gDbias, dbias, REDUCTION, 'dbias');
      for (const tensor of Object.values(t)) gpu.free(tensor);
      expect(gpu.pool.bytesInUse).toBe(0);
    });
  }

  it('rejects tensors too small for the shape', async () => {
    const small = gpu.tensor(4, 'small');
    await expect(matmulForward(gpu, { out: small, inp: small, weight: small }, { M: 3, N: 3, K: 3 })).rejects.toThrow(
      /inp \(M,K\) needs 9/,
    );
    gpu.free(small);
  });
});
