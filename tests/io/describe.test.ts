// describeValue and shortText, the one way engine parsers quote a user's value in an error message: short values read
// as JSON, anything else is cut short, and values nested thousands deep (which overflow JSON.stringify and String())
// are shown a few levels deep.
import { describe, expect, it } from 'vitest';
import { describeValue, shortText } from '../../src/engine/describe.ts';

const deepArray = () => JSON.parse(`${'['.repeat(10_000)}1${']'.repeat(10_000)}`) as unknown;
const deepObject = () => JSON.parse(`${'{"a":'.repeat(10_000)}1${'}'.repeat(10_000)}`) as unknown;

describe('describeValue', () => {
  it('writes short JSON values exactly as JSON.stringify does', () => {
    for (const value of ['gpt2', '', 'say "hi"\n', 0, -2.5, 1e21, true, null, [], {}, ['c_attn', 'c_fc'], { dtype: 'F32', shape: [2, 3] }]) {
      expect(describeValue(value)).toBe(JSON.stringify(value));
    }
  });

  it('names what JSON cannot write instead of printing "null", "undefined" or "[object Object]"', () => {
    expect(describeValue(NaN)).toBe('NaN');
    expect(describeValue(-Infinity)).toBe('-Infinity');
    expect(describeValue(undefined)).toBe('undefined');
    expect(describeValue(new Uint8Array(3))).toBe('Uint8Array(3)');
    expect(describeValue(new Map())).toBe('a Map');
    expect(describeValue({ a: new Date(0) })).toBe('{"a":a Date}');
    expect(describeValue(JSON.parse('{"__proto__": 5}'))).toBe('{"__proto__":5}');
  });

  it('cuts long values to maxChars characters, ending in …, without splitting a surrogate pair', () => {
    const long = describeValue('x'.repeat(8000));
    expect(long).toHaveLength(80);
    expect(long).toMatch(/^"x+…$/);
    const list = describeValue(Array.from({ length: 5000 }, (_, i) => i), 20);
    expect(list).toBe('[0,1,2,3,4,5,6,7,8,…');
    const emoji = describeValue('😀'.repeat(100), 10);
    expect(emoji.length).toBeLessThanOrEqual(10);
    expect(emoji.endsWith('…')).toBe(true);
    expect(emoji.slice(0, -1)).toBe(`"${'😀'.repeat(4)}`);
  });

  it('shows containers three levels deep and stops there, so a value nested 10000 deep is no stack overflow', () => {
    expect(describeValue({ a: [1, { b: [2] }] })).toBe('{"a":[1,{"b":[…]}]}');
    expect(describeValue(deepArray())).toBe('[[[[…]]]]');
    expect(describeValue(deepObject())).toBe('{"a":{"a":{"a":{…}}}}');
    // The values this replaces: JSON.stringify and String() of the same input overflow the stack.
    expect(() => JSON.stringify(deepArray())).toThrow(RangeError);
    expect(() => String(deepArray())).toThrow(RangeError);
  });

  it('never throws, even for a value whose getter does', () => {
    const hostile = {
      get boom(): never {
        throw new Error('getter');
      },
    };
    expect(describeValue(hostile)).toBe('(object)');
  });
});

describe('shortText', () => {
  it('leaves short text alone and cuts long text to maxChars characters, unquoted', () => {
    expect(shortText('model-00001-of-00002.safetensors')).toBe('model-00001-of-00002.safetensors');
    const cut = shortText(`model-${'9'.repeat(5000)}.safetensors`);
    expect(cut).toHaveLength(80);
    expect(cut).toMatch(/^model-9+…$/);
  });
});
