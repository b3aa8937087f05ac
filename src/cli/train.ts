// `tunelab train`: fine-tunes a model directory on a data file with the engine's trainer and writes the result to
// --out: a PEFT adapter (adapter_config.json + adapter_model.safetensors) for LoRA, or a complete model directory for
// selective/full training; metrics.jsonl (one event per line); training_config.json (everything needed to repeat
// the run, and the chat template generate/eval must use); checkpoint/ (resume with --resume OUT/checkpoint).
// Progress is a bar on a terminal, log lines otherwise, or JSON lines on stdout with --json.
//
// Also home of the model and adapter file helpers that `tunelab generate` and `tunelab eval` share.

import { mkdir, readFile, writeFile, access } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { FORMAT_CHOICES, formatIssue, prepareDataset, resolveTemplate, type ChatTemplate, type DatasetOptions, type FormatChoice, type TrainOn } from '../engine/data/index.ts';
import { TunelabError } from '../engine/errors.ts';
import { GpuContext } from '../engine/gpu/context.ts';
import { nodeGpu } from '../engine/gpu/node.ts';
import { parseSafetensors, readTensorF32, writeSafetensors } from '../engine/io/safetensors.ts';
import { modelConfigToJson, type ModelConfig } from '../engine/model/config.ts';
import { Gpt2Model } from '../engine/model/gpt2.ts';
import { loadModel, type LoadedModel } from '../engine/model/load.ts';
import { LORA_TARGETS, LoraAdapter, loraConfigFromPeft, peftAdapterConfig, type LayerSelection, type LoraTarget } from '../engine/model/lora.ts';
import { parameterTensors } from '../engine/model/weights.ts';
import { Tokenizer } from '../engine/tokenizer/index.ts';
import { CHECKPOINT_FILES, decodeCheckpoint, encodeCheckpoint, type TrainingCheckpoint } from '../engine/train/checkpoint.ts';
import { describeEvent, formatDuration, type TrainEvent } from '../engine/train/metrics.ts';
import { DEFAULT_TRAIN_CONFIG, Trainer, type TrainConfig } from '../engine/train/trainer.ts';
import { directorySource } from './init.ts';

// ---- shared by train, generate and eval --------------------------------------------------------------------------

export class UsageError extends Error {}

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

export interface CliModel {
  loaded: LoadedModel;
  tokenizer: Tokenizer;
  model: Gpt2Model;
  /** The chat template recorded next to the model (a directory written by `tunelab train --mode full`), if any. */
  template?: ChatTemplate;
}

async function readOptional(path: string): Promise<Uint8Array | null> {
  try {
    return new Uint8Array(await readFile(path));
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return null;
    throw error;
  }
}

async function readJsonObject(path: string, what: string): Promise<Record<string, unknown> | null> {
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

/** The chat template a training_config.json in `dir` records, if there is one. */
export async function recordedTemplate(dir: string): Promise<ChatTemplate | undefined> {
  const json = await readJsonObject(join(dir, TRAINING_CONFIG_FILE), TRAINING_CONFIG_FILE);
  const data = json?.data as Partial<DataSettings> | undefined;
  return data?.template ? resolveTemplate(data.template) : undefined;
}

/** Loads a model directory (config.json, model.safetensors, tokenizer.json) onto the GPU. */
export async function loadCliModel(gpu: GpuContext, dir: string): Promise<CliModel> {
  const loaded = await loadModel(directorySource(dir));
  const tokenizerConfig = await readJsonObject(join(dir, 'tokenizer_config.json'), 'tokenizer_config.json');
  const tokenizer = Tokenizer.fromJson(loaded.tokenizerJson, {
    name: `${dir}/tokenizer.json`,
    ...(tokenizerConfig ? { config: tokenizerConfig } : {}),
  });
  const model = Gpt2Model.create(gpu, loaded.config, loaded.weights);
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

/** Loads a PEFT LoRA adapter directory (adapter_config.json + adapter_model.safetensors) for `config`. */
export async function loadCliAdapter(gpu: GpuContext, config: ModelConfig, dir: string): Promise<LoraAdapter> {
  await checkAdapterDirectory(dir);
  const configJson = (await readJsonObject(join(dir, ADAPTER_CONFIG_FILE), ADAPTER_CONFIG_FILE))!;
  const weights = (await readOptional(join(dir, ADAPTER_WEIGHTS_FILE)))!;
  let file;
  try {
    file = parseSafetensors(weights);
  } catch (error) {
    throw new TunelabError('bad-model', `--adapter ${dir}: ${ADAPTER_WEIGHTS_FILE}: ${(error as Error).message}`);
  }
  const names = [...file.tensors.keys()];
  const lora = loraConfigFromPeft(config, configJson, names);
  const tensors = new Map(names.map((name) => [name, readTensorF32(file, name)]));
  return LoraAdapter.create(gpu, config, lora, { tensors });
}

/** Runs `body` with a device that is destroyed afterwards (Dawn would otherwise keep Node alive). */
export async function withCliGpu<T>(body: (gpu: GpuContext) => Promise<T>): Promise<T> {
  const gpu = await GpuContext.acquire(await nodeGpu());
  try {
    return await body(gpu);
  } finally {
    gpu.destroy();
  }
}

export function parseNumber(text: string | undefined, name: string, check: (v: number) => boolean, hint: string): number | undefined {
  if (text === undefined) return undefined;
  const value = Number(text);
  if (text.trim() === '' || !Number.isFinite(value) || !check(value)) throw new UsageError(`--${name} must be ${hint}, got '${text}'`);
  return value;
}

export const wholeAtLeast = (min: number) => (v: number) => Number.isSafeInteger(v) && v >= min;

// ---- tunelab train ------------------------------------------------------------------------------------------------

const d = DEFAULT_TRAIN_CONFIG;
const USAGE = `usage: tunelab train --model DIR --data FILE --out DIR [options]

Fine-tunes the model in DIR on FILE and writes the adapter (or weights), metrics.jsonl, ${TRAINING_CONFIG_FILE} and
checkpoint/ to --out.

data:
  --data FILE                 training data (JSONL chat or prompt/completion, JSON, CSV/TSV, plain text)
  --validation FILE           validation data (default: hold out --validation-fraction of FILE)
  --format F                  ${FORMAT_CHOICES.join('|')} (default auto)
  --validation-fraction X     share held out when there is no --validation file (default 0.1)
  --context N                 longest row in tokens (default: the model's context)
  --packing                   pack several examples per row
  --train-on completions|all  which tokens count for the loss (default completions)
  --raw-completions           prompt/completion examples are joined as they are (the data carries its own
                              separators, OpenAI's legacy format) instead of the User:/Assistant: chat template
  --data-seed N               seed of the split and the data order (default: --seed)
training:
  --mode lora|selective|full  what trains (default ${d.mode})
  --last-blocks N             blocks that train with --mode selective (default ${d.lastBlocks})
  --lr X                      peak learning rate (default ${d.learningRate})
  --schedule S                constant|linear|cosine (default ${d.schedule})
  --warmup-steps N            (default ${d.warmupSteps})      --warmup-ratio X   (default ${d.warmupRatio})
  --min-lr-ratio X            decay to lr·X instead of 0 (default ${d.minLrRatio})
  --epochs X                  passes over the data (default ${d.epochs})
  --max-steps N               optimizer steps; wins over --epochs (default: from --epochs)
  --batch-size N              rows per micro-batch (default ${d.batchSize})
  --grad-accum N              micro-batches per optimizer step (default ${d.gradientAccumulationSteps})
  --max-grad-norm X           gradient clipping, 0 = off (default ${d.maxGradNorm})
  --weight-decay X            AdamW weight decay (default ${d.weightDecay})
  --beta1 X --beta2 X --eps X AdamW (default ${d.beta1}, ${d.beta2}, ${d.eps})
  --eval-every N              validation every N steps and at the end, 0 = only at the end (default ${d.evalEvery})
  --eval-batches N            validation batches per evaluation, 0 = all (default ${d.evalBatches})
  --no-eval-at-start          skip the evaluation before the first step
  --seed N                    LoRA initialization and dropout; data order unless --data-seed (default ${d.seed})
LoRA:
  --lora-rank N (default 8)   --lora-alpha X (default 16)   --lora-dropout X (default 0)   --rslora
  --lora-targets LIST         comma-separated ${LORA_TARGETS.join(',')} (default c_attn)
  --lora-layers L             all | last:N | comma-separated block indices (default all)
output:
  --out DIR                   where to write the results
  --save-every N              also checkpoint every N steps (default: only at the end)
  --resume DIR                continue from a checkpoint directory (e.g. OUT/checkpoint); flags given override it
  --json                      JSON lines (every event) on stdout instead of a progress display
  --force                     overwrite results already in --out
`;

const OPTIONS = {
  model: { type: 'string' },
  data: { type: 'string' },
  validation: { type: 'string' },
  format: { type: 'string' },
  'validation-fraction': { type: 'string' },
  context: { type: 'string' },
  packing: { type: 'boolean' },
  'train-on': { type: 'string' },
  'raw-completions': { type: 'boolean' },
  'data-seed': { type: 'string' },
  mode: { type: 'string' },
  'last-blocks': { type: 'string' },
  lr: { type: 'string' },
  schedule: { type: 'string' },
  'warmup-steps': { type: 'string' },
  'warmup-ratio': { type: 'string' },
  'min-lr-ratio': { type: 'string' },
  epochs: { type: 'string' },
  'max-steps': { type: 'string' },
  'batch-size': { type: 'string' },
  'grad-accum': { type: 'string' },
  'max-grad-norm': { type: 'string' },
  'weight-decay': { type: 'string' },
  beta1: { type: 'string' },
  beta2: { type: 'string' },
  eps: { type: 'string' },
  'eval-every': { type: 'string' },
  'eval-batches': { type: 'string' },
  'no-eval-at-start': { type: 'boolean' },
  seed: { type: 'string' },
  'lora-rank': { type: 'string' },
  'lora-alpha': { type: 'string' },
  'lora-dropout': { type: 'string' },
  'lora-targets': { type: 'string' },
  'lora-layers': { type: 'string' },
  rslora: { type: 'boolean' },
  out: { type: 'string' },
  'save-every': { type: 'string' },
  resume: { type: 'string' },
  json: { type: 'boolean', default: false },
  force: { type: 'boolean', default: false },
  help: { type: 'boolean', short: 'h', default: false },
} as const;

type Values = Record<string, string | boolean | undefined>;

const positive = (v: number) => v > 0;
const nonNegative = (v: number) => v >= 0;
const unit = (v: number) => v >= 0 && v < 1;

/** Hyperparameters given on the command line (only those given, so a resumed run keeps the rest). */
function trainOverrides(values: Values): Partial<TrainConfig> {
  const s = (name: string) => values[name] as string | undefined;
  const o: Partial<TrainConfig> = {};
  const set = <K extends keyof TrainConfig>(key: K, value: TrainConfig[K] | undefined) => {
    if (value !== undefined) o[key] = value;
  };
  const mode = s('mode');
  if (mode !== undefined && !['lora', 'selective', 'full'].includes(mode)) throw new UsageError(`--mode must be lora, selective or full, got '${mode}'`);
  set('mode', mode as TrainConfig['mode'] | undefined);
  set('lastBlocks', parseNumber(s('last-blocks'), 'last-blocks', wholeAtLeast(0), 'a whole number'));
  set('learningRate', parseNumber(s('lr'), 'lr', nonNegative, 'a number ≥ 0'));
  const schedule = s('schedule');
  if (schedule !== undefined && !['constant', 'linear', 'cosine'].includes(schedule)) {
    throw new UsageError(`--schedule must be constant, linear or cosine, got '${schedule}'`);
  }
  set('schedule', schedule as TrainConfig['schedule'] | undefined);
  set('warmupSteps', parseNumber(s('warmup-steps'), 'warmup-steps', wholeAtLeast(0), 'a whole number'));
  set('warmupRatio', parseNumber(s('warmup-ratio'), 'warmup-ratio', (v) => v >= 0 && v <= 1, 'a number from 0 to 1'));
  set('minLrRatio', parseNumber(s('min-lr-ratio'), 'min-lr-ratio', (v) => v >= 0 && v <= 1, 'a number from 0 to 1'));
  set('epochs', parseNumber(s('epochs'), 'epochs', positive, 'a positive number'));
  set('maxSteps', parseNumber(s('max-steps'), 'max-steps', wholeAtLeast(1), 'a whole number ≥ 1'));
  set('batchSize', parseNumber(s('batch-size'), 'batch-size', wholeAtLeast(1), 'a whole number ≥ 1'));
  set('gradientAccumulationSteps', parseNumber(s('grad-accum'), 'grad-accum', wholeAtLeast(1), 'a whole number ≥ 1'));
  set('maxGradNorm', parseNumber(s('max-grad-norm'), 'max-grad-norm', nonNegative, 'a number ≥ 0'));
  set('weightDecay', parseNumber(s('weight-decay'), 'weight-decay', nonNegative, 'a number ≥ 0'));
  set('beta1', parseNumber(s('beta1'), 'beta1', unit, 'a number in [0, 1)'));
  set('beta2', parseNumber(s('beta2'), 'beta2', unit, 'a number in [0, 1)'));
  set('eps', parseNumber(s('eps'), 'eps', positive, 'a positive number'));
  set('evalEvery', parseNumber(s('eval-every'), 'eval-every', wholeAtLeast(0), 'a whole number'));
  set('evalBatches', parseNumber(s('eval-batches'), 'eval-batches', wholeAtLeast(0), 'a whole number'));
  if (values['no-eval-at-start']) o.evalAtStart = false;
  set('seed', parseNumber(s('seed'), 'seed', (v) => Number.isSafeInteger(v), 'a whole number'));

  const lora: Record<string, unknown> = {};
  const rank = parseNumber(s('lora-rank'), 'lora-rank', wholeAtLeast(1), 'a whole number ≥ 1');
  if (rank !== undefined) lora.rank = rank;
  const alpha = parseNumber(s('lora-alpha'), 'lora-alpha', positive, 'a positive number');
  if (alpha !== undefined) lora.alpha = alpha;
  const dropout = parseNumber(s('lora-dropout'), 'lora-dropout', unit, 'a number in [0, 1)');
  if (dropout !== undefined) lora.dropout = dropout;
  if (values.rslora) lora.rsLora = true;
  const targets = s('lora-targets');
  if (targets !== undefined) {
    const list = targets.split(',').map((t) => t.trim()).filter(Boolean);
    for (const t of list) {
      if (!LORA_TARGETS.includes(t as LoraTarget)) throw new UsageError(`--lora-targets: unknown module '${t}'; use ${LORA_TARGETS.join(', ')}`);
    }
    lora.targets = list;
  }
  const layers = s('lora-layers');
  if (layers !== undefined) lora.layers = parseLayers(layers);
  if (Object.keys(lora).length) o.lora = lora as TrainConfig['lora'];
  return o;
}

function parseLayers(text: string): LayerSelection {
  if (text === 'all') return 'all';
  const last = /^last:(\d+)$/.exec(text);
  if (last) return { last: Number(last[1]) };
  const list = text.split(',').map((t) => Number(t.trim()));
  if (!list.length || list.some((n) => !Number.isSafeInteger(n) || n < 0)) {
    throw new UsageError(`--lora-layers must be all, last:N or a list of block indices like 0,1, got '${text}'`);
  }
  return list;
}

/** Data settings: the recorded ones (resume) with the flags given on top, else the defaults. */
function dataSettings(values: Values, recorded: Partial<DataSettings> | undefined, modelContext: number, seed: number): DataSettings {
  const s = (name: string) => values[name] as string | undefined;
  const format = s('format') ?? recorded?.format ?? 'auto';
  if (!(FORMAT_CHOICES as readonly string[]).includes(format)) throw new UsageError(`--format must be one of ${FORMAT_CHOICES.join(', ')}`);
  const trainOn = s('train-on') ?? recorded?.trainOn ?? 'completions';
  if (trainOn !== 'completions' && trainOn !== 'all') throw new UsageError('--train-on must be completions or all');
  const context = parseNumber(s('context'), 'context', wholeAtLeast(1), 'a whole number ≥ 1') ?? recorded?.context ?? modelContext;
  return {
    format: format as FormatChoice,
    validationFormat: recorded?.validationFormat ?? 'auto',
    template: resolveTemplate({ ...(recorded?.template ?? {}), ...(values['raw-completions'] ? { rawCompletions: true } : {}) }),
    trainOn,
    context: Math.min(context, modelContext),
    packing: (values.packing as boolean | undefined) ?? recorded?.packing ?? false,
    validationFraction:
      parseNumber(s('validation-fraction'), 'validation-fraction', unit, 'a number from 0 to below 1') ?? recorded?.validationFraction ?? 0.1,
    seed: parseNumber(s('data-seed'), 'data-seed', (v) => Number.isSafeInteger(v), 'a whole number') ?? recorded?.seed ?? seed,
  };
}

async function readData(path: string): Promise<Uint8Array> {
  try {
    return new Uint8Array(await readFile(path));
  } catch (error) {
    throw new TunelabError('bad-data', `cannot read ${path}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await access(path);
    return true;
  } catch {
    return false;
  }
}

export async function train(args: string[]): Promise<number> {
  let values: Values;
  try {
    ({ values } = parseArgs({ args, options: OPTIONS, strict: true, allowPositionals: false }));
  } catch (error) {
    process.stderr.write(`tunelab train: ${(error as Error).message}\n\n${USAGE}`);
    return 2;
  }
  if (values.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  try {
    return await runTrain(values, args);
  } catch (error) {
    if (error instanceof UsageError || (error instanceof RangeError && /config|schedule|LoRA|lora/.test(error.message))) {
      process.stderr.write(`tunelab train: ${error.message}\n\n${USAGE}`);
      return 2;
    }
    throw error;
  }
}

/** Live progress on stderr: a bar redrawn in place on a terminal, or a line per eval and every ~10% otherwise. */
function progressReporter(json: boolean): { onEvent: (e: TrainEvent) => void; finish: () => void } {
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
        process.stderr.write(`tunelab train: ${describeEvent(e)}\n`);
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
        } else if (e.step === 1 || e.step === e.totalSteps || e.step % Math.max(1, Math.round(e.totalSteps / 10)) === 0) {
          process.stderr.write(`tunelab train: ${describeEvent(e)}\n`);
        }
      } else {
        clearBar();
        process.stderr.write(`tunelab train: ${describeEvent(e)}\n`);
      }
    },
    finish: clearBar,
  };
}

async function runTrain(values: Values, args: string[]): Promise<number> {
  const modelDir = values.model as string | undefined;
  const dataFile = values.data as string | undefined;
  const out = values.out as string | undefined;
  if (!modelDir) throw new UsageError('--model DIR is required');
  if (!dataFile) throw new UsageError('--data FILE is required');
  if (!out) throw new UsageError('--out DIR is required');
  const overrides = trainOverrides(values);
  const saveEvery = parseNumber(values['save-every'] as string | undefined, 'save-every', wholeAtLeast(1), 'a whole number ≥ 1') ?? 0;

  let checkpoint: ReturnType<typeof decodeCheckpoint> | undefined;
  const resumeDir = values.resume as string | undefined;
  if (resumeDir) {
    const files: Record<string, Uint8Array> = {};
    for (const name of Object.values(CHECKPOINT_FILES)) {
      const bytes = await readOptional(join(resumeDir, name));
      if (bytes) files[name] = bytes;
    }
    checkpoint = decodeCheckpoint(files);
  }

  const outDir = resolve(out);
  await mkdir(outDir, { recursive: true });
  const products = ['metrics.jsonl', TRAINING_CONFIG_FILE, ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE, 'model.safetensors'];
  if (!values.force && !resumeDir) {
    for (const name of products) {
      if (await exists(join(outDir, name))) throw new TunelabError('bad-data', `${join(out, name)} already exists; pass --force to overwrite it`);
    }
  }

  return withCliGpu(async (gpu) => {
    const { loaded, tokenizer, model } = await loadCliModel(gpu, modelDir);
    for (const w of loaded.warnings) process.stderr.write(`tunelab train: warning: ${w}\n`);
    const config = { ...DEFAULT_TRAIN_CONFIG, ...((checkpoint?.config ?? {}) as Partial<TrainConfig>), ...overrides };
    const recordedData = (checkpoint?.extra as { data?: Partial<DataSettings> } | undefined)?.data;
    const data = dataSettings(values, recordedData, loaded.config.nPositions, config.seed);
    const validationFile = values.validation as string | undefined;
    const datasetOptions: DatasetOptions = { ...data, batchSize: config.batchSize };
    const prepared = prepareDataset(
      { train: await readData(dataFile), ...(validationFile ? { validation: await readData(validationFile) } : {}) },
      tokenizer,
      datasetOptions,
    );
    const nameOf = (source: 'train' | 'validation') => (source === 'validation' && validationFile ? validationFile : dataFile);
    for (const issue of prepared.report.warnings) process.stderr.write(`${formatIssue(issue, nameOf(issue.source))}\n`);
    if (!prepared.report.trainable) {
      for (const issue of prepared.report.errors) process.stderr.write(`${formatIssue(issue, nameOf(issue.source))}\n`);
      process.stderr.write(`tunelab train: the data has errors; fix them (tunelab validate ${dataFile} shows the report)\n`);
      return 1;
    }

    const trainer = await Trainer.create(gpu, { model, data: prepared.batcher, config: checkpoint ? overrides : config, checkpoint });
    const metricsPath = join(outDir, 'metrics.jsonl');
    // A resumed run appends to the metrics of the run it continues.
    const earlier = resumeDir ? await readOptional(metricsPath) : null;
    const metricsLines: string[] = earlier ? new TextDecoder().decode(earlier).split('\n').filter(Boolean) : [];
    const progress = progressReporter(values.json === true);
    trainer.checkpointExtra = { data, model: resolve(modelDir), dataFile: resolve(dataFile) };
    const saveCheckpoint = async (checkpoint: TrainingCheckpoint) => {
      const dir = join(outDir, 'checkpoint');
      await mkdir(dir, { recursive: true });
      for (const [name, bytes] of Object.entries(encodeCheckpoint(checkpoint))) await writeFile(join(dir, name), bytes);
    };
    trainer.subscribe((event) => {
      metricsLines.push(JSON.stringify(event));
      progress.onEvent(event);
    });
    let interrupted = false;
    const onSigint = () => {
      if (interrupted) process.exit(130);
      interrupted = true;
      process.stderr.write('\ntunelab train: stopping after this step (Ctrl-C again to quit at once)\n');
      trainer.cancel();
    };
    process.on('SIGINT', onSigint);
    let summary;
    try {
      summary = await trainer.train({ checkpointEvery: saveEvery, onCheckpoint: saveCheckpoint });
    } finally {
      process.off('SIGINT', onSigint);
      progress.finish();
    }

    // Results.
    await writeFile(metricsPath, metricsLines.join('\n') + '\n');
    const written: string[] = ['metrics.jsonl'];
    if (trainer.config.mode === 'lora') {
      const adapterConfig = peftAdapterConfig(loaded.config, trainer.adapter!.config, resolve(modelDir));
      const tensors = await trainer.adapter!.read('peft');
      const shapes = new Map(trainer.adapter!.layout.entries.map((e) => [e.name, e.shape]));
      const toWrite = [...tensors].map(([name, data]) => {
        const tunelabName = name.replace(/^base_model\.model\.transformer\./, '').replace(/\.weight$/, '');
        return { name, shape: shapes.get(tunelabName)!, data };
      });
      await writeFile(join(outDir, ADAPTER_CONFIG_FILE), JSON.stringify(adapterConfig, null, 2) + '\n');
      await writeFile(join(outDir, ADAPTER_WEIGHTS_FILE), writeSafetensors(toWrite, { metadata: { format: 'pt', creator: 'tunelab train' } }));
      written.push(ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE);
    } else {
      const weights = await model.read();
      await writeFile(join(outDir, 'model.safetensors'), writeSafetensors(parameterTensors(weights), { metadata: { format: 'pt', creator: 'tunelab train' } }));
      await writeFile(join(outDir, 'config.json'), JSON.stringify(modelConfigToJson(loaded.config, loaded.configJson), null, 2) + '\n');
      await writeFile(join(outDir, 'tokenizer.json'), JSON.stringify(loaded.tokenizerJson) + '\n');
      const tokenizerConfig = await readOptional(join(modelDir, 'tokenizer_config.json'));
      if (tokenizerConfig) await writeFile(join(outDir, 'tokenizer_config.json'), tokenizerConfig);
      written.push('model.safetensors', 'config.json', 'tokenizer.json');
    }
    await saveCheckpoint(await trainer.checkpoint());
    written.push('checkpoint/');
    const last = summary.lastEval;
    const trainingConfig = {
      command: ['tunelab train', ...args].join(' '),
      model: resolve(modelDir),
      dataFile: resolve(dataFile),
      validationFile: validationFile ? resolve(validationFile) : null,
      train: trainer.config,
      data: { ...data, batchSize: config.batchSize, sequenceLength: prepared.batcher.sequenceLength },
      result: {
        reason: summary.reason,
        step: summary.step,
        totalSteps: summary.totalSteps,
        finalTrainLoss: summary.losses.length ? summary.losses[summary.losses.length - 1] : null,
        validationLoss: last?.loss ?? null,
        validationPerplexity: last?.perplexity ?? null,
        validationAccuracy: last?.accuracy ?? null,
        elapsedMs: summary.elapsedMs,
      },
    };
    await writeFile(join(outDir, TRAINING_CONFIG_FILE), JSON.stringify(trainingConfig, null, 2) + '\n');
    written.push(TRAINING_CONFIG_FILE);
    trainer.destroy();

    const result = { type: 'result', out: outDir, files: written, ...trainingConfig.result };
    if (!values.json) {
      process.stderr.write(
        `tunelab train: ${summary.reason} at step ${summary.step}/${summary.totalSteps}; wrote ${written.join(', ')} to ${out}` +
          (summary.reason === 'cancelled' ? ` (continue with --resume ${join(out, 'checkpoint')})` : '') +
          '\n',
      );
    }
    process.stdout.write(JSON.stringify(result) + '\n');
    return summary.reason === 'cancelled' ? 130 : 0;
  });
}
