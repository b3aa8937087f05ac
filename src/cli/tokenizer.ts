// `tunelab tokenizer train`: trains a byte-level BPE tokenizer (GPT-2's scheme, engine/tokenizer/bpe-train.ts) on text
// files and writes a Hugging Face tokenizer.json that `tunelab init --tokenizer FILE` and every tokenizers library read.
// Prints a JSON summary on stdout (sizes, time, bytes per token on --validation text); progress goes to stderr.
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { TunelabError } from '../engine/errors.ts';
import { BpeWordCounter, bpeTokenizerJson, trainBpe } from '../engine/tokenizer/bpe-train.ts';
import { END_OF_TEXT, Tokenizer } from '../engine/tokenizer/index.ts';
import { exists, parseWhole, readInput, runCommand, UsageError, type OptionValues, type ParsedTokens } from './common.ts';

/** The vocabulary of the bundled model's tokenizer; corpus/TOKENIZER.md says why. */
export const DEFAULT_VOCAB_SIZE = 8192;

const USAGE = `usage: tunelab tokenizer train --corpus FILE... --out tokenizer.json [options]

Trains a byte-level BPE tokenizer (GPT-2's bytes-to-characters mapping and word-splitting pattern) and writes a
Hugging Face tokenizer.json with ${END_OF_TEXT} as its special end-of-text token.

options:
  --corpus FILE...       UTF-8 text files to learn from (.gz files are read compressed); ${END_OF_TEXT} in the text
                         separates documents and is never split or merged
  --vocab N              vocabulary size: 256 bytes + ${END_OF_TEXT} + merged tokens (default ${DEFAULT_VOCAB_SIZE})
  --out FILE             where to write tokenizer.json
  --min-frequency N      never merge a pair seen fewer than N times (default 2)
  --validation FILE...   text to measure bytes per token on, after training (held-out text, not the corpus)
  --force                overwrite --out if it exists
`;

const OPTIONS = {
  corpus: { type: 'string', multiple: true },
  vocab: { type: 'string' },
  out: { type: 'string' },
  'min-frequency': { type: 'string' },
  validation: { type: 'string', multiple: true },
  force: { type: 'boolean', default: false },
} as const;

export async function tokenizer(args: string[]): Promise<number> {
  const [action, ...rest] = args;
  const spec = { name: 'tokenizer', usage: USAGE, options: OPTIONS, allowPositionals: true };
  if (action !== 'train') {
    // `tunelab tokenizer --help` answers; anything else is a missing or unknown action.
    return runCommand(spec, action === 'help' ? ['--help'] : args, async () => {
      throw new UsageError(action ? `unknown action '${action}'` : 'give an action: train');
    });
  }
  return runCommand(spec, rest, (values, _positionals, tokens) => train(values, tokens));
}

async function train(values: OptionValues, tokens: ParsedTokens): Promise<number> {
  // `--corpus a.txt b.txt --validation c.txt d.txt`: a bare file name belongs to the list option before it, so that
  // held-out text can never slip into the corpus.
  const lists: Record<'corpus' | 'validation', string[]> = { corpus: [], validation: [] };
  let openList: 'corpus' | 'validation' | null = null;
  for (const token of tokens) {
    if (token.kind === 'option') {
      openList = token.name === 'corpus' || token.name === 'validation' ? token.name : null;
      if (openList && token.value !== undefined) lists[openList].push(token.value);
    } else if (token.kind === 'positional') {
      if (!openList) throw new UsageError(`unexpected argument '${token.value}' (files follow --corpus or --validation)`);
      lists[openList].push(token.value);
    }
  }
  const corpusFiles = lists.corpus;
  if (corpusFiles.length === 0) throw new UsageError('give the text to learn from with --corpus FILE...');
  const out = values.out as string | undefined;
  if (!out) throw new UsageError('--out FILE is required');
  const vocabSize = parseWhole(values.vocab as string | undefined, 'vocab') ?? DEFAULT_VOCAB_SIZE;
  const minFrequency = parseWhole(values['min-frequency'] as string | undefined, 'min-frequency') ?? 2;
  if (minFrequency < 1) throw new UsageError('--min-frequency must be at least 1');
  if (vocabSize < 257) throw new UsageError(`--vocab must be at least 257 (256 bytes + ${END_OF_TEXT}), got ${vocabSize}`);
  const outPath = resolve(out);
  if (!values.force && (await exists(outPath))) {
    throw new TunelabError('bad-data', `${out} already exists; pass --force to overwrite it`);
  }

  const started = performance.now();
  const counter = new BpeWordCounter([END_OF_TEXT]);
  for (const file of corpusFiles) counter.add(await readText(file));
  const counted = performance.now();
  if (counter.words === 0) throw new TunelabError('bad-data', `the corpus (${corpusFiles.join(', ')}) has no text`);
  process.stderr.write(
    `tunelab tokenizer: ${counter.words.toLocaleString('en-US')} words (${counter.counts.size.toLocaleString('en-US')} ` +
      `distinct) in ${((counted - started) / 1000).toFixed(1)} s; merging to ${vocabSize} tokens\n`,
  );
  const model = trainBpe(counter, {
    vocabSize,
    minFrequency,
    onProgress: (done, wanted) => {
      if (done % 2048 === 0 && done > 0) process.stderr.write(`tunelab tokenizer: ${done}/${wanted} new tokens\n`);
    },
  });
  const trained = performance.now();
  const json = bpeTokenizerJson(model);
  if (model.stats.stoppedEarly) {
    process.stderr.write(
      `tunelab tokenizer: warning: no pair occurs ${minFrequency}+ times any more; stopped at ${model.tokens.length} ` +
        `tokens instead of ${vocabSize} (more text, or a smaller --vocab or --min-frequency)\n`,
    );
  }

  // Loading it back through the same library the engine uses proves the file is usable before anyone relies on it.
  const loaded = Tokenizer.fromJson(json, { name: out });
  const validation: Record<string, number> = {};
  for (const file of lists.validation) {
    validation[file] = bytesPerToken(loaded, await readText(file));
  }

  await mkdir(dirname(outPath), { recursive: true });
  await writeFile(outPath, JSON.stringify(json, null, 2) + '\n');
  process.stderr.write(`tunelab tokenizer: wrote ${out} (${model.tokens.length} tokens, ${model.merges.length} merges)\n`);
  const summary = {
    out: outPath,
    vocabSize: loaded.vocabSize,
    endOfTextId: loaded.endOfTextId,
    merges: model.merges.length,
    corpus: corpusFiles,
    words: model.stats.words,
    distinctWords: model.stats.distinctWords,
    bytes: model.stats.bytes,
    lastMergeCount: model.stats.lastMergeCount,
    stoppedEarly: model.stats.stoppedEarly,
    seconds: { count: round((counted - started) / 1000), merge: round((trained - counted) / 1000) },
    bytesPerToken: validation,
  };
  process.stdout.write(JSON.stringify(summary) + '\n');
  return 0;
}

/** UTF-8 bytes per token over the documents of `text` (end-of-text markers neither counted nor encoded). */
function bytesPerToken(tok: Tokenizer, text: string): number {
  let bytes = 0;
  let tokens = 0;
  const encoder = new TextEncoder();
  for (const document of text.split(END_OF_TEXT)) {
    if (document.length === 0) continue;
    bytes += encoder.encode(document).length;
    tokens += tok.encode(document).length;
  }
  return tokens === 0 ? 0 : round(bytes / tokens);
}

async function readText(file: string): Promise<string> {
  let bytes = await readInput(file);
  if (file.endsWith('.gz')) {
    try {
      bytes = gunzipSync(bytes);
    } catch (error) {
      throw new TunelabError('bad-data', `${file} is not gzip data: ${(error as Error).message}`);
    }
  }
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw new TunelabError('bad-data', `${file} is not UTF-8 text`);
  }
}

function round(x: number): number {
  return Math.round(x * 1000) / 1000;
}
