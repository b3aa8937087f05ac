// Checks and tunes the kernels that only a real GPU offers (SwiftShader has no f16 subgroup matrices, so the test
// suite cannot run them): the tensor-core matmul (kernels/matmul_sgmat_f16w.wgsl) in both weight layouts, with bias
// and accumulate, on awkward and GPT-2 shapes, against a Float64 reference on the CPU; then its tile variants timed
// beside the f32 kernels. Bundled by bench/build.mjs into bench/dist/gpu-check.mjs; run on the GPU machine:
//   node bench/dist/gpu-check.mjs [--no-timing] [--sweep-f32]
// --sweep-f32 also times the f32 tiled kernels with several tile shapes at the GPT-2-small step's shapes and 4096³
// (kind "sweep"), to choose ops/matmul.ts's automatic tiles from; each tile shape without prefetch ("plain"), with
// PREFETCH ("prefetch") and with PREFETCH + DOUBLE_BUFFER ("double-buffer"), and each prefetch variant's output is
// compared with the plain one's, which it must equal bit for bit (same products added in the same order): a record
// with "identical": false counts as a failed check.
// The tensor-core kernel's GELU epilogue (its `_gelu` variant: GPT-2's c_fc writes fch and fchGelu = gelu(fch) in one
// dispatch) is checked too, in the forward layout (records with "gelu": true).
// Prints JSON lines (kind "check" or "time") and a summary; exits 1 if a check fails or the device has no tensor cores.

import { withGpu } from '../src/cli/bench.ts';
import type { GpuContext } from '../src/engine/gpu/context.ts';
import { deviceTiles, matmulBackwardInput, matmulForward, planMatmul, type MatmulShape, type MatmulTiles } from '../src/engine/ops/matmul.ts';
import { packF16, prepareSgmat, type SgmatTiles } from '../src/engine/ops/matmul-f16.ts';
import { Rng } from '../src/engine/random.ts';
import { gelu } from '../src/engine/reference/gelu.ts';
import { timeDispatches } from '../src/engine/bench/timing.ts';

const TIMING = !process.argv.includes('--no-timing');
const SWEEP_F32 = process.argv.includes('--sweep-f32');

/** binary16 bits → number. */
function f16Value(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exponent = (bits >> 10) & 0x1f;
  const fraction = bits & 0x3ff;
  if (exponent === 0) return sign * fraction * 2 ** -24;
  if (exponent === 0x1f) return fraction ? NaN : sign * Infinity;
  return sign * (1 + fraction / 1024) * 2 ** (exponent - 15);
}

/** Rows of `rowLength` values rounded to f16 through packF16 (the packing the kernels read). */
function roundedF16(values: Float32Array, rowLength: number): Float64Array {
  const packed = packF16(values, rowLength);
  const words = Math.ceil(rowLength / 2);
  const out = new Float64Array(values.length);
  for (let i = 0; i < values.length; i++) {
    const r = Math.floor(i / rowLength);
    const n = i % rowLength;
    const word = packed[r * words + (n >> 1)];
    out[i] = f16Value(n % 2 === 0 ? word & 0xffff : word >>> 16);
  }
  return out;
}

function random(rng: Rng, n: number): Float32Array {
  const v = new Float32Array(n);
  for (let i = 0; i < n; i++) v[i] = rng.next() * 2 - 1;
  return v;
}

interface Case {
  R: number;
  Cc: number;
  D: number;
  transposed: boolean;
  bias: boolean;
  accumulate: boolean;
  tiles?: SgmatTiles;
}

/** ‖out − ref‖/‖ref‖ over sampled rows, against f16-rounded operands (f64 sums) and against the f32 operands. */
async function check(gpu: GpuContext, c: Case, seed: number): Promise<Record<string, unknown>> {
  const rng = new Rng(seed);
  const act = random(rng, c.R * c.D);
  // The weight as stored: (D,Cc) packed along Cc, or (Cc,D) packed along D when transposed.
  const weightRows = c.transposed ? c.Cc : c.D;
  const weightCols = c.transposed ? c.D : c.Cc;
  const weight = random(rng, weightRows * weightCols);
  const bias = random(rng, c.Cc);
  const prior = random(rng, c.R * c.Cc);
  const t = {
    act: gpu.upload(act, 'check.act'),
    weight: gpu.uploadU32(packF16(weight, weightCols), 'check.weight'),
    bias: c.bias ? gpu.upload(bias, 'check.bias') : undefined,
    out: gpu.upload(c.accumulate ? prior : new Float32Array(c.R * c.Cc).fill(NaN), 'check.out'),
  };
  const dispatch = await prepareSgmat(gpu, t, c, c.tiles);
  gpu.submit([dispatch]);
  const out = await gpu.read(t.out);
  dispatch.release();
  for (const x of Object.values(t)) if (x) gpu.free(x);

  const act16 = roundedF16(act, act.length);
  const weight16 = roundedF16(weight, weightCols);
  const rows = c.R <= 64 ? [...Array(c.R).keys()] : [0, 1, c.R - 1, ...Array.from({ length: 13 }, () => Math.floor(rng.next() * c.R))];
  let diff16 = 0, diff32 = 0, norm = 0;
  let unwritten = 0;
  for (const r of rows) {
    for (let n = 0; n < c.Cc; n++) {
      let sum16 = 0, sum32 = 0;
      for (let k = 0; k < c.D; k++) {
        const w = c.transposed ? n * c.D + k : k * c.Cc + n;
        sum16 += act16[r * c.D + k] * weight16[w];
        sum32 += act[r * c.D + k] * weight[w];
      }
      const extra = (c.bias ? bias[n] : 0) + (c.accumulate ? prior[r * c.Cc + n] : 0);
      const got = out[r * c.Cc + n];
      if (!Number.isFinite(got)) unwritten++;
      diff16 += (got - sum16 - extra) ** 2;
      diff32 += (got - sum32 - extra) ** 2;
      norm += (sum32 + extra) ** 2;
    }
  }
  const rel16 = Math.sqrt(diff16 / norm);
  const rel32 = Math.sqrt(diff32 / norm);
  // f16-rounded operands: only f32 accumulation order differs (≲1e-6·√D); f32 operands: the f16 rounding (≈1e-3).
  const ok = unwritten === 0 && rel16 < 1e-5 && rel32 < 5e-3;
  return { kind: 'check', ...c, rows: rows.length, rel_err_vs_f16_operands: rel16, rel_err_vs_f32_operands: rel32, unwritten, ok };
}

/**
 * The GELU epilogue on the tensor cores, forward layout (weight (D,Cc) packed along Cc): out judged as check() judges
 * it, activated against gelu of the same Float64 reference (relative, like out), and against gelu of the kernel's own
 * out, which isolates the epilogue's f32 arithmetic. act is scaled by 2/√D so that out spreads over GELU's curved
 * part (about ±3) rather than its linear tails.
 */
async function checkGelu(gpu: GpuContext, c: Omit<Case, 'transposed'>, seed: number): Promise<Record<string, unknown>> {
  const rng = new Rng(seed);
  const act = random(rng, c.R * c.D).map((v) => (v * 2) / Math.sqrt(c.D));
  const weight = random(rng, c.D * c.Cc);
  const bias = random(rng, c.Cc);
  const prior = random(rng, c.R * c.Cc);
  const t = {
    act: gpu.upload(act, 'gelu.act'),
    weight: gpu.uploadU32(packF16(weight, c.Cc), 'gelu.weight'),
    bias: c.bias ? gpu.upload(bias, 'gelu.bias') : undefined,
    out: gpu.upload(c.accumulate ? prior : new Float32Array(c.R * c.Cc).fill(NaN), 'gelu.out'),
    activated: gpu.upload(new Float32Array(c.R * c.Cc).fill(NaN), 'gelu.activated'),
  };
  const dispatch = await prepareSgmat(gpu, t, { ...c, transposed: false }, c.tiles);
  gpu.submit([dispatch]);
  const out = await gpu.read(t.out);
  const activated = await gpu.read(t.activated);
  const kernel = dispatch.kernel;
  dispatch.release();
  for (const x of Object.values(t)) if (x) gpu.free(x);

  const act16 = roundedF16(act, act.length);
  const weight16 = roundedF16(weight, c.Cc);
  const rows = c.R <= 64 ? [...Array(c.R).keys()] : [0, 1, c.R - 1, ...Array.from({ length: 13 }, () => Math.floor(rng.next() * c.R))];
  let diffOut = 0, normOut = 0, diffGelu = 0, normGelu = 0, ownGelu = 0;
  let unwritten = 0;
  for (const r of rows) {
    for (let n = 0; n < c.Cc; n++) {
      let sum16 = 0;
      for (let k = 0; k < c.D; k++) sum16 += act16[r * c.D + k] * weight16[k * c.Cc + n];
      const want = sum16 + (c.bias ? bias[n] : 0) + (c.accumulate ? prior[r * c.Cc + n] : 0);
      const got = out[r * c.Cc + n];
      const gotGelu = activated[r * c.Cc + n];
      if (!Number.isFinite(got) || !Number.isFinite(gotGelu)) unwritten++;
      diffOut += (got - want) ** 2;
      normOut += want ** 2;
      diffGelu += (gotGelu - gelu(want)) ** 2;
      normGelu += gelu(want) ** 2;
      ownGelu = Math.max(ownGelu, Math.abs(gotGelu - gelu(got)) / (1 + Math.abs(got)));
    }
  }
  const relOut = Math.sqrt(diffOut / normOut);
  const relGelu = Math.sqrt(diffGelu / normGelu);
  // out: f32 accumulation order only (≲1e-6·√D); activated: that, through gelu's slope ≤ 1.13; own: f32 exp and a
  // few roundings (≈1e-7).
  const ok = unwritten === 0 && relOut < 1e-5 && relGelu < 1e-5 && ownGelu < 1e-5;
  return { kind: 'check', gelu: true, kernel, ...c, rows: rows.length, rel_err_vs_f16_operands: relOut, gelu_rel_err_vs_f16_operands: relGelu, gelu_max_err_vs_own_out: ownGelu, unwritten, ok };
}

async function time(gpu: GpuContext, R: number, Cc: number, D: number, transposed: boolean, tiles: SgmatTiles | 'f32'): Promise<Record<string, unknown>> {
  const rng = new Rng(7);
  const act = gpu.upload(random(rng, R * D), 'time.act');
  const weight = random(rng, Cc * D);
  const out = gpu.tensor(R * Cc, 'time.out');
  const w32 = tiles === 'f32' ? gpu.upload(weight, 'time.w32') : undefined;
  const w16 = tiles === 'f32' ? undefined : gpu.uploadU32(packF16(weight, transposed ? D : Cc), 'time.w16');
  try {
    const dispatch =
      tiles === 'f32'
        ? await matmulForward(gpu, { inp: act, weight: w32!, out }, { M: R, N: Cc, K: D })
        : await prepareSgmat(gpu, { act, weight: w16!, out }, { R, Cc, D, transposed, accumulate: false }, tiles);
    const timing = await timeDispatches(gpu, [dispatch], { warmup: 3, iters: 20 });
    dispatch.release();
    return { kind: 'time', shape: `${R}×${Cc}×${D}`, transposed, tiles, ms: timing.ms, tflops: (2 * R * Cc * D) / (timing.ms * 1e9), timing: timing.method };
  } finally {
    for (const x of [act, out, w32, w16]) if (x) gpu.free(x);
  }
}

const F32_TILES: MatmulTiles[] = [
  { TILE_ROWS: 128, TILE_COLS: 128, TILE_DEPTH: 8, THREAD_ROWS: 8, THREAD_COLS: 8 },
  { TILE_ROWS: 128, TILE_COLS: 128, TILE_DEPTH: 16, THREAD_ROWS: 8, THREAD_COLS: 8 },
  { TILE_ROWS: 128, TILE_COLS: 64, TILE_DEPTH: 8, THREAD_ROWS: 8, THREAD_COLS: 4 },
  { TILE_ROWS: 64, TILE_COLS: 128, TILE_DEPTH: 8, THREAD_ROWS: 4, THREAD_COLS: 8 },
  { TILE_ROWS: 64, TILE_COLS: 64, TILE_DEPTH: 16, THREAD_ROWS: 4, THREAD_COLS: 4 },
  { TILE_ROWS: 64, TILE_COLS: 64, TILE_DEPTH: 8, THREAD_ROWS: 4, THREAD_COLS: 4 },
  { TILE_ROWS: 64, TILE_COLS: 64, TILE_DEPTH: 32, THREAD_ROWS: 4, THREAD_COLS: 4 },
  { TILE_ROWS: 64, TILE_COLS: 64, TILE_DEPTH: 16, THREAD_ROWS: 8, THREAD_COLS: 8 },
  { TILE_ROWS: 32, TILE_COLS: 64, TILE_DEPTH: 16, THREAD_ROWS: 4, THREAD_COLS: 4 },
];

/** How a sweep runs the depth loop: no prefetch, PREFETCH, or PREFETCH with DOUBLE_BUFFER (lib/matmul_tiles.wgsl). */
const PREFETCH_MODES = [
  { mode: 'plain', PREFETCH: false, DOUBLE_BUFFER: false },
  { mode: 'prefetch', PREFETCH: true, DOUBLE_BUFFER: false },
  { mode: 'double-buffer', PREFETCH: true, DOUBLE_BUFFER: true },
] as const;
type PrefetchMode = (typeof PREFETCH_MODES)[number];

/**
 * Times the f32 tiled forward or backward-input kernel with `tiles` in one prefetch mode (GFLOP/s as TFLOP/s) and
 * returns its output too, so that the caller can compare the modes. A mode the device cannot run as asked (two tile
 * copies beyond its workgroup memory) is skipped.
 */
async function sweepOne(
  gpu: GpuContext,
  layout: 'forward' | 'backward-input',
  shape: MatmulShape,
  tiles: MatmulTiles,
  mode: PrefetchMode,
): Promise<{ line: Record<string, unknown>; output?: Float32Array }> {
  const { M, N, K } = shape;
  const t = `${tiles.TILE_ROWS}x${tiles.TILE_COLS}x${tiles.TILE_DEPTH}/${tiles.THREAD_ROWS}x${tiles.THREAD_COLS}`;
  const base = { kind: 'sweep', layout, shape: `${M}×${N}×${K}`, tiles: t, prefetch: mode.mode };
  const asked = { ...tiles, PREFETCH: mode.PREFETCH, DOUBLE_BUFFER: mode.DOUBLE_BUFFER };
  try {
    const plan = planMatmul(layout, shape, asked);
    if (plan.kernel === 'tiled' && mode.DOUBLE_BUFFER && !deviceTiles(gpu, 'sweep', plan.tiles).DOUBLE_BUFFER) {
      return { line: { ...base, skipped: 'two copies of the tiles exceed maxComputeWorkgroupStorageSize' } };
    }
  } catch (error) {
    return { line: { ...base, error: String(error) } };
  }
  const rng = new Rng(11);
  const a = gpu.upload(random(rng, M * K), 'sweep.inp');
  const w = gpu.upload(random(rng, K * N), 'sweep.weight');
  const o = gpu.upload(random(rng, M * N), 'sweep.out');
  try {
    const dispatch =
      layout === 'forward'
        ? await matmulForward(gpu, { inp: a, weight: w, out: o }, shape, asked)
        : await matmulBackwardInput(gpu, { dinp: a, dout: o, weight: w }, shape, { tiles: asked });
    const timing = await timeDispatches(gpu, [dispatch], { warmup: 3, iters: 20 });
    dispatch.release();
    const output = await gpu.read(layout === 'forward' ? o : a);
    return { line: { ...base, ms: timing.ms, tflops: (2 * M * N * K) / (timing.ms * 1e9) }, output };
  } catch (error) {
    return { line: { ...base, error: String(error) } };
  } finally {
    for (const x of [a, w, o]) gpu.free(x);
  }
}

/** Elements where two outputs differ (bit patterns, so NaN equals NaN), and the largest difference. */
function compareOutputs(got: Float32Array, want: Float32Array): { differing: number; max_abs_diff: number } {
  const gotBits = new Uint32Array(got.buffer, got.byteOffset, got.length);
  const wantBits = new Uint32Array(want.buffer, want.byteOffset, want.length);
  let differing = 0;
  let maxAbsDiff = 0;
  for (let i = 0; i < got.length; i++) {
    if (gotBits[i] !== wantBits[i]) {
      differing++;
      maxAbsDiff = Math.max(maxAbsDiff, Math.abs(got[i] - want[i]));
    }
  }
  return { differing, max_abs_diff: maxAbsDiff };
}

const lines: Record<string, unknown>[] = [];
const emit = (line: Record<string, unknown>) => {
  lines.push(line);
  process.stdout.write(`${JSON.stringify(line)}\n`);
};

process.exitCode = await withGpu(async (gpu) => {
  emit({ kind: 'device', adapter: gpu.adapter.name, tensorCoresF16: gpu.features.tensorCoresF16, limits: gpu.adapter.limits });
  if (SWEEP_F32) {
    const cases: ['forward' | 'backward-input', MatmulShape][] = [
      ['forward', { M: 4096, N: 4096, K: 4096 }],
      ['forward', { M: 2048, N: 2304, K: 768 }],
      ['forward', { M: 2048, N: 768, K: 768 }],
      ['forward', { M: 2048, N: 3072, K: 768 }],
      ['forward', { M: 2048, N: 768, K: 3072 }],
      ['backward-input', { M: 2048, N: 2304, K: 768 }],
      ['backward-input', { M: 2048, N: 3072, K: 768 }],
      ['backward-input', { M: 2048, N: 768, K: 3072 }],
      ['backward-input', { M: 336, N: 768, K: 50257 }],
    ];
    for (const [layout, shape] of cases) {
      for (const tiles of F32_TILES) {
        let plain: Float32Array | undefined;
        for (const mode of PREFETCH_MODES) {
          const { line, output } = await sweepOne(gpu, layout, shape, tiles, mode);
          if (mode.mode === 'plain') plain = output;
          else if (output && plain) {
            const diff = compareOutputs(output, plain);
            Object.assign(line, { identical: diff.differing === 0, ...diff });
          }
          emit(line);
        }
      }
    }
  }
  if (!gpu.features.tensorCoresF16) return 1;
  const variants: SgmatTiles[] = [
    { WG_SM: 2, WG_SN: 2, BK: 32 },
    { WG_SM: 4, WG_SN: 4, BK: 32 },
    { WG_SM: 4, WG_SN: 2, BK: 32 },
    { WG_SM: 2, WG_SN: 4, BK: 64 },
    { WG_SM: 4, WG_SN: 4, BK: 16 },
  ];
  let seed = 1;
  for (const transposed of [false, true]) {
    for (const [R, Cc, D] of [[16, 16, 16], [7, 10, 6], [37, 50, 70], [130, 66, 33], [1, 64, 96]] as const) {
      for (const tiles of variants.slice(0, 3)) emit(await check(gpu, { R, Cc, D, transposed, bias: !transposed, accumulate: transposed, tiles }, seed++));
    }
    for (const [R, Cc, D] of [[2048, 2304, 768], [2048, 768, 3072], [512, 1001, 768], [256, 768, 1001]] as const) {
      emit(await check(gpu, { R, Cc, D, transposed, bias: seed % 2 === 0, accumulate: seed % 3 === 0 }, seed++));
    }
  }
  // The GELU epilogue: awkward shapes with three tile variants, then GPT-2 small's c_fc (BT = 2048, C = 768) as
  // matmulForwardF16W runs it, and an accumulating product (gelu of the final out).
  for (const [R, Cc, D] of [[16, 16, 16], [7, 10, 6], [37, 50, 70], [130, 66, 33]] as const) {
    for (const tiles of variants.slice(0, 3)) emit(await checkGelu(gpu, { R, Cc, D, bias: true, accumulate: false, tiles }, seed++));
  }
  emit(await checkGelu(gpu, { R: 2048, Cc: 3072, D: 768, bias: true, accumulate: false }, seed++));
  emit(await checkGelu(gpu, { R: 512, Cc: 1001, D: 768, bias: false, accumulate: true }, seed++));
  if (TIMING) {
    for (const [R, Cc, D, transposed] of [[4096, 4096, 4096, false], [4096, 4096, 4096, true], [2048, 3072, 768, false], [2048, 768, 3072, true], [2048, 50257, 768, true]] as const) {
      emit(await time(gpu, R, Cc, D, transposed, 'f32'));
      for (const tiles of variants) emit(await time(gpu, R, Cc, D, transposed, tiles));
    }
  }
  const checks = lines.filter((l) => l.kind === 'check' || (l.kind === 'sweep' && l.identical !== undefined));
  const failed = checks.filter((l) => (l.kind === 'check' ? !l.ok : !l.identical));
  process.stderr.write(`gpu-check: ${checks.length - failed.length} checks passed, ${failed.length} failed\n`);
  return failed.length ? 1 : 0;
});
