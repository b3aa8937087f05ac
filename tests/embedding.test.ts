import { beforeAll, describe, expect, it } from 'vitest';
import type { GpuContext } from '../src/engine/gpu/context.ts';
import {
  buildTokenSegments,
  createTokenSegmentTensors,
  embeddingBackward,
  embeddingForward,
  freeTokenSegmentTensors,
  writeTokenSegments,
} from '../src/engine/ops/embedding.ts';
import * as ref from '../src/engine/reference/embedding.ts';
import { Rng, uniformArray } from '../src/engine/random.ts';
import { ELEMENTWISE, REDUCTION, expectClose } from './helpers/check.ts';
import { dot, expectGradient } from './helpers/gradcheck.ts';
import { runAndRead, testGpu } from './helpers/gpu.ts';

/** Token ids drawn from a few "popular" tokens most of the time, so that most tokens repeat. */
function repetitiveIds(rng: Rng, count: number, V: number): Uint32Array {
  const popular = [0, V - 1, Math.floor(V / 2)];
  const ids = new Uint32Array(count);
  for (let i = 0; i < count; i++) ids[i] = rng.next() < 0.6 ? popular[rng.int(popular.length)] : rng.int(V);
  return ids;
}

describe('embedding reference', () => {
  it('backward matches finite differences for wte and wpe, with repeated tokens', () => {
    const rng = new Rng(31);
    const B = 2;
    const T = 3;
    const C = 4;
    const V = 5;
    const maxT = 4;
    const ids = Uint32Array.from([3, 1, 3, 3, 0, 1]);
    const wte = uniformArray(rng, V * C);
    const wpe = uniformArray(rng, maxT * C);
    const w = uniformArray(rng, B * T * C);
    const loss = () => {
      const out = new Float64Array(B * T * C);
      ref.embeddingForward(out, ids, wte, wpe, B, T, C);
      return dot(out, w);
    };
    const dwte = new Float64Array(V * C);
    const dwpe = new Float64Array(maxT * C);
    ref.embeddingBackward(dwte, dwpe, w, ids, B, T, C);
    expectGradient(dwte, loss, wte, 'wte');
    expectGradient(dwpe, loss, wpe, 'wpe');
  });
});

describe('buildTokenSegments', () => {
  it('groups positions by ascending token, positions ascending within a token, padded to capacity', () => {
    const s = buildTokenSegments([3, 1, 3, 0, 1, 3], 4, 8);
    expect(s.count).toBe(3);
    expect(Array.from(s.tokens.subarray(0, 3))).toEqual([0, 1, 3]);
    expect(Array.from(s.offsets)).toEqual([0, 1, 3, 6, 6, 6, 6, 6, 6]);
    expect(Array.from(s.positions.subarray(0, 6))).toEqual([3, 1, 4, 0, 2, 5]);
    expect(s.tokens.length).toBe(8);
    expect(s.positions.length).toBe(8);
  });

  it('rejects ids outside the vocabulary and batches larger than the capacity', () => {
    expect(() => buildTokenSegments([0, 5], 5)).toThrow(/outside the vocabulary/);
    expect(() => buildTokenSegments([0, 1, 2], 5, 2)).toThrow(/capacity/);
  });
});

describe('embedding kernels on WebGPU', () => {
  let gpu: GpuContext;
  beforeAll(async () => {
    gpu = await testGpu();
  });

  // V = 37 and C = 36 are not multiples of 4; maxT > T leaves rows of dwpe that must stay untouched; a capacity above
  // B·T exercises the empty trailing segments; C = 300 gives threads more than one column.
  const shapes = [
    { B: 3, T: 7, C: 36, V: 37, maxT: 9, spare: 0 },
    { B: 1, T: 1, C: 1, V: 1, maxT: 1, spare: 3 },
    { B: 2, T: 5, C: 300, V: 37, maxT: 5, spare: 5 },
    { B: 4, T: 16, C: 64, V: 1000, maxT: 20, spare: 0 },
  ];
  for (const { B, T, C, V, maxT, spare } of shapes) {
    it(`forward and backward, B=${B} T=${T} C=${C} V=${V} maxT=${maxT}`, async () => {
      const rng = new Rng(B * 100 + T * 10 + C);
      const ids = repetitiveIds(rng, B * T, V);
      const wte = uniformArray(rng, V * C);
      const wpe = uniformArray(rng, maxT * C);
      const dout = uniformArray(rng, B * T * C);
      const dwte0 = uniformArray(rng, V * C);
      const dwpe0 = uniformArray(rng, maxT * C);

      const out = new Float64Array(B * T * C);
      ref.embeddingForward(out, ids, wte, wpe, B, T, C);
      const dwte = dwte0.slice();
      const dwpe = dwpe0.slice();
      ref.embeddingBackward(dwte, dwpe, dout, ids, B, T, C);

      const bytesAtStart = gpu.pool.bytesInUse;
      const segments = createTokenSegmentTensors(gpu, B * T + spare);
      const t = {
        ids: gpu.uploadU32(ids, 'ids'),
        wte: gpu.upload(wte, 'wte'),
        wpe: gpu.upload(wpe, 'wpe'),
        out: gpu.tensor(B * T * C, 'out'),
        dout: gpu.upload(dout, 'dout'),
        dwte: gpu.upload(dwte0, 'dwte'),
        dwpe: gpu.upload(dwpe0, 'dwpe'),
      };
      try {
        writeTokenSegments(gpu, segments, buildTokenSegments(ids, V, segments.capacity));
        const shape = { B, T, C, V };
        const forward = await embeddingForward(gpu, t, shape);
        const backward = await embeddingBackward(gpu, { ...t, segments }, shape);
        expect(backward).toHaveLength(2);
        const [gOut, gDwte, gDwpe] = await runAndRead(gpu, [forward, ...backward], t.out, t.dwte, t.dwpe);
        // out is one f32 addition; the gradients are ordered f32 sums of up to B·T terms.
        expectClose(gOut, out, ELEMENTWISE, 'out');
        expectClose(gDwte, dwte, REDUCTION, 'dwte');
        expectClose(gDwpe, dwpe, REDUCTION, 'dwpe');
      } finally {
        for (const tensor of Object.values(t)) gpu.free(tensor);
        freeTokenSegmentTensors(gpu, segments);
      }
      expect(gpu.pool.bytesInUse).toBe(bytesAtStart);
    });
  }

  it('either gradient can be skipped, and dwte is bit-for-bit the same on every run', async () => {
    const B = 4;
    const T = 9;
    const C = 36;
    const V = 37;
    const rng = new Rng(7);
    const ids = repetitiveIds(rng, B * T, V);
    const dout = uniformArray(rng, B * T * C);
    const segments = createTokenSegmentTensors(gpu, B * T);
    writeTokenSegments(gpu, segments, buildTokenSegments(ids, V));
    const t = { dout: gpu.upload(dout, 'dout'), dwte: gpu.tensor(V * C, 'dwte'), dwpe: gpu.tensor(T * C, 'dwpe') };
    const shape = { B, T, C, V };
    try {
      expect(await embeddingBackward(gpu, { dout: t.dout }, shape)).toHaveLength(0);

      const onlyWpe = await embeddingBackward(gpu, { dout: t.dout, dwpe: t.dwpe }, shape);
      expect(onlyWpe.map((d) => d.kernel)).toEqual(['embedding_backward_wpe']);
      const [dwteUntouched] = await runAndRead(gpu, onlyWpe, t.dwte);
      expect(dwteUntouched.every((v) => v === 0)).toBe(true);

      const runs: Float32Array[] = [];
      for (let run = 0; run < 2; run++) {
        gpu.zero(t.dwte);
        const onlyWte = await embeddingBackward(gpu, { dout: t.dout, dwte: t.dwte, segments }, shape);
        expect(onlyWte.map((d) => d.kernel)).toEqual(['embedding_backward_wte']);
        runs.push((await runAndRead(gpu, onlyWte, t.dwte))[0]);
      }
      const dwte = new Float64Array(V * C);
      ref.embeddingBackward(dwte, new Float64Array(T * C), dout, ids, B, T, C);
      expectClose(runs[0], dwte, REDUCTION, 'dwte');
      expect(Array.from(runs[1])).toEqual(Array.from(runs[0]));
    } finally {
      for (const tensor of Object.values(t)) gpu.free(tensor);
      freeTokenSegmentTensors(gpu, segments);
    }
  });
});
