// PREFETCH and DOUBLE_BUFFER of the shared matmul tiling (lib/matmul_tiles.wgsl): every tiled kernel (three layouts ×
// scalar and vec4 loads, the two f16-weight kernels, split-K forward) with the next depth step loaded into registers
// during the multiply, with one ("prefetch") or two ("double-buffer") copies of the workgroup tiles; each case runs
// one of the two, and each mode meets every kernel. Each result is checked twice: against the Float64 reference
// (REDUCTION: atol 1e-4, rtol 1e-3, inputs scaled as in matmul.test.ts), and bit for bit against the same kernel and
// tiles without prefetch, because prefetch changes when values reach workgroup memory, never which products are added
// or in what order (so any difference is a race or a wrong index, however small). SwiftShader compiles every
// (kernel, tiles, mode) pipeline anew, about a second each, which is what limits the number of cases.

import { beforeAll, describe, expect, it } from 'vitest';
import type { GpuContext, GpuTensor } from '../src/engine/gpu/context.ts';
import {
  DEFAULT_MATMUL_TILES,
  MATMUL_PREFETCH_SLOTS,
  MEDIUM_MATMUL_TILES,
  SHORT_MATMUL_TILES,
  TINY_MATMUL_TILES,
  deviceTiles,
  matmulBackwardInput,
  matmulBackwardWeight,
  matmulForward,
  matmulForwardSplitK,
  planMatmul,
  prefetchFits,
  tileOverrides,
  type MatmulShape,
  type MatmulTiles,
} from '../src/engine/ops/matmul.ts';
import { matmulBackwardInputF16W, matmulForwardF16W, matmulForwardF16WSplitK, packF16 } from '../src/engine/ops/matmul-f16.ts';
import { roundToF16 } from '../src/engine/reference/f16.ts';
import * as ref from '../src/engine/reference/matmul.ts';
import { Rng, uniformArray } from '../src/engine/random.ts';
import matmulTilesSource from '../src/kernels/lib/matmul_tiles.wgsl?raw';
import { REDUCTION, expectClose } from './helpers/check.ts';
import { runAndRead, testGpu } from './helpers/gpu.ts';

type Mode = 'plain' | 'prefetch' | 'double-buffer';
const MODES: Record<Mode, Partial<MatmulTiles>> = {
  plain: { PREFETCH: false, DOUBLE_BUFFER: false },
  prefetch: { PREFETCH: true, DOUBLE_BUFFER: false },
  'double-buffer': { PREFETCH: true, DOUBLE_BUFFER: true },
};

/** Elements whose f32 bit patterns differ, as "[i] got want" (at most 5), so a failure says where. */
function bitDifferences(got: Float32Array, want: Float32Array): string[] {
  const a = new Uint32Array(got.buffer, got.byteOffset, got.length);
  const b = new Uint32Array(want.buffer, want.byteOffset, want.length);
  const out: string[] = [];
  for (let i = 0; i < a.length && out.length < 5; i++) if (a[i] !== b[i]) out.push(`[${i}] ${got[i]} vs ${want[i]}`);
  return out;
}

/** Uniform in [-1, 1), scaled so that long reductions keep the spread of a 128-term one (as in matmul.test.ts). */
function valuesFor(rng: Rng, shape: MatmulShape): (n: number) => Float64Array {
  const scale = Math.min(1, (128 / Math.max(shape.M, shape.N, shape.K)) ** 0.25);
  return (n) => uniformArray(rng, n).map((v) => v * scale);
}

describe('prefetch planning', () => {
  it('fits a tile when each thread loads at most MATMUL_PREFETCH_SLOTS vec4 per operand and step', () => {
    expect(prefetchFits(DEFAULT_MATMUL_TILES)).toBe(true); // 256 loads per operand, 256 threads: 1 each
    expect(prefetchFits(MEDIUM_MATMUL_TILES)).toBe(true);
    expect(prefetchFits(SHORT_MATMUL_TILES)).toBe(true); // b_tile: 256 loads over 64 threads, 4 each
    expect(prefetchFits(TINY_MATMUL_TILES)).toBe(false); // b_tile: 512 loads over 32 threads
    const eightByEight = { TILE_ROWS: 64, TILE_COLS: 64, THREAD_ROWS: 8, THREAD_COLS: 8 };
    expect(prefetchFits({ ...eightByEight, TILE_DEPTH: 16 })).toBe(true); // exactly 4 per thread
    expect(prefetchFits({ ...eightByEight, TILE_DEPTH: 32 })).toBe(false);
  });

  it('the host and the kernels agree on the number of registers for staged loads', () => {
    expect(matmulTilesSource).toContain(`const FETCH_SLOTS = ${MATMUL_PREFETCH_SLOTS}u;`);
  });

  it('keeps PREFETCH off unless asked, and rejects what cannot run', () => {
    const shape = { M: 512, N: 512, K: 512 };
    const tiledWith = (tiles?: Partial<MatmulTiles>) => {
      const plan = planMatmul('forward', shape, tiles);
      if (plan.kernel !== 'tiled') throw new Error('expected a tiled plan');
      return plan.tiles;
    };
    expect(tiledWith()).toMatchObject({ PREFETCH: false, DOUBLE_BUFFER: false });
    expect(tiledWith({ PREFETCH: true })).toEqual({ ...MEDIUM_MATMUL_TILES, PREFETCH: true });
    expect(tiledWith({ PREFETCH: true, DOUBLE_BUFFER: true })).toEqual({ ...MEDIUM_MATMUL_TILES, PREFETCH: true, DOUBLE_BUFFER: true });
    expect(() => tiledWith({ DOUBLE_BUFFER: true })).toThrow(/DOUBLE_BUFFER needs PREFETCH/);
    expect(() => planMatmul('backward-input', { M: 2, N: 768, K: 50257 }, { PREFETCH: true })).toThrow(/PREFETCH needs at most 4/);
  });

  it('drops DOUBLE_BUFFER where two copies of the tiles exceed the workgroup memory, and says so', () => {
    const limits = {
      maxComputeInvocationsPerWorkgroup: 256,
      maxComputeWorkgroupSizeX: 256,
      maxComputeWorkgroupSizeY: 256,
      maxComputeWorkgroupStorageSize: 16384,
    };
    const device = { device: { limits } } as unknown as GpuContext;
    const doubled = { PREFETCH: true, DOUBLE_BUFFER: true };
    // 128×128×8: one copy 8448 bytes (rows padded by 4 floats), two 16896 > 16384.
    expect(deviceTiles(device, 'test', { ...DEFAULT_MATMUL_TILES, ...doubled })).toEqual({ ...DEFAULT_MATMUL_TILES, PREFETCH: true });
    expect(tileOverrides(device, 'test', { ...DEFAULT_MATMUL_TILES, ...doubled })).toMatchObject({ PREFETCH: 1, DOUBLE_BUFFER: 0 });
    // 64×64×8: two copies take 8704 bytes.
    const small = { ...MEDIUM_MATMUL_TILES, TILE_DEPTH: 8, ...doubled };
    expect(tileOverrides(device, 'test', small)).toMatchObject({ TILE_DEPTH: 8, PREFETCH: 1, DOUBLE_BUFFER: 1 });
  });
});

describe('prefetching matmul kernels on WebGPU', () => {
  let gpu: GpuContext;
  beforeAll(async () => {
    gpu = await testGpu();
  });

  interface F32Result {
    kernels: string[];
    outputs: Float32Array[];
  }

  /** Forward (with bias), backward input (+=) and backward weight (+=) with these tiles, read back. */
  async function runF32(shape: MatmulShape, tiles: Partial<MatmulTiles>, inputs: Record<string, Float64Array>): Promise<F32Result> {
    const t = {
      inp: gpu.upload(inputs.inp, 'inp'),
      weight: gpu.upload(inputs.weight, 'weight'),
      bias: gpu.upload(inputs.bias, 'bias'),
      out: gpu.upload(inputs.garbage, 'out'),
      dout: gpu.upload(inputs.dout, 'dout'),
      dinp: gpu.upload(inputs.dinp0, 'dinp'),
      dweight: gpu.upload(inputs.dweight0, 'dweight'),
    };
    const dispatches = [
      await matmulForward(gpu, { out: t.out, inp: t.inp, weight: t.weight, bias: t.bias }, shape, tiles),
      await matmulBackwardInput(gpu, { dinp: t.dinp, dout: t.dout, weight: t.weight }, shape, { accumulate: true, tiles }),
      await matmulBackwardWeight(gpu, { dweight: t.dweight, inp: t.inp, dout: t.dout }, shape, tiles),
    ];
    const kernels = dispatches.map((d) => d.kernel);
    const outputs = await runAndRead(gpu, dispatches, t.out, t.dinp, t.dweight);
    for (const x of Object.values(t)) gpu.free(x);
    return { kernels, outputs };
  }

  /** Every layout in `mode` against the reference and, bit for bit, against the same tiles without prefetch. */
  async function checkF32(shape: MatmulShape, tiles: Partial<MatmulTiles>, mode: Exclude<Mode, 'plain'>) {
    const { M, N, K } = shape;
    const rng = new Rng(M * 7919 + N * 31 + K);
    const values = valuesFor(rng, shape);
    const inputs = {
      inp: values(M * K),
      weight: values(K * N),
      bias: values(N),
      dout: values(M * N),
      dinp0: values(M * K),
      dweight0: values(K * N),
      garbage: values(M * N),
    };
    const out = new Float64Array(M * N);
    ref.matmulForward(out, inputs.inp, inputs.weight, inputs.bias, M, N, K);
    const dinp = inputs.dinp0.slice();
    const dweight = inputs.dweight0.slice();
    ref.matmulBackward(dinp, dweight, null, inputs.dout, inputs.inp, inputs.weight, M, N, K);

    const asked = { ...tiles, ...MODES[mode] };
    for (const layout of ['forward', 'backward-input', 'backward-weight'] as const) {
      const plan = planMatmul(layout, shape, asked);
      expect(plan.kernel === 'tiled' && deviceTiles(gpu, 'test', plan.tiles)).toMatchObject(MODES[mode]);
    }
    const plain = await runF32(shape, { ...tiles, ...MODES.plain }, inputs);
    const got = await runF32(shape, asked, inputs);
    expect(got.kernels).toEqual(plain.kernels);
    const names = ['out', 'dinp (+=)', 'dweight (+=)'];
    [out, dinp, dweight].forEach((want, i) => expectClose(got.outputs[i], want, REDUCTION, `${mode} ${names[i]}`));
    got.outputs.forEach((o, i) => expect(bitDifferences(o, plain.outputs[i]), `${mode} ${names[i]} vs plain`).toEqual([]));
    expect(gpu.pool.bytesInUse).toBe(0);
  }

  // Tiles chosen to exercise the staging: 1, 2 and 4 loads per thread, job counts that do not divide evenly among the
  // threads (the vec4 kernels' transposed blocks; depth 12, whose second load per thread exists for half the threads),
  // one and two bands per thread in each direction.
  const tileCases: { name: string; tiles: Partial<MatmulTiles>; mode: Exclude<Mode, 'plain'> }[] = [
    { name: '64x64x16, 4x4 per thread (1 load each)', tiles: MEDIUM_MATMUL_TILES, mode: 'double-buffer' },
    { name: '64x64x16, 8x8 per thread (4 loads each)', tiles: { TILE_ROWS: 64, TILE_COLS: 64, TILE_DEPTH: 16, THREAD_ROWS: 8, THREAD_COLS: 8 }, mode: 'prefetch' },
    { name: '32x32x12, 4x4 per thread (uneven jobs)', tiles: { TILE_ROWS: 32, TILE_COLS: 32, TILE_DEPTH: 12, THREAD_ROWS: 4, THREAD_COLS: 4 }, mode: 'prefetch' },
    { name: '16x64x8, 4x8 per thread (4 loads of b)', tiles: { TILE_ROWS: 16, TILE_COLS: 64, TILE_DEPTH: 8, THREAD_ROWS: 4, THREAD_COLS: 8 }, mode: 'double-buffer' },
  ];

  /**
   * Per tile: vec4 loads (N, K multiples of 4) with M, N, K past a tile and a partial last depth step; scalar loads
   * with K below TILE_DEPTH (a single, partial step); K = TILE_DEPTH·n + 1 (a last step one deep, K odd: scalar loads
   * in forward and backward weight, vec4 in backward input when N % 4 = 0). The reductions of the three layouts run
   * over K, N and M, so each shape also gives the other two loops their own lengths.
   */
  function shapesFor(t: Partial<MatmulTiles>): [string, MatmulShape][] {
    const rows = t.TILE_ROWS!;
    const cols = t.TILE_COLS!;
    const depth = t.TILE_DEPTH!;
    return [
      ['vec4 loads', { M: rows + 3, N: cols + 4, K: 3 * depth + 4 }],
      ['scalar loads, K < TILE_DEPTH', { M: rows + 1, N: cols - 1, K: depth - 1 }],
      ['K = 2·TILE_DEPTH + 1', { M: rows - 3, N: 2 * cols + 4, K: 2 * depth + 1 }],
    ];
  }

  describe('f32 kernels, all layouts', () => {
    for (const { name, tiles, mode } of tileCases) {
      for (const [note, shape] of shapesFor(tiles)) {
        const { M, N, K } = shape;
        it(`${name}, ${mode}, ${note}: ${M}x${N}x${K}`, () => checkF32(shape, tiles, mode));
      }
    }
  });

  describe('f16-weight kernels (forward, backward input)', () => {
    /** Forward (+ bias) and backward input (=) with the weight rounded to f16; `poison` puts NaN in odd N's padding. */
    async function runF16(shape: MatmulShape, tiles: Partial<MatmulTiles>, inputs: Record<string, Float64Array>, poison: boolean) {
      const { N, K } = shape;
      const packed = packF16(new Float32Array(inputs.weight), N);
      if (poison) {
        const words = Math.ceil(N / 2);
        for (let k = 0; k < K; k++) packed[k * words + words - 1] |= 0x7e00 << 16;
      }
      const weight = { packed: gpu.uploadU32(packed, 'weight.f16'), K, N };
      const t: Record<string, GpuTensor> = {
        inp: gpu.upload(inputs.inp, 'inp'),
        bias: gpu.upload(inputs.bias, 'bias'),
        out: gpu.upload(inputs.garbageOut, 'out'),
        dout: gpu.upload(inputs.dout, 'dout'),
        dinp: gpu.upload(inputs.garbageDinp, 'dinp'),
      };
      const dispatches = [
        await matmulForwardF16W(gpu, { out: t.out, inp: t.inp, weight, bias: t.bias }, shape, tiles),
        await matmulBackwardInputF16W(gpu, { dinp: t.dinp, dout: t.dout, weight }, shape, { tiles }),
      ];
      expect(dispatches.map((d) => d.kernel)).toEqual(['matmul_forward_f16w', 'matmul_backward_input_f16w']);
      const outputs = await runAndRead(gpu, dispatches, t.out, t.dinp);
      for (const x of [...Object.values(t), weight.packed]) gpu.free(x);
      return outputs;
    }

    async function checkF16(shape: MatmulShape, tiles: Partial<MatmulTiles>, mode: Exclude<Mode, 'plain'>, poison: boolean) {
      const { M, N, K } = shape;
      const rng = new Rng(M * 7907 + N * 37 + K);
      const values = valuesFor(rng, shape);
      const inputs = {
        inp: values(M * K),
        weight: values(K * N).map((v) => Math.fround(v)),
        bias: values(N),
        dout: values(M * N),
        garbageOut: values(M * N),
        garbageDinp: values(M * K),
      };
      const rounded = inputs.weight.map(roundToF16);
      const out = new Float64Array(M * N);
      ref.matmulForward(out, inputs.inp, rounded, inputs.bias, M, N, K);
      const dinp = new Float64Array(M * K);
      ref.matmulBackward(dinp, new Float64Array(K * N), null, inputs.dout, inputs.inp, rounded, M, N, K);

      const plain = await runF16(shape, { ...tiles, ...MODES.plain }, inputs, poison);
      const got = await runF16(shape, { ...tiles, ...MODES[mode] }, inputs, poison);
      expectClose(got[0], out, REDUCTION, `${mode} out`);
      expectClose(got[1], dinp, REDUCTION, `${mode} dinp`);
      got.forEach((o, i) => expect(bitDifferences(o, plain[i]), `${mode} output ${i} vs plain`).toEqual([]));
      expect(gpu.pool.bytesInUse).toBe(0);
    }

    // N odd (padded rows) in every case; the backward input's reduction runs over N, so its last step holds the
    // padding half, which with `poison` is NaN and must still be masked.
    const cases: { name: string; tiles: Partial<MatmulTiles>; mode: Exclude<Mode, 'plain'>; shape: MatmulShape; poison: boolean }[] = [
      { name: '64x64x16, 4x4 per thread', tiles: MEDIUM_MATMUL_TILES, mode: 'double-buffer', shape: { M: 66, N: 33, K: 67 }, poison: false },
      {
        name: '32x32x12, 4x4 per thread, NaN padding',
        tiles: { TILE_ROWS: 32, TILE_COLS: 32, TILE_DEPTH: 12, THREAD_ROWS: 4, THREAD_COLS: 4 },
        mode: 'prefetch',
        shape: { M: 35, N: 25, K: 11 },
        poison: true,
      },
    ];
    for (const { name, tiles, mode, shape, poison } of cases) {
      const { M, N, K } = shape;
      it(`${name}, ${mode}: ${M}x${N}x${K}`, () => checkF16(shape, tiles, mode, poison));
    }
  });

  describe('split-K forward', () => {
    // Every split's share of the depths, empty last splits, scalar and vec4 kernels; automatic tiles (64×64×16).
    const cases: [MatmulShape, number, Exclude<Mode, 'plain'>, string][] = [
      [{ M: 37, N: 50, K: 1001 }, 3, 'double-buffer', 'scalar loads, K odd'],
      [{ M: 20, N: 64, K: 1024 }, 5, 'prefetch', 'vec4 loads'],
      [{ M: 9, N: 12, K: 40 }, 8, 'double-buffer', 'more splits than depth steps'],
    ];
    for (const [shape, splits, mode, note] of cases) {
      it(`${shape.M}x${shape.N}x${shape.K}, ${splits} splits, ${mode} (${note})`, async () => {
        const { M, N, K } = shape;
        const rng = new Rng(M + N + K + splits);
        const inp = uniformArray(rng, M * K);
        const weight = uniformArray(rng, K * N);
        const want = new Float64Array(M * N);
        ref.matmulForward(want, inp, weight, null, M, N, K);
        const run = async (mode: Mode) => {
          const t = {
            inp: gpu.upload(inp, 'inp'),
            weight: gpu.upload(weight, 'weight'),
            out: gpu.upload(new Float32Array(M * N).fill(NaN), 'out'),
            scratch: gpu.upload(new Float32Array(splits * M * N).fill(NaN), 'scratch'),
          };
          const dispatches = await matmulForwardSplitK(gpu, t, shape, splits, MODES[mode]);
          expect(dispatches[0].workgroups[2]).toBe(splits);
          const [got] = await runAndRead(gpu, dispatches, t.out);
          for (const x of Object.values(t)) gpu.free(x);
          return got;
        };
        const plain = await run('plain');
        const got = await run(mode);
        expectClose(got, want, REDUCTION, `${mode} out`);
        expect(bitDifferences(got, plain), `${mode} vs plain`).toEqual([]);
      });
    }

    it('f16 weights: 21x33x515, 3 splits, double-buffer', async () => {
      const shape = { M: 21, N: 33, K: 515 };
      const { M, N, K } = shape;
      const rng = new Rng(4);
      const inp = uniformArray(rng, M * K);
      const weight = new Float32Array(uniformArray(rng, K * N));
      const want = new Float64Array(M * N);
      ref.matmulForward(want, inp, Float64Array.from(weight, roundToF16), null, M, N, K);
      const run = async (mode: Mode) => {
        const t = {
          inp: gpu.upload(inp, 'inp'),
          out: gpu.upload(new Float32Array(M * N).fill(NaN), 'out'),
          scratch: gpu.upload(new Float32Array(3 * M * N).fill(NaN), 'scratch'),
        };
        const packed = gpu.uploadU32(packF16(weight, N), 'weight.f16');
        const dispatches = await matmulForwardF16WSplitK(gpu, { ...t, weight: { packed, K, N } }, shape, 3, MODES[mode]);
        expect(dispatches.map((d) => d.kernel)).toEqual(['matmul_forward_f16w', 'matmul_split_reduce']);
        const [got] = await runAndRead(gpu, dispatches, t.out);
        for (const x of [...Object.values(t), packed]) gpu.free(x);
        return got;
      };
      const plain = await run('plain');
      const got = await run('double-buffer');
      expectClose(got, want, REDUCTION, 'double-buffer out');
      expect(bitDifferences(got, plain), 'double-buffer vs plain').toEqual([]);
    });
  });
});
