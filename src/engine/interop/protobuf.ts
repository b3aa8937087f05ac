// A minimal Protocol Buffers encoder: just what writing an ONNX model needs (varints, 32-bit floats, strings,
// bytes, nested and packed fields). Internal to interop/.
//
// Messages are built bottom-up and kept as a tree of parts, so large payloads (tensor bytes of hundreds of MB) are
// referenced, not copied, until `finish()` writes the whole tree once into a single buffer of the exact size.
// Wire format: each field is a key varint (field number << 3 | wire type) followed by its value; varints are
// little-endian base-128; negative int64 values are their 64-bit two's complement (10 bytes).

const WIRE_VARINT = 0;
const WIRE_LENGTH_DELIMITED = 2;
const WIRE_FIXED32 = 5;

/** Bytes of a varint holding a non-negative integer below 2^64. */
function varintBytes(value: bigint): number[] {
  const out: number[] = [];
  let v = value;
  while (v >= 0x80n) {
    out.push(Number(v & 0x7fn) | 0x80);
    v >>= 7n;
  }
  out.push(Number(v));
  return out;
}

/** A varint for an int32/int64/uint64/enum/bool field value, negatives as 64-bit two's complement. */
export function encodeVarint(value: number | bigint): number[] {
  if (typeof value === 'number') {
    if (!Number.isSafeInteger(value)) throw new RangeError(`protobuf: ${value} is not a safe integer`);
    if (value >= 0 && value < 0x80) return [value];
    value = BigInt(value);
  }
  if (value < -(1n << 63n) || value >= 1n << 64n) throw new RangeError(`protobuf: ${value} does not fit 64 bits`);
  return varintBytes(BigInt.asUintN(64, value));
}

type Part = Uint8Array | ProtoMessage;

const utf8 = new TextEncoder();
const floatScratch = new DataView(new ArrayBuffer(4));

/** One message under construction. Add fields in field-number order for canonical output (any order is valid). */
export class ProtoMessage {
  private readonly parts: Part[] = [];
  /** Small bytes (keys, varints) gathered until the next large part. */
  private pending: number[] = [];
  private length = 0;

  /** Encoded size in bytes. */
  get byteLength(): number {
    return this.length;
  }

  private push(bytes: readonly number[]): void {
    for (const b of bytes) this.pending.push(b);
    this.length += bytes.length;
  }

  private flush(): void {
    if (this.pending.length) this.parts.push(Uint8Array.from(this.pending));
    this.pending = [];
  }

  private key(field: number, wireType: number): void {
    if (!Number.isSafeInteger(field) || field < 1 || field > 0x1fffffff) throw new RangeError(`protobuf: bad field ${field}`);
    this.push(encodeVarint(field * 8 + wireType));
  }

  /** int32, int64, uint64, enum or bool field. */
  varint(field: number, value: number | bigint | boolean): this {
    this.key(field, WIRE_VARINT);
    this.push(encodeVarint(typeof value === 'boolean' ? Number(value) : value));
    return this;
  }

  /** float field (fixed 32 bits, little-endian). */
  float(field: number, value: number): this {
    this.key(field, WIRE_FIXED32);
    floatScratch.setFloat32(0, value, true);
    this.push([0, 1, 2, 3].map((i) => floatScratch.getUint8(i)));
    return this;
  }

  /** string field (UTF-8). */
  string(field: number, value: string): this {
    return this.bytes(field, utf8.encode(value));
  }

  /** bytes field; the array is referenced until finish(), not copied. */
  bytes(field: number, value: Uint8Array): this {
    this.key(field, WIRE_LENGTH_DELIMITED);
    this.push(encodeVarint(value.byteLength));
    this.flush();
    this.parts.push(value);
    this.length += value.byteLength;
    return this;
  }

  /** Embedded message field. The child must be complete: its size is fixed here. */
  message(field: number, child: ProtoMessage): this {
    this.key(field, WIRE_LENGTH_DELIMITED);
    this.push(encodeVarint(child.byteLength));
    this.flush();
    this.parts.push(child);
    this.length += child.byteLength;
    return this;
  }

  /** repeated int64 (or int32) field, packed. */
  packedVarints(field: number, values: readonly (number | bigint)[]): this {
    const payload = values.flatMap((v) => encodeVarint(v));
    this.key(field, WIRE_LENGTH_DELIMITED);
    this.push(encodeVarint(payload.length));
    this.push(payload);
    return this;
  }

  /** The encoded message. */
  finish(): Uint8Array {
    const out = new Uint8Array(this.length);
    const end = this.writeInto(out, 0);
    if (end !== out.length) throw new Error(`protobuf: wrote ${end} bytes, expected ${out.length}`);
    return out;
  }

  private writeInto(out: Uint8Array, offset: number): number {
    let at = offset;
    const write = (part: Part) => {
      if (part instanceof ProtoMessage) {
        at = part.writeInto(out, at);
      } else {
        out.set(part, at);
        at += part.byteLength;
      }
    };
    for (const part of this.parts) write(part);
    if (this.pending.length) write(Uint8Array.from(this.pending));
    return at;
  }
}
