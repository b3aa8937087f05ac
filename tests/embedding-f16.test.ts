// The f16-wte embedding lookup (ops/embedding-f16.ts) against the Float64 reference embedding on the f16-rounded wte.

import { beforeAll, describe, expect, it } from 'vitest';
import type { GpuContext } from '../src/engine/gpu/context.ts';
import { embeddingForwardF16W } from '../src/engine/ops/embedding-f16.ts';
import { uploadF16Weights } from '../src/engine/ops/matmul-f16.ts';
import * as ref from '../src/engine/reference/embedding.ts';
import { roundToF16 } from '../src/engine/reference/f16.ts';
import { Rng, uniformArray } from '../src/engine/random.ts';
import { ELEMENTWISE, expectClose } from './helpers/check.ts';
import { runAndRead, testGpu } from './helpers/gpu.ts';

describe('embedding with f16 wte on WebGPU', () => {
  let gpu: GpuContext;
  beforeAll(async () => {
    gpu = await testGpu();
  });

  // Odd C leaves a +0 half at the end of every packed row, so a row's start is not a whole number of C/2 words;
  // C = 1 packs one value per word; maxT > T keeps wpe rows the kernel must not read; V = 37 with ids 0 and V−1.
  const shapes = [
    { B: 3, T: 7, C: 35, V: 37, maxT: 9 },
    { B: 1, T: 7, C: 1, V: 37, maxT: 7 },
    { B: 2, T: 7, C: 36, V: 37, maxT: 8 },
    { B: 2, T: 5, C: 301, V: 37, maxT: 5 },
  ];
  for (const { B, T, C, V, maxT } of shapes) {
    it(`forward equals the reference on f16-rounded wte, B=${B} T=${T} C=${C} V=${V}`, async () => {
      const rng = new Rng(B * 1000 + T * 10 + C);
      const ids = new Uint32Array(B * T);
      for (let i = 0; i < ids.length; i++) ids[i] = i === 0 ? 0 : i === 1 ? V - 1 : rng.int(V);
      // Values up to ±4, so that f16 rounding (10 fraction bits) changes most of them by far more than the tolerance.
      const wte = Float32Array.from(uniformArray(rng, V * C), (x) => 4 * x + 1e-3);
      const wpe = uniformArray(rng, maxT * C);
      const out = new Float64Array(B * T * C);
      ref.embeddingForward(out, ids, Float64Array.from(wte, roundToF16), wpe, B, T, C);

      const bytesAtStart = gpu.pool.bytesInUse;
      const packed = uploadF16Weights(gpu, wte, V, C, 'wte.f16');
      const t = { ids: gpu.uploadU32(ids, 'ids'), wpe: gpu.upload(wpe, 'wpe'), out: gpu.tensor(B * T * C, 'out') };
      try {
        const forward = await embeddingForwardF16W(gpu, { ...t, wte: packed }, { B, T, C, V });
        const [gOut] = await runAndRead(gpu, [forward], t.out);
        // One f32 addition of an exactly represented f16 value and an f32 value.
        expectClose(gOut, out, ELEMENTWISE, 'out');
      } finally {
        for (const tensor of Object.values(t)) gpu.free(tensor);
        gpu.free(packed.packed);
      }
      expect(gpu.pool.bytesInUse).toBe(bytesAtStart);
    });
  }

  it('refuses a packed table whose shape is not (V,C)', async () => {
    const packed = uploadF16Weights(gpu, new Float32Array(6 * 5), 6, 5, 'wte.f16');
    const t = { ids: gpu.uploadU32(new Uint32Array(2), 'ids'), wpe: gpu.tensor(2 * 5, 'wpe'), out: gpu.tensor(2 * 5, 'out') };
    try {
      await expect(embeddingForwardF16W(gpu, { ...t, wte: packed }, { B: 1, T: 2, C: 5, V: 7 })).rejects.toThrow(/\(6,5\)/);
      await expect(embeddingForwardF16W(gpu, { ...t, wte: packed }, { B: 1, T: 2, C: 6, V: 6 })).rejects.toThrow(/\(6,5\)/);
    } finally {
      for (const tensor of Object.values(t)) gpu.free(tensor);
      gpu.free(packed.packed);
    }
  });
});
