// A residual add and the LayerNorm that reads its sum, as one prepared dispatch (GPT-2's residual2 → ln_2 and
// residual3 → the next block's ln_1 or ln_f). Forward only: the backward stays ops/layernorm.ts's layernormBackward on
// the stored residual with the saved mean and rstd, and the residual's gradient passes through unchanged.

import { grid1d, type Dispatch, type GpuContext, type GpuTensor } from '../gpu/context.ts';
import { residualLayernormForward as residualLayernormForwardKernel } from '../../kernels/registry.ts';
import { rowWorkgroupSize } from './layernorm.ts';

function requireLength(tensor: GpuTensor, length: number, what: string): void {
  if (tensor.length < length) throw new RangeError(`${what}: ${tensor.label} holds ${tensor.length} elements, needs ${length}`);
}

/**
 * residual (N,C) = a + b; out (N,C) = (residual − mean)·rstd·weight + bias, saving mean (N) and rstd (N) for
 * layernormBackward. residual and out must lie in buffers other than a's and b's (a buffer cannot be bound read-only
 * and writable at once). GPT-2 uses eps = 1e-5.
 */
export async function residualLayernormForward(
  gpu: GpuContext,
  t: {
    residual: GpuTensor;
    out: GpuTensor;
    mean: GpuTensor;
    rstd: GpuTensor;
    a: GpuTensor;
    b: GpuTensor;
    weight: GpuTensor;
    bias: GpuTensor;
  },
  s: { N: number; C: number; eps: number },
): Promise<Dispatch> {
  const { N, C, eps } = s;
  if (!Number.isInteger(N) || N < 1 || !Number.isInteger(C) || C < 1) {
    throw new RangeError(`residualLayernormForward: N and C must be positive integers, got ${N}, ${C}`);
  }
  const lengths = [
    [t.residual, N * C],
    [t.out, N * C],
    [t.a, N * C],
    [t.b, N * C],
    [t.mean, N],
    [t.rstd, N],
    [t.weight, C],
    [t.bias, C],
  ] as const;
  for (const [tensor, length] of lengths) requireLength(tensor, length, 'residualLayernormForward');
  return gpu.prepare(residualLayernormForwardKernel, {
    bindings: { a: t.a, b: t.b, weight: t.weight, bias: t.bias, residual: t.residual, out: t.out, mean: t.mean, rstd: t.rstd },
    uniforms: { N, C, eps },
    overrides: { WG: rowWorkgroupSize(C) },
    workgroups: grid1d(N, 1, gpu.device.limits.maxComputeWorkgroupsPerDimension),
  });
}
