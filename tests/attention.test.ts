import { beforeAll, describe, expect, it } from 'vitest';
import type { GpuContext } from '../src/engine/gpu/context.ts';
import { attentionBackward, attentionForward, attentionScratchSizes, type AttentionTiles } from '../src/engine/ops/attention.ts';
import * as ref from '../src/engine/reference/attention.ts';
import { Rng, uniformArray } from '../src/engine/random.ts';
import { ELEMENTWISE, REDUCTION, expectClose } from './helpers/check.ts';
import { dot, expectGradient } from './helpers/gradcheck.ts';
import { runAndRead, testGpu } from './helpers/gpu.ts';

describe('attention reference', () => {
  it('backward matches finite differences', () => {
    const shape = { B: 2, T: 4, C: 6, NH: 2 };
    const rng = new Rng(3);
    const qkv = uniformArray(rng, shape.B * shape.T * 3 * shape.C, -1.5, 1.5);
    const w = uniformArray(rng, shape.B * shape.T * shape.C);
    const loss = () => {
      const out = new Float64Array(w.length);
      ref.attentionForward(out, null, qkv, shape);
      return dot(out, w);
    };
    const dqkv = new Float64Array(qkv.length);
    ref.attentionBackward(dqkv, w, qkv, shape);
    expectGradient(dqkv, loss, qkv, 'qkv');
  });

  it('forward is causal and saves lse: with T=1 out = v and lse = q·k/√HS', () => {
    const shape = { B: 1, T: 1, C: 8, NH: 2 };
    const qkv = uniformArray(new Rng(4), 3 * shape.C);
    const out = new Float64Array(shape.C);
    const lse = new Float64Array(shape.NH);
    ref.attentionForward(out, lse, qkv, shape);
    expectClose(out, qkv.subarray(16, 24), ELEMENTWISE, 'out');
    const HS = 4;
    for (let h = 0; h < shape.NH; h++) {
      let score = 0;
      for (let d = 0; d < HS; d++) score += qkv[h * HS + d] * qkv[8 + h * HS + d];
      expect(lse[h]).toBeCloseTo(score / Math.sqrt(HS), 12);
    }
  });

  it('lse is the log-normalizer of the scores (its gradient wrt q is the softmax-weighted mean of k)', () => {
    // d lse(t)/d q(t) = Σ_s P(t,s)·k(s)/√HS, and the reference forward gives P·v: with v := k the two must agree.
    const shape = { B: 1, T: 5, C: 3, NH: 1 };
    const rng = new Rng(5);
    const qkv = uniformArray(rng, shape.T * 9);
    for (let t = 0; t < shape.T; t++) for (let d = 0; d < 3; d++) qkv[t * 9 + 6 + d] = qkv[t * 9 + 3 + d];
    const out = new Float64Array(shape.T * 3);
    ref.attentionForward(out, null, qkv, shape);
    const t = 3;
    const analytic = Float64Array.from([0, 1, 2], (d) => out[t * 3 + d] / Math.sqrt(3));
    const q = qkv.slice(t * 9, t * 9 + 3);
    const lseOfQ = () => {
      const withQ = qkv.slice();
      withQ.set(q, t * 9);
      const lse = new Float64Array(shape.T);
      ref.attentionForward(new Float64Array(shape.T * 3), lse, withQ, shape);
      return lse[t];
    };
    expectGradient(analytic, lseOfQ, q, 'lse/dq');
  });
});

interface Case {
  B: number;
  T: number;
  NH: number;
  HS: number;
  tiles?: AttentionTiles;
  /** Inputs uniform in ±range; 3 makes softmax rows peaky, so the running max moves between key blocks. */
  range?: number;
}

const CASES: Case[] = [
  { B: 2, T: 7, NH: 3, HS: 4 },
  { B: 1, T: 33, NH: 2, HS: 16 },
  { B: 2, T: 64, NH: 4, HS: 8 },
  { B: 1, T: 1, NH: 2, HS: 8 },
  { B: 1, T: 20, NH: 2, HS: 64 },
  { B: 1, T: 33, NH: 1, HS: 8, tiles: { BQ: 4, BK: 8 } },
  { B: 2, T: 19, NH: 2, HS: 4, tiles: { BQ: 8, BK: 4 } },
  { B: 1, T: 40, NH: 1, HS: 8, tiles: { BQ: 8, BK: 4 }, range: 3 },
];

describe('attention kernels on WebGPU', () => {
  let gpu: GpuContext;
  beforeAll(async () => {
    gpu = await testGpu();
  });

  for (const c of CASES) {
    const tileName = c.tiles ? `, tiles ${c.tiles.BQ}x${c.tiles.BK}` : '';
    it(`forward and backward, B=${c.B} T=${c.T} NH=${c.NH} HS=${c.HS}${tileName}${c.range ? `, inputs ±${c.range}` : ''}`, async () => {
      const shape = { B: c.B, T: c.T, C: c.NH * c.HS, NH: c.NH };
      const { B, T, C } = shape;
      const range = c.range ?? 1;
      const rng = new Rng(1000 * T + C);
      const qkv = uniformArray(rng, B * T * 3 * C, -range, range);
      const dout = uniformArray(rng, B * T * C);

      const out = new Float64Array(B * T * C);
      const lse = new Float64Array(attentionScratchSizes(shape).lse);
      ref.attentionForward(out, lse, qkv, shape);
      const dqkv = new Float64Array(qkv.length);
      ref.attentionBackward(dqkv, dout, qkv, shape);

      const sizes = attentionScratchSizes(shape);
      const t = {
        qkv: gpu.upload(qkv, 'qkv'),
        out: gpu.tensor(B * T * C, 'out'),
        lse: gpu.tensor(sizes.lse, 'lse'),
        dout: gpu.upload(dout, 'dout'),
        // Garbage in the gradient and the scratch: the backward must assign every element, not add to it.
        dqkv: gpu.upload(uniformArray(rng, qkv.length, 5, 9), 'dqkv'),
        delta: gpu.upload(uniformArray(rng, sizes.delta, 5, 9), 'delta'),
      };
      // One submit: the backward reads the out and lse this forward writes.
      const [gOut, gLse, gDqkv] = await runAndRead(
        gpu,
        [await attentionForward(gpu, t, shape, c.tiles), ...(await attentionBackward(gpu, t, shape, c.tiles))],
        t.out,
        t.lse,
        t.dqkv,
      );
      // REDUCTION: every output is an f32 sum over at most T·HS ≤ 1024 products of O(1) terms.
      expectClose(gOut, out, REDUCTION, 'out');
      expectClose(gLse, lse, REDUCTION, 'lse');
      expectClose(gDqkv, dqkv, REDUCTION, 'dqkv');
      for (const tensor of Object.values(t)) gpu.free(tensor);
      expect(gpu.pool.bytesInUse).toBe(0);
    });
  }

  it('backward is deterministic: two runs give bit-identical dqkv', async () => {
    const shape = { B: 1, T: 37, C: 16, NH: 2 };
    const rng = new Rng(77);
    const sizes = attentionScratchSizes(shape);
    const t = {
      qkv: gpu.upload(uniformArray(rng, 37 * 48), 'qkv'),
      out: gpu.tensor(37 * 16, 'out'),
      lse: gpu.tensor(sizes.lse, 'lse'),
      dout: gpu.upload(uniformArray(rng, 37 * 16), 'dout'),
      dqkv: gpu.tensor(37 * 48, 'dqkv'),
      delta: gpu.tensor(sizes.delta, 'delta'),
    };
    const tiles = { BQ: 4, BK: 4 };
    const [first] = await runAndRead(
      gpu,
      [await attentionForward(gpu, t, shape, tiles), ...(await attentionBackward(gpu, t, shape, tiles))],
      t.dqkv,
    );
    const [second] = await runAndRead(gpu, await attentionBackward(gpu, t, shape, tiles), t.dqkv);
    expect(Array.from(second)).toEqual(Array.from(first));
    for (const tensor of Object.values(t)) gpu.free(tensor);
  });

  it('rejects a width that does not split into heads', async () => {
    const qkv = gpu.tensor(3 * 10, 'qkv');
    const out = gpu.tensor(10, 'out');
    const lse = gpu.tensor(3, 'lse');
    await expect(attentionForward(gpu, { qkv, out, lse }, { B: 1, T: 1, C: 10, NH: 3 })).rejects.toThrow(/not divisible/);
    for (const tensor of [qkv, out, lse]) gpu.free(tensor);
  });
});
