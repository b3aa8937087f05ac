// The positioned JSON parser (agrees with JSON.parse, explains errors at the right offset) and the RFC 4180 CSV/TSV
// parser.
import { describe, expect, it } from 'vitest';
import { parseCsv } from '../../src/engine/data/csv.ts';
import { MAX_JSON_DEPTH, parseJson, type JsonNode } from '../../src/engine/data/json.ts';
import { Rng } from '../../src/engine/random.ts';

/** The plain JavaScript value of a parsed node, to compare with JSON.parse. */
function plain(node: JsonNode): unknown {
  switch (node.type) {
    case 'object': {
      const out: Record<string, unknown> = {};
      for (const m of node.members) out[m.key] = plain(m.value);
      return out;
    }
    case 'array':
      return node.items.map(plain);
    case 'null':
      return null;
    default:
      return node.value;
  }
}

function randomValue(rng: Rng, depth: number): unknown {
  const pick = rng.int(depth > 3 ? 5 : 7);
  switch (pick) {
    case 0:
      return null;
    case 1:
      return rng.next() < 0.5;
    case 2:
      return [0, -0.5, 1e21, 123456789, -3.25e-7, rng.int(1000)][rng.int(6)];
    case 3:
    case 4: {
      const chars = ['a', ' ', '"', '\\', '\n', '\t', 'é', '😀', '\u0001', '/', '\u2028'];
      return Array.from({ length: rng.int(8) }, () => chars[rng.int(chars.length)]).join('');
    }
    case 5:
      return Array.from({ length: rng.int(4) }, () => randomValue(rng, depth + 1));
    default: {
      const out: Record<string, unknown> = {};
      for (let i = rng.int(4); i > 0; i--) out[`k${rng.int(5)}`] = randomValue(rng, depth + 1);
      return out;
    }
  }
}

function errorAt(text: string): { column: number; message: string } {
  const result = parseJson(text, 0, text.length, 'line');
  if (result.ok) throw new Error(`expected a syntax error in ${text}`);
  return { column: result.error.offset + 1, message: result.error.message };
}

describe('parseJson', () => {
  it('agrees with JSON.parse on 2000 random documents, pretty or compact', () => {
    const rng = new Rng(11);
    for (let i = 0; i < 2000; i++) {
      const value = randomValue(rng, 0);
      const text = JSON.stringify(value, null, i % 2 ? 2 : undefined);
      const result = parseJson(text);
      expect(result.ok).toBe(true);
      if (result.ok) expect(plain(result.value)).toEqual(JSON.parse(text));
    }
  });

  it('records where keys and values start', () => {
    const text = '  {"a": [1, "x"], "b": {"c": null}}';
    const result = parseJson(text);
    if (!result.ok || result.value.type !== 'object') throw new Error('parse failed');
    const [a, b] = result.value.members;
    expect(result.value.start).toBe(2);
    expect(text.slice(a.keyStart, a.keyStart + 3)).toBe('"a"');
    expect(text.slice(a.value.start, a.value.end)).toBe('[1, "x"]');
    expect(text.slice(b.value.start, b.value.end)).toBe('{"c": null}');
  });

  it('parses a range of a larger text (one JSON Lines line)', () => {
    const text = '{"a":1}\n{"b":2}\n';
    const second = parseJson(text, 8, 15, 'line');
    expect(second.ok && plain(second.value)).toEqual({ b: 2 });
  });

  it('explains syntax errors at the offending character', () => {
    expect(errorAt("{'role': 'user'}")).toEqual({ column: 2, message: expect.stringMatching(/double quotes/) });
    expect(errorAt('{"a": \'x\'}')).toEqual({ column: 7, message: expect.stringMatching(/double quotes/) });
    expect(errorAt('{"a": 1,}')).toEqual({ column: 9, message: expect.stringMatching(/trailing comma/) });
    expect(errorAt('[1, 2,]')).toEqual({ column: 7, message: expect.stringMatching(/trailing comma/) });
    expect(errorAt('{"a": 1 "b": 2}')).toEqual({ column: 9, message: expect.stringMatching(/missing ','/) });
    expect(errorAt('{"a" 1}')).toEqual({ column: 6, message: expect.stringMatching(/expected ':'/) });
    expect(errorAt('{a: 1}')).toEqual({ column: 2, message: expect.stringMatching(/property name in double quotes/) });
    expect(errorAt('{"a": True}')).toEqual({ column: 7, message: expect.stringMatching(/true, false and null/) });
    expect(errorAt('{"a": hello}')).toEqual({ column: 7, message: expect.stringMatching(/need double quotes/) });
    expect(errorAt('{"a": "x\ty"}')).toEqual({ column: 9, message: expect.stringMatching(/tab/) });
    expect(errorAt('{"a": "\\q"}')).toEqual({ column: 8, message: expect.stringMatching(/invalid escape/) });
    expect(errorAt('{"a": "\\u12G4"}')).toEqual({ column: 8, message: expect.stringMatching(/four hexadecimal/) });
    expect(errorAt('{"a": 01}')).toEqual({ column: 7, message: 'invalid number' });
    expect(errorAt('{"a": 1.}')).toEqual({ column: 7, message: expect.stringMatching(/decimal point/) });
    expect(errorAt('{"a": 1} x')).toEqual({ column: 10, message: expect.stringMatching(/after the end.*one example per line/) });
    expect(errorAt('\uFEFF{}')).toEqual({ column: 1, message: expect.stringMatching(/byte-order mark/) });
    expect(errorAt('')).toEqual({ column: 1, message: 'the line is empty' });
  });

  it('reports a value cut off by the end of the range at that end, and an open string at its quote', () => {
    expect(errorAt('{"messages": [{"role": "user"')).toEqual({ column: 30, message: expect.stringMatching(/line ends before/) });
    expect(errorAt('{"a": "never closed')).toEqual({ column: 7, message: expect.stringMatching(/never closed/) });
  });

  it('refuses nesting deeper than the limit instead of overflowing the stack', () => {
    const deep = '['.repeat(100_000) + ']'.repeat(100_000);
    const result = parseJson(deep);
    expect(result.ok).toBe(false);
    if (!result.ok) expect(result.error.message).toMatch(/nested deeper/);
    expect(parseJson('['.repeat(MAX_JSON_DEPTH) + ']'.repeat(MAX_JSON_DEPTH)).ok).toBe(true);
  });
});

describe('parseCsv', () => {
  const values = (text: string, delimiter: ',' | '\t' = ',') => parseCsv(text, delimiter).records.map((r) => r.fields.map((f) => f.value));

  it('splits fields and records, LF or CRLF, with or without a final line break', () => {
    expect(values('a,b\n1,2\n')).toEqual([['a', 'b'], ['1', '2']]);
    expect(values('a,b\r\n1,2')).toEqual([['a', 'b'], ['1', '2']]);
    expect(values('a\tb, c\r\n1\t2', '\t')).toEqual([['a', 'b, c'], ['1', '2']]);
  });

  it('reads quoted fields with delimiters, doubled quotes and line breaks (RFC 4180)', () => {
    expect(values('p,c\n"a, b","say ""hi"""\n"two\r\nlines",x\n')).toEqual([
      ['p', 'c'],
      ['a, b', 'say "hi"'],
      ['two\r\nlines', 'x'],
    ]);
    expect(values('"",x\n')).toEqual([['', 'x']]);
  });

  it('keeps empty fields and skips blank rows', () => {
    expect(values('a,b,\n\n,,\n1,,3\n')).toEqual([['a', 'b', ''], ['1', '', '3']]);
  });

  it('records where each field starts', () => {
    const { records } = parseCsv('ab,"cd"\nef,g', ',');
    expect(records.map((r) => r.fields.map((f) => f.start))).toEqual([[0, 3], [8, 11]]);
  });

  it('reports an unclosed quote at the quote and text after a closing quote, keeping all text', () => {
    const open = parseCsv('p,c\nx,"never closed\nmore', ',');
    expect(open.errors).toEqual([{ offset: 6, message: expect.stringMatching(/never closed/) }]);
    expect(open.records[1].fields[1].value).toBe('never closed\nmore');
    const stray = parseCsv('"a"b,c\n', ',');
    expect(stray.errors).toEqual([{ offset: 3, message: expect.stringMatching(/after a closing quote/) }]);
    expect(stray.records[0].fields.map((f) => f.value)).toEqual(['ab', 'c']);
  });
});
