// `tunelab init`: writes a fresh, seeded, randomly initialized GPT-2 model directory (config.json,
// model.safetensors, tokenizer.json, MODEL_CARD.md), so learners can train from scratch and tests can make tiny
// models. Also home of `directorySource`, the Node ModelSource that reads a model directory from disk.

import { mkdir, readFile, writeFile, access } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { TunelabError } from '../engine/errors.ts';
import { TINY, validateModelConfig, type ModelConfig } from '../engine/model/config.ts';
import { createModelDirectory } from '../engine/model/init.ts';
import { checkTokenizerJson, endOfTextId, tokenizerVocabSize, type ModelSource, type TokenizerJson } from '../engine/model/load.ts';
import { byteLevelTokenizerJson } from '../engine/tokenizer/byte-level.ts';

/** Reads files of a directory on disk; a missing file reads as null. */
export function directorySource(dir: string): ModelSource {
  return {
    description: `directory ${dir}`,
    async read(fileName) {
      try {
        return new Uint8Array(await readFile(join(dir, fileName)));
      } catch (error) {
        const code = (error as NodeJS.ErrnoException).code;
        if (code === 'ENOENT' || code === 'ENOTDIR') return null;
        throw error;
      }
    },
  };
}

const USAGE = `usage: tunelab init --out DIR [options]

Writes a new GPT-2 model with random weights (GPT-2's initialization) to DIR.

options:
  --out DIR              where to write config.json, model.safetensors, tokenizer.json, MODEL_CARD.md
  --layers N             transformer blocks (default ${TINY.nLayer})
  --dim C                embedding width, a multiple of --heads (default ${TINY.nEmbd})
  --heads NH             attention heads (default ${TINY.nHead})
  --context T            longest sequence in tokens (default ${TINY.nPositions})
  --vocab V              vocabulary size, at least the tokenizer's (default: the tokenizer's)
  --tokenizer bytes|DIR  byte-level tokenizer (256 bytes + <|endoftext|>), or copy DIR/tokenizer.json (default bytes)
  --seed S               random seed (default 0); same seed, same weights
  --dtype f32|f16        storage type of model.safetensors (default f32)
  --force                overwrite files already in DIR
`;

function integerOption(name: string, value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!/^\d+$/.test(value.trim()) || !Number.isSafeInteger(n)) {
    throw new UsageError(`--${name} must be a whole number, got '${value}'`);
  }
  return n;
}

class UsageError extends Error {}

async function exists(path: string): Promise<boolean> {
  try {
    await access(path);
    return true;
  } catch {
    return false;
  }
}

interface TokenizerChoice {
  json: TokenizerJson;
  description: string;
  vocabSize: number;
  eosTokenId: number;
  warnings: string[];
}

async function chooseTokenizer(spec: string): Promise<TokenizerChoice> {
  if (spec === 'bytes') {
    const json = checkTokenizerJson(byteLevelTokenizerJson(), 'the byte-level tokenizer');
    return {
      json,
      description: 'byte-level (256 bytes + <|endoftext|>)',
      vocabSize: tokenizerVocabSize(json)!,
      eosTokenId: endOfTextId(json)!,
      warnings: [],
    };
  }
  const source = directorySource(spec);
  const bytes = (await source.read('tokenizer.json')) ?? (spec.endsWith('tokenizer.json') ? await readFile(spec).catch(() => null) : null);
  if (!bytes) {
    throw new TunelabError('bad-model', `--tokenizer ${spec}: no tokenizer.json there (give 'bytes' or a model directory)`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(new TextDecoder().decode(bytes));
  } catch (error) {
    throw new TunelabError('bad-model', `--tokenizer ${spec}: tokenizer.json is not valid JSON (${(error as Error).message})`);
  }
  const json = checkTokenizerJson(parsed, `${spec}/tokenizer.json`);
  const vocabSize = tokenizerVocabSize(json);
  if (vocabSize === undefined) {
    throw new TunelabError('bad-model', `--tokenizer ${spec}: tokenizer.json has no vocabulary Tunelab can size; pass --vocab`);
  }
  const warnings: string[] = [];
  let eos = endOfTextId(json);
  if (eos === undefined) {
    eos = vocabSize - 1;
    warnings.push(`tokenizer.json has no <|endoftext|> or other special token; using id ${eos} as end of text`);
  }
  return { json, description: `copied from ${spec}`, vocabSize, eosTokenId: eos, warnings };
}

export async function init(args: string[]): Promise<number> {
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({
      args,
      options: {
        out: { type: 'string' },
        layers: { type: 'string' },
        dim: { type: 'string' },
        heads: { type: 'string' },
        context: { type: 'string' },
        vocab: { type: 'string' },
        tokenizer: { type: 'string', default: 'bytes' },
        seed: { type: 'string' },
        dtype: { type: 'string', default: 'f32' },
        force: { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (error) {
    process.stderr.write(`tunelab init: ${(error as Error).message}\n\n${USAGE}`);
    return 2;
  }
  if (values.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  try {
    return await runInit(values, args);
  } catch (error) {
    if (error instanceof UsageError) {
      process.stderr.write(`tunelab init: ${error.message}\n\n${USAGE}`);
      return 2;
    }
    throw error;
  }
}

async function runInit(values: Record<string, string | boolean | undefined>, args: string[]): Promise<number> {
  const out = values.out as string | undefined;
  if (!out) throw new UsageError('--out DIR is required');
  const dtype = values.dtype as string;
  if (dtype !== 'f32' && dtype !== 'f16') throw new UsageError(`--dtype must be f32 or f16, got '${dtype}'`);
  const tokenizer = await chooseTokenizer(values.tokenizer as string);
  const vocabSize = integerOption('vocab', values.vocab as string | undefined, tokenizer.vocabSize);
  if (vocabSize < tokenizer.vocabSize) {
    throw new UsageError(`--vocab ${vocabSize} is smaller than the tokenizer's vocabulary (${tokenizer.vocabSize})`);
  }
  const config: ModelConfig = {
    ...TINY,
    nLayer: integerOption('layers', values.layers as string | undefined, TINY.nLayer),
    nEmbd: integerOption('dim', values.dim as string | undefined, TINY.nEmbd),
    nHead: integerOption('heads', values.heads as string | undefined, TINY.nHead),
    nPositions: integerOption('context', values.context as string | undefined, TINY.nPositions),
    vocabSize,
    bosTokenId: tokenizer.eosTokenId,
    eosTokenId: tokenizer.eosTokenId,
  };
  if (config.nHead > 0 && config.nEmbd % config.nHead !== 0) {
    throw new UsageError(`--dim ${config.nEmbd} must be a multiple of --heads ${config.nHead}`);
  }
  try {
    validateModelConfig(config);
  } catch (error) {
    if (error instanceof TunelabError) throw new UsageError(error.message.replace(/^config\.json: /, ''));
    throw error;
  }
  const seed = integerOption('seed', values.seed as string | undefined, 0);

  const directory = createModelDirectory({
    config,
    seed,
    dtype,
    tokenizerJson: tokenizer.json,
    tokenizerDescription: tokenizer.description,
    command: ['tunelab init', ...args].join(' '),
  });

  const outDir = resolve(out);
  await mkdir(outDir, { recursive: true });
  if (!values.force) {
    for (const name of Object.keys(directory.files)) {
      if (await exists(join(outDir, name))) {
        throw new TunelabError('bad-data', `${join(out, name)} already exists; pass --force to overwrite it`);
      }
    }
  }
  for (const [name, bytes] of Object.entries(directory.files)) await writeFile(join(outDir, name), bytes);
  for (const warning of tokenizer.warnings) process.stderr.write(`tunelab init: warning: ${warning}\n`);
  process.stderr.write(
    `tunelab init: wrote ${out} (${directory.parameters.layout.parameterCount.toLocaleString('en-US')} parameters)\n`,
  );
  const summary = {
    out: outDir,
    parameters: directory.parameters.layout.parameterCount,
    config: {
      layers: config.nLayer,
      dim: config.nEmbd,
      heads: config.nHead,
      context: config.nPositions,
      vocab: config.vocabSize,
      eosTokenId: config.eosTokenId,
    },
    seed,
    dtype,
    files: Object.keys(directory.files),
  };
  process.stdout.write(JSON.stringify(summary) + '\n');
  return 0;
}
