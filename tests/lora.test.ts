import { beforeAll, describe, expect, it } from 'vitest';
import type { GpuContext } from '../src/engine/gpu/context.ts';
import { loraBackward, loraForward, loraPartialLength, type LoraShape } from '../src/engine/ops/lora.ts';
import * as ref from '../src/engine/reference/lora.ts';
import { Rng, uniformArray } from '../src/engine/random.ts';
import { REDUCTION, expectClose } from './helpers/check.ts';
import { dot, expectGradient } from './helpers/gradcheck.ts';
import { runAndRead, testGpu } from './helpers/gpu.ts';

describe('lora dropout definition', () => {
  it('p = 0 keeps every element unchanged', () => {
    const x = uniformArray(new Rng(1), 1000);
    expect(Array.from(ref.dropoutInput(x, { p: 0, seed: 42 }))).toEqual(Array.from(x));
  });

  it('p = 0.25 drops about a quarter, scales the rest by 4/3, and a new seed draws a new mask', () => {
    const n = 20000;
    const x = new Float64Array(n).fill(1);
    const first = ref.dropoutInput(x, { p: 0.25, seed: 7 });
    const second = ref.dropoutInput(x, { p: 0.25, seed: 8 });
    const kept = first.filter((v) => v !== 0);
    expect(kept.length / n).toBeGreaterThan(0.74);
    expect(kept.length / n).toBeLessThan(0.76);
    expect(kept.every((v) => v === 4 / 3)).toBe(true);
    // Independent masks agree on 0.75² + 0.25² = 62.5% of elements; identical or shifted ones would not.
    let agree = 0;
    for (let i = 0; i < n; i++) if ((first[i] === 0) === (second[i] === 0)) agree++;
    expect(agree / n).toBeGreaterThan(0.61);
    expect(agree / n).toBeLessThan(0.64);
  });

  it('rejects p outside [0, 1)', () => {
    expect(() => ref.dropThreshold(1)).toThrow(RangeError);
    expect(() => ref.dropThreshold(-0.1)).toThrow(RangeError);
  });
});

describe('lora reference', () => {
  const shape: LoraShape = { M: 4, N: 5, K: 6, R: 3 };
  for (const dropout of [
    { p: 0, seed: 0 },
    { p: 0.3, seed: 1234 },
  ]) {
    it(`backward matches finite differences with non-zero B (dropout p=${dropout.p})`, () => {
      const { M, N, K, R } = shape;
      const rng = new Rng(21);
      const inp = uniformArray(rng, M * K);
      const a = uniformArray(rng, R * K);
      const b = uniformArray(rng, N * R); // non-zero, so da is really exercised
      const w = uniformArray(rng, M * N);
      const scale = 0.7;
      if (dropout.p > 0) {
        // The case only means something if the mask drops some elements and keeps others.
        const dropped = ref.dropoutInput(new Float64Array(M * K).fill(1), dropout).filter((v) => v === 0).length;
        expect(dropped).toBeGreaterThan(0);
        expect(dropped).toBeLessThan(M * K);
      }
      const loss = () => {
        const out = new Float64Array(M * N);
        ref.loraForward(out, new Float64Array(M * R), inp, a, b, shape, scale, dropout);
        return dot(out, w);
      };
      const u = new Float64Array(M * R);
      ref.loraForward(new Float64Array(M * N), u, inp, a, b, shape, scale, dropout);
      const dinp = new Float64Array(M * K);
      const da = new Float64Array(R * K);
      const db = new Float64Array(N * R);
      ref.loraBackward(dinp, da, db, w, inp, u, a, b, shape, scale, dropout);
      expect(da.some((v) => v !== 0)).toBe(true);
      expectGradient(dinp, loss, inp, 'inp');
      expectGradient(da, loss, a, 'a');
      expectGradient(db, loss, b, 'b');
    });
  }
});

// Tolerance: REDUCTION (atol 1e-4, rtol 1e-3). The longest reduction is 130 terms of O(1) values (at most ×2 from
// dropout's 1/(1-p)), followed by at most 64 more in the second product; f32 rounding stays near 1e-5 relative.
describe('lora kernels on WebGPU', () => {
  let gpu: GpuContext;
  beforeAll(async () => {
    gpu = await testGpu();
  });

  const cases: { shape: LoraShape; p: number; seed: number; note: string; split?: number }[] = [
    { shape: { M: 1, N: 1, K: 1, R: 1 }, p: 0, seed: 0, note: 'scalar' },
    { shape: { M: 7, N: 36, K: 5, R: 1 }, p: 0, seed: 0, note: 'T=7, C=36, rank 1' },
    { shape: { M: 7, N: 36, K: 20, R: 4 }, p: 0.1, seed: 3, note: 'dropout' },
    { shape: { M: 65, N: 130, K: 67, R: 8 }, p: 0.25, seed: 12345, note: 'one past the tiles, dropout' },
    { shape: { M: 33, N: 20, K: 50, R: 17 }, p: 0, seed: 0, note: 'R past one R_CHUNK' },
    { shape: { M: 40, N: 72, K: 96, R: 64 }, p: 0.5, seed: 0xdeadbeef, note: 'maximum rank, dropout' },
    // With a partial-sum scratch, the weight gradients split the tokens (ops/lora.ts loraGradSplits: ≥ 64 per split).
    { shape: { M: 200, N: 130, K: 67, R: 8 }, p: 0.25, seed: 7, note: 'gradients split 3 ways, dropout', split: 3 },
    { shape: { M: 1030, N: 20, K: 36, R: 3 }, p: 0, seed: 0, note: 'gradients split 16 ways, the last ones empty', split: 16 },
  ];

  for (const { shape, p, seed, note, split } of cases) {
    const { M, N, K, R } = shape;
    it(`M=${M} N=${N} K=${K} R=${R} p=${p} (${note}): forward and backward`, async () => {
      const rng = new Rng(M * 7919 + N * 31 + K * 7 + R);
      const scale = 16 / R;
      const dropout = { p, seed };
      const inp = uniformArray(rng, M * K);
      const a = uniformArray(rng, R * K);
      const b = uniformArray(rng, N * R);
      const out0 = uniformArray(rng, M * N); // the base layer's output, which LoRA adds onto
      const dout = uniformArray(rng, M * N);
      const dinp0 = uniformArray(rng, M * K); // the base layer's input gradient
      const da0 = uniformArray(rng, R * K);
      const db0 = uniformArray(rng, N * R);

      const out = out0.slice();
      const u = new Float64Array(M * R);
      ref.loraForward(out, u, inp, a, b, shape, scale, dropout);
      const dinp = dinp0.slice();
      const da = da0.slice();
      const db = db0.slice();
      const du = ref.loraBackward(dinp, da, db, dout, inp, u, a, b, shape, scale, dropout);

      const t = {
        inp: gpu.upload(inp, 'inp'),
        a: gpu.upload(a, 'a'),
        b: gpu.upload(b, 'b'),
        out: gpu.upload(out0, 'out'),
        u: gpu.upload(uniformArray(rng, M * R), 'u'), // garbage: the forward must overwrite it
        dout: gpu.upload(dout, 'dout'),
        du: gpu.upload(uniformArray(rng, M * R), 'du'), // garbage: scratch is assigned
        dinp: gpu.upload(dinp0, 'dinp'),
        da: gpu.upload(da0, 'da'),
        db: gpu.upload(db0, 'db'),
        ...(split ? { partial: gpu.upload(uniformArray(rng, loraPartialLength(R, Math.max(N, K))), 'partial') } : {}),
      };
      // Prepared with another seed, then moved to the step's seed, as a trainer does every step.
      const forward = await loraForward(gpu, t, shape, { scale, dropout: p, seed: seed + 1 });
      const backward = await loraBackward(gpu, t, shape, { scale, dropout: p, seed: seed + 1 });
      forward.setSeed(seed);
      backward.setSeed(seed);
      const splits = backward.dispatches.filter((d) => d.kernel === 'lora_backward_a' || d.kernel === 'lora_backward_b').map((d) => d.workgroups[2]);
      expect(splits).toEqual(split ? [split, split] : [1, 1]);
      expect(backward.dispatches.filter((d) => d.kernel === 'matmul_split_reduce')).toHaveLength(split ? 2 : 0);
      const [gOut, gU, gDu, gDinp, gDa, gDb] = await runAndRead(
        gpu,
        [...forward.dispatches, ...backward.dispatches],
        t.out,
        t.u,
        t.du,
        t.dinp,
        t.da,
        t.db,
      );
      expectClose(gU, u, REDUCTION, 'u');
      expectClose(gOut, out, REDUCTION, 'out');
      expectClose(gDu, du, REDUCTION, 'du');
      expectClose(gDb, db, REDUCTION, 'db');
      expectClose(gDa, da, REDUCTION, 'da');
      expectClose(gDinp, dinp, REDUCTION, 'dinp');
      for (const tensor of Object.values(t)) gpu.free(tensor);
      expect(gpu.pool.bytesInUse).toBe(0);
    });
  }

  it('rejects a rank above the maximum and dropout of 1', async () => {
    const x = gpu.tensor(65 * 65, 'x');
    const t = { out: x, u: x, inp: x, a: x, b: x };
    await expect(loraForward(gpu, t, { M: 1, N: 1, K: 1, R: 65 }, { scale: 1 })).rejects.toThrow(/rank 65/);
    await expect(loraForward(gpu, t, { M: 1, N: 1, K: 1, R: 1 }, { scale: 1, dropout: 1 })).rejects.toThrow(/dropout/);
    gpu.free(x);
  });
});
