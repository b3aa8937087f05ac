// The KV-cache kernels (kv_cache_write, attention_decode) against the float64 reference in reference/decode.ts, and
// that reference against the full-sequence attention reference: caching a sequence chunk by chunk and attending each
// chunk over the cache gives the same rows as causal attention over the whole sequence.
//
// Tolerances: the cache write is a copy (exact, checked with ELEMENTWISE); attention is a softmax-weighted sum over
// up to 70 keys in f32 (REDUCTION). There is no backward: generation never differentiates.

import { beforeAll, describe, expect, it } from 'vitest';
import type { GpuContext } from '../../src/engine/gpu/context.ts';
import { attentionDecode, kvCacheLength, kvCacheWrite, setDecodePosition, type DecodePosition, type DecodeShape } from '../../src/engine/ops/decode.ts';
import { attentionForward } from '../../src/engine/reference/attention.ts';
import * as ref from '../../src/engine/reference/decode.ts';
import { Rng, uniformArray } from '../../src/engine/random.ts';
import { ELEMENTWISE, REDUCTION, expectClose } from '../helpers/check.ts';
import { runAndRead, testGpu } from '../helpers/gpu.ts';

describe('decode reference', () => {
  it('chunked caching + attention equals causal attention over the whole sequence', () => {
    const B = 2;
    const T = 11;
    const C = 12;
    const NH = 3;
    const maxT = 16;
    const rng = new Rng(21);
    const qkv = uniformArray(rng, B * T * 3 * C, -1.5, 1.5);
    const whole = new Float64Array(B * T * C);
    attentionForward(whole, null, qkv, { B, T, C, NH });

    const cache = new Float64Array(2 * B * maxT * C).fill(NaN); // anything read before it is written poisons the output
    const chunks = [4, 1, 5, 1];
    let offset = 0;
    for (const count of chunks) {
      const Tq = count + 2; // two padding rows per chunk
      const chunkQkv = new Float64Array(B * Tq * 3 * C).fill(NaN);
      for (let b = 0; b < B; b++) {
        for (let i = 0; i < count; i++) {
          chunkQkv.set(qkv.subarray((b * T + offset + i) * 3 * C, (b * T + offset + i + 1) * 3 * C), (b * Tq + i) * 3 * C);
        }
      }
      const shape = { B, Tq, count, offset, C, NH, maxT };
      ref.kvCacheWrite(cache, chunkQkv, shape);
      const out = new Float64Array(B * Tq * C).fill(NaN);
      ref.attentionDecode(out, chunkQkv, cache, shape);
      for (let b = 0; b < B; b++) {
        const rows = out.subarray(b * Tq * C, (b * Tq + count) * C);
        expectClose(rows, whole.subarray((b * T + offset) * C, (b * T + offset + count) * C), { atol: 1e-12, rtol: 1e-12 }, `chunk at ${offset}, b=${b}`);
        expect(Array.from(out.subarray((b * Tq + count) * C, (b + 1) * Tq * C)).every((v) => v === 0)).toBe(true);
      }
      offset += count;
    }
    expect(offset).toBe(T);
  });
});

describe('decode kernels on WebGPU', () => {
  let gpu: GpuContext;
  beforeAll(async () => {
    gpu = await testGpu();
  });

  // HS 9 and 12 (not multiples of 4), 72 (wider than the 64 threads), 24 with 70 keys (two key blocks, the last
  // partial); padding rows; a single-token step at the last position of the cache; B = 2.
  const cases: (DecodeShape & DecodePosition)[] = [
    { B: 1, Tq: 1, count: 1, offset: 6, C: 36, NH: 3, maxT: 7 },
    { B: 2, Tq: 5, count: 3, offset: 4, C: 36, NH: 4, maxT: 13 },
    { B: 1, Tq: 8, count: 7, offset: 60, C: 24, NH: 1, maxT: 70 },
    { B: 2, Tq: 2, count: 2, offset: 3, C: 72, NH: 1, maxT: 9 },
    { B: 3, Tq: 7, count: 7, offset: 0, C: 20, NH: 5, maxT: 7 },
  ];
  for (const c of cases) {
    const { B, Tq, count, offset, C, NH, maxT } = c;
    it(`B=${B} Tq=${Tq} count=${count} offset=${offset} C=${C} NH=${NH} maxT=${maxT}`, async () => {
      const rng = new Rng(offset * 7 + C);
      const qkv = uniformArray(rng, B * Tq * 3 * C, -1.5, 1.5);
      const cache0 = uniformArray(rng, kvCacheLength({ B, C, maxT }), -1.5, 1.5); // earlier positions, and stale ones
      const out0 = uniformArray(rng, B * Tq * C);
      const cache = cache0.slice();
      const out = new Float64Array(B * Tq * C);
      ref.kvCacheWrite(cache, qkv, c);
      ref.attentionDecode(out, qkv, cache, c);

      const before = gpu.pool.bytesInUse;
      const t = { qkv: gpu.upload(qkv, 'qkv'), cache: gpu.upload(cache0, 'cache'), out: gpu.upload(out0, 'out') };
      const shape = { B, Tq, C, NH, maxT };
      // Bound at another position first, then moved: the position is a uniform, not part of the binding.
      const dispatches = [await kvCacheWrite(gpu, t, shape, { count: 1, offset: 0 }), await attentionDecode(gpu, t, shape, { count: 1, offset: 0 })];
      setDecodePosition(dispatches, shape, { count, offset });
      const [gpuCache, gpuOut] = await runAndRead(gpu, dispatches, t.cache, t.out);
      expectClose(gpuCache, cache, ELEMENTWISE, 'cache');
      expectClose(gpuOut, out, REDUCTION, 'out');
      for (const tensor of Object.values(t)) gpu.free(tensor);
      expect(gpu.pool.bytesInUse).toBe(before);
    });
  }

  it('refuses positions that do not fit the cache or the pass', async () => {
    const shape = { B: 1, Tq: 4, C: 8, NH: 2, maxT: 10 };
    const t = { qkv: gpu.tensor(4 * 24, 'qkv'), cache: gpu.tensor(kvCacheLength(shape), 'cache'), out: gpu.tensor(32, 'out') };
    await expect(kvCacheWrite(gpu, t, shape, { count: 4, offset: 7 })).rejects.toThrow(/do not fit a cache of 10/);
    await expect(attentionDecode(gpu, t, shape, { count: 5, offset: 0 })).rejects.toThrow(/count must be 1..4/);
    const d = await attentionDecode(gpu, t, shape, { count: 4, offset: 6 });
    expect(() => setDecodePosition([d], shape, { count: 2, offset: 9 })).toThrow(RangeError);
    d.release();
    for (const tensor of Object.values(t)) gpu.free(tensor);
  });
});
