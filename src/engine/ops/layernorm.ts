// LayerNorm over the last axis, forward and backward, as prepared dispatches.
// Backward is three dispatches: dinp row by row, then dweight/dbias as deterministic per-row-block partial sums in a
// scratch tensor followed by an in-order reduce over the blocks (no float atomics, same bits every run).

import { grid1d, type Dispatch, type GpuContext, type GpuTensor } from '../gpu/context.ts';
import {
  layernormBackward as layernormBackwardKernel,
  layernormBackwardParams as layernormBackwardParamsKernel,
  layernormBackwardParamsReduce as layernormBackwardParamsReduceKernel,
  layernormForward as layernormForwardKernel,
} from '../../kernels/registry.ts';

/** Rows summed per partial of dweight/dbias (the ROWS override of layernorm_backward_params). */
export const LAYERNORM_ROWS_PER_BLOCK = 32;
/** Threads per workgroup for the column-parallel kernels. */
const COLUMN_WG = 256;

/**
 * Threads per row: a power of two, no wider than the row needs (C = 36 gets 64), between 32 and 256. Shared with
 * ops/residual-layernorm.ts, so that both kernels reduce a row in the same tree and give the same mean and rstd.
 */
export function rowWorkgroupSize(C: number): number {
  let size = 32;
  while (size < C && size < 256) size *= 2;
  return size;
}

function requireLength(tensor: GpuTensor, length: number, what: string): void {
  if (tensor.length < length) throw new RangeError(`${what}: ${tensor.label} holds ${tensor.length} elements, needs ${length}`);
}

/** Elements of the scratch tensor layernormBackward needs for dweight/dbias: (ceil(N/32), 2, C). */
export function layernormScratchLength(N: number, C: number): number {
  return Math.ceil(N / LAYERNORM_ROWS_PER_BLOCK) * 2 * C;
}

/** out (N,C) = (inp − mean)·rstd·weight + bias; saves mean (N) and rstd (N) for backward. GPT-2 uses eps = 1e-5. */
export function layernormForward(
  gpu: GpuContext,
  t: { out: GpuTensor; mean: GpuTensor; rstd: GpuTensor; inp: GpuTensor; weight: GpuTensor; bias: GpuTensor },
  s: { N: number; C: number; eps: number },
): Promise<Dispatch> {
  const { N, C, eps } = s;
  for (const [tensor, length] of [[t.out, N * C], [t.inp, N * C], [t.mean, N], [t.rstd, N], [t.weight, C], [t.bias, C]] as const) {
    requireLength(tensor, length, 'layernormForward');
  }
  return gpu.prepare(layernormForwardKernel, {
    bindings: { inp: t.inp, weight: t.weight, bias: t.bias, out: t.out, mean: t.mean, rstd: t.rstd },
    uniforms: { N, C, eps },
    overrides: { WG: rowWorkgroupSize(C) },
    workgroups: grid1d(N, 1),
  });
}

/**
 * dinp (N,C) = (accumulate false) or += (true) the input gradient; dweight (C) += and dbias (C) += when given (leave
 * them out for a frozen LayerNorm). `scratch` needs layernormScratchLength(N, C) elements and is only used with
 * dweight/dbias. Returns the dispatches in the order they must be recorded.
 */
export async function layernormBackward(
  gpu: GpuContext,
  t: {
    dinp: GpuTensor;
    dweight?: GpuTensor;
    dbias?: GpuTensor;
    dout: GpuTensor;
    inp: GpuTensor;
    weight: GpuTensor;
    mean: GpuTensor;
    rstd: GpuTensor;
    scratch?: GpuTensor;
  },
  s: { N: number; C: number; accumulate: boolean },
): Promise<Dispatch[]> {
  const { N, C } = s;
  for (const [tensor, length] of [[t.dinp, N * C], [t.dout, N * C], [t.inp, N * C], [t.mean, N], [t.rstd, N], [t.weight, C]] as const) {
    requireLength(tensor, length, 'layernormBackward');
  }
  const dispatches = [
    await gpu.prepare(layernormBackwardKernel, {
      bindings: { dout: t.dout, inp: t.inp, weight: t.weight, mean: t.mean, rstd: t.rstd, dinp: t.dinp },
      uniforms: { N, C, accumulate: s.accumulate ? 1 : 0 },
      overrides: { WG: rowWorkgroupSize(C) },
      workgroups: grid1d(N, 1),
    }),
  ];
  if (!t.dweight && !t.dbias) return dispatches;
  if (!t.dweight || !t.dbias || !t.scratch) {
    throw new Error('layernormBackward: dweight, dbias and scratch go together (all three or none)');
  }
  requireLength(t.dweight, C, 'layernormBackward');
  requireLength(t.dbias, C, 'layernormBackward');
  requireLength(t.scratch, layernormScratchLength(N, C), 'layernormBackward');
  const blocks = Math.ceil(N / LAYERNORM_ROWS_PER_BLOCK);
  dispatches.push(
    await gpu.prepare(layernormBackwardParamsKernel, {
      bindings: { dout: t.dout, inp: t.inp, mean: t.mean, rstd: t.rstd, scratch: t.scratch },
      uniforms: { N, C },
      overrides: { WG: COLUMN_WG, ROWS: LAYERNORM_ROWS_PER_BLOCK },
      workgroups: [Math.ceil(C / COLUMN_WG), blocks],
    }),
    await gpu.prepare(layernormBackwardParamsReduceKernel, {
      bindings: { scratch: t.scratch, dweight: t.dweight, dbias: t.dbias },
      uniforms: { C, blocks },
      overrides: { WG: COLUMN_WG },
      workgroups: [Math.ceil(C / COLUMN_WG)],
    }),
  );
  return dispatches;
}
