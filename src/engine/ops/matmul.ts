// Linear-layer matmuls as prepared dispatches, in the three layouts training needs, with no transpose passes:
//   forward          out (M,N)   = inp (M,K) · weight (K,N) [+ bias (N)]     weight in Conv1D [in,out] layout
//   backward input   dinp (M,K)  = or += dout (M,N) · weightᵀ
//   backward weight  dweight (K,N) += inpᵀ · dout
//   backward bias    dbias (N)   += column sums of dout
// M is the number of tokens (B*T), K the input features, N the output features. The forward can also store an
// epilogue's output from the same dispatch (MatmulEpilogue: gelu(out) for GPT-2's c_fc), through the kernels' `_gelu`
// variants.
//
// Which kernel runs is decided here, once per prepared dispatch, from the shape (planMatmul):
// - Register-tiled kernels (matmul_forward, matmul_backward_input, matmul_backward_weight; the tiling is described
//   in lib/matmul_tiles.wgsl, which every tiled kernel is joined with), each in two variants: `_vec4` (16-byte
//   global loads) when the dimensions the layout reads along are multiples of 4 (forward and backward weight: K and
//   N; backward input: N only, so the tied LM head with K = V keeps vec4 loads), else scalar loads. Chosen here,
//   never per element.
// - Tiles by the output's rows × cols: 128×128×8 with 8×8 outputs per thread when that still gives
//   LARGE_TILE_MIN_WORKGROUPS (1024) workgroups, else 64×64×16 with 4×4 per thread. Few output rows get short, wide
//   tiles (16×64 for ≤ 16 rows, 4×128 for ≤ 4), because a 128-row tile over a 1-row decoding step is 99% padding.
//   All use 8–9 KB of workgroup memory and ≤ 256 threads, inside WebGPU's default limits.
// - Every tiled kernel adds each output's products in the order of the reduction index, whatever the tiles, so a
//   row's result does not depend on how many rows share the call (the chunked LM head relies on that: its chunks
//   give bit-identical gradients to one big chunk).
// - A decoding step asks for few-row tiles (generate/generator.ts passes `{ TILE_ROWS: 4 }` when M ≤ 4): a forward
//   whose requested TILE_ROWS is at most 8 and covers all M rows, with N % 4 = 0, runs matmul_forward_rows instead,
//   which keeps every row in one workgroup and splits K over 32 threads per column quad, because tiles over so few
//   rows own too few outputs to keep a GPU busy (M = 1, N = 768: 192 threads of 4×4 outputs). Split K adds in a
//   different order, so it is used only where asked for, never chosen automatically. ROWS = 1, 4 or 8.
// - PREFETCH (a tile field, off in every automatic tile for now): the tiled kernels load the next depth step into
//   registers while they multiply the current one (lib/matmul_tiles.wgsl), and with DOUBLE_BUFFER keep two copies of
//   the workgroup tiles so that a step needs one barrier instead of two. A tile whose loads do not fit the kernels'
//   registers for it (more than MATMUL_PREFETCH_SLOTS per operand per thread: the 4-row decoding tile) runs without;
//   DOUBLE_BUFFER is dropped where two copies exceed the device's workgroup memory. Same products either way.
// Other given `tiles` pin the tiled kernel (tests and benchmarks use them); fields not given come from the automatic
// choice.

import { grid1d, type Dispatch, type GpuContext, type GpuTensor } from '../gpu/context.ts';
import {
  matmulBackwardBias as matmulBackwardBiasKernel,
  matmulBackwardInput as matmulBackwardInputKernel,
  matmulBackwardInputVec4 as matmulBackwardInputVec4Kernel,
  matmulBackwardWeight as matmulBackwardWeightKernel,
  matmulBackwardWeightVec4 as matmulBackwardWeightVec4Kernel,
  matmulForward as matmulForwardKernel,
  matmulForwardRows as matmulForwardRowsKernel,
  matmulForwardVec4 as matmulForwardVec4Kernel,
  matmulSplitReduce as matmulSplitReduceKernel,
} from '../../kernels/registry.ts';
import {
  matmulForwardGelu as matmulForwardGeluKernel,
  matmulForwardRowsGelu as matmulForwardRowsGeluKernel,
  matmulForwardVec4Gelu as matmulForwardVec4GeluKernel,
} from '../../kernels/registry.ts';

export interface MatmulShape {
  /** Rows of inp and out: tokens (B*T). */
  M: number;
  /** Output features (columns of weight). */
  N: number;
  /** Input features (rows of weight). */
  K: number;
}

/**
 * Workgroup tile of the tiled kernels: an output block of TILE_ROWS × TILE_COLS, reduced TILE_DEPTH (a multiple of 4)
 * at a time. Each thread computes THREAD_ROWS × THREAD_COLS outputs (4 or 8 each), so the tile dimensions must be
 * multiples of those. Given tiles are merged over the automatic choice; a tile dimension given without its thread
 * count gets 8 per thread when it is 128 or more, else 4.
 */
export interface MatmulTiles {
  TILE_ROWS: number;
  TILE_COLS: number;
  TILE_DEPTH: number;
  THREAD_ROWS?: number;
  THREAD_COLS?: number;
  /**
   * Load the next depth step into registers during the multiply (see the header). Asked for explicitly on a tile
   * that cannot hold it (`prefetchFits`), a RangeError; inherited from the automatic choice, dropped there.
   */
  PREFETCH?: boolean;
  /** With PREFETCH: two copies of the workgroup tiles, one barrier per depth step (dropped where they do not fit). */
  DOUBLE_BUFFER?: boolean;
}

/** The tiled kernels' own defaults, and the tile for large outputs: 128×128×8, 8×8 per thread, 256 threads. */
export const DEFAULT_MATMUL_TILES: Readonly<Required<MatmulTiles>> = {
  TILE_ROWS: 128,
  TILE_COLS: 128,
  TILE_DEPTH: 8,
  THREAD_ROWS: 8,
  THREAD_COLS: 8,
  PREFETCH: false,
  DOUBLE_BUFFER: false,
};
/** Mid-sized outputs: 64×64×16, 4×4 per thread, 256 threads (4× the workgroups of the large tile). */
export const MEDIUM_MATMUL_TILES: Readonly<Required<MatmulTiles>> = {
  TILE_ROWS: 64,
  TILE_COLS: 64,
  TILE_DEPTH: 16,
  THREAD_ROWS: 4,
  THREAD_COLS: 4,
  PREFETCH: false,
  DOUBLE_BUFFER: false,
};
/** 5 to 16 output rows: 16×64×16, 4×4 per thread, 64 threads. */
export const SHORT_MATMUL_TILES: Readonly<Required<MatmulTiles>> = {
  TILE_ROWS: 16,
  TILE_COLS: 64,
  TILE_DEPTH: 16,
  THREAD_ROWS: 4,
  THREAD_COLS: 4,
  PREFETCH: false,
  DOUBLE_BUFFER: false,
};
/** At most 4 output rows (a decoding step's LM head: rows = B, cols = V): 4×128×16, 4×4 per thread, 32 threads. */
export const TINY_MATMUL_TILES: Readonly<Required<MatmulTiles>> = {
  TILE_ROWS: 4,
  TILE_COLS: 128,
  TILE_DEPTH: 16,
  THREAD_ROWS: 4,
  THREAD_COLS: 4,
  PREFETCH: false,
  DOUBLE_BUFFER: false,
};
/**
 * The large tile is used only when it yields at least this many workgroups. Measured on an H100 (bench/gpu-check.ts
 * --sweep-f32, bench/RESULTS.md): 64×64×16 beat 128×128×8 at every GPT-2-small step shape (2048×2304: 23.8 vs 18.8
 * TFLOP/s; 2048×3072 as backward input: 24.5 vs 20.4; even at 2048×3072 forward) and lost clearly only at 4096³
 * (25.5 vs 28.1; 1024 large tiles). The LM head's logits (336×50257, 1179 large tiles) were within 6% either way.
 */
export const LARGE_TILE_MIN_WORKGROUPS = 1024;
/** A forward asking for tiles of at most this many rows (covering M, with N % 4 = 0) runs matmul_forward_rows. */
export const ROWS_KERNEL_MAX_M = 8;
const ROWS_COL_THREADS = 8;
const ROWS_DEPTH_SLICES = 32;

const BIAS_COLS = 64;
const BIAS_LANES = 4;

export type MatmulLayout = 'forward' | 'backward-input' | 'backward-weight';

/** What runs for one matmul: a tiled kernel (with or without vec4 loads) or, for decoding steps, the rows kernel. */
export type MatmulPlan =
  | { kernel: 'tiled'; vec4: boolean; tiles: Required<MatmulTiles> }
  | { kernel: 'rows'; rows: 1 | 4 | 8 };

/** Output rows and columns of a layout (the tile grid covers these). */
function outputOf(layout: MatmulLayout, { M, N, K }: MatmulShape): [rows: number, cols: number] {
  return layout === 'forward' ? [M, N] : layout === 'backward-input' ? [M, K] : [K, N];
}

/** Whether every operand the layout reads in 16-byte pieces has rows of a multiple of 4 floats. */
function vec4Loads(layout: MatmulLayout, { N, K }: MatmulShape): boolean {
  return layout === 'backward-input' ? N % 4 === 0 : N % 4 === 0 && K % 4 === 0;
}

/** The automatic tile for an output of rows × cols (see the header). */
export function autoMatmulTiles(rows: number, cols: number): Readonly<Required<MatmulTiles>> {
  if (rows <= 4) return TINY_MATMUL_TILES;
  if (rows <= 16) return SHORT_MATMUL_TILES;
  const large = DEFAULT_MATMUL_TILES;
  const largeGroups = Math.ceil(rows / large.TILE_ROWS) * Math.ceil(cols / large.TILE_COLS);
  if (rows >= large.TILE_ROWS && cols >= large.TILE_COLS && largeGroups >= LARGE_TILE_MIN_WORKGROUPS) return large;
  return MEDIUM_MATMUL_TILES;
}

/** Outputs per thread along a tile dimension the caller set without saying: 8 for 128 or more, else 4. */
function threadBlock(tileDim: number): number {
  return tileDim >= 128 && tileDim % 8 === 0 ? 8 : 4;
}

/**
 * The most load jobs per operand a thread keeps in registers with PREFETCH: lib/matmul_tiles.wgsl FETCH_SLOTS (a
 * private array needs a constant size, so the two must agree).
 */
export const MATMUL_PREFETCH_SLOTS = 4;

/**
 * Whether every tiled kernel can prefetch with these tiles: a depth step's loads, counted as the scalar-load kernels
 * cut them (one vec4 per job, TILE_ROWS/4 · TILE_DEPTH for a_tile and TILE_COLS/4 · TILE_DEPTH for b_tile; the vec4
 * kernels have fewer, larger jobs), spread over the threads, are at most MATMUL_PREFETCH_SLOTS per thread. The kernels
 * check the same and run without prefetch otherwise.
 */
export function prefetchFits(t: Omit<Required<MatmulTiles>, 'PREFETCH' | 'DOUBLE_BUFFER'>): boolean {
  const threads = (t.TILE_ROWS / t.THREAD_ROWS) * (t.TILE_COLS / t.THREAD_COLS);
  const perThread = (tileDim: number) => Math.ceil(((tileDim / 4) * t.TILE_DEPTH) / threads);
  return perThread(t.TILE_ROWS) <= MATMUL_PREFETCH_SLOTS && perThread(t.TILE_COLS) <= MATMUL_PREFETCH_SLOTS;
}

function resolveTiles(base: Readonly<Required<MatmulTiles>>, given: Partial<MatmulTiles> = {}): Required<MatmulTiles> {
  const resolved: Required<MatmulTiles> = {
    TILE_ROWS: given.TILE_ROWS ?? base.TILE_ROWS,
    TILE_COLS: given.TILE_COLS ?? base.TILE_COLS,
    TILE_DEPTH: given.TILE_DEPTH ?? base.TILE_DEPTH,
    THREAD_ROWS: given.THREAD_ROWS ?? (given.TILE_ROWS === undefined ? base.THREAD_ROWS : threadBlock(given.TILE_ROWS)),
    THREAD_COLS: given.THREAD_COLS ?? (given.TILE_COLS === undefined ? base.THREAD_COLS : threadBlock(given.TILE_COLS)),
    PREFETCH: given.PREFETCH ?? base.PREFETCH,
    DOUBLE_BUFFER: given.DOUBLE_BUFFER ?? base.DOUBLE_BUFFER,
  };
  const { TILE_ROWS, TILE_COLS, TILE_DEPTH, THREAD_ROWS, THREAD_COLS } = resolved;
  const bad =
    ![4, 8].includes(THREAD_ROWS) ||
    ![4, 8].includes(THREAD_COLS) ||
    !Number.isInteger(TILE_ROWS / THREAD_ROWS) ||
    !Number.isInteger(TILE_COLS / THREAD_COLS) ||
    TILE_ROWS < 1 ||
    TILE_COLS < 1 ||
    !Number.isInteger(TILE_DEPTH / 4) ||
    TILE_DEPTH < 4;
  if (bad) {
    throw new RangeError(
      `matmul tiles ${JSON.stringify(resolved)}: THREAD_ROWS/COLS must be 4 or 8 and divide TILE_ROWS/COLS, ` +
        'TILE_DEPTH a positive multiple of 4',
    );
  }
  // Prefetch is a speed setting: inherited where it cannot apply, it is dropped; asked for there, an error.
  if (resolved.PREFETCH && !prefetchFits(resolved)) {
    if (given.PREFETCH) {
      throw new RangeError(
        `matmul tiles ${JSON.stringify(resolved)}: PREFETCH needs at most ${MATMUL_PREFETCH_SLOTS} loads of TILE_ROWS/4 · ` +
          'TILE_DEPTH (and of TILE_COLS/4 · TILE_DEPTH) per thread',
      );
    }
    resolved.PREFETCH = false;
  }
  if (given.DOUBLE_BUFFER && !resolved.PREFETCH) {
    throw new RangeError(`matmul tiles ${JSON.stringify(resolved)}: DOUBLE_BUFFER needs PREFETCH`);
  }
  resolved.DOUBLE_BUFFER &&= resolved.PREFETCH;
  return resolved;
}

/**
 * The kernel and tiles a matmul of this layout and shape runs with (rules in the header). Given `tiles` pin the tiled
 * kernel, merged over the automatic choice for the shape, except that a forward asking for at most 8 rows per tile,
 * covering all M rows, with N % 4 = 0, gets the rows kernel.
 */
export function planMatmul(layout: MatmulLayout, shape: MatmulShape, tiles?: Partial<MatmulTiles>): MatmulPlan {
  const askedRows = tiles?.TILE_ROWS;
  const fewRowsAsked = askedRows !== undefined && askedRows <= ROWS_KERNEL_MAX_M && shape.M <= askedRows;
  if (fewRowsAsked && layout === 'forward' && shape.N % 4 === 0) {
    return { kernel: 'rows', rows: shape.M === 1 ? 1 : shape.M <= 4 ? 4 : 8 };
  }
  const [rows, cols] = outputOf(layout, shape);
  return { kernel: 'tiled', vec4: vec4Loads(layout, shape), tiles: resolveTiles(autoMatmulTiles(rows, cols), tiles) };
}

/** A RangeError unless M, N and K are positive integers (also used by matmul-f16.ts). */
export function checkShape(name: string, { M, N, K }: MatmulShape): void {
  for (const [dim, v] of Object.entries({ M, N, K })) {
    if (!Number.isInteger(v) || v < 1) throw new RangeError(`${name}: ${dim} must be a positive integer, got ${v}`);
  }
}

/** A RangeError when `tensor` holds fewer than `needed` elements (also used by matmul-f16.ts). */
export function checkLength(name: string, tensor: GpuTensor, needed: number, what: string): void {
  if (tensor.length < needed) {
    throw new RangeError(`${name}: ${tensor.label} holds ${tensor.length} elements, ${what} needs ${needed}`);
  }
}

/**
 * The tiles as this device runs them, after checking them against its workgroup limits: DOUBLE_BUFFER is dropped
 * where two copies of the tiles exceed its workgroup memory (one copy must fit, else a RangeError).
 */
export function deviceTiles(gpu: GpuContext, name: string, t: Required<MatmulTiles>): Required<MatmulTiles> {
  const limits = gpu.device.limits;
  const cols = t.TILE_COLS / t.THREAD_COLS;
  const rows = t.TILE_ROWS / t.THREAD_ROWS;
  // One copy of both tiles at their largest (padded by 4 floats per depth row), in bytes.
  const bytes = t.TILE_DEPTH * (t.TILE_ROWS + 4 + t.TILE_COLS + 4) * 4;
  if (
    cols * rows > limits.maxComputeInvocationsPerWorkgroup ||
    cols > limits.maxComputeWorkgroupSizeX ||
    rows > limits.maxComputeWorkgroupSizeY ||
    bytes > limits.maxComputeWorkgroupStorageSize
  ) {
    throw new RangeError(
      `${name}: tiles ${JSON.stringify(t)} need ${cols}×${rows} threads and ${bytes} bytes of workgroup memory, ` +
        `beyond this device's limits (${limits.maxComputeInvocationsPerWorkgroup} threads, ` +
        `${limits.maxComputeWorkgroupStorageSize} bytes)`,
    );
  }
  const doubleBuffer = t.PREFETCH && t.DOUBLE_BUFFER && 2 * bytes <= limits.maxComputeWorkgroupStorageSize;
  return { ...t, DOUBLE_BUFFER: doubleBuffer };
}

/** Tile overrides (bools as 0/1) of deviceTiles (also used by matmul-f16.ts). */
export function tileOverrides(gpu: GpuContext, name: string, t: Required<MatmulTiles>): Record<string, number> {
  const d = deviceTiles(gpu, name, t);
  return {
    TILE_ROWS: d.TILE_ROWS,
    TILE_COLS: d.TILE_COLS,
    TILE_DEPTH: d.TILE_DEPTH,
    THREAD_ROWS: d.THREAD_ROWS,
    THREAD_COLS: d.THREAD_COLS,
    PREFETCH: d.PREFETCH ? 1 : 0,
    DOUBLE_BUFFER: d.DOUBLE_BUFFER ? 1 : 0,
  };
}

/** Overrides and grid of the few-rows forward kernel (f32 or f16 weights) for `rows` (1, 4 or 8) and N columns. */
export function rowsLaunch(gpu: GpuContext, rows: number, N: number, hasBias: number): { overrides: Record<string, number>; workgroups: [number, number] } {
  return {
    overrides: { ROWS: rows, COL_THREADS: ROWS_COL_THREADS, DEPTH_SLICES: ROWS_DEPTH_SLICES, HAS_BIAS: hasBias },
    workgroups: grid1d(N / 4, ROWS_COL_THREADS, gpu.device.limits.maxComputeWorkgroupsPerDimension),
  };
}

/** Workgroups covering a rows × cols output with one tile each. */
function tileGrid(rows: number, cols: number, t: MatmulTiles): [number, number] {
  return [Math.ceil(cols / t.TILE_COLS), Math.ceil(rows / t.TILE_ROWS)];
}

// ---- fused epilogues (forward only) ----

/**
 * What the forward stores besides out, in the same dispatch. 'gelu': activated (M,N) = gelu(out), GPT-2's tanh form
 * with gelu_forward.wgsl's arithmetic (GPT-2's c_fc then its GELU); out still holds the pre-activation, which
 * gelu_backward reads. The kernels' `_gelu` variants (registry.ts, lib/gelu_epilogue.wgsl) do it in their store.
 */
export interface MatmulEpilogue {
  kind: 'gelu';
  activated: GpuTensor;
}

/** A RangeError unless the epilogue's tensor holds (M,N) and does not overlap out (also used by matmul-f16.ts). */
export function checkEpilogue(name: string, epilogue: MatmulEpilogue, out: GpuTensor, elements: number): void {
  checkLength(name, epilogue.activated, elements, 'activated (M,N)');
  const a = epilogue.activated;
  if (a.buffer === out.buffer && a.offset < out.offset + elements * 4 && out.offset < a.offset + elements * 4) {
    throw new RangeError(`${name}: activated (${a.label}) overlaps out (${out.label})`);
  }
}
// (end of fused epilogues)

/**
 * out (M,N) = inp (M,K) · weight (K,N) [+ bias (N)], and the `epilogue`'s output when given. Without a bias the kernel
 * is compiled with HAS_BIAS = false and `weight` fills the unused bias binding (a read-only alias that is never read),
 * so no placeholder buffer exists.
 */
export async function matmulForward(
  gpu: GpuContext,
  t: { out: GpuTensor; inp: GpuTensor; weight: GpuTensor; bias?: GpuTensor; epilogue?: MatmulEpilogue },
  shape: MatmulShape,
  tiles?: Partial<MatmulTiles>,
): Promise<Dispatch> {
  const { M, N, K } = shape;
  checkShape('matmulForward', shape);
  checkLength('matmulForward', t.inp, M * K, 'inp (M,K)');
  checkLength('matmulForward', t.weight, K * N, 'weight (K,N)');
  checkLength('matmulForward', t.out, M * N, 'out (M,N)');
  if (t.bias) checkLength('matmulForward', t.bias, N, 'bias (N)');
  if (t.epilogue) checkEpilogue('matmulForward', t.epilogue, t.out, M * N);
  const bindings = { inp: t.inp, weight: t.weight, bias: t.bias ?? t.weight, out: t.out };
  const activated = t.epilogue?.activated;
  const hasBias = t.bias ? 1 : 0;
  const plan = planMatmul('forward', shape, tiles);
  if (plan.kernel === 'rows') {
    const launch = { uniforms: { M, N, K }, ...rowsLaunch(gpu, plan.rows, N, hasBias) };
    if (activated) return gpu.prepare(matmulForwardRowsGeluKernel, { bindings: { ...bindings, activated }, ...launch });
    return gpu.prepare(matmulForwardRowsKernel, { bindings, ...launch });
  }
  const launch = {
    uniforms: { M, N, K },
    overrides: { ...tileOverrides(gpu, 'matmulForward', plan.tiles), HAS_BIAS: hasBias },
    workgroups: tileGrid(M, N, plan.tiles),
  };
  if (activated) return gpu.prepare(plan.vec4 ? matmulForwardVec4GeluKernel : matmulForwardGeluKernel, { bindings: { ...bindings, activated }, ...launch });
  return gpu.prepare(plan.vec4 ? matmulForwardVec4Kernel : matmulForwardKernel, { bindings, ...launch });
}

/**
 * How many ways to split the reduction of an output of rows × cols over `depth` so that a small output with a long
 * reduction (the tied head's dlnf = dlogits·wte, depth V) still gives the GPU enough workgroups: 1 (no split) unless
 * the tiles give fewer than 512 workgroups and each split keeps at least 2048 depths; at most `maxSplits`.
 */
export function splitKFor(layout: MatmulLayout, shape: MatmulShape, maxSplits: number): number {
  const plan = planMatmul(layout, shape);
  if (plan.kernel !== 'tiled' || layout !== 'forward') return 1;
  const [x, y] = tileGrid(shape.M, shape.N, plan.tiles);
  const wanted = Math.ceil(512 / (x * y));
  return Math.max(1, Math.min(wanted, Math.floor(shape.K / 2048), maxSplits, 16));
}

/** The reduce step of a split-K product: out (M·N) = or += Σ of `splits` slabs of `scratch`. */
export async function matmulSplitReduce(
  gpu: GpuContext,
  t: { out: GpuTensor; scratch: GpuTensor },
  n: number,
  splits: number,
  accumulate = false,
): Promise<Dispatch> {
  checkLength('matmulSplitReduce', t.scratch, splits * n, 'scratch (splits, M·N)');
  checkLength('matmulSplitReduce', t.out, n, 'out (M·N)');
  return gpu.prepare(matmulSplitReduceKernel, {
    bindings: { partial: t.scratch, out: t.out },
    uniforms: { n, splits, accumulate: accumulate ? 1 : 0 },
    workgroups: grid1d(n, 256, gpu.device.limits.maxComputeWorkgroupsPerDimension),
  });
}

/**
 * out (M,N) = inp (M,K) · weight (K,N) with the reduction split `splits` ways (lib/matmul_tiles.wgsl SPLIT_K): the
 * partial products go to `scratch` (at least splits·M·N), then matmul_split_reduce sums them into out. No bias.
 * Two dispatches; the same result as matmulForward up to the order of the f32 additions. `tiles` as for matmulForward.
 */
export async function matmulForwardSplitK(
  gpu: GpuContext,
  t: { out: GpuTensor; inp: GpuTensor; weight: GpuTensor; scratch: GpuTensor },
  shape: MatmulShape,
  splits: number,
  tiles?: Partial<MatmulTiles>,
): Promise<Dispatch[]> {
  const { M, N, K } = shape;
  checkShape('matmulForwardSplitK', shape);
  checkLength('matmulForwardSplitK', t.inp, M * K, 'inp (M,K)');
  checkLength('matmulForwardSplitK', t.weight, K * N, 'weight (K,N)');
  checkLength('matmulForwardSplitK', t.scratch, splits * M * N, 'scratch (splits,M,N)');
  const plan = planMatmul('forward', shape, tiles);
  if (splits <= 1 || plan.kernel !== 'tiled') return [await matmulForward(gpu, t, shape, tiles)];
  const partial = await gpu.prepare(plan.vec4 ? matmulForwardVec4Kernel : matmulForwardKernel, {
    bindings: { inp: t.inp, weight: t.weight, bias: t.weight, out: t.scratch },
    uniforms: { M, N, K },
    overrides: { ...tileOverrides(gpu, 'matmulForward', plan.tiles), HAS_BIAS: 0, SPLIT_K: splits },
    workgroups: [...tileGrid(M, N, plan.tiles), splits],
  });
  return [partial, await matmulSplitReduce(gpu, { out: t.out, scratch: t.scratch }, M * N, splits)];
}

/** dinp (M,K) = dout (M,N) · weightᵀ, or += with `accumulate` (when dinp also receives another path's gradient). */
export async function matmulBackwardInput(
  gpu: GpuContext,
  t: { dinp: GpuTensor; dout: GpuTensor; weight: GpuTensor },
  shape: MatmulShape,
  options: { accumulate?: boolean; tiles?: Partial<MatmulTiles> } = {},
): Promise<Dispatch> {
  const { M, N, K } = shape;
  checkShape('matmulBackwardInput', shape);
  checkLength('matmulBackwardInput', t.dout, M * N, 'dout (M,N)');
  checkLength('matmulBackwardInput', t.weight, K * N, 'weight (K,N)');
  checkLength('matmulBackwardInput', t.dinp, M * K, 'dinp (M,K)');
  const plan = planMatmul('backward-input', shape, options.tiles);
  if (plan.kernel !== 'tiled') throw new Error('matmulBackwardInput: only tiled kernels exist for this layout');
  return gpu.prepare(plan.vec4 ? matmulBackwardInputVec4Kernel : matmulBackwardInputKernel, {
    bindings: { dout: t.dout, weight: t.weight, dinp: t.dinp },
    uniforms: { M, N, K, accumulate: options.accumulate ? 1 : 0 },
    overrides: tileOverrides(gpu, 'matmulBackwardInput', plan.tiles),
    workgroups: tileGrid(M, K, plan.tiles),
  });
}

/** dweight (K,N) += inpᵀ · dout (parameter gradients accumulate). */
export async function matmulBackwardWeight(
  gpu: GpuContext,
  t: { dweight: GpuTensor; inp: GpuTensor; dout: GpuTensor },
  shape: MatmulShape,
  tiles?: Partial<MatmulTiles>,
): Promise<Dispatch> {
  const { M, N, K } = shape;
  checkShape('matmulBackwardWeight', shape);
  checkLength('matmulBackwardWeight', t.inp, M * K, 'inp (M,K)');
  checkLength('matmulBackwardWeight', t.dout, M * N, 'dout (M,N)');
  checkLength('matmulBackwardWeight', t.dweight, K * N, 'dweight (K,N)');
  const plan = planMatmul('backward-weight', shape, tiles);
  if (plan.kernel !== 'tiled') throw new Error('matmulBackwardWeight: only tiled kernels exist for this layout');
  return gpu.prepare(plan.vec4 ? matmulBackwardWeightVec4Kernel : matmulBackwardWeightKernel, {
    bindings: { inp: t.inp, dout: t.dout, dweight: t.dweight },
    uniforms: { M, N, K },
    overrides: tileOverrides(gpu, 'matmulBackwardWeight', plan.tiles),
    workgroups: tileGrid(K, N, plan.tiles),
  });
}

/** dbias (N) += Σ over the M rows of dout (M,N). A separate dispatch, recorded only for layers that have a bias. */
export async function matmulBackwardBias(
  gpu: GpuContext,
  t: { dbias: GpuTensor; dout: GpuTensor },
  shape: Pick<MatmulShape, 'M' | 'N'>,
): Promise<Dispatch> {
  const { M, N } = shape;
  checkShape('matmulBackwardBias', { M, N, K: 1 });
  checkLength('matmulBackwardBias', t.dout, M * N, 'dout (M,N)');
  checkLength('matmulBackwardBias', t.dbias, N, 'dbias (N)');
  return gpu.prepare(matmulBackwardBiasKernel, {
    bindings: { dout: t.dout, dbias: t.dbias },
    uniforms: { M, N },
    overrides: { COLS: BIAS_COLS, LANES: BIAS_LANES },
    workgroups: grid1d(N, BIAS_COLS, gpu.device.limits.maxComputeWorkgroupsPerDimension),
  });
}
