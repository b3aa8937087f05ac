// The fused epilogues of the GPT-2 forward (issue #7): the forward matmuls' GELU epilogue (their `_gelu` variants,
// ops/matmul.ts MatmulEpilogue) and residual_layernorm_forward (ops/residual-layernorm.ts). Each kernel is checked
// against the float64 reference, and bit for bit against the separate dispatches it replaces (same inputs, same
// device), which is what lets gpt2.ts swap them in without changing a run's numbers; then gpt2.ts's forward is
// checked to record them. Whole-model equality with the reference (fused GELU everywhere in full mode, the unfused
// path where LoRA adapts c_fc) is tests/model/gpt2.test.ts's.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Dispatch, GpuContext, GpuTensor } from '../src/engine/gpu/context.ts';
import { modelConfig } from '../src/engine/model/config.ts';
import { Gpt2Model, Gpt2Run } from '../src/engine/model/gpt2.ts';
import { initGpt2Parameters } from '../src/engine/model/init.ts';
import { LoraAdapter, loraConfig } from '../src/engine/model/lora.ts';
import { geluForward } from '../src/engine/ops/gelu.ts';
import { layernormForward } from '../src/engine/ops/layernorm.ts';
import {
  DEFAULT_MATMUL_TILES,
  MEDIUM_MATMUL_TILES,
  matmulForward,
  type MatmulShape,
  type MatmulTiles,
} from '../src/engine/ops/matmul.ts';
import { matmulForwardF16W, prepareSgmat, uploadF16Weights, type F16Weights } from '../src/engine/ops/matmul-f16.ts';
import { residualForward } from '../src/engine/ops/residual.ts';
import { residualLayernormForward } from '../src/engine/ops/residual-layernorm.ts';
import { roundToF16 } from '../src/engine/reference/f16.ts';
import * as geluRef from '../src/engine/reference/gelu.ts';
import * as matmulRef from '../src/engine/reference/matmul.ts';
import * as ref from '../src/engine/reference/residual-layernorm.ts';
import { Rng, uniformArray } from '../src/engine/random.ts';
import { ELEMENTWISE, REDUCTION, expectClose } from './helpers/check.ts';
import { dot, expectGradient } from './helpers/gradcheck.ts';
import { runAndRead, testGpu } from './helpers/gpu.ts';

const EPS = 1e-5;

/** The same f32 bits everywhere (±0 and NaN payloads told apart), reporting the first differences. */
function expectSameBits(actual: Float32Array, expected: Float32Array, label: string): void {
  const a = new Uint32Array(actual.buffer, actual.byteOffset, actual.length);
  const e = new Uint32Array(expected.buffer, expected.byteOffset, expected.length);
  expect(a.length, `${label}: length`).toBe(e.length);
  const differing: string[] = [];
  let count = 0;
  for (let i = 0; i < a.length; i++) {
    if (a[i] === e[i]) continue;
    count++;
    if (differing.length < 5) differing.push(`[${i}] ${actual[i]} vs ${expected[i]}`);
  }
  expect(count === 0 ? 'identical' : `${count} differ: ${differing.join(', ')}`, label).toBe('identical');
}

/** Rows with a non-zero mean and varied spread (as tests/layernorm.test.ts), split into two random addends. */
function residualInputs(rng: Rng, N: number, C: number): { a: Float64Array; b: Float64Array } {
  const a = new Float64Array(N * C);
  const b = new Float64Array(N * C);
  for (let n = 0; n < N; n++) {
    const shift = rng.uniform(-3, 3);
    const scale = rng.uniform(0.2, 2);
    for (let c = 0; c < C; c++) {
      a[n * C + c] = shift + scale * rng.uniform(-1, 1);
      b[n * C + c] = scale * rng.uniform(-1, 1);
    }
  }
  return { a, b };
}

describe('residual + layernorm reference', () => {
  it('backward matches finite differences through both outputs (the residual and the LayerNorm)', () => {
    const rng = new Rng(71);
    const N = 3;
    const C = 5;
    const { a, b } = residualInputs(rng, N, C);
    const weight = uniformArray(rng, C, 0.5, 1.5);
    const bias = uniformArray(rng, C);
    const dout = uniformArray(rng, N * C);
    const dresidual = uniformArray(rng, N * C);
    const forward = () => {
      const residual = new Float64Array(N * C);
      const out = new Float64Array(N * C);
      const mean = new Float64Array(N);
      const rstd = new Float64Array(N);
      ref.residualLayernormForward(residual, out, mean, rstd, a, b, weight, bias, N, C, EPS);
      return { residual, out, mean, rstd };
    };
    const loss = () => {
      const { residual, out } = forward();
      return dot(out, dout) + dot(residual, dresidual);
    };
    const { residual, mean, rstd } = forward();
    const da = new Float64Array(N * C);
    const db = new Float64Array(N * C);
    const dweight = new Float64Array(C);
    const dbias = new Float64Array(C);
    ref.residualLayernormBackward(da, db, dweight, dbias, dout, dresidual, residual, weight, mean, rstd, N, C);
    expectGradient(da, loss, a, 'a');
    expectGradient(db, loss, b, 'b');
    expectGradient(dweight, loss, weight, 'weight');
    expectGradient(dbias, loss, bias, 'bias');
  });
});

describe('residual_layernorm_forward on WebGPU', () => {
  let gpu: GpuContext;
  beforeAll(async () => {
    gpu = await testGpu();
  });

  // C = 36 (not a multiple of 4), 1 (zero variance), 100, 300 (more columns than the 256 threads) and 768.
  const shapes = [
    { N: 7, C: 36 },
    { N: 5, C: 1 },
    { N: 70, C: 100 },
    { N: 2, C: 300 },
    { N: 3, C: 768 },
  ];
  for (const { N, C } of shapes) {
    it(`N=${N} C=${C}: the reference, and the bits of residual_forward then layernorm_forward`, async () => {
      const rng = new Rng(N * 1000 + C + 5);
      const { a, b } = residualInputs(rng, N, C);
      const weight = uniformArray(rng, C, 0.5, 1.5);
      const bias = uniformArray(rng, C);
      const want = {
        residual: new Float64Array(N * C),
        out: new Float64Array(N * C),
        mean: new Float64Array(N),
        rstd: new Float64Array(N),
      };
      ref.residualLayernormForward(want.residual, want.out, want.mean, want.rstd, a, b, weight, bias, N, C, EPS);

      const bytesAtStart = gpu.pool.bytesInUse;
      const garbage = (n: number, label: string) => gpu.upload(uniformArray(rng, n), label); // must be overwritten
      const t = {
        a: gpu.upload(a, 'a'),
        b: gpu.upload(b, 'b'),
        weight: gpu.upload(weight, 'weight'),
        bias: gpu.upload(bias, 'bias'),
        residual: garbage(N * C, 'residual'),
        out: garbage(N * C, 'out'),
        mean: garbage(N, 'mean'),
        rstd: garbage(N, 'rstd'),
        separateResidual: gpu.tensor(N * C, 'separate.residual'),
        separateOut: gpu.tensor(N * C, 'separate.out'),
        separateMean: gpu.tensor(N, 'separate.mean'),
        separateRstd: gpu.tensor(N, 'separate.rstd'),
      };
      try {
        const fused = await residualLayernormForward(gpu, t, { N, C, eps: EPS });
        expect(fused.kernel).toBe('residual_layernorm_forward');
        const separate = [
          await residualForward(gpu, { out: t.separateResidual, a: t.a, b: t.b }, N * C),
          await layernormForward(
            gpu,
            { out: t.separateOut, mean: t.separateMean, rstd: t.separateRstd, inp: t.separateResidual, weight: t.weight, bias: t.bias },
            { N, C, eps: EPS },
          ),
        ];
        const [residual, out, mean, rstd, sResidual, sOut, sMean, sRstd] = await runAndRead(
          gpu,
          [fused, ...separate],
          t.residual,
          t.out,
          t.mean,
          t.rstd,
          t.separateResidual,
          t.separateOut,
          t.separateMean,
          t.separateRstd,
        );
        // Tolerances as tests/layernorm.test.ts: one f32 add for the residual, a few roundings after accurate row
        // statistics for out; mean and rstd are reductions (rstd of a C = 1 row is 1/√eps ≈ 316: relative).
        expectClose(residual, want.residual, ELEMENTWISE, 'residual');
        expectClose(out, want.out, ELEMENTWISE, 'out');
        expectClose(mean, want.mean, REDUCTION, 'mean');
        expectClose(rstd, want.rstd, REDUCTION, 'rstd');
        expectSameBits(residual, sResidual, 'residual vs residual_forward');
        expectSameBits(out, sOut, 'out vs layernorm_forward');
        expectSameBits(mean, sMean, 'mean vs layernorm_forward');
        expectSameBits(rstd, sRstd, 'rstd vs layernorm_forward');
      } finally {
        for (const tensor of Object.values(t)) gpu.free(tensor);
      }
      expect(gpu.pool.bytesInUse).toBe(bytesAtStart);
    });
  }

  it('refuses tensors too small for (N,C)', async () => {
    const t = gpu.tensor(64, 't');
    const small = gpu.view(t, 0, 5, 'small');
    const tensors = { residual: t, out: t, mean: t, rstd: t, a: t, b: t, weight: t, bias: small };
    await expect(residualLayernormForward(gpu, tensors, { N: 2, C: 6, eps: EPS })).rejects.toThrow(/small holds 5 elements, needs 6/);
    gpu.free(t);
  });
});

describe('GELU epilogue of the forward matmuls on WebGPU', () => {
  let gpu: GpuContext;
  beforeAll(async () => {
    gpu = await testGpu();
  });

  /**
   * The fused forward (out and activated = gelu(out)) against the float64 reference (matmul, then gelu, on the
   * f16-rounded weight for `f16`), and bit for bit against the plain kernel with the same tiles followed by a
   * gelu_forward dispatch. Column 0's bias is +60 and the last column's −60, so those columns saturate tanh (where a
   * naive tanh overflows); the others spread over about ±3.
   */
  async function checkGelu(shape: MatmulShape, kernel: string, options: { tiles?: Partial<MatmulTiles>; f16?: boolean; bias?: boolean } = {}) {
    const { M, N, K } = shape;
    const withBias = options.bias ?? true;
    const rng = new Rng(M * 10007 + N * 101 + K);
    const inp = uniformArray(rng, M * K);
    const weight32 = new Float32Array(uniformArray(rng, K * N, -0.5, 0.5));
    const weightUsed = Float64Array.from(weight32, options.f16 ? roundToF16 : (v) => v);
    const bias = uniformArray(rng, N);
    bias[0] = 60;
    if (N > 1) bias[N - 1] = -60;
    const wantOut = new Float64Array(M * N);
    matmulRef.matmulForward(wantOut, inp, weightUsed, withBias ? bias : null, M, N, K);
    const wantActivated = new Float64Array(M * N);
    geluRef.geluForward(wantActivated, wantOut);

    const bytesAtStart = gpu.pool.bytesInUse;
    const t = {
      inp: gpu.upload(inp, 'inp'),
      bias: gpu.upload(bias, 'bias'),
      out: gpu.upload(uniformArray(rng, M * N), 'out'), // garbage: must be overwritten
      activated: gpu.upload(uniformArray(rng, M * N), 'activated'),
      plainOut: gpu.tensor(M * N, 'plain.out'),
      plainActivated: gpu.tensor(M * N, 'plain.activated'),
    };
    const f32Weight = options.f16 ? undefined : gpu.upload(weight32, 'weight');
    const f16Weight: F16Weights | undefined = options.f16 ? uploadF16Weights(gpu, weight32, K, N) : undefined;
    const biasOrNone = withBias ? t.bias : undefined;
    const forward = (out: GpuTensor, activated?: GpuTensor): Promise<Dispatch> => {
      const epilogue = activated ? ({ kind: 'gelu', activated } as const) : undefined;
      return f16Weight
        ? matmulForwardF16W(gpu, { out, inp: t.inp, weight: f16Weight, bias: biasOrNone, epilogue }, shape, options.tiles)
        : matmulForward(gpu, { out, inp: t.inp, weight: f32Weight!, bias: biasOrNone, epilogue }, shape, options.tiles);
    };
    try {
      const fused = await forward(t.out, t.activated);
      const plain = await forward(t.plainOut);
      expect(fused.kernel).toBe(kernel);
      expect(plain.kernel).toBe(kernel.replace(/_gelu$/, ''));
      const gelu = await geluForward(gpu, { out: t.plainActivated, inp: t.plainOut }, { n: M * N });
      const [out, activated, plainOut, plainActivated] = await runAndRead(
        gpu,
        [fused, plain, gelu],
        t.out,
        t.activated,
        t.plainOut,
        t.plainActivated,
      );
      // REDUCTION, the matmul's tolerance, for both: gelu's slope is at most 1.13, and the float64 gelu of the
      // float64 product is the reference, so activated carries out's f32 error plus a few roundings.
      expectClose(out, wantOut, REDUCTION, 'out');
      expectClose(activated, wantActivated, REDUCTION, 'activated');
      expectSameBits(out, plainOut, 'out vs the plain kernel');
      expectSameBits(activated, plainActivated, 'activated vs gelu_forward');
    } finally {
      for (const tensor of [...Object.values(t), f32Weight, f16Weight?.packed]) if (tensor) gpu.free(tensor);
    }
    expect(gpu.pool.bytesInUse).toBe(bytesAtStart);
  }

  const cases: { name: string; shape: MatmulShape; kernel: string; tiles?: Partial<MatmulTiles>; f16?: boolean; bias?: boolean }[] = [
    { name: 'scalar loads, T=7 C=36 (K not a multiple of 4)', shape: { M: 7, N: 36, K: 13 }, kernel: 'matmul_forward_gelu' },
    { name: 'scalar loads, N not a multiple of 4', shape: { M: 7, N: 37, K: 36 }, kernel: 'matmul_forward_gelu' },
    { name: 'vec4 loads, c_fc of C=36 (N = 4C)', shape: { M: 7, N: 144, K: 36 }, kernel: 'matmul_forward_vec4_gelu' },
    { name: 'vec4 loads, no bias', shape: { M: 9, N: 36, K: 20 }, kernel: 'matmul_forward_vec4_gelu', bias: false },
    {
      name: 'vec4 loads, 128x128 tiles: every row and column band of a thread',
      shape: { M: 130, N: 132, K: 20 },
      kernel: 'matmul_forward_vec4_gelu',
      tiles: DEFAULT_MATMUL_TILES,
    },
    { name: 'scalar loads, 64x64 tiles, one past a tile', shape: { M: 66, N: 65, K: 19 }, kernel: 'matmul_forward_gelu', tiles: MEDIUM_MATMUL_TILES },
    { name: 'few-rows kernel, M=3', shape: { M: 3, N: 36, K: 13 }, kernel: 'matmul_forward_rows_gelu', tiles: { TILE_ROWS: 4 } },
    { name: 'few-rows kernel, M=8', shape: { M: 8, N: 132, K: 67 }, kernel: 'matmul_forward_rows_gelu', tiles: { TILE_ROWS: 8 } },
    { name: 'f16 weight, T=7 C=36', shape: { M: 7, N: 36, K: 13 }, kernel: 'matmul_forward_f16w_gelu', f16: true },
    { name: 'f16 weight, N odd (padded rows)', shape: { M: 7, N: 37, K: 36 }, kernel: 'matmul_forward_f16w_gelu', f16: true },
    { name: 'f16 weight, no bias', shape: { M: 5, N: 144, K: 36 }, kernel: 'matmul_forward_f16w_gelu', f16: true, bias: false },
    {
      name: 'f16 weight, few-rows kernel',
      shape: { M: 3, N: 36, K: 13 },
      kernel: 'matmul_forward_rows_f16w_gelu',
      tiles: { TILE_ROWS: 4 },
      f16: true,
    },
  ];
  for (const { name, shape, kernel, ...options } of cases) {
    it(`${name}: ${shape.M}x${shape.N}x${shape.K}`, () => checkGelu(shape, kernel, options));
  }

  it('refuses an activated tensor that overlaps out, or is too small, and a split-K tensor-core product with it', async () => {
    const t = gpu.tensor(256, 't');
    const shape = { M: 2, N: 4, K: 4 };
    const small = gpu.view(t, 0, 7, 'small');
    await expect(matmulForward(gpu, { out: t, inp: t, weight: t, epilogue: { kind: 'gelu', activated: t } }, shape)).rejects.toThrow(/overlaps out/);
    await expect(matmulForward(gpu, { out: t, inp: t, weight: t, epilogue: { kind: 'gelu', activated: small } }, shape)).rejects.toThrow(
      /activated \(M,N\) needs 8/,
    );
    const sgmat = prepareSgmat(gpu, { act: t, weight: t, out: t, activated: small }, { R: 2, Cc: 4, D: 4, transposed: false, accumulate: false }, undefined, 2);
    await expect(sgmat).rejects.toThrow(/split-K/);
    gpu.free(t);
  });
});

describe('gpt2.ts records the fused forward', () => {
  // Three layers, C = 36: c_fc (K = 36, N = 144) takes the vec4 GELU kernel.
  const config = modelConfig({ nLayer: 3, nHead: 2, nEmbd: 36, nPositions: 8, vocabSize: 41, bosTokenId: 40, eosTokenId: 40 });
  const L = config.nLayer;
  let gpu: GpuContext;
  let model: Gpt2Model;
  beforeAll(async () => {
    gpu = await testGpu();
    model = Gpt2Model.create(gpu, config, initGpt2Parameters(config, 3));
  });
  afterAll(() => model?.destroy());

  const count = (list: readonly Dispatch[], kernel: string) => list.filter((d) => d.kernel === kernel).length;

  it('one LayerNorm alone (block 0 ln_1), 2L residual+LayerNorm dispatches, GELU in every c_fc matmul', async () => {
    const run = await Gpt2Run.create(gpu, model, { batchSize: 1, sequenceLength: 7, mode: { kind: 'full' } });
    try {
      const forward = run.forward;
      expect(count(forward, 'layernorm_forward')).toBe(1);
      expect(count(forward, 'residual_layernorm_forward')).toBe(2 * L);
      expect(count(forward, 'residual_forward')).toBe(0);
      expect(count(forward, 'gelu_forward')).toBe(0);
      expect(count(forward, 'matmul_forward_vec4_gelu')).toBe(L);
      // The backward is untouched: a gelu_backward per block, reading the pre-activation the fused matmul kept.
      expect(count(run.backward, 'gelu_backward')).toBe(L);
    } finally {
      run.destroy();
    }
  });

  it('keeps a separate GELU after the LoRA update where LoRA adapts c_fc', async () => {
    const adapter = LoraAdapter.create(gpu, config, loraConfig({ rank: 2, targets: ['c_fc'], layers: { last: 1 } }), { seed: 1 });
    const run = await Gpt2Run.create(gpu, model, { batchSize: 1, sequenceLength: 7, mode: { kind: 'lora' }, adapter });
    try {
      const kernels = run.forward.map((d) => d.kernel);
      expect(count(run.forward, 'matmul_forward_vec4_gelu')).toBe(L - 1);
      expect(count(run.forward, 'gelu_forward')).toBe(1);
      // Block 2's c_fc: the plain matmul, the LoRA update into fch, then gelu_forward.
      const gelu = kernels.indexOf('gelu_forward');
      expect(kernels.slice(gelu - 3, gelu + 1)).toEqual(['matmul_forward_vec4', 'lora_forward_down', 'lora_forward_up', 'gelu_forward']);
    } finally {
      run.destroy();
      adapter.destroy();
    }
  });
});
