import { describe, expect, it } from 'vitest';
import { TunelabError } from '../../src/engine/errors.ts';
import {
  MAX_HEADER_BYTES,
  decodeTensorInto,
  floatToHalfBits,
  halfBitsToFloat,
  parseSafetensors,
  readTensorF32,
  writeSafetensors,
  type SafetensorsFile,
} from '../../src/engine/io/safetensors.ts';
import { Rng } from '../../src/engine/random.ts';
import { concatBytes, f32Bytes, rawSafetensors, u16Bytes } from './raw.ts';

function expectBadModel(action: () => unknown, pattern: RegExp): void {
  let caught: unknown;
  try {
    action();
  } catch (error) {
    caught = error;
  }
  expect(caught, 'expected a TunelabError').toBeInstanceOf(TunelabError);
  expect((caught as TunelabError).code).toBe('bad-model');
  expect((caught as TunelabError).message).toMatch(pattern);
}

/** f32 bit pattern helpers, to step to the neighbouring f32 of a value. */
function f32Bits(x: number): number {
  return new Uint32Array(new Float32Array([x]).buffer)[0];
}
function f32FromBits(bits: number): number {
  return new Float32Array(new Uint32Array([bits >>> 0]).buffer)[0];
}

describe('safetensors writer and reader', () => {
  it('round-trips F32 tensors exactly, with metadata, sorted names and an 8-byte aligned data area', () => {
    const tensors = [
      { name: 'b.weight', shape: [2, 3], data: [1, -2, 3.5, 1e-30, -0, 7] },
      { name: '10', shape: [1], data: [42] },
      { name: '9', shape: [], data: [-1.25] },
      { name: 'a', shape: [0, 4], data: [] },
    ];
    const bytes = writeSafetensors(tensors, { metadata: { format: 'pt', note: 'ünïcode' } });
    const headerLength = new DataView(bytes.buffer).getUint32(0, true);
    expect((8 + headerLength) % 8).toBe(0);
    const headerText = new TextDecoder().decode(bytes.subarray(8, 8 + headerLength));
    expect(headerText.trimEnd().endsWith('}')).toBe(true);
    expect(headerText.slice(headerText.trimEnd().length)).toMatch(/^ *$/);

    const file = parseSafetensors(bytes);
    expect(file.metadata).toEqual({ format: 'pt', note: 'ünïcode' });
    // Data is written in code-point order of the names (integer-like names not moved first); the reader lists
    // tensors in data order.
    expect([...file.tensors.keys()]).toEqual(['10', '9', 'a', 'b.weight']);
    expect(headerText.indexOf('"10"')).toBeLessThan(headerText.indexOf('"9"'));
    for (const t of tensors) {
      const info = file.tensors.get(t.name)!;
      expect(info.dtype).toBe('F32');
      expect(info.shape).toEqual(t.shape);
      expect(Array.from(readTensorF32(file, t.name))).toEqual(Array.from(new Float32Array(t.data)));
    }
  });

  it('reads a file that sits at an odd offset inside a larger buffer (unaligned views)', () => {
    const bytes = writeSafetensors([{ name: 'x', shape: [3], data: [1, 2, 3] }], { dtype: 'F32' });
    const host = new Uint8Array(bytes.length + 3);
    host.set(bytes, 3);
    const file = parseSafetensors(host.subarray(3));
    expect(Array.from(readTensorF32(file, 'x'))).toEqual([1, 2, 3]);
    const half = writeSafetensors([{ name: 'x', shape: [3], data: [1, 2, 3] }], { dtype: 'F16' });
    const host16 = new Uint8Array(half.length + 1);
    host16.set(half, 1);
    expect(Array.from(readTensorF32(parseSafetensors(host16.subarray(1)), 'x'))).toEqual([1, 2, 3]);
  });

  it('writes F16 and reads back the f16-rounded values', () => {
    const rng = new Rng(3);
    const values = Array.from({ length: 500 }, () => rng.normal() * 10);
    const file = parseSafetensors(writeSafetensors([{ name: 'w', shape: [20, 25], data: values }], { dtype: 'F16' }));
    expect(file.tensors.get('w')!.dtype).toBe('F16');
    const back = readTensorF32(file, 'w');
    values.forEach((v, i) => expect(back[i]).toBe(halfBitsToFloat(floatToHalfBits(v))));
    // f16 keeps 11 significant bits: relative error at most 2^-11.
    values.forEach((v, i) => expect(Math.abs(back[i] - v)).toBeLessThanOrEqual(Math.abs(v) * 2 ** -11 + 2 ** -25));
  });

  it('decodes F16, BF16 and unaligned F32 written by hand', () => {
    // u8 (1 byte) first, so the F32 and F16 tensors after it start at odd offsets.
    const data = concatBytes(
      new Uint8Array([7]),
      f32Bytes([1.5, -2]),
      u16Bytes([0x3c00, 0xc000, 0x0001, 0x7c00, 0xfc00, 0x8000]),
      u16Bytes([0x3f80, 0xc040, 0x7f80]),
    );
    const header = {
      u: { dtype: 'U8', shape: [1], data_offsets: [0, 1] },
      f: { dtype: 'F32', shape: [2], data_offsets: [1, 9] },
      h: { dtype: 'F16', shape: [2, 3], data_offsets: [9, 21] },
      b: { dtype: 'BF16', shape: [3], data_offsets: [21, 27] },
    };
    const file = parseSafetensors(rawSafetensors(header, data));
    expect(Array.from(readTensorF32(file, 'f'))).toEqual([1.5, -2]);
    expect(Array.from(readTensorF32(file, 'h'))).toEqual([1, -2, 2 ** -24, Infinity, -Infinity, -0]);
    expect(Array.from(readTensorF32(file, 'b'))).toEqual([1, -3, Infinity]);
    expectBadModel(() => readTensorF32(file, 'u'), /dtype U8; Tunelab reads only F32, F16 and BF16/);
    expectBadModel(() => readTensorF32(file, 'nope'), /no tensor "nope"/);
  });

  it('rejects bad input to the writer', () => {
    expect(() => writeSafetensors([{ name: 'x', shape: [2, 2], data: [1, 2, 3] }])).toThrow(/does not match 3 values/);
    expect(() =>
      writeSafetensors([
        { name: 'x', shape: [1], data: [1] },
        { name: 'x', shape: [1], data: [2] },
      ]),
    ).toThrow(/given twice/);
  });
});

describe('f32 → f16 rounding', () => {
  it('known values: overflow, subnormals, signed zero, infinities, NaN', () => {
    expect(floatToHalfBits(1)).toBe(0x3c00);
    expect(floatToHalfBits(-2)).toBe(0xc000);
    expect(floatToHalfBits(65504)).toBe(0x7bff);
    expect(floatToHalfBits(65519)).toBe(0x7bff);
    expect(floatToHalfBits(65520)).toBe(0x7c00); // the midpoint to 2^16 rounds to even, which is infinity
    expect(floatToHalfBits(1e10)).toBe(0x7c00);
    expect(floatToHalfBits(-1e10)).toBe(0xfc00);
    expect(floatToHalfBits(Infinity)).toBe(0x7c00);
    expect(floatToHalfBits(-Infinity)).toBe(0xfc00);
    expect(floatToHalfBits(2 ** -14)).toBe(0x0400); // smallest normal
    expect(floatToHalfBits(2 ** -24)).toBe(0x0001); // smallest subnormal
    expect(floatToHalfBits(2 ** -25)).toBe(0x0000); // half of it: ties to even (0)
    expect(floatToHalfBits(1.5 * 2 ** -25)).toBe(0x0001);
    expect(floatToHalfBits(3 * 2 ** -25)).toBe(0x0002); // 1.5 ulp: ties to even (2)
    expect(floatToHalfBits(1e-10)).toBe(0x0000);
    expect(floatToHalfBits(-0)).toBe(0x8000);
    expect(floatToHalfBits(-1e-10)).toBe(0x8000);
    const nan = floatToHalfBits(NaN);
    expect(nan & 0x7c00).toBe(0x7c00);
    expect(nan & 0x03ff).not.toBe(0);
  });

  it('every finite f16 survives f16 → f32 → f16', () => {
    const wrong: string[] = [];
    for (let h = 0; h < 0x10000; h++) {
      if ((h & 0x7c00) === 0x7c00 && h & 0x03ff) continue; // NaNs
      const back = floatToHalfBits(halfBitsToFloat(h));
      if (back !== h) wrong.push(`${h.toString(16)} → ${back.toString(16)}`);
    }
    expect(wrong.slice(0, 5)).toEqual([]);
  });

  it('midpoints between neighbouring f16 values round to even, their f32 neighbours to the nearer side', () => {
    const wrong: string[] = [];
    const check = (value: number, expected: number) => {
      const got = floatToHalfBits(value);
      if (got !== expected) wrong.push(`${value}: ${got.toString(16)}, expected ${expected.toString(16)}`);
    };
    for (let h = 0; h < 0x7c00; h++) {
      const lo = halfBitsToFloat(h);
      const hi = h + 1 === 0x7c00 ? 65536 : halfBitsToFloat(h + 1); // the pair (max, inf): midpoint 65520
      const mid = (lo + hi) / 2;
      if (Math.fround(mid) !== mid) wrong.push(`midpoint ${mid} is not an f32`); // 12 significant bits: it is
      const even = h % 2 === 0 ? h : h + 1;
      const bits = f32Bits(mid);
      for (const sign of [1, -1]) {
        const signBit = sign < 0 ? 0x8000 : 0;
        check(sign * mid, signBit | even);
        check(sign * f32FromBits(bits + 1), signBit | (h + 1));
        check(sign * f32FromBits(bits - 1), signBit | h);
      }
    }
    expect(wrong.slice(0, 5)).toEqual([]);
  });
});

describe('safetensors reader refuses broken files with a clear message', () => {
  const valid = () => ({ x: { dtype: 'F32', shape: [2], data_offsets: [0, 8] } });
  const data8 = f32Bytes([1, 2]);

  it('too short to hold the length', () => {
    expectBadModel(() => parseSafetensors(new Uint8Array(5)), /5 bytes long.*truncated/);
  });
  it('header longer than the file', () => {
    expectBadModel(() => parseSafetensors(rawSafetensors(valid(), data8, 5000)), /claims 5\.0 kB.*truncated/);
  });
  it('header above the sane limit', () => {
    expectBadModel(() => parseSafetensors(rawSafetensors(valid(), data8, MAX_HEADER_BYTES + 1)), /above the 100\.0 MB limit/);
    expectBadModel(() => parseSafetensors(rawSafetensors(valid(), data8, 2 ** 40)), /above the 100\.0 MB limit/);
  });
  it('malformed JSON, non-object header, invalid UTF-8', () => {
    expectBadModel(() => parseSafetensors(rawSafetensors('{"x": {', data8)), /not valid JSON/);
    expectBadModel(() => parseSafetensors(rawSafetensors('[1, 2]')), /does not start with "\{"/);
    const bad = rawSafetensors('{"\u00e9":1}');
    bad[10] = 0xff;
    expectBadModel(() => parseSafetensors(bad), /not valid UTF-8/);
  });
  it('unknown dtype', () => {
    expectBadModel(
      () => parseSafetensors(rawSafetensors({ x: { dtype: 'F128', shape: [2], data_offsets: [0, 8] } }, data8)),
      /"x" has unknown dtype "F128"/,
    );
  });
  it('offsets that do not match dtype × shape', () => {
    expectBadModel(
      () => parseSafetensors(rawSafetensors({ x: { dtype: 'F32', shape: [3], data_offsets: [0, 8] } }, data8)),
      /F32 with shape \[3\] needs 12 bytes, but data_offsets \[0, 8\] span 8/,
    );
    expectBadModel(
      () => parseSafetensors(rawSafetensors({ x: { dtype: 'F32', shape: [2 ** 40, 2 ** 40], data_offsets: [0, 8] } }, data8)),
      /needs .* bytes/,
    );
  });
  it('offsets outside the data area, reversed, negative or malformed', () => {
    expectBadModel(
      () => parseSafetensors(rawSafetensors({ x: { dtype: 'F32', shape: [4], data_offsets: [0, 16] } }, data8)),
      /point outside the data area \(8 bytes\)/,
    );
    expectBadModel(
      () => parseSafetensors(rawSafetensors({ x: { dtype: 'F32', shape: [0], data_offsets: [8, 0] } }, data8)),
      /end before they begin/,
    );
    expectBadModel(
      () => parseSafetensors(rawSafetensors({ x: { dtype: 'F32', shape: [2], data_offsets: [-8, 0] } }, data8)),
      /not a pair of non-negative integers/,
    );
    expectBadModel(
      () => parseSafetensors(rawSafetensors({ x: { dtype: 'F32', shape: [2.5], data_offsets: [0, 8] } }, data8)),
      /shape \[2\.5\] is not a list/,
    );
  });
  it('overlapping tensors, gaps and trailing bytes', () => {
    const overlap = {
      a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] },
      b: { dtype: 'F32', shape: [1], data_offsets: [4, 8] },
    };
    expectBadModel(() => parseSafetensors(rawSafetensors(overlap, data8)), /"a" and "b" overlap/);
    const gap = { a: { dtype: 'F32', shape: [1], data_offsets: [4, 8] } };
    expectBadModel(() => parseSafetensors(rawSafetensors(gap, data8)), /bytes 0\.\.4 .* belong to no tensor/);
    expectBadModel(() => parseSafetensors(rawSafetensors(valid(), concatBytes(data8, new Uint8Array(4)))), /trailing bytes/);
  });
  it('metadata that is not a map of strings', () => {
    expectBadModel(() => parseSafetensors(rawSafetensors({ __metadata__: { n: 1 } })), /"__metadata__" entry "n" is not a string/);
    expectBadModel(() => parseSafetensors(rawSafetensors({ __metadata__: [] })), /must be an object/);
  });
  it('an empty file with only "{}" is valid and has no tensors', () => {
    expect(parseSafetensors(rawSafetensors('{}')).tensors.size).toBe(0);
  });
});

describe('safetensors messages quote damaged header values safely', () => {
  const data8 = f32Bytes([1, 2]);
  const deepText = (asObject: boolean) => (asObject ? `${'{"a":'.repeat(10_000)}1${'}'.repeat(10_000)}` : `${'['.repeat(10_000)}1${']'.repeat(10_000)}`);

  it('a dtype, shape or data_offsets nested 10000 deep is refused with a short message, not a stack overflow', () => {
    for (const asObject of [false, true]) {
      const shown = asObject ? '\\{"a":\\{"a":\\{"a":\\{…\\}\\}\\}\\}' : '\\[\\[\\[\\[…\\]\\]\\]\\]';
      const header = (field: string) => `{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"${field}":${deepText(asObject)}}}`;
      expectBadModel(() => parseSafetensors(rawSafetensors(header('dtype'), data8)), new RegExp(`"x" has unknown dtype ${shown}; known:`));
      expectBadModel(() => parseSafetensors(rawSafetensors(header('shape'), data8)), new RegExp(`"x": shape ${shown} is not a list`));
      expectBadModel(() => parseSafetensors(rawSafetensors(header('data_offsets'), data8)), new RegExp(`"x": data_offsets ${shown} is not a pair`));
    }
  });

  it('long tensor names, metadata keys and shapes are cut, so a message stays readable', () => {
    const longName = 'w'.repeat(5000);
    let message = '';
    try {
      parseSafetensors(rawSafetensors({ [longName]: { dtype: 'F128', shape: [2], data_offsets: [0, 8] } }, data8));
    } catch (error) {
      message = (error as Error).message;
    }
    expect(message).toMatch(/^safetensors: tensor "w+… has unknown dtype "F128"/);
    expect(message.length).toBeLessThan(300);
    expectBadModel(() => parseSafetensors(rawSafetensors({ __metadata__: { ['k'.repeat(5000)]: 1 } })), /^safetensors: "__metadata__" entry "k{50,200}… is not a string$/);
    const manyDimensions = Array.from({ length: 5000 }, () => 1);
    expectBadModel(
      () => parseSafetensors(rawSafetensors({ x: { dtype: 'F32', shape: [...manyDimensions, 3], data_offsets: [0, 8] } }, data8)),
      /shape \[1, 1, 1, 1, 1, 1, 1, 1, … \(5001 dimensions\)\] needs 12 bytes/,
    );
  });
});

describe('decoding refuses NaN and infinities where weights are filled', () => {
  // F32 NaN and -inf, F16 +inf and NaN, BF16 NaN: each the fourth element of its tensor.
  const data = concatBytes(
    f32Bytes([1, 2, 3, NaN]),
    f32Bytes([1, 2, 3, -Infinity]),
    u16Bytes([0x3c00, 0x3c00, 0x3c00, 0x7c00]),
    u16Bytes([0x3c00, 0x3c00, 0x3c00, 0x7e01]),
    u16Bytes([0x3f80, 0x3f80, 0x3f80, 0x7fc1]),
    u16Bytes([0x3c00, 0x7bff, 0xfbff, 0x0001]), // finite F16 extremes: max, -max, smallest subnormal
  );
  const file = parseSafetensors(
    rawSafetensors(
      {
        nan32: { dtype: 'F32', shape: [4], data_offsets: [0, 16] },
        inf32: { dtype: 'F32', shape: [2, 2], data_offsets: [16, 32] },
        inf16: { dtype: 'F16', shape: [4], data_offsets: [32, 40] },
        nan16: { dtype: 'F16', shape: [4], data_offsets: [40, 48] },
        nanbf16: { dtype: 'BF16', shape: [4], data_offsets: [48, 56] },
        finite16: { dtype: 'F16', shape: [4], data_offsets: [56, 64] },
      },
      data,
    ),
  );

  it('decodeTensorInto (what the model loader fills its weights with) names the tensor, the value and the element', () => {
    const out = new Float32Array(8);
    for (const [name, shown] of [['nan32', 'NaN'], ['inf32', '-Infinity'], ['inf16', 'Infinity'], ['nan16', 'NaN'], ['nanbf16', 'NaN']]) {
      expectBadModel(() => decodeTensorInto(file, name, out, 2), new RegExp(`tensor "${name}" holds ${shown} at element 3 of 4; weights must be finite`));
    }
    decodeTensorInto(file, 'finite16', out, 4);
    expect(Array.from(out.subarray(4))).toEqual([1, 65504, -65504, 2 ** -24]);
  });

  it('readTensorF32 keeps them unless asked to refuse them', () => {
    expect(Array.from(readTensorF32(file, 'inf16'))).toEqual([1, 1, 1, Infinity]);
    expect(Number.isNaN(readTensorF32(file, 'nan32')[3])).toBe(true);
    expectBadModel(() => readTensorF32(file, 'inf32', { requireFinite: true }), /tensor "inf32" holds -Infinity at element 3 of 4/);
    expect(Array.from(readTensorF32(file, 'finite16', { requireFinite: true }))).toEqual([1, 65504, -65504, 2 ** -24]);
  });
});

describe('safetensors reader under fuzzing', () => {
  const DTYPES = ['F32', 'F16', 'BF16', 'U8', 'I32', 'F64', 'I64', 'BOOL'];
  const SIZES: Record<string, number> = { F32: 4, F16: 2, BF16: 2, U8: 1, I32: 4, F64: 8, I64: 8, BOOL: 1 };

  function randomValidFile(rng: Rng): Uint8Array {
    const count = rng.int(4);
    const header: Record<string, unknown> = {};
    if (rng.next() < 0.5) header.__metadata__ = { format: 'pt' };
    let offset = 0;
    for (let i = 0; i < count; i++) {
      const dtype = DTYPES[rng.int(DTYPES.length)];
      const shape = Array.from({ length: rng.int(3) }, () => rng.int(4));
      const bytes = shape.reduce((a, d) => a * d, 1) * SIZES[dtype];
      header[`t${i}`] = { dtype, shape, data_offsets: [offset, offset + bytes] };
      offset += bytes;
    }
    const data = new Uint8Array(offset);
    for (let i = 0; i < offset; i++) data[i] = rng.int(256);
    return rawSafetensors(header, data);
  }

  /** Replaces a random run of digits in the header with another number (negative, huge, fractional …). */
  function mutateNumber(rng: Rng, file: Uint8Array): Uint8Array {
    const headerLength = new DataView(file.buffer, file.byteOffset).getUint32(0, true);
    const text = new TextDecoder().decode(file.subarray(8, 8 + headerLength));
    const digits = [...text.matchAll(/\d+/g)];
    if (!digits.length) return file;
    const pick = digits[rng.int(digits.length)];
    const replacements = ['-1', '0', '1e300', '2.5', '9007199254740993', '"7"', 'null', '[]', String(rng.int(100))];
    const changed = text.slice(0, pick.index) + replacements[rng.int(replacements.length)] + text.slice(pick.index! + pick[0].length);
    return rawSafetensors(changed, file.subarray(8 + headerLength));
  }

  function mutate(rng: Rng, source: Uint8Array): Uint8Array {
    const file = source.slice();
    switch (rng.int(7)) {
      case 0: // flip random bytes anywhere
        for (let k = 0, n = 1 + rng.int(4); k < n && file.length; k++) file[rng.int(file.length)] ^= 1 << rng.int(8);
        return file;
      case 1: // flip bytes in the length prefix
        file[rng.int(Math.min(8, file.length))] = rng.int(256);
        return file;
      case 2: // truncate
        return file.subarray(0, rng.int(file.length + 1));
      case 3: // append junk
        return concatBytes(file, new Uint8Array(1 + rng.int(16)).map(() => rng.int(256)));
      case 4:
        return mutateNumber(rng, file);
      case 5: // pure noise
        return new Uint8Array(rng.int(64)).map(() => rng.int(256));
      default: // noise with a plausible small length prefix
        return concatBytes(rawSafetensors('', new Uint8Array(0), rng.int(40)).subarray(0, 8), new Uint8Array(rng.int(48)).map(() => rng.int(256)));
    }
  }

  it('5000 seeded random and mutated buffers: only TunelabErrors, decoding what parses, quickly', () => {
    const rng = new Rng(2024);
    const started = performance.now();
    const outcomes = { parsed: 0, refused: 0 };
    for (let i = 0; i < 5000; i++) {
      const input = i % 10 === 0 ? randomValidFile(rng) : mutate(rng, randomValidFile(rng));
      let file: SafetensorsFile | undefined;
      try {
        file = parseSafetensors(input);
        outcomes.parsed++;
      } catch (error) {
        if (!(error instanceof TunelabError)) throw new Error(`case ${i}: ${String(error)}`);
        expect(error.code).toBe('bad-model');
        outcomes.refused++;
      }
      for (const name of file?.tensors.keys() ?? []) {
        try {
          const values = readTensorF32(file!, name);
          expect(values.length).toBe(file!.tensors.get(name)!.elementCount);
        } catch (error) {
          if (!(error instanceof TunelabError)) throw new Error(`case ${i}, tensor ${name}: ${String(error)}`);
        }
      }
    }
    // Both outcomes must occur, or the fuzzer is not exploring.
    expect(outcomes.parsed).toBeGreaterThan(500);
    expect(outcomes.refused).toBeGreaterThan(2000);
    expect(performance.now() - started).toBeLessThan(20_000);
  });
});
