// Fuzz test of tokenizer.json reading: the loader's checks (checkTokenizerJson, tokenizerVocabSize, endOfTextId) and
// Tokenizer.fromJson over thousands of seeded random and mutated tokenizer files (byte-level, trained BPE with merges,
// WordPiece, Unigram). Each ends in a usable tokenizer — it encodes and decodes text without throwing — or a
// TunelabError('bad-model'), quickly.

import { describe, expect, it } from 'vitest';
import { TunelabError } from '../../src/engine/errors.ts';
import { checkTokenizerJson, endOfTextId, tokenizerVocabSize } from '../../src/engine/model/load.ts';
import { Tokenizer, byteLevelTokenizerJson } from '../../src/engine/tokenizer/index.ts';
import { bpeTokenizerJson, trainBpe } from '../../src/engine/tokenizer/bpe-train.ts';
import type { Rng } from '../../src/engine/random.ts';
import {
  expectEachResultOrTunelabError,
  fuzz,
  mutateJson,
  mutateText,
  pick,
  preview,
  randomJson,
  resultOrTunelabError,
  summary,
  withDeepValue,
} from './helpers.ts';
import { HANG_MS } from './helpers.ts';

const CORPUS = [
  'The cat sat on the mat. The dog sat on the log.',
  'Pirates say arr, matey! The ship sails at dawn.',
  'What is 2 plus 3? It is 5. What is 4 plus 4? It is 8.',
];

function trainedBpe(): Record<string, unknown> {
  return bpeTokenizerJson(trainBpe(CORPUS.flatMap((line) => [line, line, line]), { vocabSize: 300 }));
}

/** A small BERT-style WordPiece tokenizer.json, with a normalizer and a template post-processor. */
function wordPiece(): Record<string, unknown> {
  const tokens = ['[UNK]', '[CLS]', '[SEP]', '</s>', 'the', 'cat', '##s', 'sat', 'on', 'mat', '.', ',', '!', '?', 'a', '##t'];
  return {
    version: '1.0',
    added_tokens: [
      { id: 0, content: '[UNK]', single_word: false, lstrip: false, rstrip: false, normalized: false, special: true },
      { id: 3, content: '</s>', single_word: false, lstrip: false, rstrip: false, normalized: false, special: true },
    ],
    normalizer: { type: 'BertNormalizer', clean_text: true, handle_chinese_chars: true, strip_accents: null, lowercase: true },
    pre_tokenizer: { type: 'BertPreTokenizer' },
    post_processor: {
      type: 'TemplateProcessing',
      single: [{ SpecialToken: { id: '[CLS]', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }, { SpecialToken: { id: '[SEP]', type_id: 0 } }],
      pair: [{ Sequence: { id: 'A', type_id: 0 } }, { Sequence: { id: 'B', type_id: 1 } }],
      special_tokens: {
        '[CLS]': { id: '[CLS]', ids: [1], tokens: ['[CLS]'] },
        '[SEP]': { id: '[SEP]', ids: [2], tokens: ['[SEP]'] },
      },
    },
    decoder: { type: 'WordPiece', prefix: '##', cleanup: true },
    model: {
      type: 'WordPiece',
      unk_token: '[UNK]',
      continuing_subword_prefix: '##',
      max_input_chars_per_word: 100,
      vocab: Object.fromEntries(tokens.map((t, i) => [t, i])),
    },
  };
}

/** A small SentencePiece-style Unigram tokenizer.json with a Metaspace pre-tokenizer and decoder. */
function unigram(): Record<string, unknown> {
  const pieces = ['<unk>', '</s>', '▁the', '▁cat', '▁sat', '▁', 't', 'h', 'e', 'c', 'a', 's', '.'];
  return {
    version: '1.0',
    added_tokens: [{ id: 1, content: '</s>', single_word: false, lstrip: false, rstrip: false, normalized: false, special: true }],
    normalizer: { type: 'Sequence', normalizers: [{ type: 'NFKC' }, { type: 'Replace', pattern: { String: '  ' }, content: ' ' }] },
    pre_tokenizer: { type: 'Metaspace', replacement: '▁', prepend_scheme: 'always', split: true },
    post_processor: null,
    decoder: { type: 'Metaspace', replacement: '▁', prepend_scheme: 'always', split: true },
    model: { type: 'Unigram', unk_id: 0, byte_fallback: false, vocab: pieces.map((p, i) => [p, -i - 1]) },
  };
}

const BASES = [byteLevelTokenizerJson(), trainedBpe(), wordPiece(), unigram()];

/** Field names tokenizer.json readers look at. */
const KEYS = [
  'model', 'type', 'vocab', 'merges', 'added_tokens', 'id', 'content', 'special', 'normalized', 'normalizer',
  'pre_tokenizer', 'post_processor', 'decoder', 'pretokenizers', 'normalizers', 'decoders', 'processors', 'pattern',
  'Regex', 'String', 'behavior', 'invert', 'unk_token', 'unk_id', 'continuing_subword_prefix', 'end_of_word_suffix',
  'byte_fallback', 'ignore_merges', 'fuse_unk', 'dropout', 'add_prefix_space', 'use_regex', 'trim_offsets',
  'max_input_chars_per_word', 'single', 'pair', 'special_tokens', 'ids', 'tokens', 'replacement', 'prepend_scheme',
  'split', 'lowercase', 'strip_accents', 'clean_text', 'prefix', 'cleanup', 'sep', 'cls', 'individual_digits',
  'truncation', 'padding', 'version',
];

/** Values those readers recognize: component type names and the like. */
const VALUES = [
  'BPE', 'WordPiece', 'Unigram', 'WordLevel', 'ByteLevel', 'Sequence', 'Split', 'Metaspace', 'Whitespace',
  'WhitespaceSplit', 'BertPreTokenizer', 'Punctuation', 'Digits', 'NFC', 'NFD', 'NFKC', 'NFKD', 'Lowercase', 'Strip',
  'StripAccents', 'Replace', 'Prepend', 'Precompiled', 'BertNormalizer', 'TemplateProcessing', 'RobertaProcessing',
  'BertProcessing', 'Fuse', 'ByteFallback', 'Removed', 'Isolated', 'MergedWithPrevious', 'MergedWithNext',
  'Contiguous', 'always', 'never', 'first', '[UNK]', '</s>', '<unk>', '##', '▁', 'Ġ', 'a b', 'Ġ t', ['Ġ', 't'], ['a'],
  { String: ' ' }, { Regex: '\\s+' }, { Regex: '(' }, { Regex: '(?i)x' }, { Regex: '\\p{L}+' },
];

/** Text the smoke test pushes through an accepted tokenizer. */
const SAMPLES = ['', 'Hello, world!', 'the cat sat on the mat.', ' <|endoftext|></s>[UNK]', 'é 😀 \u0000 \uFEFF\n\t  x', '\uD800 lone'];

function generate(rng: Rng): unknown {
  const base = pick(rng, BASES);
  switch (rng.int(6)) {
    case 0: {
      // Text damage, as a broken download or a hand edit would do; only what still parses as JSON gets this far.
      const text = mutateText(rng, JSON.stringify(base));
      try {
        return JSON.parse(text);
      } catch {
        return mutateJson(rng, base, KEYS, VALUES);
      }
    }
    case 1:
      return randomJson(rng, KEYS, VALUES);
    case 2: // a component swapped for another base's
      return { ...base, [pick(rng, ['normalizer', 'pre_tokenizer', 'post_processor', 'decoder', 'model'])]: pick(rng, BASES)[pick(rng, ['normalizer', 'pre_tokenizer', 'post_processor', 'decoder', 'model'])] };
    default:
      return mutateJson(rng, base, KEYS, VALUES);
  }
}

/** The largest vocabulary a model can have here: a tokenizer.json with larger ids never reaches Tokenizer.fromJson. */
const MODEL_VOCAB = 50257;

/**
 * What loadModel and then the worker do with a tokenizer.json, in their order: loadModel refuses ids beyond
 * config.json's vocab_size (which the checkpoint's wte rows bound), then the worker builds the tokenizer.
 */
function load(json: unknown): Tokenizer {
  const checked = checkTokenizerJson(json);
  const ids = tokenizerVocabSize(checked);
  if (ids !== undefined && ids > MODEL_VOCAB) throw new TunelabError('bad-model', `ids up to ${ids - 1}: refused by loadModel`);
  endOfTextId(checked);
  return Tokenizer.fromJson(checked, { name: 'tokenizer.json' });
}

/** What data validation, training and generation then do with it. */
function use(tokenizer: Tokenizer): void {
  for (const text of SAMPLES) {
    const ids = tokenizer.encode(text);
    tokenizer.decode(ids);
    tokenizer.decode(ids, { skipSpecialTokens: true });
  }
  tokenizer.decode([0, 1, tokenizer.endOfTextId, tokenizer.vocabSize, -1, 1.5, 2 ** 40]);
  tokenizer.tokenString(tokenizer.endOfTextId);
}

function checkLoaded(result: unknown): void {
  const tokenizer = result as Tokenizer;
  expect(Number.isSafeInteger(tokenizer.vocabSize) && tokenizer.vocabSize > 0, `vocabSize ${tokenizer.vocabSize}`).toBe(true);
  const id = tokenizer.endOfTextId;
  expect(Number.isSafeInteger(id) && id >= 0 && id < tokenizer.vocabSize, `endOfTextId ${JSON.stringify(id)}`).toBe(true);
}

const CASES = 2000;

describe('fuzz: tokenizer.json', () => {
  it('the four base tokenizers load and round-trip text (so the fuzzer starts from working files)', () => {
    for (const base of BASES) {
      const tokenizer = load(base);
      use(tokenizer);
      expect(tokenizer.decode(tokenizer.encode('the cat sat.')).toLowerCase().replace(/\s+/g, ' ').trim()).toContain('cat sat');
    }
  });

  it(`loading gives a tokenizer with integer ids or a bad-model TunelabError (${CASES} seeded inputs)`, async () => {
    const outcome = await fuzz<unknown>({ seed: 2202, cases: CASES, generate, parse: load, show: (input) => preview(input), check: checkLoaded });
    console.log(summary('tokenizer.json', outcome));
    expect(outcome.accepted).toBeGreaterThan(300);
    expect(outcome.refused).toBeGreaterThan(300);
    expect(outcome.refusals.size).toBeGreaterThan(10);
    expect(outcome.slowestMs).toBeLessThan(HANG_MS);
  });

  it(`a tokenizer that loads encodes and decodes text, or loading refused it (${CASES} seeded inputs)`, async () => {
    const outcome = await fuzz<unknown>({
      seed: 2203,
      cases: CASES,
      generate,
      parse: (input) => use(load(input)),
      show: (input) => preview(input),
    });
    console.log(summary('tokenizer.json in use', outcome));
    expect(outcome.accepted).toBeGreaterThan(300);
    expect(outcome.slowestMs).toBeLessThan(HANG_MS);
  });

  it('a vocabulary id that is not a number is refused, not taken as a size to allocate (seconds to minutes)', async () => {
    const base = byteLevelTokenizerJson() as { model: { vocab: Record<string, unknown> } };
    for (const id of [[20_000_000], '20000000', [[20_000_000]], { id: 20_000_000 }]) {
      const json = { ...base, model: { ...base.model, vocab: { ...base.model.vocab, extra: id } } };
      const started = performance.now();
      const outcome = await resultOrTunelabError(`model.vocab id ${JSON.stringify(id)}`, () => load(json));
      if (outcome === 'result') checkLoaded(load(json));
      expect(performance.now() - started, `model.vocab id ${JSON.stringify(id)}`).toBeLessThan(500);
    }
  });

  it('a section nested thousands deep ends in a tokenizer or a TunelabError, not a stack overflow', async () => {
    const base = byteLevelTokenizerJson();
    const paths = [['model'], ['model', 'vocab'], ['model', 'merges'], ['model', 'type'], ['added_tokens'], ['normalizer'], ['pre_tokenizer'], ['decoder'], ['post_processor']];
    await expectEachResultOrTunelabError(
      paths.flatMap((path) =>
        [false, true].map((asObject) => ({
          label: `${path.join('.')} nested 10000 deep (${asObject ? 'objects' : 'arrays'})`,
          call: () => use(load(JSON.parse(withDeepValue(base, path, 10_000, asObject)))),
        })),
      ),
    );
  });
});
