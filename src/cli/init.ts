// `tunelab init`: writes a fresh, seeded, randomly initialized GPT-2 model directory (config.json,
// model.safetensors, tokenizer.json, MODEL_CARD.md), so learners can train from scratch and tests can make tiny
// models.

import { mkdir, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { TunelabError } from '../engine/errors.ts';
import { TINY, validateModelConfig, type ModelConfig } from '../engine/model/config.ts';
import { createModelDirectory } from '../engine/model/init.ts';
import { checkTokenizerJson, endOfTextId, tokenizerVocabSize, type TokenizerJson } from '../engine/model/load.ts';
import { byteLevelTokenizerJson } from '../engine/tokenizer/byte-level.ts';
import { directorySource, exists, parseChoice, parseWhole, readOptional, runCommand, UsageError, type OptionValues } from './common.ts';

// The Node ModelSource for a model directory lives with the other shared CLI helpers; init's tests import it here.
export { directorySource } from './common.ts';

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
  const bytes = (await source.read('tokenizer.json')) ?? (spec.endsWith('tokenizer.json') ? await readOptional(spec) : null);
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

const OPTIONS = {
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
} as const;

export function init(args: string[]): Promise<number> {
  return runCommand({ name: 'init', usage: USAGE, options: OPTIONS }, args, (values) => runInit(values, args));
}

async function runInit(values: OptionValues, args: string[]): Promise<number> {
  const out = values.out as string | undefined;
  if (!out) throw new UsageError('--out DIR is required');
  const dtype = parseChoice(values.dtype as string, 'dtype', ['f32', 'f16'] as const)!;
  const tokenizer = await chooseTokenizer(values.tokenizer as string);
  const whole = (name: string, fallback: number) => parseWhole(values[name] as string | undefined, name) ?? fallback;
  const vocabSize = whole('vocab', tokenizer.vocabSize);
  if (vocabSize < tokenizer.vocabSize) {
    throw new UsageError(`--vocab ${vocabSize} is smaller than the tokenizer's vocabulary (${tokenizer.vocabSize})`);
  }
  const config: ModelConfig = {
    ...TINY,
    nLayer: whole('layers', TINY.nLayer),
    nEmbd: whole('dim', TINY.nEmbd),
    nHead: whole('heads', TINY.nHead),
    nPositions: whole('context', TINY.nPositions),
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
  const seed = whole('seed', 0);

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
