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

describe('tokenizer.json files that the library would accept but cannot serve', () => {
  const refusal = (json: unknown): TunelabError => {
    try {
      Tokenizer.fromJson(json, { name: 'x/tokenizer.json' });
    } catch (error) {
      expect(error).toBeInstanceOf(TunelabError);
      expect((error as TunelabError).code).toBe('bad-model');
      return error as TunelabError;
    }
    throw new Error('expected a refusal');
  };
  const withVocabEntry = (id: unknown) => {
    const json = byteLevelTokenizerJson() as { model: { vocab: Record<string, unknown> } };
    json.model.vocab.extra = id;
    return json;
  };
  const withAddedToken = (token: unknown) => {
    const json = byteLevelTokenizerJson() as { added_tokens: unknown[] };
    json.added_tokens.push(token);
    return json;
  };

  it('a vocabulary id that is not a whole number below 2^24 is refused at once, naming the entry', () => {
    // The library sizes its id → token table by the largest id: [20000000] cost seconds and 20 million slots.
    for (const id of [[20_000_000], '20000000', 2 ** 24, 1e300, 1.5, -1, null, { id: 3 }]) {
      const started = performance.now();
      const error = refusal(withVocabEntry(id));
      expect(performance.now() - started, JSON.stringify(id)).toBeLessThan(2000);
      expect(error.message).toMatch(/^x\/tokenizer\.json: model\.vocab gives "extra" the id .+; token ids must be whole numbers from 0 to 16777215/);
    }
    expect(refusal(withVocabEntry([20_000_000])).message).toContain('the id [20000000]');
  });

  it('the largest allowed id loads quickly: the vocabulary size is read from the file, not from a table that large', () => {
    const started = performance.now();
    const tok = Tokenizer.fromJson(withVocabEntry(2 ** 24 - 1));
    expect(performance.now() - started).toBeLessThan(2000);
    expect(tok.vocabSize).toBe(2 ** 24);
    expect(tok.encode('hi')).toEqual([104, 105]);
  });

  it('an added token must have a token id and text: "Ġ t", [300], 1.5 or -1 never becomes endOfTextId', () => {
    for (const id of ['Ġ t', [300], 1.5, -1]) {
      const json = byteLevelTokenizerJson() as { added_tokens: { id: unknown }[] };
      json.added_tokens[0].id = id;
      expect(refusal(json).message).toMatch(/added_tokens\[0\] has the id .+; token ids must be whole numbers/);
    }
    expect(refusal(withAddedToken({ id: 257, content: ['</s>'], special: true })).message).toMatch(/added_tokens\[1\] has the content \["<\/s>"\]/);
    expect(refusal(withAddedToken({ id: 257, content: '</s>', special: 'yes' })).message).toMatch(/added_tokens\[1\] has special "yes"; it must be true or false/);
    expect(refusal(withAddedToken(7)).message).toMatch(/added_tokens\[1\] is 7, not an object/);
  });

  it('Unigram pieces must be [string, number] pairs and unk_id one of their indices', () => {
    const unigram = (vocab: unknown[], unkId: unknown = 0) => ({
      model: { type: 'Unigram', unk_id: unkId, vocab },
      added_tokens: [{ id: 1, content: '</s>', special: true }],
    });
    expect(Tokenizer.fromJson(unigram([['<unk>', 0], ['</s>', 0], ['a', -1]])).vocabSize).toBe(3);
    expect(refusal(unigram([['<unk>', 0], ['</s>'], ['a', -1]])).message).toMatch(/model\.vocab\[1\] is \["<\/s>"\], not a \[piece, score\] pair/);
    expect(refusal(unigram([['<unk>', 0], ['</s>', 0]], 5)).message).toMatch(/model\.unk_id is 5, not the index/);
  });

  it('a TemplateProcessing post-processor with misshapen templates is refused while loading', () => {
    const withSingle = (single: unknown) => ({ ...byteLevelTokenizerJson(), post_processor: { type: 'TemplateProcessing', single, pair: null, special_tokens: {} } });
    const sequenceA = { Sequence: { id: 'A', type_id: 0 } };
    expect(Tokenizer.fromJson(withSingle([sequenceA])).encode('hi')).toEqual([104, 105]);
    expect(refusal(withSingle([false, sequenceA])).message).toMatch(/post_processor\.single\[0\] is false; a template piece is/);
    expect(refusal(withSingle(42)).message).toMatch(/post_processor\.single is 42, not a list of template pieces/);
    // The single template has only one sequence: B there would read a second text that is never given.
    expect(refusal(withSingle([{ Sequence: { id: 'B', type_id: 0 } }])).message).toMatch(/post_processor\.single\[0\]/);
    const nested = { ...byteLevelTokenizerJson(), post_processor: { type: 'Sequence', processors: [{ type: 'TemplateProcessing', single: [7] }] } };
    expect(refusal(nested).message).toMatch(/post_processor\.processors\[0\]\.single\[0\] is 7/);
  });

  it('sections are null or objects with a type name', () => {
    expect(refusal({ ...byteLevelTokenizerJson(), decoder: 'ByteLevel' }).message).toMatch(/decoder is "ByteLevel"; it must be null or an object with a "type" name/);
    expect(refusal({ ...byteLevelTokenizerJson(), normalizer: { type: ['NFC'] } }).message).toMatch(/normalizer is \{"type":\["NFC"\]\}/);
  });

  it('a tokenizer whose library objects throw while encoding or decoding is refused while loading, with the reason', () => {
    // Both load in the library and throw a TypeError on first use.
    const brokenDecoder = { ...byteLevelTokenizerJson(), decoder: { type: 'Sequence', decoders: [null] } };
    expect(refusal(brokenDecoder).message).toMatch(/^x\/tokenizer\.json failed to decode \[72,101,.*\(Cannot read properties of null.*\); a section of the file/);
    const brokenSplit = { ...byteLevelTokenizerJson(), pre_tokenizer: { type: 'Split', pattern: { String: ' ' }, behavior: 5, invert: false } };
    expect(refusal(brokenSplit).message).toMatch(/^x\/tokenizer\.json failed to encode "Hello, world!.*\(.*toLowerCase.*\); a section of the file/);
  });

  it('text the vocabulary cannot cover, with no unknown token, is a TunelabError when encoded, not undefined ids', () => {
    // Its unknown token "<unk>" is not in the vocabulary: the library gives `undefined` for what it cannot cover.
    const letters = 'abcdefghijklmnopqrstuvwxyz';
    const json = {
      model: { type: 'BPE', unk_token: '<unk>', vocab: Object.fromEntries([...letters].map((c, i) => [c, i])), merges: [] },
      added_tokens: [{ id: 26, content: '<|endoftext|>', special: true }],
    };
    const tok = Tokenizer.fromJson(json);
    expect(tok.encode('abc')).toEqual([0, 1, 2]);
    let caught: unknown;
    try {
      tok.encode('abc 😀');
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(TunelabError);
    expect((caught as TunelabError).message).toMatch(/cannot encode "abc 😀": it has no token for part of it \(got id undefined\)/);
    expect(tok.tokenString(2 ** 40)).toBeUndefined();
  });
});
