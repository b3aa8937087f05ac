import { beforeAll, describe, expect, it } from 'vitest';
import type { GpuContext } from '../src/engine/gpu/context.ts';
import {
  DEFAULT_MATMUL_TILES,
  MEDIUM_MATMUL_TILES,
  TINY_MATMUL_TILES,
  type MatmulShape,
  type MatmulTiles,
} from '../src/engine/ops/matmul.ts';
import {
  matmulBackwardInputF16W,
  matmulForwardF16W,
  packF16,
  uploadF16Weights,
  type F16Weights,
} from '../src/engine/ops/matmul-f16.ts';
import { F16_MAX, F16_MIN_NORMAL, F16_MIN_SUBNORMAL, decodeF16, roundToF16 } from '../src/engine/reference/f16.ts';
import * as ref from '../src/engine/reference/matmul.ts';
import { Rng, uniformArray } from '../src/engine/random.ts';
import { REDUCTION, expectClose } from './helpers/check.ts';
import { runAndRead, testGpu } from './helpers/gpu.ts';

/** The same value, with ±0 told apart and any NaN equal to any NaN. */
function sameValue(a: number, b: number): boolean {
  return Object.is(a, b) || (Number.isNaN(a) && Number.isNaN(b));
}

/** Half i of a packed array (halves in packing order: low then high of each word). */
function half(packed: Uint32Array, i: number): number {
  return i % 2 === 0 ? packed[i >> 1] & 0xffff : packed[i >> 1] >>> 16;
}

/** Every element of packF16 (one row) decodes to the reference rounding of the f32 value, exactly. */
function expectPackedLikeReference(values: Float32Array): void {
  const packed = packF16(values);
  const bad: string[] = [];
  for (let i = 0; i < values.length; i++) {
    const got = decodeF16(half(packed, i));
    const want = roundToF16(values[i]);
    if (!sameValue(got, want) && bad.length < 5) bad.push(`${values[i]} → ${got}, reference ${want}`);
  }
  expect(bad).toEqual([]);
}

describe('f16 reference rounding', () => {
  it('rounds to nearest even, keeps subnormals and ±0, overflows to ±Infinity', () => {
    const cases: [number, number][] = [
      [1, 1],
      [-2.5, -2.5],
      [65504, 65504],
      [65519.99, 65504], // below the midpoint to 65536
      [65520, Infinity], // the midpoint ties to the even 65536, which does not exist in f16
      [-70000, -Infinity],
      [1 + 2 ** -11, 1], // tie between 1 (even) and 1 + 2^-10
      [1 + 3 * 2 ** -11, 1 + 2 ** -9], // tie between 1 + 2^-10 (odd) and 1 + 2^-9
      [2049, 2048], // spacing 2 from 2048: tie to even
      [2051, 2052],
      [0.1, 0.0999755859375],
      [F16_MIN_SUBNORMAL, F16_MIN_SUBNORMAL],
      [2 ** -25, 0], // half the smallest subnormal ties to 0
      [2 ** -25 * 1.000001, F16_MIN_SUBNORMAL],
      [3 * 2 ** -25, 2 * F16_MIN_SUBNORMAL], // tie between 1 and 2 subnormal units
      [F16_MIN_NORMAL - F16_MIN_SUBNORMAL, F16_MIN_NORMAL - F16_MIN_SUBNORMAL],
      [F16_MIN_NORMAL - 2 ** -26, F16_MIN_NORMAL],
      [1e-40, 0],
    ];
    for (const [x, want] of cases) expect(roundToF16(x), `roundToF16(${x})`).toBe(want);
    expect(Object.is(roundToF16(-0), -0)).toBe(true);
    expect(Object.is(roundToF16(-1e-40), -0)).toBe(true);
    expect(roundToF16(NaN)).toBeNaN();
    expect(roundToF16(-Infinity)).toBe(-Infinity);
  });

  it('decodes bit patterns', () => {
    expect(decodeF16(0x3c00)).toBe(1);
    expect(decodeF16(0xc000)).toBe(-2);
    expect(decodeF16(0x7bff)).toBe(F16_MAX);
    expect(decodeF16(0x0001)).toBe(F16_MIN_SUBNORMAL);
    expect(decodeF16(0x0400)).toBe(F16_MIN_NORMAL);
    expect(Object.is(decodeF16(0x8000), -0)).toBe(true);
    expect(decodeF16(0xfc00)).toBe(-Infinity);
    expect(decodeF16(0x7e00)).toBeNaN();
  });
});

describe('packF16', () => {
  it('packs pairs along the row, even element low, and pads odd rows with +0', () => {
    const packed = packF16(new Float32Array([1, -2, 65504, F16_MIN_SUBNORMAL, 0.5, -0]), 3);
    // Rows [1, -2, 65504] and [2^-24, 0.5, -0]: 2 words each.
    expect(Array.from(packed)).toEqual([0xc0003c00, 0x00007bff, 0x38000001, 0x00008000]);
    expect(packF16(new Float32Array([1, 1, 1, 1])).length).toBe(2);
    expect(() => packF16(new Float32Array(5), 2)).toThrow(/rows of 2/);
  });

  it('matches the reference on edge values: ±0, subnormals, 65504, overflow, Inf, NaN, ties', () => {
    const edges = [
      0, -0, 1, -1, 65504, -65504, 65519, 65520, 65536, 1e6, -1e6, 3.4e38, Infinity, -Infinity, NaN,
      F16_MIN_SUBNORMAL, -F16_MIN_SUBNORMAL, 2 ** -25, -(2 ** -25), 3 * 2 ** -25, 3 * 2 ** -26, 2 ** -26,
      F16_MIN_NORMAL, F16_MIN_NORMAL - F16_MIN_SUBNORMAL, F16_MIN_NORMAL - 2 ** -26, 1e-40, -1e-40, 1e-8,
      1 + 2 ** -11, 1 + 3 * 2 ** -11, 2049, 2051, 0.1, 1 / 3, -2.5e-7,
    ];
    expectPackedLikeReference(new Float32Array(edges));
  });

  it('round-trips every f16 value and rounds every midpoint between neighbours like the reference', () => {
    const values: number[] = [];
    for (let bits = 0; bits < 0x10000; bits++) {
      const v = decodeF16(bits);
      values.push(v);
      const next = decodeF16(bits + 1);
      // Midpoints (ties) and a hair either side of them, between consecutive finite values of one sign.
      if ((bits & 0x7fff) < 0x7bff && Number.isFinite(v)) {
        const mid = (v + next) / 2;
        values.push(mid, mid + (next - v) * 2 ** -8, mid - (next - v) * 2 ** -8);
      }
    }
    expectPackedLikeReference(new Float32Array(values));
    // Every f16 bit pattern but NaN (±0, subnormals, normals, ±Inf) comes back exactly: no value is renamed.
    const patterns: number[] = [];
    for (let bits = 0; bits < 0x10000; bits++) {
      if ((bits & 0x7c00) !== 0x7c00 || (bits & 0x3ff) === 0) patterns.push(bits);
    }
    const packed = packF16(new Float32Array(patterns.map(decodeF16)));
    const renamed = patterns.filter((bits, i) => half(packed, i) !== bits);
    expect(renamed).toEqual([]);
  });

  it('matches the reference on random f32 bit patterns (all exponents, NaNs included)', () => {
    const rng = new Rng(16);
    const bits = new Uint32Array(100_000);
    for (let i = 0; i < bits.length; i++) bits[i] = rng.nextU32();
    expectPackedLikeReference(new Float32Array(bits.buffer));
  });
});

// Tolerance: REDUCTION (atol 1e-4, rtol 1e-3), the f32 matmul's. The reference is the Float64 matmul on the
// f16-ROUNDED weight, so f16 storage error is not part of the comparison: only f32 accumulation is, as for the f32
// kernels. Inputs are uniform in [-1, 1), scaled by (128 / the largest dimension)^¼ above 128 (as tests/matmul.test.ts
// does) so that long reductions keep the spread of a 128-term one.
describe('matmul with f16 weights on WebGPU', () => {
  let gpu: GpuContext;
  beforeAll(async () => {
    gpu = await testGpu();
  });

  /**
   * Forward ± bias and backward input = and += against the reference on the rounded weight. `poisonPadding` writes
   * NaN into the padding half of every row (odd N) to show that the kernels never use it.
   */
  async function checkF16Weights(shape: MatmulShape, tiles?: Partial<MatmulTiles>, poisonPadding = false, forwardKernel = 'matmul_forward_f16w') {
    const { M, N, K } = shape;
    const rng = new Rng(M * 10007 + N * 101 + K + 7);
    const scale = Math.min(1, (128 / Math.max(M, N, K)) ** 0.25);
    const values = (n: number) => uniformArray(rng, n).map((v) => v * scale);
    const weight32 = new Float32Array(values(K * N));
    const weightRounded = Float64Array.from(weight32, roundToF16);
    const inp = values(M * K);
    const bias = values(N);
    const dout = values(M * N);
    const dinp0 = values(M * K);

    const out = new Float64Array(M * N);
    ref.matmulForward(out, inp, weightRounded, bias, M, N, K);
    const outNoBias = new Float64Array(M * N);
    ref.matmulForward(outNoBias, inp, weightRounded, null, M, N, K);
    const dinpAssigned = new Float64Array(M * K);
    ref.matmulBackward(dinpAssigned, new Float64Array(K * N), null, dout, inp, weightRounded, M, N, K);
    const dinpAccumulated = dinp0.map((v, i) => v + dinpAssigned[i]);

    let weight: F16Weights;
    if (poisonPadding) {
      expect(N % 2).toBe(1);
      const packed = packF16(weight32, N);
      const words = (N + 1) / 2;
      for (let k = 0; k < K; k++) packed[k * words + words - 1] |= 0x7e00 << 16; // NaN in the high (padding) half
      weight = { packed: gpu.uploadU32(packed, 'weight.f16.poisoned'), K, N };
    } else {
      weight = uploadF16Weights(gpu, weight32, K, N);
    }
    expect(weight.packed.length).toBe(K * Math.ceil(N / 2));
    const t = {
      inp: gpu.upload(inp, 'inp'),
      bias: gpu.upload(bias, 'bias'),
      out: gpu.upload(uniformArray(rng, M * N), 'out'), // garbage: forward must overwrite
      outNoBias: gpu.tensor(M * N, 'outNoBias'),
      dout: gpu.upload(dout, 'dout'),
      dinpAccumulated: gpu.upload(dinp0, 'dinpAccumulated'),
      dinpAssigned: gpu.upload(dinp0, 'dinpAssigned'), // garbage: accumulate = 0 must overwrite
    };
    const dispatches = [
      await matmulForwardF16W(gpu, { out: t.out, inp: t.inp, weight, bias: t.bias }, shape, tiles),
      await matmulForwardF16W(gpu, { out: t.outNoBias, inp: t.inp, weight }, shape, tiles),
      await matmulBackwardInputF16W(gpu, { dinp: t.dinpAccumulated, dout: t.dout, weight }, shape, { accumulate: true, tiles }),
      await matmulBackwardInputF16W(gpu, { dinp: t.dinpAssigned, dout: t.dout, weight }, shape, { tiles }),
    ];
    expect(dispatches.map((d) => d.kernel)).toEqual([
      forwardKernel,
      forwardKernel,
      'matmul_backward_input_f16w',
      'matmul_backward_input_f16w',
    ]);
    const [gOut, gOutNoBias, gDinpAcc, gDinpAssigned] = await runAndRead(
      gpu,
      dispatches,
      t.out,
      t.outNoBias,
      t.dinpAccumulated,
      t.dinpAssigned,
    );
    expectClose(gOut, out, REDUCTION, 'out (bias)');
    expectClose(gOutNoBias, outNoBias, REDUCTION, 'out (no bias)');
    expectClose(gDinpAcc, dinpAccumulated, REDUCTION, 'dinp (accumulate)');
    expectClose(gDinpAssigned, dinpAssigned, REDUCTION, 'dinp (assign)');
    for (const tensor of [...Object.values(t), weight.packed]) gpu.free(tensor);
    expect(gpu.pool.bytesInUse).toBe(0);
  }

  describe('automatic tiles', () => {
    const cases: { shape: MatmulShape; note: string }[] = [
      { shape: { M: 7, N: 36, K: 13 }, note: 'T=7, C=36, K odd' },
      { shape: { M: 7, N: 37, K: 13 }, note: 'N odd: padded rows' },
      { shape: { M: 1, N: 1, K: 1 }, note: 'scalar: one padded word' },
      { shape: { M: 65, N: 131, K: 67 }, note: 'one past a 64 tile everywhere, N odd' },
      { shape: { M: 33, N: 21, K: 50 }, note: 'K and N not multiples of TILE_DEPTH' },
      { shape: { M: 1, N: 64, K: 50257 }, note: 'tied head: logits = lnf·wteᵀ (backward input), dlnf = dlogits·wte (forward)' },
    ];
    for (const { shape, note } of cases) {
      const { M, N, K } = shape;
      it(`${M}x${N}x${K} (${note})`, () => checkF16Weights(shape));
    }
  });

  // Pinned tiles reach a thread's second row and column bands (half a tile in) and leave partial last depth tiles
  // in both reductions, with odd N so every row is padded.
  describe('pinned tiles', () => {
    const cases: { name: string; tiles: Partial<MatmulTiles>; shape: MatmulShape }[] = [
      { name: '128x128x8, 8x8 per thread', tiles: DEFAULT_MATMUL_TILES, shape: { M: 130, N: 129, K: 131 } },
      { name: '64x64x16, 4x4 per thread', tiles: MEDIUM_MATMUL_TILES, shape: { M: 66, N: 65, K: 67 } },
      { name: '4x128x16, 4x4 per thread', tiles: TINY_MATMUL_TILES, shape: { M: 5, N: 131, K: 133 } },
      {
        name: '32x64x4, 8x4 per thread',
        tiles: { TILE_ROWS: 32, TILE_COLS: 64, TILE_DEPTH: 4, THREAD_ROWS: 8, THREAD_COLS: 4 },
        shape: { M: 33, N: 67, K: 66 },
      },
      {
        name: '16x64x8, 4x8 per thread',
        tiles: { TILE_ROWS: 16, TILE_COLS: 64, TILE_DEPTH: 8, THREAD_ROWS: 4, THREAD_COLS: 8 },
        shape: { M: 17, N: 43, K: 67 },
      },
    ];
    for (const { name, tiles, shape } of cases) {
      const { M, N, K } = shape;
      it(`${name}: ${M}x${N}x${K}`, () => checkF16Weights(shape, tiles));
    }
  });

  // Decoding: a tile of ≤ 8 rows asked for (as generate/generator.ts does) takes the few-rows kernel with the f16
  // weight part (matmul_forward_rows_f16w) for the forward layout when N % 4 = 0; backward input stays tiled.
  describe('forward rows kernel', () => {
    const cases: { shape: MatmulShape; rows: number }[] = [
      { shape: { M: 1, N: 36, K: 13 }, rows: 4 },
      { shape: { M: 3, N: 100, K: 40 }, rows: 4 },
      { shape: { M: 8, N: 132, K: 67 }, rows: 8 },
    ];
    for (const { shape, rows } of cases) {
      const { M, N, K } = shape;
      it(`${M}x${N}x${K}`, () => checkF16Weights(shape, { TILE_ROWS: rows }, false, 'matmul_forward_rows_f16w'));
    }
  });

  it('never reads the padding half of odd-N rows (NaN there changes nothing)', () =>
    checkF16Weights({ M: 9, N: 21, K: 11 }, { TILE_ROWS: 16, TILE_COLS: 64, TILE_DEPTH: 8 }, true));

  it('rejects a packed weight whose shape differs from the matmul shape, and tensors too small', async () => {
    const weight = uploadF16Weights(gpu, new Float32Array(12), 4, 3);
    const t = gpu.tensor(64, 't');
    await expect(matmulForwardF16W(gpu, { out: t, inp: t, weight }, { M: 2, N: 4, K: 3 })).rejects.toThrow(
      /is \(4,3\), the shape needs \(K,N\) = \(3,4\)/,
    );
    await expect(
      matmulBackwardInputF16W(gpu, { dinp: gpu.view(t, 0, 3, 'small'), dout: t, weight }, { M: 2, N: 3, K: 4 }),
    ).rejects.toThrow(/dinp \(M,K\) needs 8/);
    expect(() => uploadF16Weights(gpu, new Float32Array(11), 4, 3)).toThrow(/needs 12/);
    gpu.free(t);
    gpu.free(weight.packed);
  });
});
