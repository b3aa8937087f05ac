// What the `tunelab` commands share: running a command (option parsing, --help, usage errors → exit 2), option
// values (numbers with a range), files (inputs, optional files, JSON objects), and for the commands that use a GPU
// its lifetime, the model directory (config.json, model.safetensors, tokenizer.json), PEFT adapter directories, and
// the progress display of a training run.

import { access, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { resolveTemplate, type ChatTemplate, type FormatChoice, type TrainOn } from '../engine/data/index.ts';
import { TunelabError } from '../engine/errors.ts';
import { GpuContext } from '../engine/gpu/context.ts';
import { nodeGpu } from '../engine/gpu/node.ts';
import { importPeftAdapter } from '../engine/interop/peft.ts';
import type { ModelConfig } from '../engine/model/config.ts';
import { Gpt2Model, type Gpt2ModelOptions } from '../engine/model/gpt2.ts';
import { loadModel, type LoadedModel, type ModelSource } from '../engine/model/load.ts';
import { LoraAdapter } from '../engine/model/lora.ts';
import { Tokenizer } from '../engine/tokenizer/index.ts';
import { describeEvent, formatDuration, type TrainEvent } from '../engine/train/metrics.ts';

// ---- running a command -------------------------------------------------------------------------------------------

/** A mistake in the command line: reported with the command's usage, exit status 2. */
export class UsageError extends Error {}

export type OptionValues = Record<string, string | boolean | string[] | undefined>;
export type ParsedTokens = NonNullable<ReturnType<typeof parseArgs>['tokens']>;

export interface CommandSpec {
  /** 'train', 'tokenizer train' …: the prefix of its messages. */
  name: string;
  usage: string;
  /** parseArgs options; --help/-h is added. */
  options: NonNullable<ParseArgsConfig['options']>;
  allowPositionals?: boolean;
  /** Other errors that are the user's command line, not a failure (e.g. a RangeError from a config check). */
  isUsageError?: (error: unknown) => boolean;
}

function usageFailure(spec: CommandSpec, message: string): number {
  process.stderr.write(`tunelab ${spec.name}: ${message}\n\n${spec.usage}`);
  return 2;
}

/**
 * Parses `args` strictly, answers --help, and runs `body`; a bad option or a UsageError thrown by `body` prints the
 * message and the usage and returns 2. Other errors propagate (main.ts prints a TunelabError and returns 1).
 */
export async function runCommand(
  spec: CommandSpec,
  args: string[],
  body: (values: OptionValues, positionals: string[], tokens: ParsedTokens) => Promise<number>,
): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      options: { ...spec.options, help: { type: 'boolean', short: 'h', default: false } },
      strict: true,
      allowPositionals: spec.allowPositionals ?? false,
      tokens: true,
    });
  } catch (error) {
    return usageFailure(spec, (error as Error).message);
  }
  if (parsed.values.help) {
    process.stdout.write(spec.usage);
    return 0;
  }
  try {
    return await body(parsed.values as OptionValues, parsed.positionals, parsed.tokens);
  } catch (error) {
    if (error instanceof UsageError || spec.isUsageError?.(error)) return usageFailure(spec, (error as Error).message);
    throw error;
  }
}

// ---- option values -----------------------------------------------------------------------------------------------

/** The number in `text` (undefined when the option was not given); a UsageError naming `--name` unless check holds. */
export function parseNumber(text: string | undefined, name: string, check: (v: number) => boolean, hint: string): number | undefined {
  if (text === undefined) return undefined;
  const value = Number(text);
  if (text.trim() === '' || !Number.isFinite(value) || !check(value)) throw new UsageError(`--${name} must be ${hint}, got '${text}'`);
  return value;
}

export const wholeAtLeast = (min: number) => (v: number) => Number.isSafeInteger(v) && v >= min;

/** A whole number ≥ min (0), or undefined when not given. */
export function parseWhole(text: string | undefined, name: string, min = 0): number | undefined {
  return parseNumber(text, name, wholeAtLeast(min), min === 0 ? 'a whole number' : `a whole number ≥ ${min}`);
}

/** A number in [0, 1), or undefined when not given. */
export function parseFraction(text: string | undefined, name: string): number | undefined {
  return parseNumber(text, name, (v) => v >= 0 && v < 1, 'a number from 0 to below 1');
}

/** A string option that must be one of `choices`. */
export function parseChoice<T extends string>(text: string | undefined, name: string, choices: readonly T[]): T | undefined {
  if (text === undefined) return undefined;
  if (!(choices as readonly string[]).includes(text)) throw new UsageError(`--${name} must be one of ${choices.join(', ')}, got '${text}'`);
  return text as T;
}

// ---- files -------------------------------------------------------------------------------------------------------

export async function exists(path: string): Promise<boolean> {
  try {
    await access(path);
    return true;
  } catch {
    return false;
  }
}

/** A file's bytes, or null when it (or its directory) does not exist. */
export async function readOptional(path: string): Promise<Uint8Array | null> {
  try {
    return new Uint8Array(await readFile(path));
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return null;
    throw error;
  }
}

/** An input file the user named (data, corpus): a TunelabError('bad-data') saying why it cannot be read. */
export async function readInput(path: string): Promise<Uint8Array> {
  try {
    return new Uint8Array(await readFile(path));
  } catch (error) {
    throw new TunelabError('bad-data', `cannot read ${path}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
  }
}

/** A JSON object file, or null when the file does not exist; anything else there is a TunelabError('bad-model'). */
export async function readJsonObject(path: string, what: string): Promise<Record<string, unknown> | null> {
  const bytes = await readOptional(path);
  if (!bytes) return null;
  try {
    const value: unknown = JSON.parse(new TextDecoder().decode(bytes));
    if (typeof value === 'object' && value !== null && !Array.isArray(value)) return value as Record<string, unknown>;
  } catch {
    // reported below
  }
  throw new TunelabError('bad-model', `${what} (${path}) is not a JSON object`);
}

/** Reads files of a directory on disk (the Node ModelSource); a missing file reads as null. */
export function directorySource(dir: string): ModelSource {
  return { description: `directory ${dir}`, read: (fileName) => readOptional(join(dir, fileName)) };
}

// ---- GPU, models and adapters ------------------------------------------------------------------------------------

let sharedGpu: GpuContext | undefined;

/**
 * Makes the GPU commands run on `gpu` and leave it alive (undefined: back to a device per command). For a host that
 * runs several commands in one process, such as the test suite: compiled pipelines are then shared between them.
 */
export function shareCliGpu(gpu: GpuContext | undefined): void {
  sharedGpu = gpu;
}

/**
 * Runs `body` with a device that is destroyed afterwards (Dawn would otherwise keep Node alive), or with the shared
 * one. `body` frees what it allocates, so a shared device ends a command as it began it.
 */
export async function withCliGpu<T>(body: (gpu: GpuContext) => Promise<T>): Promise<T> {
  if (sharedGpu) return body(sharedGpu);
  const gpu = await GpuContext.acquire(await nodeGpu());
  try {
    return await body(gpu);
  } finally {
    gpu.destroy();
  }
}

/** What a training run records about its data, so generation and evaluation render text the same way. */
export interface DataSettings {
  format: FormatChoice;
  validationFormat: FormatChoice;
  template: ChatTemplate;
  trainOn: TrainOn;
  context: number;
  packing: boolean;
  validationFraction: number;
  seed: number;
}

export const TRAINING_CONFIG_FILE = 'training_config.json';
export const ADAPTER_CONFIG_FILE = 'adapter_config.json';
export const ADAPTER_WEIGHTS_FILE = 'adapter_model.safetensors';

/** The chat template a training_config.json in `dir` records, if there is one. */
export async function recordedTemplate(dir: string): Promise<ChatTemplate | undefined> {
  const json = await readJsonObject(join(dir, TRAINING_CONFIG_FILE), TRAINING_CONFIG_FILE);
  const data = json?.data as Partial<DataSettings> | undefined;
  return data?.template ? resolveTemplate(data.template) : undefined;
}

/**
 * The model train, generate, eval and validate use when no --model is given: the pretrained base model that ships
 * with the app, found from this file (src/cli/ → the package root), so it works from any working directory.
 */
export const DEFAULT_MODEL_NAME = 'tunelab-base';
export const DEFAULT_MODEL_DIR = fileURLToPath(new URL('../../public/models/tunelab-base', import.meta.url));
/** The --model line of a command's usage. */
export const MODEL_OPTION_HELP =
  `  --model DIR                 model directory (config.json, model.safetensors, tokenizer.json)\n` +
  `                              (default: the bundled base model, public/models/${DEFAULT_MODEL_NAME} of this package)`;

/** The --model directory given, else the bundled base model, saying so on stderr (stdout may be for programs). */
export function modelDirOrDefault(given: string | undefined, command: string): string {
  if (given !== undefined) return given;
  process.stderr.write(`tunelab ${command}: no --model given: using the bundled base model ${DEFAULT_MODEL_NAME} (${DEFAULT_MODEL_DIR})\n`);
  return DEFAULT_MODEL_DIR;
}

export interface CliModel {
  loaded: LoadedModel;
  tokenizer: Tokenizer;
  model: Gpt2Model;
  /** The chat template recorded next to the model (a directory written by `tunelab train --mode full`), if any. */
  template?: ChatTemplate;
}

/**
 * Loads a model directory (config.json, model.safetensors, tokenizer.json) onto the GPU; `options` as for
 * Gpt2Model.create (--f16-weights: frozenWeights 'f16').
 */
export async function loadCliModel(gpu: GpuContext, dir: string, options: Gpt2ModelOptions = {}): Promise<CliModel> {
  const loaded = await loadModel(directorySource(dir));
  const tokenizerConfig = await readJsonObject(join(dir, 'tokenizer_config.json'), 'tokenizer_config.json');
  const tokenizer = Tokenizer.fromJson(loaded.tokenizerJson, {
    name: `${dir}/tokenizer.json`,
    ...(tokenizerConfig ? { config: tokenizerConfig } : {}),
  });
  const model = Gpt2Model.create(gpu, loaded.config, loaded.weights, options);
  return { loaded, tokenizer, model, template: await recordedTemplate(dir) };
}

/** Throws the user-facing error when `dir` is not a PEFT adapter directory (checked before any GPU work). */
export async function checkAdapterDirectory(dir: string): Promise<void> {
  if (!(await exists(join(dir, ADAPTER_CONFIG_FILE))) || !(await exists(join(dir, ADAPTER_WEIGHTS_FILE)))) {
    throw new TunelabError(
      'bad-model',
      `--adapter ${dir}: a LoRA adapter directory needs ${ADAPTER_CONFIG_FILE} and ${ADAPTER_WEIGHTS_FILE} (PEFT's layout)` +
        '; for a model trained with --mode full or selective, pass its directory as --model instead',
    );
  }
}

/**
 * Loads a PEFT LoRA adapter directory (adapter_config.json + adapter_model.safetensors) for `config` onto the GPU,
 * read by interop/peft.ts like an adapter imported in the app; `warn` hears what does not stop the import.
 */
export async function loadCliAdapter(gpu: GpuContext, config: ModelConfig, dir: string, warn: (message: string) => void): Promise<LoraAdapter> {
  await checkAdapterDirectory(dir);
  const configJson = (await readOptional(join(dir, ADAPTER_CONFIG_FILE)))!;
  const weights = (await readOptional(join(dir, ADAPTER_WEIGHTS_FILE)))!;
  let imported;
  try {
    imported = importPeftAdapter(configJson, weights, config);
  } catch (error) {
    if (error instanceof TunelabError) throw new TunelabError(error.code, `--adapter ${dir}: ${error.message}`);
    throw error;
  }
  for (const warning of imported.warnings) warn(`--adapter ${dir}: ${warning}`);
  return LoraAdapter.fromPeft(gpu, config, imported);
}

// ---- training progress ---------------------------------------------------------------------------------------------

/**
 * A training run's events: JSON lines on stdout with --json; else live progress on stderr, a bar redrawn in place on
 * a terminal, or a line per evaluation and every `stepLines`-th share of the steps otherwise (10 → every ~10%).
 */
export function progressReporter(
  command: string,
  json: boolean,
  stepLines = 10,
): { onEvent: (e: TrainEvent) => void; finish: () => void } {
  const tty = process.stderr.isTTY === true;
  let lastVal = '';
  let barShown = false;
  const clearBar = () => {
    if (barShown) process.stderr.write('\r\x1b[2K');
    barShown = false;
  };
  return {
    onEvent(e) {
      if (json) {
        process.stdout.write(JSON.stringify(e) + '\n');
        return;
      }
      if (e.type === 'eval') {
        lastVal = ` · val ${e.loss.toFixed(3)} ppl ${e.perplexity.toFixed(2)}`;
        clearBar();
        process.stderr.write(`tunelab ${command}: ${describeEvent(e)}\n`);
      } else if (e.type === 'step') {
        if (tty) {
          const width = 24;
          const filled = Math.round((width * e.step) / e.totalSteps);
          const bar = '█'.repeat(filled) + '░'.repeat(width - filled);
          const line =
            `${bar} ${e.step}/${e.totalSteps} · epoch ${e.epoch.toFixed(2)} · loss ${e.loss.toFixed(3)}${lastVal} · ` +
            `${Math.round(e.tokensPerSecond)} tok/s · ETA ${formatDuration(e.etaMs)}`;
          process.stderr.write(`\r\x1b[2K${line.slice(0, (process.stderr.columns ?? 120) - 1)}`);
          barShown = true;
        } else if (e.step === 1 || e.step === e.totalSteps || e.step % Math.max(1, Math.round(e.totalSteps / stepLines)) === 0) {
          process.stderr.write(`tunelab ${command}: ${describeEvent(e)}\n`);
        }
      } else {
        clearBar();
        process.stderr.write(`tunelab ${command}: ${describeEvent(e)}\n`);
      }
    },
    finish: clearBar,
  };
}
