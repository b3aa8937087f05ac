import { beforeAll, describe, expect, it } from 'vitest';
import type { GpuContext } from '../src/engine/gpu/context.ts';
import {
  DEFAULT_MATMUL_TILES,
  LARGE_TILE_MIN_WORKGROUPS,
  MEDIUM_MATMUL_TILES,
  SHORT_MATMUL_TILES,
  TINY_MATMUL_TILES,
  matmulBackwardBias,
  matmulBackwardInput,
  matmulBackwardWeight,
  matmulForward,
  matmulForwardSplitK,
  matmulSplitReduce,
  planMatmul,
  splitKFor,
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

// Tolerance: REDUCTION (atol 1e-4, rtol 1e-3). Inputs are uniform in [-1, 1), scaled by (128 / the largest
// dimension)^¼ when that dimension exceeds 128, so that every product's reduction (up to 50257 terms here) has the
// spread of a 128-term one: f32 rounding then stays around 1e-5 absolute and REDUCTION holds for every shape.
describe('matmul kernels on WebGPU', () => {
  let gpu: GpuContext;
  beforeAll(async () => {
    gpu = await testGpu();
  });

  /** The kernels expected for each layout; checked against the dispatches, so every variant is known to have run. */
  interface Kernels {
    forward: string;
    backwardInput: string;
    backwardWeight: string;
  }

  /** Forward ± bias, backward input = and +=, backward weight +=, backward bias +=, all against the reference. */
  async function checkAllLayouts(shape: MatmulShape, tiles: Partial<MatmulTiles> | undefined, kernels?: Kernels) {
    const { M, N, K } = shape;
    const rng = new Rng(M * 10007 + N * 101 + K);
    const scale = Math.min(1, (128 / Math.max(M, N, K)) ** 0.25);
    const values = (n: number) => uniformArray(rng, n).map((v) => v * scale);
    const inp = values(M * K);
    const weight = values(K * N);
    const bias = values(N);
    const dout = values(M * N);
    const dinp0 = values(M * K);
    const dweight0 = values(K * N);
    const dbias0 = values(N);

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
    if (kernels) {
      const { forward, backwardInput, backwardWeight } = kernels;
      expect(dispatches.map((d) => d.kernel)).toEqual([
        forward,
        forward,
        backwardInput,
        backwardInput,
        backwardWeight,
        'matmul_backward_bias',
      ]);
    }
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
  }

  const VEC4: Kernels = {
    forward: 'matmul_forward_vec4',
    backwardInput: 'matmul_backward_input_vec4',
    backwardWeight: 'matmul_backward_weight_vec4',
  };
  const SCALAR: Kernels = {
    forward: 'matmul_forward',
    backwardInput: 'matmul_backward_input',
    backwardWeight: 'matmul_backward_weight',
  };
  /** N % 4 = 0, K odd: only backward input reads along N alone, so only it gets vec4 loads. */
  const MIXED: Kernels = { ...SCALAR, backwardInput: 'matmul_backward_input_vec4' };

  describe('automatic kernel choice', () => {
    const cases: { shape: MatmulShape; note: string }[] = [
      { shape: { M: 7, N: 36, K: 5 }, note: 'T=7, C=36' },
      { shape: { M: 7, N: 36, K: 13 }, note: 'T=7, C=36, K odd' },
      { shape: { M: 1, N: 1, K: 1 }, note: 'scalar' },
      { shape: { M: 65, N: 130, K: 67 }, note: 'one past a 64 tile everywhere' },
      { shape: { M: 128, N: 96, K: 64 }, note: 'tile multiples' },
      { shape: { M: 33, N: 20, K: 50 }, note: 'K not a multiple of TILE_DEPTH' },
      { shape: { M: 1, N: 50257, K: 64 }, note: 'one token through a vocabulary-wide layer' },
      { shape: { M: 3, N: 64, K: 50257 }, note: 'LM head layout: K = V' },
    ];
    for (const { shape, note } of cases) {
      const { M, N, K } = shape;
      it(`${M}x${N}x${K} (${note})`, () => checkAllLayouts(shape, undefined));
    }
  });

  // Every kernel variant, pinned: scalar and vec4 loads (and the mixed case) for each tile the op chooses, plus
  // asymmetric thread blocks. Shapes straddle the tile on the output edges, reach a thread's second row or column
  // band (half a tile in) in every layout's output where the block has one, and leave a partial last depth tile in
  // every layout (the reductions run over K, N and M).
  describe('tiled kernels, pinned tiles', () => {
    interface TileCase {
      name: string;
      tiles: Partial<MatmulTiles>;
      vec4: MatmulShape;
      scalar: MatmulShape;
      /** N % 4 = 0, K odd. */
      mixed?: MatmulShape;
    }
    const tileCases: TileCase[] = [
      {
        name: '128x128x8, 8x8 per thread',
        tiles: DEFAULT_MATMUL_TILES,
        vec4: { M: 131, N: 132, K: 76 },
        scalar: { M: 130, N: 129, K: 75 },
      },
      {
        name: '64x64x16, 4x4 per thread',
        tiles: MEDIUM_MATMUL_TILES,
        vec4: { M: 67, N: 68, K: 36 },
        scalar: { M: 66, N: 65, K: 19 },
        mixed: { M: 70, N: 72, K: 67 },
      },
      {
        name: '16x64x16, 4x4 per thread',
        tiles: SHORT_MATMUL_TILES,
        vec4: { M: 19, N: 72, K: 20 },
        scalar: { M: 17, N: 70, K: 9 },
      },
      {
        name: '4x128x16, 4x4 per thread',
        tiles: TINY_MATMUL_TILES,
        vec4: { M: 6, N: 132, K: 24 },
        scalar: { M: 5, N: 131, K: 11 },
        mixed: { M: 7, N: 8, K: 133 },
      },
      {
        name: '32x64x4, 8x4 per thread',
        tiles: { TILE_ROWS: 32, TILE_COLS: 64, TILE_DEPTH: 4, THREAD_ROWS: 8, THREAD_COLS: 4 },
        vec4: { M: 35, N: 68, K: 40 },
        scalar: { M: 33, N: 66, K: 7 },
      },
      {
        name: '16x64x8, 4x8 per thread',
        tiles: { TILE_ROWS: 16, TILE_COLS: 64, TILE_DEPTH: 8, THREAD_ROWS: 4, THREAD_COLS: 8 },
        vec4: { M: 18, N: 68, K: 44 },
        scalar: { M: 17, N: 67, K: 43 },
      },
      {
        name: '32x16x8 (old test tiles), 4x4 per thread',
        tiles: { TILE_ROWS: 32, TILE_COLS: 16, TILE_DEPTH: 8 },
        vec4: { M: 37, N: 28, K: 44 },
        scalar: { M: 37, N: 29, K: 45 },
      },
    ];
    for (const { name, tiles, vec4, scalar, mixed } of tileCases) {
      const variants: [string, MatmulShape, Kernels][] = [
        ['vec4', vec4, VEC4],
        ['scalar', scalar, SCALAR],
      ];
      if (mixed) variants.push(['mixed', mixed, MIXED]);
      for (const [variant, shape, kernels] of variants) {
        const { M, N, K } = shape;
        it(`${name}, ${variant} loads: ${M}x${N}x${K}`, () => checkAllLayouts(shape, tiles, kernels));
      }
    }
  });

  describe('forward rows kernel (asked for by a tile of ≤ 8 rows covering M, N % 4 = 0)', () => {
    const shapes: MatmulShape[] = [
      { M: 1, N: 36, K: 13 },
      { M: 3, N: 100, K: 40 },
      { M: 4, N: 4, K: 9 },
      { M: 8, N: 132, K: 67 },
      { M: 5, N: 768, K: 1 },
    ];
    for (const shape of shapes) {
      const { M, N, K } = shape;
      it(`${M}x${N}x${K}`, () =>
        checkAllLayouts(shape, { TILE_ROWS: M <= 4 ? 4 : 8 }, {
          forward: 'matmul_forward_rows',
          backwardInput: 'matmul_backward_input_vec4',
          backwardWeight: K % 4 === 0 ? 'matmul_backward_weight_vec4' : 'matmul_backward_weight',
        }));
    }
  });

  it('rejects tensors too small for the shape', async () => {
    const small = gpu.tensor(4, 'small');
    await expect(matmulForward(gpu, { out: small, inp: small, weight: small }, { M: 3, N: 3, K: 3 })).rejects.toThrow(
      /inp \(M,K\) needs 9/,
    );
    gpu.free(small);
  });

  it('rejects tiles the kernels cannot run or the device cannot hold', async () => {
    const t = gpu.tensor(64, 't');
    const shape = { M: 8, N: 8, K: 8 };
    const forward = (tiles: Partial<MatmulTiles>) => matmulForward(gpu, { out: t, inp: t, weight: t }, shape, tiles);
    await expect(forward({ TILE_ROWS: 6 })).rejects.toThrow(/THREAD_ROWS\/COLS must be 4 or 8/);
    await expect(forward({ TILE_DEPTH: 6 })).rejects.toThrow(/TILE_DEPTH a positive multiple of 4/);
    await expect(forward({ THREAD_COLS: 2 })).rejects.toThrow(/must be 4 or 8/);
    await expect(forward({ TILE_ROWS: 256, TILE_COLS: 256, THREAD_ROWS: 4, THREAD_COLS: 4 })).rejects.toThrow(
      /beyond this device's limits/,
    );
    gpu.free(t);
  });
});

describe('matmul kernel choice (planMatmul)', () => {
  it('decoding steps (a tile of ≤ 8 rows asked for, covering M) take the rows kernel when N % 4 = 0', () => {
    const fewRows = { TILE_ROWS: 4 };  // what the decoder passes for M ≤ 4
    expect(planMatmul('forward', { M: 1, N: 768, K: 768 }, fewRows)).toEqual({ kernel: 'rows', rows: 1 });
    expect(planMatmul('forward', { M: 3, N: 2304, K: 768 }, fewRows)).toEqual({ kernel: 'rows', rows: 4 });
    expect(planMatmul('forward', { M: 5, N: 36, K: 13 }, { TILE_ROWS: 8 })).toEqual({ kernel: 'rows', rows: 8 });
    expect(planMatmul('forward', { M: 8, N: 36, K: 13 }, { TILE_ROWS: 8 })).toEqual({ kernel: 'rows', rows: 8 });
    // Not asked for, not covering M, N % 4 ≠ 0, or another layout: tiled (the tiles' 4-row default for M ≤ 4).
    expect(planMatmul('forward', { M: 1, N: 768, K: 768 })).toEqual({
      kernel: 'tiled',
      vec4: true,
      tiles: TINY_MATMUL_TILES,
    });
    expect(planMatmul('forward', { M: 5, N: 768, K: 768 }, fewRows)).toMatchObject({ kernel: 'tiled' });
    expect(planMatmul('forward', { M: 1, N: 50257, K: 768 }, fewRows)).toMatchObject({ kernel: 'tiled', vec4: false });
    expect(planMatmul('backward-input', { M: 1, N: 768, K: 50257 }, fewRows)).toEqual({
      kernel: 'tiled',
      vec4: true,
      tiles: TINY_MATMUL_TILES,
    });
    expect(planMatmul('forward', { M: 9, N: 768, K: 768 })).toEqual({
      kernel: 'tiled',
      vec4: true,
      tiles: SHORT_MATMUL_TILES,
    });
    expect(planMatmul('forward', { M: 1, N: 50257, K: 768 })).toEqual({
      kernel: 'tiled',
      vec4: false,
      tiles: TINY_MATMUL_TILES,
    });
    // Other given tiles pin the tiled kernel, merged over the automatic choice.
    expect(planMatmul('forward', { M: 1, N: 768, K: 768 }, { TILE_COLS: 64 })).toEqual({
      kernel: 'tiled',
      vec4: true,
      tiles: { ...TINY_MATMUL_TILES, TILE_COLS: 64 },
    });
  });

  it('vec4 loads when the dimensions read along are multiples of 4', () => {
    const vec4 = (layout: Parameters<typeof planMatmul>[0], shape: MatmulShape) => {
      const plan = planMatmul(layout, shape, MEDIUM_MATMUL_TILES);
      return plan.kernel === 'tiled' && plan.vec4;
    };
    expect(vec4('forward', { M: 64, N: 768, K: 768 })).toBe(true);
    expect(vec4('forward', { M: 64, N: 768, K: 50257 })).toBe(false);
    expect(vec4('forward', { M: 64, N: 50257, K: 768 })).toBe(false);
    expect(vec4('backward-input', { M: 64, N: 768, K: 50257 })).toBe(true);
    expect(vec4('backward-input', { M: 64, N: 50257, K: 768 })).toBe(false);
    expect(vec4('backward-weight', { M: 64, N: 768, K: 50257 })).toBe(false);
    expect(vec4('backward-weight', { M: 64, N: 768, K: 768 })).toBe(true);
  });

  it('tiles by output size: 128x128 only with enough workgroups, else 64x64; short tiles for few rows', () => {
    const tiles = (layout: Parameters<typeof planMatmul>[0], shape: MatmulShape) => {
      const plan = planMatmul(layout, shape);
      return plan.kernel === 'tiled' ? plan.tiles : undefined;
    };
    // 4096² is exactly LARGE_TILE_MIN_WORKGROUPS 128×128 tiles; GPT-2 small's step outputs (2048 rows) are fewer.
    expect(Math.ceil(4096 / 128) * Math.ceil(4096 / 128)).toBe(LARGE_TILE_MIN_WORKGROUPS);
    expect(tiles('forward', { M: 4096, N: 4096, K: 4096 })).toEqual(DEFAULT_MATMUL_TILES);
    expect(tiles('backward-input', { M: 336, N: 768, K: 50257 })).toEqual(DEFAULT_MATMUL_TILES); // the LM head's logits
    expect(tiles('forward', { M: 2048, N: 2304, K: 768 })).toEqual(MEDIUM_MATMUL_TILES);
    expect(tiles('forward', { M: 2048, N: 768, K: 768 })).toEqual(MEDIUM_MATMUL_TILES);
    expect(tiles('backward-input', { M: 2048, N: 768, K: 3072 })).toEqual(MEDIUM_MATMUL_TILES);
    expect(tiles('backward-weight', { M: 2048, N: 3072, K: 768 })).toEqual(MEDIUM_MATMUL_TILES);
    expect(tiles('backward-input', { M: 16, N: 768, K: 768 })).toEqual(SHORT_MATMUL_TILES);
    expect(tiles('backward-input', { M: 2, N: 768, K: 50257 })).toEqual(TINY_MATMUL_TILES);
    // Few tokens make a short reduction, not a short output, for the weight gradient.
    expect(tiles('backward-weight', { M: 2, N: 768, K: 768 })).toEqual(MEDIUM_MATMUL_TILES);
  });
});

// Split-K (lib/matmul_tiles.wgsl SPLIT_K + matmul_split_reduce.wgsl) for the forward layout: every split's share of
// the depths, an empty last split, scalar and vec4 kernels; against the Float64 reference with REDUCTION tolerance.
describe('split-K forward (matmulForwardSplitK)', () => {
  let gpu: GpuContext;
  beforeAll(async () => {
    gpu = await testGpu();
  });

  const cases: [MatmulShape, number, string][] = [
    [{ M: 37, N: 50, K: 1001 }, 3, 'scalar loads, K odd'],
    [{ M: 20, N: 64, K: 1024 }, 5, 'vec4 loads'],
    [{ M: 9, N: 12, K: 40 }, 8, 'more splits than depth steps: the last ones add zeros'],
    [{ M: 70, N: 36, K: 300 }, 2, 'two splits'],
  ];
  for (const [shape, splits, note] of cases) {
    it(`${shape.M}x${shape.N}x${shape.K}, ${splits} splits (${note})`, async () => {
      const { M, N, K } = shape;
      const rng = new Rng(M + N + K + splits);
      const inp = uniformArray(rng, M * K);
      const weight = uniformArray(rng, K * N);
      const want = new Float64Array(M * N);
      ref.matmulForward(want, inp, weight, null, M, N, K);
      const t = {
        inp: gpu.upload(inp, 'inp'),
        weight: gpu.upload(weight, 'weight'),
        out: gpu.upload(new Float32Array(M * N).fill(NaN), 'out'),
        scratch: gpu.upload(new Float32Array(splits * M * N).fill(NaN), 'scratch'),
      };
      const dispatches = await matmulForwardSplitK(gpu, t, shape, splits);
      expect(dispatches.map((d) => d.kernel)).toEqual([K % 4 === 0 && N % 4 === 0 ? 'matmul_forward_vec4' : 'matmul_forward', 'matmul_split_reduce']);
      expect(dispatches[0].workgroups[2]).toBe(splits);
      const [got] = await runAndRead(gpu, dispatches, t.out);
      expectClose(got, want, REDUCTION, 'out');
      for (const d of dispatches) d.release();
      for (const x of Object.values(t)) gpu.free(x);
    });
  }

  it('the reduce step adds to out when asked', async () => {
    const n = 300;
    const rng = new Rng(5);
    const partial = uniformArray(rng, 3 * n);
    const prior = uniformArray(rng, n);
    const t = { scratch: gpu.upload(partial, 'partial'), out: gpu.upload(prior, 'out') };
    const reduce = await matmulSplitReduce(gpu, t, n, 3, true);
    const [got] = await runAndRead(gpu, [reduce], t.out);
    expectClose(got, prior.map((p, i) => p + partial[i] + partial[n + i] + partial[2 * n + i]), REDUCTION, 'out += Σ');
    reduce.release();
    for (const x of Object.values(t)) gpu.free(x);
  });

  it('splitKFor: the LM head backward (few rows, K = V) splits; ordinary layers and short reductions do not', () => {
    // GPT-2 small's dlnf for a chunk of 333 rows: 64×64 tiles give 12×6 = 72 workgroups, so 8 splits (576).
    expect(splitKFor('forward', { M: 333, N: 768, K: 50257 }, 24)).toBe(8);
    expect(splitKFor('forward', { M: 333, N: 768, K: 50257 }, 3)).toBe(3); // the scratch allows only 3
    expect(splitKFor('forward', { M: 2048, N: 3072, K: 768 }, 24)).toBe(1);
    expect(splitKFor('forward', { M: 16, N: 16, K: 4096 }, 24)).toBe(2); // each split keeps ≥ 2048 depths
    expect(splitKFor('forward', { M: 16, N: 16, K: 2000 }, 24)).toBe(1);
    expect(splitKFor('backward-input', { M: 16, N: 16, K: 50257 }, 24)).toBe(1);
  });
});
