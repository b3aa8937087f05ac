// Reading and writing the safetensors format (Hugging Face): 8 bytes of little-endian u64 header length, a JSON
// header {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {string: string}}, then the raw tensor
// bytes. The reader trusts nothing in a file: every length and offset is checked before it is used, and every
// problem becomes a TunelabError('bad-model') that says what is wrong. Tensors decode to Float32Array from F32, F16
// and BF16; decoding into a parameter array refuses NaN and infinities (a damaged file). Browser-safe: no Node APIs.

import { describeValue } from '../describe.ts';
import { TunelabError } from '../errors.ts';

/** Element sizes of every dtype the format defines; the header may name only these. */
const DTYPE_BYTES = {
  BOOL: 1,
  U8: 1,
  I8: 1,
  F8_E5M2: 1,
  F8_E4M3: 1,
  I16: 2,
  U16: 2,
  F16: 2,
  BF16: 2,
  I32: 4,
  U32: 4,
  F32: 4,
  F64: 8,
  I64: 8,
  U64: 8,
} as const;

export type SafetensorsDtype = keyof typeof DTYPE_BYTES;
/** The dtypes Tunelab decodes to f32. */
export type FloatDtype = 'F32' | 'F16' | 'BF16';
/** The dtypes the writer produces. */
export type WriteDtype = 'F32' | 'F16';

/** Same limit as the reference implementation: a header above this is a broken or hostile file. */
export const MAX_HEADER_BYTES = 100_000_000;

export interface SafetensorsTensorInfo {
  readonly name: string;
  readonly dtype: SafetensorsDtype;
  readonly shape: readonly number[];
  readonly elementCount: number;
  /** Byte range inside the data area (after the header), as the header states it. */
  readonly begin: number;
  readonly end: number;
}

export interface SafetensorsFile {
  /** The `__metadata__` map (empty when absent). */
  readonly metadata: Readonly<Record<string, string>>;
  /** Tensors in the order of their data (by begin offset). */
  readonly tensors: ReadonlyMap<string, SafetensorsTensorInfo>;
  /** The data area: the bytes after the header. Tensor offsets are relative to it. */
  readonly data: Uint8Array;
  /** Header length in bytes (without the 8-byte length prefix). */
  readonly headerBytes: number;
}

function bad(message: string): TunelabError {
  return new TunelabError('bad-model', `safetensors: ${message}`);
}

function formatBytes(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)} GB`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)} MB`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)} kB`;
  return `${n} bytes`;
}

/** A tensor's name as a message quotes it: names come from the file, so they may be long or odd. */
function quoted(name: string): string {
  return describeValue(name, 120);
}

/** `[2, 3]`; a damaged header may list thousands of dimensions, so only the first few are shown. */
function shapeText(shape: readonly number[]): string {
  return `[${shape.slice(0, 8).join(', ')}${shape.length > 8 ? `, … (${shape.length} dimensions)` : ''}]`;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function isNonNegativeSafeInteger(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

/**
 * Parses a safetensors file held in memory. Checks the header length against the file and MAX_HEADER_BYTES, the
 * header's JSON, every entry's dtype, shape and offsets (inside the data area, matching dtype × shape, not
 * overlapping, covering the data area with no gaps, as the reference implementation requires).
 */
export function parseSafetensors(input: ArrayBuffer | Uint8Array): SafetensorsFile {
  const bytes = input instanceof Uint8Array ? input : new Uint8Array(input);
  if (bytes.byteLength < 8) {
    throw bad(
      `the file is ${bytes.byteLength} bytes long, too short to hold the 8-byte header length; it is truncated or not a safetensors file`,
    );
  }
  const prefix = new DataView(bytes.buffer, bytes.byteOffset, 8);
  const lengthLow = prefix.getUint32(0, true);
  const lengthHigh = prefix.getUint32(4, true);
  const headerBytes = lengthHigh * 2 ** 32 + lengthLow;
  if (headerBytes > MAX_HEADER_BYTES) {
    throw bad(
      `the header claims ${formatBytes(headerBytes)}, above the ${formatBytes(MAX_HEADER_BYTES)} limit; the file is corrupt or not a safetensors file`,
    );
  }
  if (8 + headerBytes > bytes.byteLength) {
    throw bad(
      `the header claims ${formatBytes(headerBytes)} but the file has only ${formatBytes(bytes.byteLength - 8)} after the length; ` +
        'the file is truncated (an interrupted download?) or not a safetensors file',
    );
  }
  if (headerBytes < 2) throw bad(`the header is ${headerBytes} bytes long; it must hold at least "{}"`);

  let headerText: string;
  try {
    headerText = new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(8, 8 + headerBytes));
  } catch {
    throw bad('the header is not valid UTF-8 text; the file is corrupt or not a safetensors file');
  }
  if (!headerText.startsWith('{')) {
    throw bad('the header does not start with "{"; the file is corrupt or not a safetensors file');
  }
  let header: unknown;
  try {
    header = JSON.parse(headerText);
  } catch (error) {
    const why = error instanceof Error ? error.message : String(error);
    throw bad(`the header is not valid JSON (${why}); the file is corrupt`);
  }
  if (!isPlainObject(header)) throw bad('the header is not a JSON object');

  const data = bytes.subarray(8 + headerBytes);
  const metadata: Record<string, string> = {};
  const infos: SafetensorsTensorInfo[] = [];

  for (const [name, entry] of Object.entries(header)) {
    if (name === '__metadata__') {
      if (!isPlainObject(entry)) throw bad('"__metadata__" must be an object of strings');
      for (const [key, value] of Object.entries(entry)) {
        if (typeof value !== 'string') throw bad(`"__metadata__" entry ${quoted(key)} is not a string`);
        metadata[key] = value;
      }
      continue;
    }
    infos.push(parseEntry(name, entry, data.byteLength));
  }
  // Data order, not JSON key order: JS objects list integer-like keys ("0", "10") first.
  infos.sort((a, b) => a.begin - b.begin || a.end - b.end);
  checkCoverage(infos, data.byteLength);
  return { metadata, tensors: new Map(infos.map((i) => [i.name, i])), data, headerBytes };
}

function parseEntry(name: string, entry: unknown, dataBytes: number): SafetensorsTensorInfo {
  const what = `tensor ${quoted(name)}`;
  if (!isPlainObject(entry)) throw bad(`${what}: its header entry is not an object`);
  const { dtype, shape, data_offsets: offsets } = entry;
  if (typeof dtype !== 'string' || !Object.hasOwn(DTYPE_BYTES, dtype)) {
    throw bad(`${what} has unknown dtype ${describeValue(dtype)}; known: ${Object.keys(DTYPE_BYTES).join(', ')}`);
  }
  if (!Array.isArray(shape) || !shape.every(isNonNegativeSafeInteger)) {
    throw bad(`${what}: shape ${describeValue(shape)} is not a list of non-negative integers`);
  }
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isNonNegativeSafeInteger)) {
    throw bad(`${what}: data_offsets ${describeValue(offsets)} is not a pair of non-negative integers`);
  }
  const [begin, end] = offsets as [number, number];
  if (begin > end) throw bad(`${what}: data_offsets [${begin}, ${end}] end before they begin`);
  if (end > dataBytes) {
    throw bad(
      `${what}: data_offsets [${begin}, ${end}] point outside the data area (${dataBytes} bytes); the file is truncated or corrupt`,
    );
  }
  let elementCount = 1;
  for (const d of shape as number[]) {
    elementCount *= d;
    // Past this the byte count cannot match any offsets we accepted, so stop before losing integer precision.
    if (elementCount > dataBytes) break;
  }
  const expectedBytes = elementCount * DTYPE_BYTES[dtype as SafetensorsDtype];
  if (expectedBytes !== end - begin) {
    throw bad(
      `${what}: ${dtype} with shape ${shapeText(shape as number[])} needs ${expectedBytes} bytes, ` +
        `but data_offsets [${begin}, ${end}] span ${end - begin}`,
    );
  }
  return { name, dtype: dtype as SafetensorsDtype, shape: shape as number[], elementCount, begin, end };
}

/** `sorted` by begin offset. */
function checkCoverage(sorted: SafetensorsTensorInfo[], dataBytes: number): void {
  let covered = 0;
  let previous: SafetensorsTensorInfo | undefined;
  for (const info of sorted) {
    if (info.begin < covered) {
      throw bad(`tensors ${quoted(previous?.name ?? '')} and ${quoted(info.name)} overlap (byte ${info.begin} is used twice)`);
    }
    if (info.begin > covered) {
      throw bad(`bytes ${covered}..${info.begin} of the data area belong to no tensor; the header and data disagree`);
    }
    covered = info.end;
    previous = info;
  }
  if (covered !== dataBytes) {
    throw bad(
      `the tensors cover ${covered} bytes but the data area holds ${dataBytes}; the file has trailing bytes or a wrong header`,
    );
  }
}

// ---- decoding ------------------------------------------------------------------------------------------------

const HOST_LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

let halfTable: Float32Array | undefined;

/** f16 bit pattern → f32 value, for all 65536 patterns (built once, 256 kB). */
function halfToFloatTable(): Float32Array {
  if (halfTable) return halfTable;
  const table = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) table[h] = halfBitsToFloat(h);
  halfTable = table;
  return table;
}

/** Decodes one IEEE 754 binary16 bit pattern. */
export function halfBitsToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exponent = (h >>> 10) & 0x1f;
  const mantissa = h & 0x3ff;
  if (exponent === 0) return sign * mantissa * 2 ** -24;
  if (exponent === 31) return mantissa ? NaN : sign * Infinity;
  return sign * (1 + mantissa / 1024) * 2 ** (exponent - 15);
}

const f32Scratch = new Float32Array(1);
const f32ScratchBits = new Uint32Array(f32Scratch.buffer);

/** Rounds a number to f32, then to the nearest binary16 (ties to even, subnormals, overflow to ±inf, NaN kept). */
export function floatToHalfBits(value: number): number {
  f32Scratch[0] = value;
  const x = f32ScratchBits[0];
  const sign = (x >>> 16) & 0x8000;
  const exponent = (x >>> 23) & 0xff;
  const mantissa = x & 0x7fffff;
  if (exponent === 0xff) return mantissa ? sign | 0x7e00 | (mantissa >>> 13) : sign | 0x7c00;
  const halfExponent = exponent - 127 + 15;
  if (halfExponent >= 31) return sign | 0x7c00;
  if (halfExponent > 0) {
    // Normal half: keep 10 mantissa bits and round on the 13 dropped ones; a carry may ripple into the exponent,
    // which is exactly right (it can also reach 0x7c00 = infinity).
    let result = (halfExponent << 10) | (mantissa >>> 13);
    const dropped = mantissa & 0x1fff;
    if (dropped > 0x1000 || (dropped === 0x1000 && result & 1)) result++;
    return sign | result;
  }
  // Subnormal half (or zero): the value in units of 2^-24 is (1.mantissa) · 2^(exponent-126).
  if (exponent === 0) return sign; // f32 zero or subnormal: far below half's smallest subnormal
  const shift = 126 - exponent; // ≥ 14
  if (shift > 24) return sign;
  const full = mantissa | 0x800000;
  let quotient = full >>> shift;
  const remainder = full & ((1 << shift) - 1);
  const halfway = 1 << (shift - 1);
  if (remainder > halfway || (remainder === halfway && quotient & 1)) quotient++;
  return sign | quotient;
}

function checkDecodable(info: SafetensorsTensorInfo): void {
  if (info.dtype !== 'F32' && info.dtype !== 'F16' && info.dtype !== 'BF16') {
    throw bad(
      `tensor ${quoted(info.name)} has dtype ${info.dtype}; Tunelab reads only F32, F16 and BF16 weights (convert the checkpoint)`,
    );
  }
}

export interface DecodeOptions {
  /**
   * Refuse NaN and ±infinity, naming the tensor and the first such element: model weights are finite, so one is a
   * damaged file (flipped bits) or a save from a run that diverged.
   */
  requireFinite?: boolean;
}

/** Index of the first NaN or ±infinity in `values`, or -1: an f32 is one of them exactly when its exponent is all ones. */
function firstNonFinite(values: Float32Array): number {
  const bits = new Int32Array(values.buffer, values.byteOffset, values.length);
  for (let i = 0; i < bits.length; i++) if ((bits[i] & 0x7f800000) === 0x7f800000) return i;
  return -1;
}

function nonFiniteError(info: SafetensorsTensorInfo, values: Float32Array): TunelabError {
  const at = firstNonFinite(values);
  return bad(
    `tensor ${quoted(info.name)} holds ${values[at]} at element ${at} of ${values.length}; weights must be finite ` +
      'numbers, so the file is damaged (flipped bits in a download or on disk?) or was saved from a run that diverged',
  );
}

/**
 * Decodes a tensor into `out` starting at element `outOffset` (f32). Used to fill one flat parameter array without
 * a temporary copy per tensor, so by default it refuses NaN and infinities (`requireFinite`), checked in the same
 * pass that decodes F16 and BF16 (one extra read of the bits for F32).
 */
export function decodeTensorInto(
  file: SafetensorsFile,
  name: string,
  out: Float32Array,
  outOffset = 0,
  options: DecodeOptions = { requireFinite: true },
): void {
  const info = file.tensors.get(name);
  if (!info) throw bad(`there is no tensor ${quoted(name)} in the file`);
  checkDecodable(info);
  const n = info.elementCount;
  if (outOffset < 0 || outOffset + n > out.length) {
    throw new RangeError(`decodeTensorInto: ${n} elements at ${outOffset} do not fit an array of ${out.length}`);
  }
  const src = file.data;
  const start = src.byteOffset + info.begin;
  const target = out.subarray(outOffset, outOffset + n);
  if (info.dtype === 'F32') {
    if (HOST_LITTLE_ENDIAN && start % 4 === 0) {
      target.set(new Float32Array(src.buffer, start, n));
    } else {
      const view = new DataView(src.buffer, start, n * 4);
      for (let i = 0; i < n; i++) target[i] = view.getFloat32(i * 4, true);
    }
    if (options.requireFinite && firstNonFinite(target) >= 0) throw nonFiniteError(info, target);
    return;
  }
  const halves =
    HOST_LITTLE_ENDIAN && start % 2 === 0 ? new Uint16Array(src.buffer, start, n) : readU16Unaligned(src, info.begin, n);
  // Exponent bits of every value OR-ed together after adding one unit of exponent: bit 15 is set exactly when some
  // exponent is all ones (NaN or ±infinity), so the check costs an AND, an ADD and an OR per element.
  let overflow = 0;
  if (info.dtype === 'F16') {
    const table = halfToFloatTable();
    for (let i = 0; i < n; i++) {
      const h = halves[i];
      target[i] = table[h];
      overflow |= (h & 0x7c00) + 0x0400;
    }
  } else {
    // BF16 is the top half of an f32.
    const bits = new Uint32Array(target.buffer, target.byteOffset, n);
    for (let i = 0; i < n; i++) {
      const h = halves[i];
      bits[i] = h << 16;
      overflow |= (h & 0x7f80) + 0x0080;
    }
  }
  if (options.requireFinite && overflow & 0x8000) throw nonFiniteError(info, target);
}

function readU16Unaligned(src: Uint8Array, begin: number, n: number): Uint16Array {
  const out = new Uint16Array(n);
  for (let i = 0; i < n; i++) out[i] = src[begin + 2 * i] | (src[begin + 2 * i + 1] << 8);
  return out;
}

/** Decodes a tensor to a new Float32Array. NaN and infinities are kept unless `options.requireFinite`. */
export function readTensorF32(file: SafetensorsFile, name: string, options: DecodeOptions = {}): Float32Array {
  const info = file.tensors.get(name);
  if (!info) throw bad(`there is no tensor ${quoted(name)} in the file`);
  checkDecodable(info);
  const out = new Float32Array(info.elementCount);
  decodeTensorInto(file, name, out, 0, { requireFinite: options.requireFinite ?? false });
  return out;
}

// ---- writing -------------------------------------------------------------------------------------------------

export interface TensorToWrite {
  readonly name: string;
  readonly shape: readonly number[];
  /** Row-major values; converted to the output dtype. */
  readonly data: ArrayLike<number>;
}

export interface WriteOptions {
  /** Storage dtype for every tensor (default F32). F16 rounds to nearest even; values past ±65504 become ±inf. */
  dtype?: WriteDtype;
  /** Written as `__metadata__` (string values only, as the format requires). */
  metadata?: Readonly<Record<string, string>>;
}

/**
 * Writes a valid safetensors file: tensors sorted by name, data in the same order, the header padded with spaces so
 * the data area starts 8-byte aligned.
 */
export function writeSafetensors(tensors: readonly TensorToWrite[], options: WriteOptions = {}): Uint8Array {
  const dtype = options.dtype ?? 'F32';
  const elementBytes = DTYPE_BYTES[dtype];
  const sorted = [...tensors].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const entries: string[] = [];
  if (options.metadata && Object.keys(options.metadata).length) {
    for (const [k, v] of Object.entries(options.metadata)) {
      if (typeof v !== 'string') throw new TypeError(`safetensors metadata "${k}" must be a string`);
    }
    entries.push(`"__metadata__":${JSON.stringify(options.metadata)}`);
  }
  let offset = 0;
  const seen = new Set<string>();
  for (const t of sorted) {
    if (t.name === '__metadata__') throw new TypeError('a tensor cannot be named "__metadata__"');
    if (seen.has(t.name)) throw new TypeError(`tensor "${t.name}" is given twice`);
    seen.add(t.name);
    const count = t.shape.reduce((a, d) => a * d, 1);
    if (!t.shape.every(isNonNegativeSafeInteger) || count !== t.data.length) {
      throw new RangeError(`tensor "${t.name}": shape [${t.shape.join(', ')}] does not match ${t.data.length} values`);
    }
    const end = offset + count * elementBytes;
    // Built by hand rather than JSON.stringify(object): JS objects put integer-like keys first, breaking the order.
    entries.push(`${JSON.stringify(t.name)}:${JSON.stringify({ dtype, shape: t.shape, data_offsets: [offset, end] })}`);
    offset = end;
  }
  let headerText = `{${entries.join(',')}}`;
  const headerUtf8Length = new TextEncoder().encode(headerText).length;
  headerText += ' '.repeat((8 - (headerUtf8Length % 8)) % 8);
  const headerBytes = new TextEncoder().encode(headerText);

  const out = new Uint8Array(8 + headerBytes.length + offset);
  const view = new DataView(out.buffer);
  view.setUint32(0, headerBytes.length % 2 ** 32, true);
  view.setUint32(4, Math.floor(headerBytes.length / 2 ** 32), true);
  out.set(headerBytes, 8);
  let position = 8 + headerBytes.length; // a multiple of 8
  for (const t of sorted) {
    const n = t.data.length;
    if (dtype === 'F32' && HOST_LITTLE_ENDIAN) {
      new Float32Array(out.buffer, position, n).set(t.data);
    } else if (dtype === 'F32') {
      for (let i = 0; i < n; i++) view.setFloat32(position + i * 4, t.data[i], true);
    } else {
      for (let i = 0; i < n; i++) view.setUint16(position + i * 2, floatToHalfBits(t.data[i]), true);
    }
    position += n * elementBytes;
  }
  return out;
}
