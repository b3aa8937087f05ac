// The committed corpus (corpus/*.txt.gz, built by scripts/corpus/build.mjs) and the bundled tokenizer trained on it:
// the split holds, the cleaning held, the manifest's figures are the files' figures, and corpus/tokenizer.json is
// exactly what the trainer makes from corpus/train.txt.gz, with the bytes per token that TOKENIZER.md states.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { bpeTokenizerJson, trainBpe } from '../../src/engine/tokenizer/bpe-train.ts';
import { END_OF_TEXT, Tokenizer } from '../../src/engine/tokenizer/index.ts';
import { readCorpusFile } from './helpers.ts';

interface Part {
  documents: number;
  characters: number;
  bytes: number;
}
interface Manifest {
  sources: { id: string; train: Part; validation: Part }[];
}

const manifest = JSON.parse(readFileSync(new URL('../../corpus/manifest.json', import.meta.url), 'utf8')) as Manifest;
const train = readCorpusFile('train.txt.gz');
const validation = readCorpusFile('validation.txt.gz');
const documentsOf = (text: string) => {
  expect(text.endsWith(END_OF_TEXT)).toBe(true);
  return text.slice(0, -END_OF_TEXT.length).split(END_OF_TEXT);
};
const trainDocuments = documentsOf(train);
const validationDocuments = documentsOf(validation);
const tokenizerJson = JSON.parse(readFileSync(new URL('../../corpus/tokenizer.json', import.meta.url), 'utf8'));

describe('corpus', () => {
  it('has the documents, characters and bytes its manifest records, per part', () => {
    for (const [name, documents] of [['train', trainDocuments], ['validation', validationDocuments]] as const) {
      const parts = manifest.sources.map((s) => s[name]);
      expect(documents).toHaveLength(parts.reduce((n, p) => n + p.documents, 0));
      const bytes = documents.reduce((n, d) => n + Buffer.byteLength(d, 'utf8'), 0);
      expect(bytes).toBe(parts.reduce((n, p) => n + p.bytes, 0));
      const characters = documents.reduce((n, d) => n + [...d].length, 0);
      expect(characters).toBe(parts.reduce((n, p) => n + p.characters, 0));
    }
    // Roughly one document in twenty is held out.
    expect(validationDocuments.length / (trainDocuments.length + validationDocuments.length)).toBeCloseTo(0.05, 1);
  });

  it('keeps validation documents out of training', () => {
    const seen = new Set(trainDocuments);
    expect(validationDocuments.filter((d) => seen.has(d))).toEqual([]);
    // Not even a long stretch of one: the first 300 characters of each held-out document are absent from train.
    for (const document of validationDocuments) expect(train.includes(document.slice(0, 300))).toBe(false);
  });

  it('is clean: no empty documents, LF only, no control characters, curly quotes, runs of spaces or licence text', () => {
    for (const document of [...trainDocuments, ...validationDocuments]) {
      expect(document.length).toBeGreaterThan(200);
      expect(document).toBe(document.trim());
      expect(document).toBe(document.normalize('NFC'));
    }
    for (const text of [train, validation]) {
      expect(text).not.toMatch(/[\u0000-\u0009\u000B-\u001F\u007F-\u009F\u2018\u2019\u201C\u201D\u00A0]/);
      expect(text).not.toMatch(/ {2}|^ | $|\n{3}/m);
      expect(text).not.toMatch(/Gutenberg|Apache License|Creative Commons|\((?:Applause|Laughter)\.?\)|\[(?:Applause|Laughter)\]/i);
    }
    expect(trainDocuments[0]).toMatch(/^ETYMOLOGY\./);
    expect(train).toContain('CHAPTER 1. Loomings.\n\nCall me Ishmael.');
  });
});

describe('corpus/tokenizer.json', () => {
  const tok = Tokenizer.fromJson(tokenizerJson, { name: 'corpus/tokenizer.json' });

  it('has 8192 ids with <|endoftext|> at 256, encoded as one token', () => {
    expect(tok.vocabSize).toBe(8192);
    expect(tok.endOfTextId).toBe(256);
    expect(tok.encode(`The end.${END_OF_TEXT}Call me`).filter((id) => id === 256)).toHaveLength(1);
    // Frequent words of the corpus are single tokens.
    for (const word of [' the', ' whale', ' Congress', ' government', ' Ahab']) expect(tok.encode(word)).toHaveLength(1);
  });

  it('round-trips the validation text and reaches the 4.81 bytes per token TOKENIZER.md states', () => {
    let bytes = 0;
    let tokens = 0;
    for (const document of validationDocuments) {
      const ids = tok.encode(document);
      expect(tok.decode(ids)).toBe(document);
      bytes += Buffer.byteLength(document, 'utf8');
      tokens += ids.length;
    }
    expect(bytes / tokens).toBeCloseTo(4.813, 2);
  });

  it('is exactly what the trainer makes from corpus/train.txt.gz (vocabulary 8192)', () => {
    const model = trainBpe([train], { vocabSize: 8192 });
    expect(bpeTokenizerJson(model)).toEqual(tokenizerJson);
  });
});
