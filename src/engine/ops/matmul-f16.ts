// Linear-layer matmuls that read a frozen weight stored as f16, for the two products that read W and nothing else
// (a frozen weight has no gradient, so the backward-weight layout never meets one):
//   forward          out (M,N)  = inp (M,K) · W (K,N) [+ bias (N)]     W in Conv1D [in,out] layout
//   backward input   dinp (M,K) = or += dout (M,N) · Wᵀ
// With the tied wte (V,C) as W (K = V, N = C), the backward-input layout is the LM head's logits = lnf · wteᵀ and the
// forward layout its dlnf = dlogits · wte, so one packed wte serves both.
//
// Storage: W is packed two f16 per u32 (`packF16`): row k holds ceil(N/2) words, element (k, n) lies in word
// k·ceil(N/2) + ⌊n/2⌋, even n in the low 16 bits, odd n in the high 16 bits (the order unpack2x16float reads); for
// odd N each row's last high half is +0. The kernels unpack with core WGSL's unpack2x16float, so they need no
// shader-f16: every device gets half the weight memory and bandwidth, and the arithmetic stays f32. Results equal
// the f32 kernels' on the f16-rounded weight.
//
// Kernels and tiles follow ops/matmul.ts (`planMatmul`, same tiles by output shape, same limits); the f16 kernels
// have scalar f32 loads of the activation and no few-rows (decoding) variant, so every plan here is a tiled one.
//
// Tensor cores: where the device has f16 subgroup matrices (GpuContext.features.tensorCoresF16) and
// `gpu.useTensorCores` is on, both products run on matmul_sgmat_f16w.wgsl instead, which also rounds the activation to
// f16 (f32 accumulation): faster, about 1e-3 relative error instead of the f32 kernels' 1e-6.

import type { Dispatch, GpuContext, GpuTensor } from '../gpu/context.ts';
import {
  matmulBackwardInputF16W as matmulBackwardInputF16WKernel,
  matmulForwardF16W as matmulForwardF16WKernel,
  matmulForwardRowsF16W as matmulForwardRowsF16WKernel,
  matmulSgmatF16W as matmulSgmatF16WKernel,
} from '../../kernels/registry.ts';
import { checkLength, checkShape, matmulSplitReduce, planMatmul, rowsLaunch, tileOverrides, type MatmulShape, type MatmulTiles } from './matmul.ts';
import { checkEpilogue, type MatmulEpilogue } from './matmul.ts';
import {
  matmulForwardF16WGelu as matmulForwardF16WGeluKernel,
  matmulForwardRowsF16WGelu as matmulForwardRowsF16WGeluKernel,
  matmulSgmatF16WGelu as matmulSgmatF16WGeluKernel,
} from '../../kernels/registry.ts';

/** A frozen weight W (K,N) on the GPU as packed f16 pairs: `packed` holds K·ceil(N/2) u32 elements. */
export interface F16Weights {
  readonly packed: GpuTensor;
  /** Rows of W: input features. */
  readonly K: number;
  /** Columns of W: output features. */
  readonly N: number;
}

const f32Scratch = new Float32Array(1);
const f32Bits = new Uint32Array(f32Scratch.buffer);

/** The binary16 bits nearest to x (as an f32), ties to even; overflow gives ±Inf, NaN a quiet NaN. */
function f16Bits(x: number): number {
  f32Scratch[0] = x;
  const bits = f32Bits[0];
  const sign = (bits >>> 16) & 0x8000;
  const exponent = (bits >>> 23) & 0xff; // biased by 127
  const fraction = bits & 0x7fffff;
  if (exponent === 0xff) return sign | 0x7c00 | (fraction ? 0x200 : 0);
  const halfExponent = exponent - 127 + 15;
  if (halfExponent >= 0x1f) return sign | 0x7c00;
  if (halfExponent <= 0) {
    // A subnormal f16 (or zero): the 24-bit significand counted in units of 2^-24 is significand · 2^(exponent − 126).
    const shift = 126 - exponent;
    if (shift > 24) return sign; // below 2^-25, half the smallest subnormal: rounds to ±0
    const significand = fraction | 0x800000;
    return sign | roundShifted(significand, shift);
  }
  // Normal: keep 10 of the 23 fraction bits; a carry out of the fraction bumps the exponent (to Inf at the top).
  return sign | roundShifted((halfExponent << 23) | fraction, 13);
}

/** value >> shift, rounded to nearest with ties to even (shift 1..24). */
function roundShifted(value: number, shift: number): number {
  const kept = value >>> shift;
  const rest = value & ((1 << shift) - 1);
  const half = 1 << (shift - 1);
  return rest > half || (rest === half && (kept & 1) === 1) ? kept + 1 : kept;
}

/**
 * Packs rows of `rowLength` values (default: one row) as f16 pairs, rounded to nearest even: row r takes
 * ceil(rowLength/2) words, value (r, n) in word r·ceil(rowLength/2) + ⌊n/2⌋, even n in the low half; an odd
 * rowLength leaves each row's last high half +0. For a weight W (K,N), rowLength = N.
 */
export function packF16(values: Float32Array, rowLength = values.length): Uint32Array {
  if (!Number.isInteger(rowLength) || rowLength < 1 || values.length % rowLength !== 0) {
    throw new RangeError(`packF16: ${values.length} values do not split into rows of ${rowLength}`);
  }
  const rows = values.length / rowLength;
  const words = Math.ceil(rowLength / 2);
  const packed = new Uint32Array(rows * words);
  for (let r = 0; r < rows; r++) {
    for (let n = 0; n < rowLength; n++) {
      const half = f16Bits(values[r * rowLength + n]);
      packed[r * words + (n >> 1)] |= n % 2 === 0 ? half : half << 16;
    }
  }
  return packed;
}

/** Uploads W (K,N), row-major f32, as packed f16 pairs (`packF16`). */
export function uploadF16Weights(gpu: GpuContext, W: Float32Array, K: number, N: number, label = 'weight.f16'): F16Weights {
  checkShape('uploadF16Weights', { M: 1, N, K });
  if (W.length !== K * N) {
    throw new RangeError(`uploadF16Weights: W holds ${W.length} values, (K,N) = (${K},${N}) needs ${K * N}`);
  }
  return { packed: gpu.uploadU32(packF16(W, N), label), K, N };
}


function checkWeight(name: string, weight: F16Weights, { N, K }: MatmulShape): void {
  if (weight.K !== K || weight.N !== N) {
    const given = `(${weight.K},${weight.N})`;
    throw new RangeError(`${name}: ${weight.packed.label} is ${given}, the shape needs (K,N) = (${K},${N})`);
  }
  checkLength(name, weight.packed, K * Math.ceil(N / 2), 'packed weight (K,ceil(N/2))');
}

/**
 * The tiles for an output of rows × cols reduced over `depth`, as ops/matmul.ts chooses them (given tiles merged
 * over the automatic choice, checked). planMatmul's backward-input plan is always tiled, and its output is (M,K), so
 * it is asked with M = rows, K = cols.
 */
function planTiles(rows: number, cols: number, depth: number, tiles?: Partial<MatmulTiles>): Required<MatmulTiles> {
  const plan = planMatmul('backward-input', { M: rows, N: depth, K: cols }, tiles);
  if (plan.kernel !== 'tiled') throw new Error('matmul f16 weights: planMatmul gave no tiled plan');
  return plan.tiles;
}


/**
 * out (M,N) = inp (M,K) · W (K,N) [+ bias (N)], W stored as f16, and the `epilogue`'s output when given (ops/matmul.ts
 * MatmulEpilogue). Without a bias the kernel is compiled with HAS_BIAS = false and the packed weight fills the unused
 * bias binding (never read).
 */
export async function matmulForwardF16W(
  gpu: GpuContext,
  t: { out: GpuTensor; inp: GpuTensor; weight: F16Weights; bias?: GpuTensor; epilogue?: MatmulEpilogue },
  shape: MatmulShape,
  tiles?: Partial<MatmulTiles>,
): Promise<Dispatch> {
  const { M, N, K } = shape;
  checkShape('matmulForwardF16W', shape);
  checkWeight('matmulForwardF16W', t.weight, shape);
  checkLength('matmulForwardF16W', t.inp, M * K, 'inp (M,K)');
  checkLength('matmulForwardF16W', t.out, M * N, 'out (M,N)');
  if (t.bias) checkLength('matmulForwardF16W', t.bias, N, 'bias (N)');
  if (t.epilogue) checkEpilogue('matmulForwardF16W', t.epilogue, t.out, M * N);
  const activated = t.epilogue?.activated;
  const bindings = { inp: t.inp, weight: t.weight.packed, bias: t.bias ?? t.weight.packed, out: t.out };
  const rows = planMatmul('forward', shape, tiles);
  if (rows.kernel === 'rows') {
    const launch = { uniforms: { M, N, K }, ...rowsLaunch(gpu, rows.rows, N, t.bias ? 1 : 0) };
    if (activated) return gpu.prepare(matmulForwardRowsF16WGeluKernel, { bindings: { ...bindings, activated }, ...launch });
    return gpu.prepare(matmulForwardRowsF16WKernel, { bindings, ...launch });
  }
  if (useSgmat(gpu, M, N, tiles)) {
    return prepareSgmat(gpu, { act: t.inp, weight: t.weight.packed, bias: t.bias, out: t.out, activated }, { R: M, Cc: N, D: K, transposed: false, accumulate: false });
  }
  const plan = planTiles(M, N, K, tiles);
  const launch = {
    uniforms: { M, N, K },
    overrides: { ...tileOverrides(gpu, 'matmulForwardF16W', plan), HAS_BIAS: t.bias ? 1 : 0 },
    workgroups: [Math.ceil(N / plan.TILE_COLS), Math.ceil(M / plan.TILE_ROWS)] as [number, number],
  };
  if (activated) return gpu.prepare(matmulForwardF16WGeluKernel, { bindings: { ...bindings, activated }, ...launch });
  return gpu.prepare(matmulForwardF16WKernel, { bindings, ...launch });
}

/** dinp (M,K) = dout (M,N) · Wᵀ, or += with `accumulate`, W stored as f16. */
export async function matmulBackwardInputF16W(
  gpu: GpuContext,
  t: { dinp: GpuTensor; dout: GpuTensor; weight: F16Weights },
  shape: MatmulShape,
  options: { accumulate?: boolean; tiles?: Partial<MatmulTiles> } = {},
): Promise<Dispatch> {
  const { M, N, K } = shape;
  checkShape('matmulBackwardInputF16W', shape);
  checkWeight('matmulBackwardInputF16W', t.weight, shape);
  checkLength('matmulBackwardInputF16W', t.dout, M * N, 'dout (M,N)');
  checkLength('matmulBackwardInputF16W', t.dinp, M * K, 'dinp (M,K)');
  if (useSgmat(gpu, M, K, options.tiles)) {
    return prepareSgmat(gpu, { act: t.dout, weight: t.weight.packed, out: t.dinp }, { R: M, Cc: K, D: N, transposed: true, accumulate: Boolean(options.accumulate) });
  }
  const plan = planTiles(M, K, N, options.tiles);
  return gpu.prepare(matmulBackwardInputF16WKernel, {
    bindings: { dout: t.dout, weight: t.weight.packed, dinp: t.dinp },
    uniforms: { M, N, K, accumulate: options.accumulate ? 1 : 0 },
    overrides: tileOverrides(gpu, 'matmulBackwardInputF16W', plan),
    workgroups: [Math.ceil(K / plan.TILE_COLS), Math.ceil(M / plan.TILE_ROWS)],
  });
}

/** Subgroup-matrix tiles: WG_SM × WG_SN subgroups of 32, each a 32×32 block of the output; BK deep slices. */
export interface SgmatTiles {
  WG_SM: number;
  WG_SN: number;
  BK: number;
}

/**
 * Whether matmul_sgmat_f16w serves an output of rows × cols on this device (gpu.useTensorCores aside): the device has
 * f16 tensor cores, the 128×128 blocks fit its limits, and the output fills at least 256 of them. Measured on an
 * H100 (bench/RESULTS.md): smaller outputs and smaller blocks ran slower on it than on the f32-arithmetic f16 kernels.
 */
export function tensorCoresFor(gpu: GpuContext, rows: number, cols: number): boolean {
  if (!gpu.features.tensorCoresF16) return false;
  const big = SGMAT_TILES;
  const bytes = 2 * 32 * big.BK * (big.WG_SM + big.WG_SN) + 4 * 256 * big.WG_SM * big.WG_SN;
  const limits = gpu.adapter.limits;
  const fits = 32 * big.WG_SM * big.WG_SN <= limits.maxComputeInvocationsPerWorkgroup && bytes <= limits.maxComputeWorkgroupStorageSize;
  return fits && Math.ceil(rows / 128) * Math.ceil(cols / 128) >= 256;
}

/** Tensor cores for this product: where tensorCoresFor says so, they are on, and the caller asked for no f32 tiles. */
function useSgmat(gpu: GpuContext, rows: number, cols: number, tiles: Partial<MatmulTiles> | undefined): boolean {
  return gpu.useTensorCores && !tiles && tensorCoresFor(gpu, rows, cols);
}

/** 128×128 output blocks (16 subgroups of 32×32), 16 deep: the fastest of the variants timed on the H100. */
const SGMAT_TILES: Readonly<SgmatTiles> = Object.freeze({ WG_SM: 4, WG_SN: 4, BK: 16 });

/** The tiles matmul_sgmat_f16w runs with. */
export function planSgmat(): SgmatTiles {
  return { ...SGMAT_TILES };
}

/**
 * out (R,Cc) = or += act (R,D) · B [+ bias] on the tensor cores; B = weight (D,Cc), or weightᵀ for weight (Cc,D)
 * when `transposed`, packed f16 pairs along each weight row. With `activated` (R,Cc) the GELU epilogue also stores
 * gelu(out) there (the final out, after bias and accumulate); not for split-K partial products.
 */
export async function prepareSgmat(
  gpu: GpuContext,
  t: { act: GpuTensor; weight: GpuTensor; bias?: GpuTensor; out: GpuTensor; activated?: GpuTensor },
  s: { R: number; Cc: number; D: number; transposed: boolean; accumulate: boolean },
  tiles: SgmatTiles = planSgmat(),
  splits = 1,
): Promise<Dispatch> {
  const bm = 32 * tiles.WG_SM;
  const bn = 32 * tiles.WG_SN;
  if (splits > 1 && (t.bias || s.accumulate || t.activated)) {
    throw new RangeError('prepareSgmat: a split-K product takes no bias or epilogue and does not accumulate');
  }
  const bindings = { act: t.act, weight: t.weight, bias: t.bias ?? t.weight, out: t.out };
  const launch = {
    uniforms: { R: s.R, Cc: s.Cc, D: s.D, accumulate: s.accumulate ? 1 : 0 },
    overrides: { HAS_BIAS: t.bias ? 1 : 0, TRANSPOSED: s.transposed ? 1 : 0, SPLIT_K: splits },
    workgroups: [Math.ceil(s.Cc / bn), Math.ceil(s.R / bm), splits] as [number, number, number],
  };
  if (t.activated) {
    checkEpilogue('prepareSgmat', { kind: 'gelu', activated: t.activated }, t.out, s.R * s.Cc);
    return gpu.prepare(matmulSgmatF16WGeluKernel(tiles), { bindings: { ...bindings, activated: t.activated }, ...launch });
  }
  return gpu.prepare(matmulSgmatF16WKernel(tiles), { bindings, ...launch });
}

/**
 * out (M,N) = inp (M,K) · W (K,N), W stored as f16, with the reduction split `splits` ways (see ops/matmul.ts
 * `matmulForwardSplitK`): partial products in `scratch` (splits·M·N), then summed. No bias. Tensor cores as
 * matmulForwardF16W chooses them (given `tiles` pin the f32-arithmetic kernel, as there).
 */
export async function matmulForwardF16WSplitK(
  gpu: GpuContext,
  t: { out: GpuTensor; inp: GpuTensor; weight: F16Weights; scratch: GpuTensor },
  shape: MatmulShape,
  splits: number,
  tiles?: Partial<MatmulTiles>,
): Promise<Dispatch[]> {
  const { M, N, K } = shape;
  if (splits <= 1) return [await matmulForwardF16W(gpu, t, shape, tiles)];
  checkShape('matmulForwardF16WSplitK', shape);
  checkWeight('matmulForwardF16WSplitK', t.weight, shape);
  checkLength('matmulForwardF16WSplitK', t.inp, M * K, 'inp (M,K)');
  checkLength('matmulForwardF16WSplitK', t.scratch, splits * M * N, 'scratch (splits,M,N)');
  const partial = useSgmat(gpu, M, N, tiles)
    ? await prepareSgmat(gpu, { act: t.inp, weight: t.weight.packed, out: t.scratch }, { R: M, Cc: N, D: K, transposed: false, accumulate: false }, undefined, splits)
    : await (async () => {
        const plan = planTiles(M, N, K, tiles);
        return gpu.prepare(matmulForwardF16WKernel, {
          bindings: { inp: t.inp, weight: t.weight.packed, bias: t.weight.packed, out: t.scratch },
          uniforms: { M, N, K },
          overrides: { ...tileOverrides(gpu, 'matmulForwardF16W', plan), HAS_BIAS: 0, SPLIT_K: splits },
          workgroups: [Math.ceil(N / plan.TILE_COLS), Math.ceil(M / plan.TILE_ROWS), splits],
        });
      })();
  return [partial, await matmulSplitReduce(gpu, { out: t.out, scratch: t.scratch }, M * N, splits)];
}
