// The tokenizer wrapper over @huggingface/tokenizers: the byte-level tokenizer.json, exact round trips, GPT-2-style
// merges, loading errors.
import { describe, expect, it } from 'vitest';
import { TunelabError } from '../../src/engine/errors.ts';
import { Rng } from '../../src/engine/random.ts';
import { byteLevelTokenizerJson, byteToCharTable, END_OF_TEXT, Tokenizer } from '../../src/engine/tokenizer/index.ts';
import { byteTokenizer, tinyBpeTokenizerJson } from './helpers.ts';

/** A well-formed string of random code points from all planes (no unpaired surrogates). */
function randomUnicode(rng: Rng, length: number): string {
  const pools = [
    () => 0x20 + rng.int(0x5f), // ASCII printable
    () => rng.int(0x20), // control characters, \t \n \r
    () => 0xa0 + rng.int(0x700), // Latin-1 .. Cyrillic, combining marks
    () => 0x4e00 + rng.int(0x5000), // CJK
    () => 0x1f300 + rng.int(0x300), // emoji
    () => 0x10000 + rng.int(0x100000 - 0x10000), // any astral plane
    () => [0x20, 0x20, 0x0a, 0xfeff, 0x200d, 0xfffd][rng.int(6)],
  ];
  let out = '';
  for (let i = 0; i < length; i++) {
    let cp = pools[rng.int(pools.length)]();
    if (cp >= 0xd800 && cp <= 0xdfff) cp = 0x41;
    out += String.fromCodePoint(cp);
  }
  return out;
}

describe('byte-level tokenizer', () => {
  it('is a complete tokenizer.json: 256 byte tokens, <|endoftext|> at 256, no merges', () => {
    const json = byteLevelTokenizerJson() as Record<string, any>;
    // Serializes and reads back unchanged (it is written to disk by `tunelab init`).
    expect(JSON.parse(JSON.stringify(json))).toEqual(json);
    expect(Object.keys(json.model.vocab)).toHaveLength(256);
    expect(new Set(Object.values(json.model.vocab))).toEqual(new Set(Array.from({ length: 256 }, (_, i) => i)));
    expect(json.model.merges).toEqual([]);
    expect(json.added_tokens).toEqual([expect.objectContaining({ id: 256, content: END_OF_TEXT, special: true })]);
    for (const section of ['pre_tokenizer', 'decoder']) expect(json[section].type).toBe('ByteLevel');
  });

  it('uses GPT-2 byte-to-character table: printable bytes stand for themselves, space is Ġ, newline Ċ', () => {
    const table = byteToCharTable();
    expect(new Set(table).size).toBe(256);
    expect(table[0x41]).toBe('A');
    expect(table[0x20]).toBe('Ġ');
    expect(table[0x0a]).toBe('Ċ');
    expect(table[0x00]).toBe('Ā');
  });

  it('has vocabulary 257 and end of text 256; ids are the UTF-8 bytes', () => {
    const tok = byteTokenizer();
    expect(tok.vocabSize).toBe(257);
    expect(tok.endOfTextId).toBe(256);
    expect(tok.endOfText).toBe('<|endoftext|>');
    const text = 'Grüße, 世界! 😀\r\n\tend';
    expect(tok.encode(text)).toEqual(Array.from(new TextEncoder().encode(text)));
    expect(tok.encode('a<|endoftext|>b')).toEqual([97, 256, 98]);
    expect(tok.encode('')).toEqual([]);
    expect(tok.tokenString(32)).toBe('Ġ');
  });

  it('round-trips arbitrary unicode exactly (3000 seeded random strings)', () => {
    const tok = byteTokenizer();
    const rng = new Rng(7);
    for (let i = 0; i < 3000; i++) {
      const text = randomUnicode(rng, rng.int(40));
      const ids = tok.encode(text);
      if (tok.decode(ids) !== text) expect({ text, decoded: tok.decode(ids) }).toEqual({ text, decoded: text });
    }
    // Spaces before punctuation and around quotes survive (the library's clean-up is off).
    for (const text of ["it 's", 'a , b . c ?', ' leading and trailing ', '\uFEFFbom', END_OF_TEXT, '']) {
      expect(tok.decode(tok.encode(text))).toBe(text);
    }
  });

  it('decodes special tokens unless asked not to, and skips ids outside the vocabulary', () => {
    const tok = byteTokenizer();
    expect(tok.decode([72, 105, 256])).toBe('Hi<|endoftext|>');
    expect(tok.decode([72, 105, 256], { skipSpecialTokens: true })).toBe('Hi');
    // A model's padded vocabulary can produce ids the tokenizer does not know.
    expect(tok.decode([72, 50000, 105, -1, 1.5])).toBe('Hi');
    expect(tok.decode([])).toBe('');
  });

  it('applies BPE merges of a GPT-2-shaped tokenizer and still round-trips', () => {
    const tok = Tokenizer.fromJson(tinyBpeTokenizerJson());
    expect(tok.encode(' the')).toEqual([259]);
    expect(tok.encode('he said the')).toEqual([258, 32, 115, 97, 105, 100, 259]);
    expect(tok.vocabSize).toBe(260);
    expect(tok.endOfTextId).toBe(256);
    const rng = new Rng(3);
    for (let i = 0; i < 500; i++) {
      const text = randomUnicode(rng, rng.int(30)) + ' the then';
      expect(tok.decode(tok.encode(text))).toBe(text);
    }
  });

  it('takes the end-of-text token from tokenizer_config.json or an option', () => {
    const json = tinyBpeTokenizerJson() as { added_tokens: unknown[] };
    json.added_tokens.push({ id: 260, content: '</s>', special: true });
    expect(Tokenizer.fromJson(json).endOfTextId).toBe(256);
    expect(Tokenizer.fromJson(json, { config: { eos_token: '</s>' } }).endOfTextId).toBe(260);
    expect(Tokenizer.fromJson(json, { endOfText: '</s>' }).endOfText).toBe('</s>');
  });

  it('rejects what is not a usable tokenizer with a bad-model error', () => {
    const bad = (json: unknown, pattern: RegExp) => {
      let caught: unknown;
      try {
        Tokenizer.fromJson(json, { name: 'x/tokenizer.json' });
      } catch (error) {
        caught = error;
      }
      expect(caught).toBeInstanceOf(TunelabError);
      expect((caught as TunelabError).code).toBe('bad-model');
      expect((caught as Error).message).toMatch(pattern);
    };
    bad(null, /no "model"/);
    bad([], /no "model"/);
    bad({ model: { type: 'Nonsense' } }, /could not be loaded/);
    const noEot = byteLevelTokenizerJson();
    noEot.added_tokens = [];
    bad(noEot, /no end-of-text token/);
  });
});
