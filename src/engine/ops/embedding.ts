// Token + position embedding, forward and backward, as prepared dispatches, plus the CPU helper that groups token
// positions into "segments" so that dwte can be summed deterministically with one workgroup per unique token.

import { grid1d, type Dispatch, type GpuContext, type GpuTensor } from '../gpu/context.ts';
import {
  embeddingBackwardWpe as embeddingBackwardWpeKernel,
  embeddingBackwardWte as embeddingBackwardWteKernel,
  embeddingForward as embeddingForwardKernel,
} from '../../kernels/registry.ts';

const WG = 256;

/** Threads per segment in the dwte kernel: no wider than the row needs (C = 36 gets 64), between 32 and 256. */
function segmentWorkgroupSize(C: number): number {
  let size = 32;
  while (size < C && size < 256) size *= 2;
  return size;
}

function requireLength(tensor: GpuTensor, length: number, what: string): void {
  if (tensor.length < length) throw new RangeError(`${what}: ${tensor.label} holds ${tensor.length} elements, needs ${length}`);
}

/**
 * The positions of a batch grouped by token id. Segment s (s < count) is token `tokens[s]` at the flat positions
 * b·T + t listed in positions[offsets[s] .. offsets[s+1]). Tokens ascend, positions ascend within a token, so the
 * GPU sums in the same order every run. Arrays are sized to `capacity` so GPU buffers can be allocated once per run:
 * segments past `count` are empty (offsets equal the number of positions) and are skipped by the kernel.
 */
export interface TokenSegments {
  /** Unique tokens in the batch. */
  readonly count: number;
  readonly capacity: number;
  readonly tokens: Uint32Array; // (capacity)
  readonly offsets: Uint32Array; // (capacity + 1)
  readonly positions: Uint32Array; // (capacity)
}

/** Groups the positions of `ids` (B·T flat) by token. Throws on an id outside [0, V). */
export function buildTokenSegments(ids: ArrayLike<number>, V: number, capacity = ids.length): TokenSegments {
  const n = ids.length;
  if (capacity < n) throw new RangeError(`buildTokenSegments: ${n} positions exceed capacity ${capacity}`);
  for (let p = 0; p < n; p++) {
    const id = ids[p];
    if (!Number.isInteger(id) || id < 0 || id >= V) {
      throw new RangeError(`token id ${id} at position ${p} is outside the vocabulary (size ${V})`);
    }
  }
  const positions = new Uint32Array(capacity);
  for (let p = 0; p < n; p++) positions[p] = p;
  positions.subarray(0, n).sort((a, b) => ids[a] - ids[b] || a - b);

  const tokens = new Uint32Array(capacity);
  const offsets = new Uint32Array(capacity + 1).fill(n);
  let count = 0;
  for (let i = 0; i < n; i++) {
    const token = ids[positions[i]];
    if (i === 0 || token !== ids[positions[i - 1]]) {
      tokens[count] = token;
      offsets[count] = i;
      count++;
    }
  }
  return { count, capacity, tokens, offsets, positions };
}

/** GPU tensors for TokenSegments of a given capacity (B·T), allocated once per run. */
export interface TokenSegmentTensors {
  readonly capacity: number;
  readonly tokens: GpuTensor;
  readonly offsets: GpuTensor;
  readonly positions: GpuTensor;
}

export function createTokenSegmentTensors(gpu: GpuContext, capacity: number, label = 'embedding.segments'): TokenSegmentTensors {
  return {
    capacity,
    tokens: gpu.tensor(capacity, `${label}.tokens`),
    offsets: gpu.tensor(capacity + 1, `${label}.offsets`),
    positions: gpu.tensor(capacity, `${label}.positions`),
  };
}

/** Queues the upload of a batch's segments (before the submit of the step that uses them). */
export function writeTokenSegments(gpu: GpuContext, tensors: TokenSegmentTensors, segments: TokenSegments): void {
  if (segments.capacity !== tensors.capacity) {
    throw new RangeError(`segments of capacity ${segments.capacity} do not fit tensors of capacity ${tensors.capacity}`);
  }
  gpu.writeU32(tensors.tokens, segments.tokens);
  gpu.writeU32(tensors.offsets, segments.offsets);
  gpu.writeU32(tensors.positions, segments.positions);
}

export function freeTokenSegmentTensors(gpu: GpuContext, tensors: TokenSegmentTensors): void {
  gpu.free(tensors.tokens);
  gpu.free(tensors.offsets);
  gpu.free(tensors.positions);
}

/** out (B,T,C) = wte[ids[b,t]] + wpe[t]; ids (B,T) u32, wte (V,C), wpe (maxT,C) with maxT ≥ T. */
export function embeddingForward(
  gpu: GpuContext,
  t: { out: GpuTensor; ids: GpuTensor; wte: GpuTensor; wpe: GpuTensor },
  s: { B: number; T: number; C: number; V: number },
): Promise<Dispatch> {
  const { B, T, C, V } = s;
  const n = B * T * C;
  for (const [tensor, length] of [[t.out, n], [t.ids, B * T], [t.wte, V * C], [t.wpe, T * C]] as const) {
    requireLength(tensor, length, 'embeddingForward');
  }
  return gpu.prepare(embeddingForwardKernel, {
    bindings: { ids: t.ids, wte: t.wte, wpe: t.wpe, out: t.out },
    uniforms: { n, T, C, V },
    overrides: { WG },
    workgroups: grid1d(n, WG),
  });
}

/**
 * dwte (V,C) += Σ dout over each token's positions, from segments written by writeTokenSegments for this batch's ids
 * (B·T of them; the segment capacity may be larger, its spare segments are empty).
 */
export function embeddingBackwardWte(
  gpu: GpuContext,
  t: { dwte: GpuTensor; dout: GpuTensor; segments: TokenSegmentTensors },
  s: { B: number; T: number; C: number; V: number },
): Promise<Dispatch> {
  const { B, T, C, V } = s;
  const { capacity, tokens, offsets, positions } = t.segments;
  if (capacity < B * T) throw new RangeError(`embeddingBackwardWte: segment capacity ${capacity} < B·T = ${B * T}`);
  requireLength(t.dwte, V * C, 'embeddingBackwardWte');
  requireLength(t.dout, B * T * C, 'embeddingBackwardWte');
  return gpu.prepare(embeddingBackwardWteKernel, {
    bindings: { dout: t.dout, tokens, offsets, positions, dwte: t.dwte },
    uniforms: { segments: capacity, C, V },
    overrides: { WG: segmentWorkgroupSize(C) },
    workgroups: grid1d(capacity, 1),
  });
}

/** dwpe[t] (rows 0..T-1 of (maxT,C)) += Σ_b dout[b,t]. */
export function embeddingBackwardWpe(
  gpu: GpuContext,
  t: { dwpe: GpuTensor; dout: GpuTensor },
  s: { B: number; T: number; C: number },
): Promise<Dispatch> {
  const { B, T, C } = s;
  requireLength(t.dwpe, T * C, 'embeddingBackwardWpe');
  requireLength(t.dout, B * T * C, 'embeddingBackwardWpe');
  return gpu.prepare(embeddingBackwardWpeKernel, {
    bindings: { dout: t.dout, dwpe: t.dwpe },
    uniforms: { B, T, C },
    overrides: { WG },
    workgroups: grid1d(T * C, WG),
  });
}

/**
 * The embedding's parameter gradients: dwte += (needs `segments` with capacity ≥ B·T) and dwpe +=, each only when its
 * tensor is given (a frozen table gets no gradient). Returns zero, one or two independent dispatches.
 */
export async function embeddingBackward(
  gpu: GpuContext,
  t: { dwte?: GpuTensor; dwpe?: GpuTensor; dout: GpuTensor; segments?: TokenSegmentTensors },
  s: { B: number; T: number; C: number; V: number },
): Promise<Dispatch[]> {
  const dispatches: Dispatch[] = [];
  if (t.dwte) {
    if (!t.segments) throw new Error('embeddingBackward: dwte needs token segments (createTokenSegmentTensors)');
    dispatches.push(await embeddingBackwardWte(gpu, { dwte: t.dwte, dout: t.dout, segments: t.segments }, s));
  }
  if (t.dwpe) dispatches.push(await embeddingBackwardWpe(gpu, { dwpe: t.dwpe, dout: t.dout }, s));
  return dispatches;
}
