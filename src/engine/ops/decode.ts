// The KV cache of generation, as prepared dispatches: append a pass's K/V to the cache, and attend the pass's query
// rows over everything cached so far. A pass has Tq query rows per sequence, the first `count` real, at positions
// offset..offset+count−1; prefill runs passes of a prompt chunk, each generated token a pass of Tq = 1.
//
// qkv (B,Tq,3C) is c_attn's output [q | k | v]; the cache (2,B,NH,maxT,HS) holds K, then V, head-major so each
// head's keys are contiguous rows; out (B,Tq,C). `count` and `offset` change every pass: bind once, then move the
// dispatches with setDecodePosition (a uniform write, no new bind group).

import { grid1d, type Dispatch, type GpuContext, type GpuTensor } from '../gpu/context.ts';
import { attentionDecode as attentionDecodeKernel, kvCacheWrite as kvCacheWriteKernel } from '../../kernels/registry.ts';

export interface DecodeShape {
  /** Sequences generated side by side. */
  B: number;
  /** Query rows per sequence in the pass (bound once; the real rows are `count`). */
  Tq: number;
  C: number;
  NH: number;
  /** Positions the cache holds per sequence: the model's context. */
  maxT: number;
}

/** Where a pass sits: `count` real rows (1..Tq) at positions offset..offset+count−1 (≤ maxT − 1). */
export interface DecodePosition {
  count: number;
  offset: number;
}

const WRITE_WG = 256;
/** Keys per block of attention_decode (its threads). */
const ATTENTION_WG = 64;

function headSize({ C, NH }: DecodeShape): number {
  if (!Number.isInteger(NH) || NH < 1 || C % NH !== 0) throw new RangeError(`decode: C ${C} is not divisible by NH ${NH}`);
  return C / NH;
}

function checkShape(name: string, shape: DecodeShape): void {
  for (const [dim, v] of Object.entries(shape)) {
    if (!Number.isSafeInteger(v) || v < 1) throw new RangeError(`${name}: ${dim} must be a positive integer, got ${v}`);
  }
  if (shape.Tq > shape.maxT) throw new RangeError(`${name}: Tq ${shape.Tq} exceeds the cache's ${shape.maxT} positions`);
}

function checkPosition(name: string, shape: DecodeShape, { count, offset }: DecodePosition): void {
  if (!Number.isSafeInteger(count) || count < 1 || count > shape.Tq) {
    throw new RangeError(`${name}: count must be 1..${shape.Tq} (the pass's rows), got ${count}`);
  }
  if (!Number.isSafeInteger(offset) || offset < 0 || offset + count > shape.maxT) {
    throw new RangeError(`${name}: positions ${offset}..${offset + count - 1} do not fit a cache of ${shape.maxT}`);
  }
}

function requireLength(name: string, tensor: GpuTensor, length: number, what: string): void {
  if (tensor.length < length) throw new RangeError(`${name}: ${tensor.label} holds ${tensor.length} elements, ${what} needs ${length}`);
}

/** Elements of one layer's cache: (2,B,NH,maxT,HS) = 2·B·maxT·C. */
export function kvCacheLength({ B, C, maxT }: Pick<DecodeShape, 'B' | 'C' | 'maxT'>): number {
  return 2 * B * maxT * C;
}

function uniforms(shape: DecodeShape, position: DecodePosition) {
  const { B, Tq, C, NH, maxT } = shape;
  return { B, Tq, C, NH, HS: headSize(shape), maxT, count: position.count, offset: position.offset };
}

/** cache[K|V, b, h, offset+i] = k|v of row (b,i) for the `count` real rows of the pass. */
export async function kvCacheWrite(
  gpu: GpuContext,
  t: { cache: GpuTensor; qkv: GpuTensor },
  shape: DecodeShape,
  position: DecodePosition = { count: shape.Tq, offset: 0 },
): Promise<Dispatch> {
  checkShape('kvCacheWrite', shape);
  checkPosition('kvCacheWrite', shape, position);
  const { B, Tq, C } = shape;
  requireLength('kvCacheWrite', t.qkv, B * Tq * 3 * C, 'qkv (B,Tq,3C)');
  requireLength('kvCacheWrite', t.cache, kvCacheLength(shape), 'cache (2,B,NH,maxT,HS)');
  return gpu.prepare(kvCacheWriteKernel, {
    bindings: { qkv: t.qkv, cache: t.cache },
    uniforms: uniforms(shape, position),
    overrides: { WG: WRITE_WG },
    workgroups: grid1d(B * Tq * C, WRITE_WG, gpu.device.limits.maxComputeWorkgroupsPerDimension),
  });
}

/**
 * out (B,Tq,C): row (b,i) attends, per head, to cached positions 0..offset+i with softmax(q·kᵀ/√HS); padding rows
 * (i ≥ count) get zeros. Record after kvCacheWrite of the same pass.
 */
export async function attentionDecode(
  gpu: GpuContext,
  t: { out: GpuTensor; qkv: GpuTensor; cache: GpuTensor },
  shape: DecodeShape,
  position: DecodePosition = { count: shape.Tq, offset: 0 },
): Promise<Dispatch> {
  checkShape('attentionDecode', shape);
  checkPosition('attentionDecode', shape, position);
  const { B, Tq, C, NH } = shape;
  const HS = headSize(shape);
  requireLength('attentionDecode', t.qkv, B * Tq * 3 * C, 'qkv (B,Tq,3C)');
  requireLength('attentionDecode', t.cache, kvCacheLength(shape), 'cache (2,B,NH,maxT,HS)');
  requireLength('attentionDecode', t.out, B * Tq * C, 'out (B,Tq,C)');
  const limits = gpu.device.limits;
  const workgroupBytes = 4 * (2 * HS + 2 * ATTENTION_WG);
  if (workgroupBytes > limits.maxComputeWorkgroupStorageSize) {
    throw new RangeError(
      `attentionDecode: head size ${HS} needs ${workgroupBytes} bytes of workgroup memory; ` +
        `this GPU has ${limits.maxComputeWorkgroupStorageSize}`,
    );
  }
  return gpu.prepare(attentionDecodeKernel, {
    bindings: { qkv: t.qkv, cache: t.cache, out: t.out },
    uniforms: uniforms(shape, position),
    overrides: { WG: ATTENTION_WG, HS_MAX: HS },
    workgroups: [Tq, B * NH],
  });
}

/** Moves prepared kvCacheWrite / attentionDecode dispatches of `shape` to a new pass position (next submit). */
export function setDecodePosition(dispatches: readonly Dispatch[], shape: DecodeShape, position: DecodePosition): void {
  checkPosition('setDecodePosition', shape, position);
  for (const d of dispatches) d.setUniforms({ count: position.count, offset: position.offset });
}
