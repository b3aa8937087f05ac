// Causal multi-head self-attention, forward and backward, as prepared dispatches (flash-attention style kernels).
//
// qkv (B,T,3C) is c_attn's output [q | k | v] (each C = NH·HS wide, head h in columns h·HS..(h+1)·HS of each);
// out (B,T,C). The forward saves lse (B,NH,T) = log Σ exp(score) per row; the backward needs it, `out`, and a
// scratch tensor `delta` (B,NH,T). `attentionScratchSizes` gives both lengths.
//
// Two kernel families. The register-blocked "rows" kernels (attention_forward_rows, attention_backward_rows_dq and
// _dkdv) keep whole query or key rows in registers and read every key, value, query or dout row from workgroup
// memory as broadcast vec4s; they need HS a multiple of 4 and at most 64 (their register arrays have a fixed
// capacity). The generic "tiled" kernels (attention_forward, attention_backward_delta, attention_backward) take any
// head size and are the fallback, also when no rows configuration fits the device's limits.

import { TunelabError } from '../errors.ts';
import { grid1d, type Dispatch, type GpuContext, type GpuTensor } from '../gpu/context.ts';
import {
  attentionBackward as attentionBackwardKernel,
  attentionBackwardDelta as attentionBackwardDeltaKernel,
  attentionBackwardRowsDkdv as attentionBackwardRowsDkdvKernel,
  attentionBackwardRowsDq as attentionBackwardRowsDqKernel,
  attentionForward as attentionForwardKernel,
  attentionForwardRows as attentionForwardRowsKernel,
} from '../../kernels/registry.ts';

export interface AttentionShape {
  B: number;
  T: number;
  C: number;
  NH: number;
}

/** Generic tiled kernels: query rows (BQ) and key rows (BK) per tile; a workgroup has BQ·BK threads. */
export interface AttentionTiles {
  BQ: number;
  BK: number;
}

/** Register-blocked forward: `rows` query rows × `lanes` threads per row, each lane taking `keysPerLane` keys of a tile. */
export interface AttentionRowsForwardTiles {
  rows: number;
  lanes: number;
  /** At most 8 (the kernel's register capacity for scores). */
  keysPerLane: number;
}

/**
 * Register-blocked backward: the dq pass has `rows` query rows per workgroup and streams `tileKeys` keys at a time;
 * the dk/dv pass has `keyRows` key rows and streams `tileQueries` queries. `split` threads share a row, each owning
 * HS/split of its columns: it must divide HS/4. A workgroup has rows·split (keyRows·split) threads.
 */
export interface AttentionRowsBackwardTiles {
  rows: number;
  keyRows: number;
  split: number;
  tileKeys: number;
  tileQueries: number;
}

const DELTA_WG = 64;
/** Largest first; the first that fits the device's workgroup memory and invocation limits is used. */
const TILE_CANDIDATES: readonly AttentionTiles[] = [
  { BQ: 16, BK: 16 },
  { BQ: 16, BK: 8 },
  { BQ: 8, BK: 8 },
  { BQ: 4, BK: 4 },
];

/** The rows kernels' register capacity: HS/4 vec4s per row (HS4_CAP and PART4_CAP in their WGSL). */
const ROWS_MAX_HS4 = 16;
const ROWS_MAX_KEYS_PER_LANE = 8;
/**
 * Preferred first (the first is the fastest measured on an H100 at GPT-2 small's shape; all fit 16 KiB of workgroup
 * memory at HS 64). Rows of 32 let a 32-wide subgroup share one lane or part, so its workgroup-memory reads are
 * broadcasts.
 */
const ROWS_FORWARD_CANDIDATES: readonly AttentionRowsForwardTiles[] = [
  { rows: 32, lanes: 4, keysPerLane: 4 },
  { rows: 16, lanes: 4, keysPerLane: 2 },
];
/** As above; the split comes from rowsSplit. */
const ROWS_BACKWARD_CANDIDATES: readonly Omit<AttentionRowsBackwardTiles, 'split'>[] = [
  { rows: 32, keyRows: 32, tileKeys: 8, tileQueries: 8 },
  { rows: 16, keyRows: 16, tileKeys: 4, tileQueries: 4 },
];
/**
 * Columns (vec4s) per thread the backward aims for. 4 (HS 64 split in 4) measured fastest on an H100: k, v, dk, dv are
 * then 64 registers, so many threads fit per core; 8 columns were 1.07× and 2 columns 1.5× slower.
 */
const ROWS_BACKWARD_PART4 = 4;

/** Lengths (f32 elements) of the tensors a caller allocates besides qkv, out and their gradients. */
export function attentionScratchSizes({ B, T, NH }: AttentionShape): { lse: number; delta: number } {
  // lse: written by the forward, kept until the backward. delta: backward-only scratch, free after it.
  return { lse: B * NH * T, delta: B * NH * T };
}

/** Whether the rows kernels take this head size (4·n ≤ 64); they are the default where they also fit the device. */
function rowsKernelsSupport(HS: number): boolean {
  return HS % 4 === 0 && HS / 4 <= ROWS_MAX_HS4;
}

/** Workgroup memory of attention_forward: q, k, v and output tiles plus two (BQ,BK) tiles. */
function forwardWorkgroupBytes({ BQ, BK }: AttentionTiles, HS: number): number {
  return 4 * (2 * BQ * HS + 2 * BK * HS + 2 * BQ * BK);
}

/** Workgroup memory of attention_backward: q, dout, k, v tiles, two accumulators, P and dS, lse and delta. */
function backwardWorkgroupBytes({ BQ, BK }: AttentionTiles, HS: number): number {
  return 4 * (2 * BQ * HS + 2 * BK * HS + Math.max(BQ, BK) * HS + BK * HS + 2 * BQ * BK + 2 * BQ);
}

function headSize({ C, NH }: AttentionShape): number {
  if (!Number.isInteger(NH) || NH < 1 || C % NH !== 0) {
    throw new TunelabError('bad-model', `attention: n_embd ${C} is not divisible by n_head ${NH}`);
  }
  return C / NH;
}

function tooLarge(gpu: GpuContext, HS: number): TunelabError {
  return new TunelabError(
    'too-large',
    `attention: head size ${HS} needs more workgroup memory than this GPU offers ` +
      `(${gpu.device.limits.maxComputeWorkgroupStorageSize} bytes); choose a model with a smaller head size`,
  );
}

function fitsDevice(gpu: GpuContext, threads: number, bytes: number): boolean {
  const limits = gpu.device.limits;
  return (
    threads <= limits.maxComputeInvocationsPerWorkgroup &&
    threads <= limits.maxComputeWorkgroupSizeX &&
    bytes <= limits.maxComputeWorkgroupStorageSize
  );
}

function chooseTiles(gpu: GpuContext, HS: number, bytes: (tiles: AttentionTiles, HS: number) => number, given?: AttentionTiles): AttentionTiles {
  const fits = (tiles: AttentionTiles) => fitsDevice(gpu, tiles.BQ * tiles.BK, bytes(tiles, HS));
  if (given) {
    if (!fits(given)) throw new RangeError(`attention: tiles ${given.BQ}x${given.BK} do not fit this device for head size ${HS}`);
    return given;
  }
  const tiles = TILE_CANDIDATES.find(fits);
  if (!tiles) throw tooLarge(gpu, HS);
  return tiles;
}

/** attention_forward_rows: (2·TILE_KEYS,HS) key/value tile (reused for the merged output) and per-lane statistics. */
function rowsForwardCheck(gpu: GpuContext, { rows, lanes, keysPerLane }: AttentionRowsForwardTiles, HS: number): string | undefined {
  const tileKeys = lanes * keysPerLane;
  if (![rows, lanes, keysPerLane].every((n) => Number.isInteger(n) && n >= 1)) return 'sizes must be positive integers';
  if (keysPerLane > ROWS_MAX_KEYS_PER_LANE) return `keysPerLane must be at most ${ROWS_MAX_KEYS_PER_LANE}`;
  // The merged output (rows,HS) is written into the key/value tile (2·tileKeys,HS).
  if (rows > 2 * tileKeys) return 'rows must be at most 2·lanes·keysPerLane';
  const bytes = 16 * 2 * tileKeys * (HS / 4) + 8 * rows * lanes;
  return fitsDevice(gpu, rows * lanes, bytes) ? undefined : 'does not fit the device';
}

/** Smallest number of threads per row that leaves each at most ROWS_BACKWARD_PART4 vec4 columns (it divides HS/4). */
function rowsSplit(HS: number): number {
  const HS4 = HS / 4;
  for (let split = 1; split <= HS4; split++) {
    if (HS4 % split === 0 && HS4 / split <= ROWS_BACKWARD_PART4) return split;
  }
  return HS4;
}

/** attention_backward_rows_dq and _dkdv: a streamed (2·tile,HS) tile, the swapped partial dot products, and lse/delta. */
function rowsBackwardCheck(gpu: GpuContext, tiles: AttentionRowsBackwardTiles, HS: number): string | undefined {
  const { rows, keyRows, split, tileKeys, tileQueries } = tiles;
  const HS4 = HS / 4;
  if (!Object.values(tiles).every((n) => Number.isInteger(n) && n >= 1)) return 'sizes must be positive integers';
  if (HS4 % split !== 0) return `split must divide ${HS4}`;
  const dqBytes = 16 * 2 * tileKeys * HS4 + 8 * tileKeys * split * rows;
  const dkdvBytes = 16 * 2 * tileQueries * HS4 + 8 * tileQueries + 8 * tileQueries * split * keyRows;
  return fitsDevice(gpu, rows * split, dqBytes) && fitsDevice(gpu, keyRows * split, dkdvBytes) ? undefined : 'does not fit the device';
}

function isTiled(tiles: object | undefined): tiles is AttentionTiles {
  return tiles !== undefined && 'BQ' in tiles;
}

function expectLength(t: GpuTensor, length: number, name: string): void {
  if (t.length < length) throw new RangeError(`attention: ${name} (${t.label}) has ${t.length} elements, needs ${length}`);
}

/** The rows tiles to use: the given ones (checked), else the first candidate that fits; undefined → generic kernels. */
function chooseRowsForward(gpu: GpuContext, HS: number, given?: AttentionRowsForwardTiles): AttentionRowsForwardTiles | undefined {
  if (given) {
    if (!rowsKernelsSupport(HS)) throw new RangeError(`attention: the rows kernels need a head size 4·n ≤ ${4 * ROWS_MAX_HS4}, got ${HS}`);
    const problem = rowsForwardCheck(gpu, given, HS);
    if (problem) throw new RangeError(`attention: forward rows tiles ${JSON.stringify(given)}: ${problem}`);
    return given;
  }
  if (!rowsKernelsSupport(HS)) return undefined;
  return ROWS_FORWARD_CANDIDATES.find((tiles) => !rowsForwardCheck(gpu, tiles, HS));
}

function chooseRowsBackward(gpu: GpuContext, HS: number, given?: AttentionRowsBackwardTiles): AttentionRowsBackwardTiles | undefined {
  if (given) {
    if (!rowsKernelsSupport(HS)) throw new RangeError(`attention: the rows kernels need a head size 4·n ≤ ${4 * ROWS_MAX_HS4}, got ${HS}`);
    const problem = rowsBackwardCheck(gpu, given, HS);
    if (problem) throw new RangeError(`attention: backward rows tiles ${JSON.stringify(given)}: ${problem}`);
    return given;
  }
  if (!rowsKernelsSupport(HS)) return undefined;
  const split = rowsSplit(HS);
  return ROWS_BACKWARD_CANDIDATES.map((tiles) => ({ ...tiles, split })).find((tiles) => !rowsBackwardCheck(gpu, tiles, HS));
}

/**
 * out (B,T,C) = causal softmax(q·kᵀ/√HS)·v per head, and lse (B,NH,T) for the backward. `tiles` forces a kernel
 * family and its tiles (tests, benchmarks); by default the rows kernels where the head size allows.
 */
export async function attentionForward(
  gpu: GpuContext,
  t: { out: GpuTensor; lse: GpuTensor; qkv: GpuTensor },
  shape: AttentionShape,
  tiles?: AttentionTiles | AttentionRowsForwardTiles,
): Promise<Dispatch> {
  const { B, T, C, NH } = shape;
  const HS = headSize(shape);
  expectLength(t.qkv, B * T * 3 * C, 'qkv');
  expectLength(t.out, B * T * C, 'out');
  expectLength(t.lse, attentionScratchSizes(shape).lse, 'lse');
  const rows = isTiled(tiles) ? undefined : chooseRowsForward(gpu, HS, tiles);
  if (rows) {
    return gpu.prepare(attentionForwardRowsKernel, {
      bindings: { qkv: t.qkv, out: t.out, lse: t.lse },
      uniforms: { T, C, NH },
      overrides: { ROWS: rows.rows, LANES: rows.lanes, KEYS_PER_LANE: rows.keysPerLane, HS4: HS / 4 },
      // x: heads; y: query blocks (the kernel takes the last first).
      workgroups: [B * NH, Math.ceil(T / rows.rows)],
    });
  }
  const { BQ, BK } = chooseTiles(gpu, HS, forwardWorkgroupBytes, isTiled(tiles) ? tiles : undefined);
  return gpu.prepare(attentionForwardKernel, {
    bindings: { qkv: t.qkv, out: t.out, lse: t.lse },
    uniforms: { T, C, NH, HS },
    overrides: { BQ, BK, HS_MAX: HS },
    workgroups: [Math.ceil(T / BQ), B * NH],
  });
}

/**
 * dqkv (B,T,3C) = gradient of attention with respect to qkv, assigned (not accumulated). Needs the forward's out and
 * lse, and `delta` (B,NH,T) as scratch. Two dispatches, to record in this order. Rows kernels: dq (which also saves
 * delta = rowsum(dout ⊙ out)), then dk and dv. Generic kernels: delta, then dq, dk and dv. `tiles` as in the forward.
 */
export async function attentionBackward(
  gpu: GpuContext,
  t: { dqkv: GpuTensor; dout: GpuTensor; qkv: GpuTensor; out: GpuTensor; lse: GpuTensor; delta: GpuTensor },
  shape: AttentionShape,
  tiles?: AttentionTiles | AttentionRowsBackwardTiles,
): Promise<Dispatch[]> {
  const { B, T, C, NH } = shape;
  const HS = headSize(shape);
  const rows = B * NH * T;
  expectLength(t.qkv, B * T * 3 * C, 'qkv');
  expectLength(t.dqkv, B * T * 3 * C, 'dqkv');
  expectLength(t.out, B * T * C, 'out');
  expectLength(t.dout, B * T * C, 'dout');
  expectLength(t.lse, rows, 'lse');
  expectLength(t.delta, rows, 'delta');
  const rowsTiles = isTiled(tiles) ? undefined : chooseRowsBackward(gpu, HS, tiles);
  const dispatches: Dispatch[] = [];
  try {
    if (rowsTiles) {
      const { rows: queryRows, keyRows, split, tileKeys, tileQueries } = rowsTiles;
      dispatches.push(
        await gpu.prepare(attentionBackwardRowsDqKernel, {
          bindings: { qkv: t.qkv, dout: t.dout, out: t.out, lse: t.lse, delta: t.delta, dqkv: t.dqkv },
          uniforms: { T, C, NH },
          overrides: { ROWS: queryRows, SPLIT: split, TILE_KEYS: tileKeys, HS4: HS / 4 },
          // x: heads; y: query blocks (the kernel takes the last first).
          workgroups: [B * NH, Math.ceil(T / queryRows)],
        }),
      );
      dispatches.push(
        await gpu.prepare(attentionBackwardRowsDkdvKernel, {
          bindings: { qkv: t.qkv, dout: t.dout, lse: t.lse, delta: t.delta, dqkv: t.dqkv },
          uniforms: { T, C, NH },
          overrides: { KEY_ROWS: keyRows, SPLIT: split, TILE_QUERIES: tileQueries, HS4: HS / 4 },
          // x: heads; y: key blocks (the first see the most queries).
          workgroups: [B * NH, Math.ceil(T / keyRows)],
        }),
      );
      return dispatches;
    }
    const { BQ, BK } = chooseTiles(gpu, HS, backwardWorkgroupBytes, isTiled(tiles) ? tiles : undefined);
    dispatches.push(
      await gpu.prepare(attentionBackwardDeltaKernel, {
        bindings: { dout: t.dout, out: t.out, delta: t.delta },
        uniforms: { rows, T, C, NH, HS },
        overrides: { WG: DELTA_WG },
        workgroups: grid1d(rows, DELTA_WG),
      }),
    );
    dispatches.push(
      await gpu.prepare(attentionBackwardKernel, {
        bindings: { qkv: t.qkv, dout: t.dout, lse: t.lse, delta: t.delta, dqkv: t.dqkv },
        uniforms: { T, C, NH, HS },
        overrides: { BQ, BK, HS_MAX: HS },
        // x: ceil(T/BQ) query-block workgroups (dq), then ceil(T/BK) key-block workgroups (dk, dv).
        workgroups: [Math.ceil(T / BQ) + Math.ceil(T / BK), B * NH],
      }),
    );
    return dispatches;
  } catch (error) {
    for (const d of dispatches) d.release();
    throw error;
  }
}
