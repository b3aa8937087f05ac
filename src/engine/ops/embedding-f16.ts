// The token + position embedding with a frozen wte (V,C) stored as packed f16 (ops/matmul-f16.ts `packF16`, rows of
// C), the same packed table the tied LM head reads through the f16 matmuls: a model that never trains wte keeps it
// only once, at half the bytes. The lookup unpacks to f32, so the result is embeddingForward's on the f16-rounded wte.

import { grid1d, type Dispatch, type GpuContext, type GpuTensor } from '../gpu/context.ts';
import { embeddingForwardF16W as embeddingForwardF16WKernel } from '../../kernels/registry.ts';
import type { F16Weights } from './matmul-f16.ts';

const WG = 256;

/** out (B,T,C) = wte[ids[b,t]] + wpe[t]; ids (B,T) u32, wte packed (K = V, N = C), wpe (maxT,C) with maxT ≥ T. */
export async function embeddingForwardF16W(
  gpu: GpuContext,
  t: { out: GpuTensor; ids: GpuTensor; wte: F16Weights; wpe: GpuTensor },
  s: { B: number; T: number; C: number; V: number },
): Promise<Dispatch> {
  const { B, T, C, V } = s;
  if (t.wte.K !== V || t.wte.N !== C) {
    throw new RangeError(`embeddingForwardF16W: ${t.wte.packed.label} is (${t.wte.K},${t.wte.N}), wte needs (V,C) = (${V},${C})`);
  }
  const n = B * T * C;
  const needed: [GpuTensor, number][] = [[t.out, n], [t.ids, B * T], [t.wte.packed, V * Math.ceil(C / 2)], [t.wpe, T * C]];
  for (const [tensor, length] of needed) {
    if (tensor.length < length) {
      throw new RangeError(`embeddingForwardF16W: ${tensor.label} holds ${tensor.length} elements, needs ${length}`);
    }
  }
  return gpu.prepare(embeddingForwardF16WKernel, {
    bindings: { ids: t.ids, wte: t.wte.packed, wpe: t.wpe, out: t.out },
    uniforms: { n, T, C, V },
    overrides: { WG },
    workgroups: grid1d(n, WG),
  });
}
