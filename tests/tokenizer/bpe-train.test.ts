// The byte-level BPE trainer: exact merges on handcrafted text, agreement with a naive recount-everything trainer,
// GPT-2 pre-tokenization identical to the tokenizer library's, determinism, and tokenizer.json files that
// @huggingface/tokenizers loads, that segment words exactly as training did and that round-trip any text.
import { ByteLevelPreTokenizer } from '@huggingface/tokenizers';
import { describe, expect, it } from 'vitest';
import { TunelabError } from '../../src/engine/errors.ts';
import { Rng } from '../../src/engine/random.ts';
import { BpeWordCounter, bpeTokenizerJson, trainBpe, type BpeModel } from '../../src/engine/tokenizer/bpe-train.ts';
import { END_OF_TEXT, Tokenizer, byteToCharTable } from '../../src/engine/tokenizer/index.ts';
import { naiveTrainBpe, randomUnicode, randomWords } from './helpers.ts';

const mergeStrings = (model: BpeModel) => model.merges.map(([left, right]) => `${left} ${right}`);

function counted(texts: string[], specialTokens = [END_OF_TEXT]): BpeWordCounter {
  const counter = new BpeWordCounter(specialTokens);
  for (const text of texts) counter.add(text);
  return counter;
}

describe('pre-tokenization', () => {
  it("splits words the way GPT-2's pattern does: contractions, leading spaces, digits, punctuation, whitespace", () => {
    const counter = counted(["It's 2024, isn't it?  Yes!\n\nOK"]);
    expect([...counter.counts.keys()]).toEqual([
      'It', "'s", ' 2024', ',', ' isn', "'t", ' it', '?', ' ', ' Yes', '!', '\n', 'OK',
    ]);
    expect(counter.counts.get('\n')).toBe(2);
    expect(counter.words).toBe(14);
    expect(counter.bytes).toBe(30);
  });

  it("gives the same words as @huggingface/tokenizers' ByteLevel pre-tokenizer on random unicode", () => {
    const library = new ByteLevelPreTokenizer({ type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true });
    const table = byteToCharTable();
    const rng = new Rng(11);
    for (let i = 0; i < 500; i++) {
      const text = i % 2 === 0 ? randomUnicode(rng, rng.int(40)) : randomWords(rng, 8, 'aZ9 .');
      const ours = [...text.matchAll(/'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu)];
      const counter = counted([text], []);
      const mine = ours.map((m) => Array.from(new TextEncoder().encode(m[0]), (b) => table[b]).join(''));
      expect(mine).toEqual(library.pre_tokenize_text(text));
      expect(counter.words).toBe(ours.length);
    }
  });

  it('cuts special tokens out of the text before splitting, longest first', () => {
    const counter = counted(['ab<|endoftext|>cd<|endoftext|><|end|>e'], [END_OF_TEXT, '<|end|>']);
    expect([...counter.counts.keys()]).toEqual(['ab', 'cd', 'e']);
    expect(counter.bytes).toBe(5);
  });
});

describe('trainBpe', () => {
  // Words: hug, " hug" ×2, " pug", " pun", " bun", " hugs". (u,g) 5 > (h,u) 4 > …; then (Ġ,p) and (u,n) tie at 2
  // and Ġ (byte 32) is the smaller left id. With minFrequency 1 the count-1 pairs follow by left id, then right id.
  const text = 'hug hug hug pug pun bun hugs';

  it('learns the exact expected merges on a handcrafted text, and stops when pairs fall below minFrequency', () => {
    const model = trainBpe([text], { vocabSize: 300 });
    expect(mergeStrings(model)).toEqual(['u g', 'h ug', 'Ġ hug', 'Ġ p', 'u n']);
    expect(model.tokens.slice(256)).toEqual([END_OF_TEXT, 'ug', 'hug', 'Ġhug', 'Ġp', 'un']);
    expect(model.stats).toMatchObject({ words: 7, distinctWords: 6, bytes: 28, merges: 5, lastMergeCount: 2, stoppedEarly: true });

    const all = trainBpe([text], { vocabSize: 300, minFrequency: 1 });
    expect(mergeStrings(all)).toEqual([
      'u g', 'h ug', 'Ġ hug', 'Ġ p', 'u n', 'Ġ b', 'Ġhug s', 'Ġp ug', 'Ġp un', 'Ġb un',
    ]);
    expect(all.stats.stoppedEarly).toBe(true); // every word is one token: nothing left to merge

    // Stops exactly at the vocabulary size.
    const small = trainBpe([text], { vocabSize: 260, minFrequency: 1 });
    expect(small.tokens).toHaveLength(260);
    expect(mergeStrings(small)).toEqual(['u g', 'h ug', 'Ġ hug']);
    expect(small.stats.stoppedEarly).toBe(false);
  });

  it('merges a repeated symbol left to right without overlap, as the tokenizer applies merges', () => {
    // "aaaa" → aa aa, " aaa" → Ġ aa a; so " aaaaa" ends as Ġaa aa a (there is no merge "aa a").
    const model = trainBpe(['aaaa aaa'], { vocabSize: 300, minFrequency: 1 });
    expect(mergeStrings(model)).toEqual(['a a', 'Ġ aa', 'aa aa', 'Ġaa a']);
    const tok = Tokenizer.fromJson(bpeTokenizerJson(model));
    expect(tok.encode('aaaa aaa aaaaa').map((id) => tok.tokenString(id))).toEqual(['aaaa', 'Ġaaa', 'Ġaa', 'aa', 'a']);
  });

  it('matches a naive trainer that recounts every pair after every merge (random texts full of ties)', () => {
    for (let seed = 0; seed < 12; seed++) {
      const rng = new Rng(seed);
      const texts = Array.from({ length: 3 }, () => randomWords(rng, 60 + rng.int(200), seed % 3 === 0 ? 'ab' : 'abcdeé'));
      const minFrequency = 1 + (seed % 3);
      const vocabSize = 257 + 10 + rng.int(80);
      const fast = trainBpe(texts, { vocabSize, minFrequency });
      const naive = naiveTrainBpe(counted(texts).counts, vocabSize, { minFrequency });
      expect(fast.merges).toEqual(naive.merges);
      expect(fast.tokens).toEqual(naive.tokens);
    }
  });

  it('segments every training word exactly as @huggingface/tokenizers encodes it with the saved merges', () => {
    const rng = new Rng(5);
    const texts = [randomWords(rng, 400, 'abcdefg'), randomUnicode(rng, 300), 'naïve café 😀😀 😀😀 ok'];
    const counter = counted(texts);
    const model = trainBpe(counter, { vocabSize: 420, minFrequency: 1 });
    const naive = naiveTrainBpe(counter.counts, 420, { minFrequency: 1 });
    const tok = Tokenizer.fromJson(bpeTokenizerJson(model));
    for (const [word, pieces] of naive.segmentation) {
      expect(tok.encode(word).map((id) => tok.tokenString(id))).toEqual(pieces);
    }
  });

  it('is deterministic: the same words in any order, or twice, give the same tokenizer.json', () => {
    const rng = new Rng(9);
    const documents = Array.from({ length: 30 }, () => randomWords(rng, 40));
    const first = JSON.stringify(bpeTokenizerJson(trainBpe(documents, { vocabSize: 400 })));
    expect(JSON.stringify(bpeTokenizerJson(trainBpe(documents, { vocabSize: 400 })))).toBe(first);
    const shuffled = new Rng(1).shuffle([...documents]);
    expect(JSON.stringify(bpeTokenizerJson(trainBpe(shuffled, { vocabSize: 400 })))).toBe(first);
    expect(JSON.stringify(bpeTokenizerJson(trainBpe(documents, { vocabSize: 401 })))).not.toBe(first);
  });

  it('never learns a token from a special token, and the special token encodes to one id', () => {
    const documents = Array.from({ length: 50 }, (_, i) => `document ${i} ends here${END_OF_TEXT}`);
    const model = trainBpe(documents, { vocabSize: 320 });
    expect(model.tokens.filter((t) => /endof|<\||\|>/.test(t))).toEqual([END_OF_TEXT]);
    const tok = Tokenizer.fromJson(bpeTokenizerJson(model));
    expect(tok.endOfTextId).toBe(256);
    expect(tok.encode(END_OF_TEXT)).toEqual([256]);
    const ids = tok.encode(`the end${END_OF_TEXT}document 7`);
    expect(ids.filter((id) => id === 256)).toHaveLength(1);
    expect(tok.decode(ids)).toBe(`the end${END_OF_TEXT}document 7`);
    expect(tok.decode(ids, { skipSpecialTokens: true })).toBe('the enddocument 7');
  });

  it('rejects vocabulary sizes it cannot make and bad options with a bad-data error', () => {
    for (const options of [{ vocabSize: 256 }, { vocabSize: 300.5 }, { vocabSize: 2 ** 22 }, { vocabSize: 300, minFrequency: 0 }]) {
      expect(() => trainBpe(['x'], options)).toThrow(TunelabError);
    }
    expect(() => trainBpe(['x'], { vocabSize: 300, specialTokens: ['<a>', '<a>'] })).toThrow(/distinct/);
    expect(() => trainBpe(counted(['x'], ['<a>']), { vocabSize: 300 })).not.toThrow();
    expect(() => trainBpe(counted(['x'], ['<a>']), { vocabSize: 300, specialTokens: ['<b>'] })).toThrow(/other special tokens/);
    // The smallest vocabulary is just the bytes and the special tokens.
    expect(trainBpe(['xx xx'], { vocabSize: 257 }).merges).toEqual([]);
  });
});

describe('bpeTokenizerJson', () => {
  const rng = new Rng(21);
  const corpus = [
    ...Array.from({ length: 20 }, () => randomWords(rng, 50, 'abcdefghij')),
    ...Array.from({ length: 20 }, () => randomUnicode(rng, 60)),
    'Grüße aus Köln! 世界你好 😀😀😀 👩‍👩‍👧 \t\ttabs\r\nCRLF    four spaces',
  ];
  const model = trainBpe(corpus, { vocabSize: 700, minFrequency: 2 });
  const json = bpeTokenizerJson(model) as Record<string, any>;
  const tok = Tokenizer.fromJson(JSON.parse(JSON.stringify(json)));

  it('is a GPT-2-shaped tokenizer.json: BPE vocab and merges, ByteLevel pieces, <|endoftext|> special', () => {
    expect(json.model.type).toBe('BPE');
    for (const section of ['pre_tokenizer', 'decoder', 'post_processor']) expect(json[section].type).toBe('ByteLevel');
    expect(json.pre_tokenizer).toMatchObject({ add_prefix_space: false, use_regex: true });
    expect(json.added_tokens).toEqual([expect.objectContaining({ id: 256, content: END_OF_TEXT, special: true, normalized: false })]);
    expect(json.model.vocab[END_OF_TEXT]).toBe(256);
    expect(json.model.vocab['Ġ']).toBe(32);
    expect(Object.keys(json.model.vocab)).toHaveLength(model.tokens.length);
    expect(new Set(Object.values(json.model.vocab))).toEqual(new Set(model.tokens.map((_, id) => id)));
    expect(json.model.merges).toHaveLength(model.merges.length);
    // Every merge joins two known tokens into a known token.
    for (const merge of json.model.merges as string[]) {
      const [left, right] = merge.split(' ');
      expect([json.model.vocab[left], json.model.vocab[right], json.model.vocab[left + right]]).not.toContain(undefined);
    }
    expect(tok.vocabSize).toBe(model.tokens.length);
  });

  it('round-trips arbitrary unicode, emoji, and whitespace exactly (decode(encode(x)) === x)', () => {
    const edgeCases = [
      '', ' ', '  ', '\n', '\n\n\n', '\t', ' \t \n ', '\r\n', 'trailing  ', '  leading', 'a  b   c',
      "it 's", "can't won't y'all", 'a , b . c ?', '\u00a0nbsp\u00a0', '\u3000ideographic\u3000space',
      '😀', '👩‍👩‍👧', '🏳️‍🌈', 'e\u0301', 'é', '\uFEFFbom', '\u200d', '\u0000nul', 'Ω≈ç√∫', '𝔘𝔫𝔦𝔠𝔬𝔡𝔢', '١٢٣ مرحبا',
      `${END_OF_TEXT}${END_OF_TEXT}`, `a${END_OF_TEXT} b`, '<|endoftext', 'endoftext|>',
    ];
    for (const text of edgeCases) expect(tok.decode(tok.encode(text))).toBe(text);
    const random = new Rng(8);
    for (let i = 0; i < 1500; i++) {
      const text = randomUnicode(random, random.int(50));
      const decoded = tok.decode(tok.encode(text));
      if (decoded !== text) expect({ text, decoded }).toEqual({ text, decoded: text });
    }
  });

  it('compresses text like its training text: fewer tokens than bytes', () => {
    const sample = corpus[0];
    expect(tok.encode(sample).length).toBeLessThan(0.6 * new TextEncoder().encode(sample).length);
  });
});
