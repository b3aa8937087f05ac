import { beforeAll, describe, expect, it } from 'vitest';
import type { GpuContext } from '../src/engine/gpu/context.ts';
import {
  attentionBackward,
  attentionForward,
  attentionScratchSizes,
  type AttentionRowsBackwardTiles,
  type AttentionRowsForwardTiles,
  type AttentionTiles,
} from '../src/engine/ops/attention.ts';
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

type Kernels = 'rows' | 'tiled';

interface Case {
  B: number;
  T: number;
  NH: number;
  HS: number;
  /** Forced kernel family and tiles; by default the wrapper chooses (rows kernels for HS = 4·n ≤ 64). */
  forward?: AttentionTiles | AttentionRowsForwardTiles;
  backward?: AttentionTiles | AttentionRowsBackwardTiles;
  /** The family the case must end up in. */
  kernels: Kernels;
  /** Inputs uniform in ±range; 3 makes softmax rows peaky, so the running max moves between key blocks. */
  range?: number;
}

const KERNEL_NAMES: Record<Kernels, { forward: string[]; backward: string[] }> = {
  rows: { forward: ['attention_forward_rows'], backward: ['attention_backward_rows_dq', 'attention_backward_rows_dkdv'] },
  tiled: { forward: ['attention_forward'], backward: ['attention_backward_delta', 'attention_backward'] },
};

const CASES: Case[] = [
  // Default choice: the rows kernels (threads per backward row: 1 up to HS 16, 4 at HS 64, GPT-2's tiles there).
  { B: 2, T: 7, NH: 3, HS: 4, kernels: 'rows' },
  { B: 1, T: 33, NH: 2, HS: 16, kernels: 'rows' },
  { B: 3, T: 64, NH: 4, HS: 8, kernels: 'rows' },
  { B: 1, T: 1, NH: 2, HS: 8, kernels: 'rows' },
  { B: 1, T: 70, NH: 2, HS: 64, kernels: 'rows' },
  { B: 1, T: 45, NH: 1, HS: 12, kernels: 'rows' },
  { B: 2, T: 40, NH: 1, HS: 16, kernels: 'rows', range: 3 },
  // Rows kernels with forced tiles: sizes that are no power of two, several lanes and parts, a wide split.
  {
    B: 1, T: 37, NH: 2, HS: 16, kernels: 'rows',
    forward: { rows: 12, lanes: 2, keysPerLane: 3 },
    backward: { rows: 16, keyRows: 8, split: 2, tileKeys: 5, tileQueries: 3 },
  },
  {
    B: 2, T: 70, NH: 1, HS: 32, kernels: 'rows', range: 3,
    forward: { rows: 32, lanes: 8, keysPerLane: 2 },
    backward: { rows: 32, keyRows: 16, split: 4, tileKeys: 6, tileQueries: 10 },
  },
  {
    B: 1, T: 24, NH: 1, HS: 64, kernels: 'rows',
    forward: { rows: 8, lanes: 1, keysPerLane: 8 },
    backward: { rows: 16, keyRows: 16, split: 1, tileKeys: 8, tileQueries: 8 },
  },
  // The generic tiled kernels: head sizes the rows kernels do not take, and forced tiles.
  { B: 1, T: 9, NH: 2, HS: 6, kernels: 'tiled' },
  { B: 1, T: 5, NH: 1, HS: 68, kernels: 'tiled' },
  { B: 2, T: 7, NH: 3, HS: 4, kernels: 'tiled', forward: { BQ: 16, BK: 16 }, backward: { BQ: 16, BK: 16 } },
  { B: 1, T: 20, NH: 2, HS: 64, kernels: 'tiled', forward: { BQ: 16, BK: 8 }, backward: { BQ: 16, BK: 8 } },
  { B: 1, T: 33, NH: 1, HS: 8, kernels: 'tiled', forward: { BQ: 4, BK: 8 }, backward: { BQ: 4, BK: 8 } },
  { B: 2, T: 19, NH: 2, HS: 4, kernels: 'tiled', forward: { BQ: 8, BK: 4 }, backward: { BQ: 8, BK: 4 } },
  { B: 1, T: 40, NH: 1, HS: 8, kernels: 'tiled', forward: { BQ: 8, BK: 4 }, backward: { BQ: 8, BK: 4 }, range: 3 },
];

function describeTiles(tiles: object | undefined): string {
  return tiles ? ` ${Object.values(tiles).join('x')}` : '';
}

describe('attention kernels on WebGPU', () => {
  let gpu: GpuContext;
  beforeAll(async () => {
    gpu = await testGpu();
  });

  for (const c of CASES) {
    const tileName = c.forward ? `, tiles${describeTiles(c.forward)} /${describeTiles(c.backward)}` : '';
    const name = `${c.kernels} forward and backward, B=${c.B} T=${c.T} NH=${c.NH} HS=${c.HS}${tileName}${c.range ? `, inputs ±${c.range}` : ''}`;
    it(name, async () => {
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
        // Garbage in every output and in the scratch: the kernels must assign every element, not add to it.
        out: gpu.upload(uniformArray(rng, B * T * C, 5, 9), 'out'),
        lse: gpu.upload(uniformArray(rng, sizes.lse, 5, 9), 'lse'),
        dout: gpu.upload(dout, 'dout'),
        dqkv: gpu.upload(uniformArray(rng, qkv.length, 5, 9), 'dqkv'),
        delta: gpu.upload(uniformArray(rng, sizes.delta, 5, 9), 'delta'),
      };
      const forward = await attentionForward(gpu, t, shape, c.forward);
      const backward = await attentionBackward(gpu, t, shape, c.backward);
      expect([forward.kernel]).toEqual(KERNEL_NAMES[c.kernels].forward);
      expect(backward.map((d) => d.kernel)).toEqual(KERNEL_NAMES[c.kernels].backward);
      // One submit: the backward reads the out and lse this forward writes.
      const [gOut, gLse, gDqkv] = await runAndRead(gpu, [forward, ...backward], t.out, t.lse, t.dqkv);
      // REDUCTION: every output is an f32 sum over at most T·HS ≤ 2240 products of O(1) terms (O(10) with ±3 inputs),
      // accumulated in blocks with rescaling; on SwiftShader and an H100 the worst errors seen are ~1e-6, so 1e-4/1e-3
      // leaves room for other devices' exp() and summation orders.
      expectClose(gOut, out, REDUCTION, 'out');
      expectClose(gLse, lse, REDUCTION, 'lse');
      expectClose(gDqkv, dqkv, REDUCTION, 'dqkv');
      for (const tensor of Object.values(t)) gpu.free(tensor);
      expect(gpu.pool.bytesInUse).toBe(0);
    });
  }

  const DETERMINISM: { kernels: Kernels; forward?: AttentionTiles | AttentionRowsForwardTiles; backward?: AttentionTiles | AttentionRowsBackwardTiles }[] = [
    { kernels: 'rows', forward: { rows: 16, lanes: 4, keysPerLane: 2 }, backward: { rows: 16, keyRows: 8, split: 2, tileKeys: 4, tileQueries: 4 } },
    { kernels: 'tiled', forward: { BQ: 4, BK: 4 }, backward: { BQ: 4, BK: 4 } },
  ];
  for (const d of DETERMINISM) {
    it(`${d.kernels} kernels are deterministic: two runs give bit-identical out, lse and dqkv`, async () => {
      const shape = { B: 1, T: 37, C: 16, NH: 2 };
      const rng = new Rng(77);
      const sizes = attentionScratchSizes(shape);
      const t = {
        qkv: gpu.upload(uniformArray(rng, 37 * 48, -3, 3), 'qkv'),
        out: gpu.tensor(37 * 16, 'out'),
        lse: gpu.tensor(sizes.lse, 'lse'),
        dout: gpu.upload(uniformArray(rng, 37 * 16), 'dout'),
        dqkv: gpu.tensor(37 * 48, 'dqkv'),
        delta: gpu.tensor(sizes.delta, 'delta'),
      };
      const runs: Float32Array[][] = [];
      for (let run = 0; run < 2; run++) {
        const dispatches = [await attentionForward(gpu, t, shape, d.forward), ...(await attentionBackward(gpu, t, shape, d.backward))];
        expect(dispatches[0].kernel).toBe(KERNEL_NAMES[d.kernels].forward[0]);
        runs.push(await runAndRead(gpu, dispatches, t.out, t.lse, t.dqkv));
      }
      for (let i = 0; i < 3; i++) expect(Array.from(runs[1][i])).toEqual(Array.from(runs[0][i]));
      for (const tensor of Object.values(t)) gpu.free(tensor);
    });
  }

  it('rejects rows tiles beyond the kernels\' capacity or the head size they take', async () => {
    const shape = { B: 1, T: 4, C: 16, NH: 1 };
    const t = { qkv: gpu.tensor(4 * 48, 'qkv'), out: gpu.tensor(4 * 16, 'out'), lse: gpu.tensor(4, 'lse') };
    await expect(attentionForward(gpu, t, shape, { rows: 8, lanes: 2, keysPerLane: 9 })).rejects.toThrow(/keysPerLane/);
    await expect(attentionForward(gpu, t, shape, { rows: 64, lanes: 2, keysPerLane: 2 })).rejects.toThrow(/rows must be/);
    const oddShape = { B: 1, T: 4, C: 6, NH: 1 };
    await expect(attentionForward(gpu, t, oddShape, { rows: 8, lanes: 2, keysPerLane: 2 })).rejects.toThrow(/head size/);
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
