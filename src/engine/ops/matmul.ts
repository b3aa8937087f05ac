// Linear-layer matmuls as prepared dispatches, in the three layouts training needs, with no transpose passes:
//   forward          out (M,N)   = inp (M,K) · weight (K,N) [+ bias (N)]     weight in Conv1D [in,out] layout
//   backward input   dinp (M,K)  = or += dout (M,N) · weightᵀ
//   backward weight  dweight (K,N) += inpᵀ · dout
//   backward bias    dbias (N)   += column sums of dout
// M is the number of tokens (B*T), K the input features, N the output features.

import { grid1d, type Dispatch, type GpuContext, type GpuTensor } from '../gpu/context.ts';
import {
  matmulBackwardBias as matmulBackwardBiasKernel,
  matmulBackwardInput as matmulBackwardInputKernel,
  matmulBackwardWeight as matmulBackwardWeightKernel,
  matmulForward as matmulForwardKernel,
} from '../../kernels/registry.ts';

export interface MatmulShape {
  /** Rows of inp and out: tokens (B*T). */
  M: number;
  /** Output features (columns of weight). */
  N: number;
  /** Input features (rows of weight). */
  K: number;
}

/** Workgroup tile of the three tiled kernels; each thread computes 4×4 outputs, so rows and cols are multiples of 4. */
export interface MatmulTiles {
  TILE_ROWS: number;
  TILE_COLS: number;
  TILE_DEPTH: number;
}

export const DEFAULT_MATMUL_TILES: Readonly<MatmulTiles> = { TILE_ROWS: 64, TILE_COLS: 64, TILE_DEPTH: 16 };

const BIAS_COLS = 64;
const BIAS_LANES = 4;

function checkShape(name: string, { M, N, K }: MatmulShape): void {
  for (const [dim, v] of Object.entries({ M, N, K })) {
    if (!Number.isInteger(v) || v < 1) throw new RangeError(`${name}: ${dim} must be a positive integer, got ${v}`);
  }
}

function checkLength(name: string, tensor: GpuTensor, needed: number, what: string): void {
  if (tensor.length < needed) {
    throw new RangeError(`${name}: ${tensor.label} holds ${tensor.length} elements, ${what} needs ${needed}`);
  }
}

function tilesOf(tiles: Partial<MatmulTiles> | undefined): MatmulTiles {
  const t = { ...DEFAULT_MATMUL_TILES, ...tiles };
  if (t.TILE_ROWS % 4 || t.TILE_COLS % 4 || t.TILE_DEPTH < 1) {
    throw new RangeError(`matmul tiles ${JSON.stringify(t)}: rows and cols must be multiples of 4 (4×4 per thread)`);
  }
  return t;
}

/** Workgroups covering a rows × cols output with one tile each. */
function tileGrid(rows: number, cols: number, t: MatmulTiles): [number, number] {
  return [Math.ceil(cols / t.TILE_COLS), Math.ceil(rows / t.TILE_ROWS)];
}

/**
 * out (M,N) = inp (M,K) · weight (K,N) [+ bias (N)]. Without a bias the kernel is compiled with HAS_BIAS = false and
 * `weight` fills the unused bias binding (a read-only alias that is never read), so no placeholder buffer exists.
 */
export async function matmulForward(
  gpu: GpuContext,
  t: { out: GpuTensor; inp: GpuTensor; weight: GpuTensor; bias?: GpuTensor },
  shape: MatmulShape,
  tiles?: Partial<MatmulTiles>,
): Promise<Dispatch> {
  const { M, N, K } = shape;
  checkShape('matmulForward', shape);
  checkLength('matmulForward', t.inp, M * K, 'inp (M,K)');
  checkLength('matmulForward', t.weight, K * N, 'weight (K,N)');
  checkLength('matmulForward', t.out, M * N, 'out (M,N)');
  if (t.bias) checkLength('matmulForward', t.bias, N, 'bias (N)');
  const tile = tilesOf(tiles);
  return gpu.prepare(matmulForwardKernel, {
    bindings: { inp: t.inp, weight: t.weight, bias: t.bias ?? t.weight, out: t.out },
    uniforms: { M, N, K },
    overrides: { ...tile, HAS_BIAS: t.bias ? 1 : 0 },
    workgroups: tileGrid(M, N, tile),
  });
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
  const tile = tilesOf(options.tiles);
  return gpu.prepare(matmulBackwardInputKernel, {
    bindings: { dout: t.dout, weight: t.weight, dinp: t.dinp },
    uniforms: { M, N, K, accumulate: options.accumulate ? 1 : 0 },
    overrides: { ...tile },
    workgroups: tileGrid(M, K, tile),
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
  const tile = tilesOf(tiles);
  return gpu.prepare(matmulBackwardWeightKernel, {
    bindings: { inp: t.inp, dout: t.dout, dweight: t.dweight },
    uniforms: { M, N, K },
    overrides: { ...tile },
    workgroups: tileGrid(K, N, tile),
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
