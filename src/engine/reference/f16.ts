// Reference IEEE 754 binary16 (f16) rounding and decoding, in plain arithmetic on doubles (no bit tricks), as the
// independent judge of ops/matmul-f16.ts `packF16` and of the f16-weight kernels' inputs.
// binary16: 1 sign bit, 5 exponent bits (bias 15), 10 fraction bits. Normal values 2^-14 .. 65504, subnormals are
// multiples of 2^-24 below 2^-14, and rounding is to nearest, ties to even.

/** The largest finite f16 value, (2 − 2^-10)·2^15. */
export const F16_MAX = 65504;
/** The smallest positive subnormal f16 value. */
export const F16_MIN_SUBNORMAL = 2 ** -24;
/** The smallest positive normal f16 value. */
export const F16_MIN_NORMAL = 2 ** -14;

/** Rounds r to the nearest integer, halves to the even one. */
function roundHalfEven(r: number): number {
  const floor = Math.floor(r);
  const fraction = r - floor;
  if (fraction > 0.5) return floor + 1;
  if (fraction < 0.5) return floor;
  return floor % 2 === 0 ? floor : floor + 1;
}

/**
 * The f16 value nearest to x (ties to even), as a double: subnormals kept, magnitudes from 65520 (halfway between
 * 65504 and the next power 65536, which rounds up to it) overflow to ±Infinity, ±0 keep their sign, NaN stays NaN.
 */
export function roundToF16(x: number): number {
  if (Number.isNaN(x) || x === 0 || !Number.isFinite(x)) return x;
  const magnitude = Math.abs(x);
  if (magnitude >= F16_MAX + 16) return x > 0 ? Infinity : -Infinity;
  // Spacing of f16 values around `magnitude`: 2^(e − 10) for exponent e, and 2^-24 throughout the subnormals.
  let exponent = Math.floor(Math.log2(magnitude));
  while (2 ** exponent > magnitude) exponent--; // log2 can be off by one next to a power of two
  while (2 ** (exponent + 1) <= magnitude) exponent++;
  const spacing = 2 ** (Math.max(exponent, -14) - 10);
  const rounded = roundHalfEven(magnitude / spacing) * spacing; // both steps exact: spacing is a power of two
  if (rounded > F16_MAX) return x > 0 ? Infinity : -Infinity;
  return x > 0 ? rounded : rounded === 0 ? -0 : -rounded;
}

/** The value of a binary16 bit pattern (the low 16 bits of `bits`). NaN payloads all decode to NaN. */
export function decodeF16(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exponent = (bits >> 10) & 0x1f;
  const fraction = bits & 0x3ff;
  if (exponent === 0x1f) return fraction ? NaN : sign * Infinity;
  if (exponent === 0) return sign * fraction * F16_MIN_SUBNORMAL;
  return sign * (1 + fraction / 1024) * 2 ** (exponent - 15);
}
