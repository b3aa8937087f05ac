// GELU (tanh form, `gelu_new`), forward and backward, as prepared dispatches.

import { grid1d, type Dispatch, type GpuContext, type GpuTensor } from '../gpu/context.ts';
import { geluBackward as geluBackwardKernel, geluForward as geluForwardKernel } from '../../kernels/registry.ts';

const WG = 256;

function requireLength(tensor: GpuTensor, length: number, what: string): void {
  if (tensor.length < length) throw new RangeError(`${what}: ${tensor.label} holds ${tensor.length} elements, needs ${length}`);
}

/** out (N) = gelu(inp). `out` must not be `inp` (a buffer cannot be bound read-only and writable at once). */
export function geluForward(gpu: GpuContext, t: { out: GpuTensor; inp: GpuTensor }, s: { n: number }): Promise<Dispatch> {
  requireLength(t.inp, s.n, 'geluForward');
  requireLength(t.out, s.n, 'geluForward');
  return gpu.prepare(geluForwardKernel, {
    bindings: { inp: t.inp, out: t.out },
    uniforms: { n: s.n },
    overrides: { WG },
    workgroups: grid1d(s.n, WG),
  });
}

/** dinp (N) = (accumulate false) or += (true) dout·gelu'(inp), with inp the forward input. */
export function geluBackward(
  gpu: GpuContext,
  t: { dinp: GpuTensor; dout: GpuTensor; inp: GpuTensor },
  s: { n: number; accumulate: boolean },
): Promise<Dispatch> {
  for (const tensor of [t.dinp, t.dout, t.inp]) requireLength(tensor, s.n, 'geluBackward');
  return gpu.prepare(geluBackwardKernel, {
    bindings: { dout: t.dout, inp: t.inp, dinp: t.dinp },
    uniforms: { n: s.n, accumulate: s.accumulate ? 1 : 0 },
    overrides: { WG },
    workgroups: grid1d(s.n, WG),
  });
}
