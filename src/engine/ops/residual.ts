// Residual add, forward and backward, as prepared dispatches.

import { grid1d, type Dispatch, type GpuContext, type GpuTensor } from '../gpu/context.ts';
import { residualBackward as residualBackwardKernel, residualForward as residualForwardKernel } from '../../kernels/registry.ts';

const WG = 256;

/** out (N) = a (N) + b (N). */
export function residualForward(gpu: GpuContext, t: { out: GpuTensor; a: GpuTensor; b: GpuTensor }, n: number): Promise<Dispatch> {
  return gpu.prepare(residualForwardKernel, {
    bindings: { a: t.a, b: t.b, out: t.out },
    uniforms: { n },
    overrides: { WG },
    workgroups: grid1d(n, WG),
  });
}

/** da (N) += dout, db (N) += dout. */
export function residualBackward(
  gpu: GpuContext,
  t: { da: GpuTensor; db: GpuTensor; dout: GpuTensor },
  n: number,
): Promise<Dispatch> {
  return gpu.prepare(residualBackwardKernel, {
    bindings: { dout: t.dout, da: t.da, db: t.db },
    uniforms: { n },
    overrides: { WG },
    workgroups: grid1d(n, WG),
  });
}
