// `tunelab pretrain`: full-parameter training of a fresh model (made by `tunelab init`) on a text corpus, in chunks
// that continue each other exactly. The corpus is tokenized once with the model's tokenizer and cached in OUT/tokens/
// (u16 or u32 token files); training rows are random contiguous blocks of the token stream (or a seeded epoch order
// of blocks); validation uses fixed held-out blocks. Every invocation ends — completed, at --until-step, at
// --time-limit or on Ctrl-C — by writing an exact checkpoint (OUT/checkpoint/) and the model as it stands:
// config.json, model.safetensors (f32 or f16), tokenizer.json, MODEL_CARD.md (the facts of the run), metrics.jsonl
// (every event, across invocations) and pretrain.json (settings, progress, result). `--resume OUT` continues.
//
// `--resume DIR` also accepts an output directory without checkpoint/ (only the model and pretrain.json, e.g. what
// came back from a GPU machine that is gone): the weights and the position in the data are restored, AdamW's
// moments start again from zero. That resume is approximate and recorded as such.

import { createHash } from 'node:crypto';
import { mkdir, rename, rm, writeFile } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { firstInvalidUtf8 } from '../engine/data/text.ts';
import { TunelabError } from '../engine/errors.ts';
import type { AdapterSummary } from '../engine/gpu/adapter.ts';
import { writeSafetensors } from '../engine/io/safetensors.ts';
import { modelConfigToJson, type ModelConfig } from '../engine/model/config.ts';
import { gpt2ParameterLayout, parameterCount, parameterTensors } from '../engine/model/weights.ts';
import type { Tokenizer } from '../engine/tokenizer/tokenizer.ts';
import { CHECKPOINT_FILES, decodeCheckpoint, encodeCheckpoint, type TrainingCheckpoint } from '../engine/train/checkpoint.ts';
import { formatDuration, perplexity, type EvalEvent, type TrainEvent } from '../engine/train/metrics.ts';
import {
  BLOCK_SAMPLINGS,
  concatTokens,
  decodeTokenFile,
  encodeTokenFile,
  tokenFileMatches,
  tokenFingerprint,
  TokenBlockBatcher,
  tokenizeCorpus,
  type BlockSampling,
  type TokenArray,
  type TokenFileMeta,
  type TokenSource,
  TimeBudget,
} from '../engine/train/pretrain.ts';
import { DEFAULT_TRAIN_CONFIG, Trainer, type TrainConfig } from '../engine/train/trainer.ts';
import {
  exists,
  loadCliModel,
  progressReporter,
  parseNumber,
  readInput,
  readOptional,
  runCommand,
  UsageError,
  wholeAtLeast,
  withCliGpu,
  type CliModel,
  type OptionValues,
} from './common.ts';

/** Pretraining's defaults where they differ from fine-tuning's (small-GPT practice, as nanoGPT's). */
export const PRETRAIN_DEFAULTS = Object.freeze({
  batchSize: 16,
  learningRate: 1e-3,
  schedule: 'cosine' as const,
  warmupRatio: 0.05,
  minLrRatio: 0.1,
  weightDecay: 0.1,
  maxGradNorm: 1,
  beta2: 0.99,
  sampling: 'random' as BlockSampling,
  validationFraction: 0.05,
  evaluations: 20,
});

export const PRETRAIN_FILE = 'pretrain.json';
const CHECKPOINT_DIR = 'checkpoint';
const TOKENS_DIR = 'tokens';

const p = PRETRAIN_DEFAULTS;
const USAGE = `usage: tunelab pretrain --model DIR --corpus FILE [FILE…] --out DIR [options]

Trains every weight of the model in DIR (e.g. made by tunelab init) on plain text (UTF-8, optionally .gz), and writes
the model (config.json, model.safetensors, tokenizer.json, MODEL_CARD.md), metrics.jsonl, ${PRETRAIN_FILE}, a
checkpoint/ to continue from, and the tokenized corpus (tokens/) to --out.

data:
  --corpus FILE               training text; may be repeated (files are joined in order)
  --validation FILE           held-out text; may be repeated (default: the last --validation-fraction of the corpus)
  --validation-fraction X     share of the corpus tokens held out when there is no --validation (default ${p.validationFraction})
  --seq N                     T: tokens per row (default: the model's context)
  --sampling random|epoch     random contiguous blocks, or every block once per epoch in a seeded order (default ${p.sampling})
length (one of; default 1 epoch):
  --steps N                   optimizer steps
  --tokens N                  tokens to train on (steps = N / (batch × seq × grad-accum), rounded up)
  --epochs X                  passes over the corpus tokens
training:
  --batch-size N              rows per micro-batch (default ${p.batchSize})
  --grad-accum N              micro-batches per optimizer step (default 1)
  --lr X                      peak learning rate (default ${p.learningRate})
  --schedule S                constant|linear|cosine (default ${p.schedule})
  --warmup N                  warmup steps (default: ${100 * p.warmupRatio}% of the steps)
  --min-lr-ratio X            decay to lr·X (default ${p.minLrRatio})
  --weight-decay X            AdamW weight decay on matrices (default ${p.weightDecay})
  --grad-clip X               clip the global gradient norm, 0 = off (default ${p.maxGradNorm})
  --beta1 X --beta2 X         AdamW (default ${DEFAULT_TRAIN_CONFIG.beta1}, ${p.beta2})
  --seed N                    seeds the data order (default 0)
  --eval-every N              validation every N steps and at the end (default: ${p.evaluations} evaluations per run)
  --eval-batches N            validation batches, spread over the held-out text; 0 = all (default 0)
output and chunks:
  --out DIR                   where results go (default with --resume OUT: OUT)
  --dtype f32|f16             storage type of model.safetensors (default f32; the checkpoint is always f32)
  --name NAME                 the model's name in MODEL_CARD.md (default: the --out directory's name)
  --save-every N              also checkpoint every N steps (default: only when the invocation ends)
  --resume DIR                continue: OUT, OUT/checkpoint, or (approximately) a model directory with ${PRETRAIN_FILE}
  --until-step N              stop after step N (checkpointed; continue with --resume)
  --time-limit SECONDS        stop in time to checkpoint and write everything before SECONDS after the start
  --json                      JSON lines (every event) on stdout instead of a progress display
  --force                     overwrite results already in --out
`;

const OPTIONS = {
  model: { type: 'string' },
  corpus: { type: 'string', multiple: true },
  validation: { type: 'string', multiple: true },
  'validation-fraction': { type: 'string' },
  seq: { type: 'string' },
  sampling: { type: 'string' },
  steps: { type: 'string' },
  tokens: { type: 'string' },
  epochs: { type: 'string' },
  'batch-size': { type: 'string' },
  'grad-accum': { type: 'string' },
  lr: { type: 'string' },
  schedule: { type: 'string' },
  warmup: { type: 'string' },
  'min-lr-ratio': { type: 'string' },
  'weight-decay': { type: 'string' },
  'grad-clip': { type: 'string' },
  beta1: { type: 'string' },
  beta2: { type: 'string' },
  seed: { type: 'string' },
  'eval-every': { type: 'string' },
  'eval-batches': { type: 'string' },
  out: { type: 'string' },
  dtype: { type: 'string' },
  name: { type: 'string' },
  'save-every': { type: 'string' },
  resume: { type: 'string' },
  'until-step': { type: 'string' },
  'time-limit': { type: 'string' },
  json: { type: 'boolean', default: false },
  force: { type: 'boolean', default: false },
} as const;

type Values = OptionValues;

/** What a run keeps about its data, so every later invocation cuts exactly the same batches. */
export interface PretrainSettings {
  /** The model directory the run started from (config and tokenizer; its weights only at step 0). */
  model: string;
  corpus: string[];
  validation: string[];
  validationFraction: number;
  batchSize: number;
  sequenceLength: number;
  sampling: BlockSampling;
  seed: number;
  evalBatches: number;
  dtype: 'f32' | 'f16';
  /** Title of MODEL_CARD.md. */
  name: string;
  /** tokenFingerprint() of the training and validation streams. */
  trainTokens: string;
  validationTokens: string;
}

/** One invocation of the run. */
interface Session {
  command: string;
  fromStep: number;
  toStep: number;
  reason: string;
  resume: 'none' | 'exact' | 'approximate';
  /** Training time of this invocation (the trainer's clock) and wall time of the whole command. */
  trainingMs: number;
  wallMs: number;
  tokensPerSecond: number | null;
  adapter: string;
}

/** pretrain.json: everything about the run, and what an approximate resume needs. */
interface PretrainRecord {
  format: 'tunelab-pretrain';
  version: 1;
  settings: PretrainSettings;
  train: TrainConfig;
  model: { layers: number; width: number; heads: number; context: number; vocabulary: number; parameters: number };
  tokenizer: { sha256: string; vocabulary: number; endOfTextId: number };
  corpus: { train: { files: TokenSource[]; tokens: number }; validation: { files: TokenSource[]; tokens: number; heldOutFraction: number } };
  progress: { step: number; microStep: number; tokens: number; elapsedMs: number };
  result: {
    complete: boolean;
    step: number;
    totalSteps: number;
    tokensSeen: number;
    epochs: number;
    /** Mean loss of the last finalTrainLossSteps (up to 20) steps. */
    finalTrainLoss: number | null;
    finalTrainLossSteps: number;
    lastEval: EvalEvent | null;
  };
  sessions: Session[];
  approximateResumes: number;
  machine: AdapterSummary;
}

export function pretrain(args: string[]): Promise<number> {
  return runCommand(
    { name: 'pretrain', usage: USAGE, options: OPTIONS, isUsageError: (e) => e instanceof RangeError && /config|schedule/.test(e.message) },
    args,
    (values) => runPretrain(values, args),
  );
}

// ---- files ---------------------------------------------------------------------------------------------------------

/** Writes via a temporary name, so a process killed mid-write leaves the old file or the new one, never half. */
async function writeAtomic(path: string, bytes: Uint8Array | string): Promise<void> {
  await writeFile(`${path}.tmp`, bytes);
  await rename(`${path}.tmp`, path);
}

const sha256 = (bytes: Uint8Array | string) => createHash('sha256').update(bytes).digest('hex');

/** A checkpoint directory's files, or null when DIR holds none. */
async function readCheckpointDir(dir: string): Promise<Record<string, Uint8Array> | null> {
  const files: Record<string, Uint8Array> = {};
  for (const name of Object.values(CHECKPOINT_FILES)) {
    const bytes = await readOptional(join(dir, name));
    if (!bytes) return null;
    files[name] = bytes;
  }
  return files;
}

/**
 * Replaces OUT/checkpoint as a whole: written to checkpoint.tmp/, then swapped in by renames, so an interrupted save
 * leaves a complete checkpoint (the new one, or the old one as checkpoint.old/, which --resume also finds).
 */
async function saveCheckpoint(outDir: string, checkpoint: TrainingCheckpoint): Promise<void> {
  const dir = join(outDir, CHECKPOINT_DIR);
  const fresh = `${dir}.tmp`;
  const old = `${dir}.old`;
  await rm(fresh, { recursive: true, force: true });
  await mkdir(fresh, { recursive: true });
  for (const [name, bytes] of Object.entries(encodeCheckpoint(checkpoint))) await writeFile(join(fresh, name), bytes);
  await rm(old, { recursive: true, force: true });
  if (await exists(dir)) await rename(dir, old);
  await rename(fresh, dir);
  await rm(old, { recursive: true, force: true });
}

type ResumeSource =
  | { kind: 'exact'; checkpoint: TrainingCheckpoint; outDir: string | undefined }
  | { kind: 'approximate'; dir: string; record: PretrainRecord };

/** What `--resume DIR` points at: a checkpoint (DIR, DIR/checkpoint, DIR/checkpoint.old) or a model with pretrain.json. */
async function findResume(dir: string): Promise<ResumeSource> {
  const candidates: [string, string | undefined][] = [
    [dir, basename(dir) === CHECKPOINT_DIR ? dirname(dir) : undefined],
    [join(dir, CHECKPOINT_DIR), dir],
    [join(dir, `${CHECKPOINT_DIR}.old`), dir],
  ];
  for (const [candidate, outDir] of candidates) {
    const files = await readCheckpointDir(candidate);
    if (files) return { kind: 'exact', checkpoint: decodeCheckpoint(files), outDir };
  }
  const recordBytes = await readOptional(join(dir, PRETRAIN_FILE));
  if (recordBytes && (await exists(join(dir, 'model.safetensors')))) {
    const record = JSON.parse(new TextDecoder().decode(recordBytes)) as PretrainRecord;
    if (record?.format !== 'tunelab-pretrain') {
      throw new TunelabError('bad-data', `--resume ${dir}: ${PRETRAIN_FILE} is not a tunelab pretrain record`);
    }
    return { kind: 'approximate', dir, record };
  }
  throw new TunelabError(
    'bad-data',
    `--resume ${dir}: no checkpoint there (${CHECKPOINT_FILES.tensors} + ${CHECKPOINT_FILES.state}, in DIR or DIR/${CHECKPOINT_DIR}) ` +
      `and no model with ${PRETRAIN_FILE}`,
  );
}

// ---- the corpus as tokens ------------------------------------------------------------------------------------------

function decodeCorpusText(bytes: Uint8Array, path: string): string {
  const raw = bytes.length >= 2 && bytes[0] === 0x1f && bytes[1] === 0x8b ? new Uint8Array(gunzipSync(bytes)) : bytes;
  const bad = firstInvalidUtf8(raw);
  if (bad !== -1) process.stderr.write(`tunelab pretrain: warning: ${path} is not valid UTF-8 from byte ${bad} on; those bytes become U+FFFD\n`);
  return new TextDecoder('utf-8').decode(raw);
}

/**
 * The token stream of `files` (joined in order): from the cache file when it was made from the same bytes with the
 * same tokenizer, else tokenized now and cached.
 */
async function corpusTokens(
  files: readonly string[],
  tokenizer: Tokenizer,
  vocabSize: number,
  tokenizerSha256: string,
  cachePath: string,
  log: (line: string) => void,
): Promise<{ tokens: TokenArray; sources: TokenSource[]; cached: boolean }> {
  const contents = await Promise.all(files.map((f) => readInput(f)));
  const sources = files.map((f, i) => ({ name: f, bytes: contents[i].length, sha256: sha256(contents[i]) }));
  const meta: TokenFileMeta = { sources, tokenizerSha256, endOfTextId: tokenizer.endOfTextId };
  const cached = await readOptional(cachePath);
  if (cached) {
    try {
      const { header, tokens } = decodeTokenFile(cached);
      if (tokenFileMatches(header, meta)) {
        log(`${files.join(', ')}: ${tokens.length.toLocaleString('en-US')} tokens (cached in ${cachePath})`);
        return { tokens, sources, cached: true };
      }
    } catch (error) {
      if (!(error instanceof TunelabError)) throw error;
    }
  }
  const started = performance.now();
  const parts = files.map((f, i) => tokenizeCorpus(decodeCorpusText(contents[i], f), tokenizer, vocabSize));
  const tokens = concatTokens(parts, vocabSize);
  await mkdir(dirname(cachePath), { recursive: true });
  await writeAtomic(cachePath, encodeTokenFile(tokens, meta));
  log(
    `${files.join(', ')}: ${tokens.length.toLocaleString('en-US')} tokens, tokenized in ` +
      `${((performance.now() - started) / 1000).toFixed(1)} s (cached in ${cachePath})`,
  );
  return { tokens, sources, cached: false };
}

// ---- settings ------------------------------------------------------------------------------------------------------

const positive = (v: number) => v > 0;
const nonNegative = (v: number) => v >= 0;
const unit = (v: number) => v >= 0 && v < 1;

function str(values: Values, name: string): string | undefined {
  return values[name] as string | undefined;
}

/** Hyperparameters given on the command line (only those given, so a resumed run keeps the rest). */
function trainOverrides(values: Values): Partial<TrainConfig> {
  const s = (name: string) => str(values, name);
  const o: Partial<TrainConfig> = {};
  const set = <K extends keyof TrainConfig>(key: K, value: TrainConfig[K] | undefined) => {
    if (value !== undefined) o[key] = value;
  };
  set('learningRate', parseNumber(s('lr'), 'lr', nonNegative, 'a number ≥ 0'));
  const schedule = s('schedule');
  if (schedule !== undefined && !['constant', 'linear', 'cosine'].includes(schedule)) {
    throw new UsageError(`--schedule must be constant, linear or cosine, got '${schedule}'`);
  }
  set('schedule', schedule as TrainConfig['schedule'] | undefined);
  const warmup = parseNumber(s('warmup'), 'warmup', wholeAtLeast(0), 'a whole number of steps');
  if (warmup !== undefined) Object.assign(o, { warmupSteps: warmup, warmupRatio: 0 });
  set('minLrRatio', parseNumber(s('min-lr-ratio'), 'min-lr-ratio', (v) => v >= 0 && v <= 1, 'a number from 0 to 1'));
  set('gradientAccumulationSteps', parseNumber(s('grad-accum'), 'grad-accum', wholeAtLeast(1), 'a whole number ≥ 1'));
  set('maxGradNorm', parseNumber(s('grad-clip'), 'grad-clip', nonNegative, 'a number ≥ 0'));
  set('weightDecay', parseNumber(s('weight-decay'), 'weight-decay', nonNegative, 'a number ≥ 0'));
  set('beta1', parseNumber(s('beta1'), 'beta1', unit, 'a number in [0, 1)'));
  set('beta2', parseNumber(s('beta2'), 'beta2', unit, 'a number in [0, 1)'));
  set('evalEvery', parseNumber(s('eval-every'), 'eval-every', wholeAtLeast(0), 'a whole number'));
  set('seed', parseNumber(s('seed'), 'seed', (v) => Number.isSafeInteger(v), 'a whole number'));
  return o;
}

/** Optimizer steps the length flags ask for (null: none given). */
function requestedSteps(values: Values, tokensPerStep: number, microStepsPerEpoch: number, accumulation: number): number | null {
  const given = ['steps', 'tokens', 'epochs'].filter((name) => values[name] !== undefined);
  if (given.length > 1) throw new UsageError(`give one of --steps, --tokens, --epochs, not ${given.map((g) => `--${g}`).join(' and ')}`);
  const steps = parseNumber(str(values, 'steps'), 'steps', wholeAtLeast(1), 'a whole number ≥ 1');
  if (steps !== undefined) return steps;
  const tokens = parseNumber(str(values, 'tokens'), 'tokens', wholeAtLeast(1), 'a whole number ≥ 1');
  if (tokens !== undefined) return Math.ceil(tokens / tokensPerStep);
  const epochs = parseNumber(str(values, 'epochs'), 'epochs', positive, 'a positive number');
  if (epochs !== undefined) return Math.max(1, Math.ceil((epochs * microStepsPerEpoch) / accumulation));
  return null;
}

function list(values: Values, name: string): string[] | undefined {
  const v = values[name] as string[] | undefined;
  return v && v.length ? v.map((f) => resolve(f)) : undefined;
}

// ---- the run -------------------------------------------------------------------------------------------------------

async function runPretrain(values: Values, args: string[]): Promise<number> {
  const command = ['tunelab pretrain', ...args].join(' ');
  const log = (line: string) => process.stderr.write(`tunelab pretrain: ${line}\n`);
  const resumeDir = str(values, 'resume');
  const resumeFrom = resumeDir ? await findResume(resolve(resumeDir)) : undefined;
  const recorded: Partial<PretrainSettings> =
    resumeFrom?.kind === 'exact'
      ? ((resumeFrom.checkpoint.extra as { pretrain?: PretrainSettings } | undefined)?.pretrain ?? {})
      : resumeFrom?.kind === 'approximate'
        ? resumeFrom.record.settings
        : {};
  const out = str(values, 'out') ?? (resumeFrom?.kind === 'exact' ? resumeFrom.outDir : undefined);
  if (!out) throw new UsageError('--out DIR is required');
  const outDir = resolve(out);
  // The model to build: an approximate resume starts from the resumed model's own weights.
  const modelDir = resumeFrom?.kind === 'approximate' ? resumeFrom.dir : (str(values, 'model') ? resolve(str(values, 'model')!) : recorded.model);
  if (!modelDir) throw new UsageError('--model DIR is required');
  const corpus = list(values, 'corpus') ?? recorded.corpus;
  if (!corpus?.length) throw new UsageError('--corpus FILE is required');
  const validationFiles = list(values, 'validation') ?? recorded.validation ?? [];
  const validationFraction = validationFiles.length
    ? 0
    : (parseNumber(str(values, 'validation-fraction'), 'validation-fraction', unit, 'a number from 0 to below 1') ??
      recorded.validationFraction ??
      p.validationFraction);
  const sampling = (str(values, 'sampling') ?? recorded.sampling ?? p.sampling) as BlockSampling;
  if (!BLOCK_SAMPLINGS.includes(sampling)) throw new UsageError(`--sampling must be random or epoch, got '${sampling}'`);
  const dtype = (str(values, 'dtype') ?? recorded.dtype ?? 'f32') as 'f32' | 'f16';
  if (dtype !== 'f32' && dtype !== 'f16') throw new UsageError(`--dtype must be f32 or f16, got '${dtype}'`);
  const batchSize =
    parseNumber(str(values, 'batch-size'), 'batch-size', wholeAtLeast(1), 'a whole number ≥ 1') ?? recorded.batchSize ?? p.batchSize;
  const seqFlag = parseNumber(str(values, 'seq'), 'seq', wholeAtLeast(1), 'a whole number ≥ 1');
  const evalBatches = parseNumber(str(values, 'eval-batches'), 'eval-batches', wholeAtLeast(0), 'a whole number') ?? recorded.evalBatches ?? 0;
  const saveEvery = parseNumber(str(values, 'save-every'), 'save-every', wholeAtLeast(1), 'a whole number ≥ 1') ?? 0;
  const untilStep = parseNumber(str(values, 'until-step'), 'until-step', wholeAtLeast(1), 'a whole number ≥ 1');
  const timeLimit = parseNumber(str(values, 'time-limit'), 'time-limit', positive, 'a positive number of seconds');
  for (const [name, flag, was] of [['batch-size', values['batch-size'], recorded.batchSize], ['seq', seqFlag, recorded.sequenceLength]] as const) {
    if (resumeFrom && flag !== undefined && was !== undefined && Number(flag) !== was) {
      throw new UsageError(`--${name} ${flag} differs from the resumed run's ${was}; a run keeps its batch shape`);
    }
  }
  const overrides = trainOverrides(values);
  const seed = overrides.seed ?? recorded.seed ?? 0;

  if (!values.force && !resumeFrom) {
    for (const name of ['model.safetensors', 'metrics.jsonl', PRETRAIN_FILE, CHECKPOINT_DIR]) {
      if (await exists(join(outDir, name))) {
        throw new TunelabError('bad-data', `${join(out, name)} already exists; pass --force to overwrite it (or --resume ${out})`);
      }
    }
  }
  await mkdir(outDir, { recursive: true });

  return withCliGpu(async (gpu) => {
    const cliModel = await loadCliModel(gpu, modelDir);
    const { loaded, tokenizer, model } = cliModel;
    for (const w of loaded.warnings) log(`warning: ${w}`);
    const config: ModelConfig = loaded.config;
    const sequenceLength = seqFlag ?? recorded.sequenceLength ?? config.nPositions;
    if (sequenceLength > config.nPositions) throw new UsageError(`--seq ${sequenceLength} is longer than the model's context (${config.nPositions})`);

    // Tokens: cached next to the output, so later invocations only hash the files.
    const tokenizerSha256 = sha256(JSON.stringify(loaded.tokenizerJson));
    const tokensDir = join(outDir, TOKENS_DIR);
    const train = await corpusTokens(corpus, tokenizer, config.vocabSize, tokenizerSha256, join(tokensDir, 'train.tokens'), log);
    let trainTokens = train.tokens;
    let validationTokens: TokenArray | null = null;
    let validationSources: TokenSource[] = [];
    if (validationFiles.length) {
      const validation = await corpusTokens(validationFiles, tokenizer, config.vocabSize, tokenizerSha256, join(tokensDir, 'validation.tokens'), log);
      validationTokens = validation.tokens;
      validationSources = validation.sources;
    } else if (validationFraction > 0) {
      const cut = Math.floor(trainTokens.length * (1 - validationFraction));
      validationTokens = trainTokens.subarray(cut);
      trainTokens = trainTokens.subarray(0, cut);
      log(`holding out the last ${count(validationTokens.length)} corpus tokens for validation (--validation-fraction ${validationFraction})`);
    }
    const fingerprints = { train: tokenFingerprint(trainTokens), validation: validationTokens ? tokenFingerprint(validationTokens) : 'none' };
    const sameData = recorded.trainTokens === fingerprints.train && recorded.validationTokens === fingerprints.validation;
    if (resumeFrom && recorded.trainTokens !== undefined && !sameData) {
      throw new TunelabError(
        'bad-data',
        'the corpus (or its validation part, or the tokenizer) differs from the one the resumed run trained on; ' +
          'resume with the same --corpus/--validation files, or start a new run',
      );
    }

    const data = new TokenBlockBatcher(trainTokens, validationTokens, {
      batchSize,
      sequenceLength,
      sampling,
      seed,
      padId: tokenizer.endOfTextId,
      validationBatches: evalBatches,
    });
    const settings: PretrainSettings = {
      model: resumeFrom?.kind === 'approximate' ? (recorded.model ?? modelDir) : modelDir,
      corpus,
      validation: validationFiles,
      validationFraction,
      batchSize,
      sequenceLength,
      sampling,
      seed,
      evalBatches,
      dtype,
      name: str(values, 'name') ?? recorded.name ?? basename(outDir),
      trainTokens: fingerprints.train,
      validationTokens: fingerprints.validation,
    };

    const accumulation = overrides.gradientAccumulationSteps ?? (resumeFrom ? undefined : 1);
    const previousConfig = resumeFrom?.kind === 'exact' ? (resumeFrom.checkpoint.config as Partial<TrainConfig>) : resumeFrom?.record.train;
    const tokensPerStep = batchSize * sequenceLength * (accumulation ?? previousConfig?.gradientAccumulationSteps ?? 1);
    const steps = requestedSteps(values, tokensPerStep, data.stepsPerEpoch, tokensPerStep / (batchSize * sequenceLength));
    const fresh: Partial<TrainConfig> = {
      ...DEFAULT_TRAIN_CONFIG,
      mode: 'full',
      batchSize,
      learningRate: p.learningRate,
      schedule: p.schedule,
      warmupRatio: p.warmupRatio,
      minLrRatio: p.minLrRatio,
      weightDecay: p.weightDecay,
      maxGradNorm: p.maxGradNorm,
      beta2: p.beta2,
      evalBatches: 0,
      evalAtStart: true,
    };
    const trainConfigWanted: Partial<TrainConfig> = {
      ...(previousConfig ?? fresh),
      ...overrides,
      ...(steps !== null ? { maxSteps: steps } : {}),
      mode: 'full',
      batchSize,
      // the batcher already holds exactly the validation batches asked for
      evalBatches: 0,
    };
    if (!previousConfig && steps === null) {
      trainConfigWanted.maxSteps = Math.max(1, Math.ceil(data.stepsPerEpoch / (trainConfigWanted.gradientAccumulationSteps ?? 1))); // an epoch
    }
    if (overrides.evalEvery === undefined && (!previousConfig || steps !== null)) {
      trainConfigWanted.evalEvery = Math.max(1, Math.round(trainConfigWanted.maxSteps! / p.evaluations));
    }

    const trainer = await Trainer.create(gpu, {
      model,
      data,
      config: trainConfigWanted,
      ...(resumeFrom?.kind === 'exact' ? { checkpoint: resumeFrom.checkpoint } : {}),
    });
    let approximateResumes = resumeFrom?.kind === 'approximate' ? (resumeFrom.record.approximateResumes ?? 0) + 1 : 0;
    let earlierSessions: Session[] = [];
    let earlierRecord: PretrainRecord | null = null;
    const recordBytes = await readOptional(join(outDir, PRETRAIN_FILE));
    if (resumeFrom?.kind === 'approximate') earlierRecord = resumeFrom.record;
    else if (resumeFrom && recordBytes) earlierRecord = JSON.parse(new TextDecoder().decode(recordBytes)) as PretrainRecord;
    if (earlierRecord) {
      earlierSessions = earlierRecord.sessions ?? [];
      if (resumeFrom?.kind === 'exact') approximateResumes = earlierRecord.approximateResumes ?? 0;
    }
    if (resumeFrom?.kind === 'approximate') {
      await restoreApproximately(trainer, resumeFrom.record.progress, config, data.stepsPerEpoch);
      log(
        `resuming approximately from ${resumeFrom.dir} at step ${trainer.step}: weights and data position restored, ` +
          "AdamW's moments start from zero",
      );
    } else if (resumeFrom) {
      log(`resuming from step ${resumeFrom.checkpoint.progress.step} (exact checkpoint)`);
    }
    trainer.checkpointExtra = { pretrain: settings };
    const startStep = trainer.step;

    // Metrics of earlier invocations, without any steps past the point this one continues from.
    const metricsPath = join(outDir, 'metrics.jsonl');
    const earlierMetrics = resumeFrom
      ? ((await readOptional(metricsPath)) ?? (resumeFrom.kind === 'approximate' ? await readOptional(join(resumeFrom.dir, 'metrics.jsonl')) : null))
      : null;
    const metricsLines = earlierMetricLines(earlierMetrics, startStep);

    // Time limit: stop when what is left would not cover a few more steps, an evaluation and writing everything.
    const deadline = timeLimit !== undefined ? timeLimit * 1000 : Infinity; // performance.now() counts from the start
    const sessionStartElapsed = trainer.elapsedMs;
    // Until a save is measured: 3 s, and ~50 MB/s for the f32 checkpoint (weights, m, v) and the model.
    const budget = new TimeBudget(deadline, 3000 + (parameterCount(config) * 16) / 50_000, performance.now());
    let stopReason = null as 'time-limit' | 'interrupted' | null; // set by the timer or Ctrl-C
    const recentLosses: number[] = [];
    // Pretraining runs are long: a line every ~5% of the steps off a terminal.
    const progress = progressReporter('pretrain', values.json === true, 20);
    trainer.subscribe((event) => {
      metricsLines.push(JSON.stringify(event));
      progress.onEvent(event);
      if (event.type === 'step' || event.type === 'eval') budget.event(performance.now());
      if (event.type === 'step') {
        recentLosses.push(event.loss);
        if (recentLosses.length > 20) recentLosses.shift();
      }
    });
    const checkDeadline = () => {
      if (stopReason || !trainer.isRunning) return;
      const now = performance.now();
      if (budget.mustStop(now)) {
        const seconds = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
        log(`time limit: stopping after this step, ${seconds(deadline - now)} before the deadline (${seconds(budget.reserveMs(now))} kept to finish)`);
        stopReason = 'time-limit';
        trainer.cancel();
      }
    };
    const timer = Number.isFinite(deadline) ? setInterval(checkDeadline, 100) : undefined;
    const onSigint = () => {
      if (stopReason === 'interrupted') process.exit(130);
      stopReason = 'interrupted';
      process.stderr.write('\ntunelab pretrain: stopping after this step to save a checkpoint (Ctrl-C again to quit at once)\n');
      trainer.cancel();
    };
    process.on('SIGINT', onSigint);
    const onCheckpoint = async (checkpoint: TrainingCheckpoint) => {
      const started = performance.now();
      await saveCheckpoint(outDir, checkpoint);
      budget.saved(performance.now() - started);
    };
    let summary;
    try {
      budget.event(performance.now()); // the gaps start with training, not with the process
      summary = await trainer.train({ untilStep, checkpointEvery: saveEvery, onCheckpoint });
    } finally {
      if (timer) clearInterval(timer);
      process.off('SIGINT', onSigint);
      progress.finish();
    }

    // Everything is written at every end, so a later invocation (or a person) can pick up from here.
    const complete = summary.step >= summary.totalSteps;
    const reason = complete ? 'completed' : stopReason ?? (summary.reason === 'stopped' ? 'until-step' : summary.reason);
    const checkpoint = await trainer.checkpoint();
    await saveCheckpoint(outDir, checkpoint);
    const step = trainer.step;
    await writeModelFiles(outDir, cliModel, modelDir, dtype, step);
    await writeAtomic(metricsPath, metricsLines.join('\n') + '\n');

    const lastEval = [...metricsLines]
      .reverse()
      .map((line) => JSON.parse(line) as TrainEvent)
      .find((e): e is EvalEvent => e.type === 'eval') ?? null;
    const finalTrainLoss = recentLosses.length
      ? recentLosses.reduce((a, b) => a + b, 0) / recentLosses.length
      : (earlierRecord?.result.finalTrainLoss ?? null);
    const session: Session = {
      command,
      fromStep: startStep,
      toStep: step,
      reason,
      resume: resumeFrom?.kind ?? 'none',
      trainingMs: Math.round(summary.elapsedMs - sessionStartElapsed),
      wallMs: Math.round(performance.now()),
      tokensPerSecond:
        step > startStep ? Math.round(((step - startStep) * tokensPerStepOf(trainer)) / ((summary.elapsedMs - sessionStartElapsed) / 1000)) : null,
      adapter: gpu.adapter.name,
    };
    const record: PretrainRecord = {
      format: 'tunelab-pretrain',
      version: 1,
      settings,
      train: trainer.config,
      model: {
        layers: config.nLayer,
        width: config.nEmbd,
        heads: config.nHead,
        context: config.nPositions,
        vocabulary: config.vocabSize,
        parameters: parameterCount(config),
      },
      tokenizer: { sha256: tokenizerSha256, vocabulary: tokenizer.vocabSize, endOfTextId: tokenizer.endOfTextId },
      corpus: {
        train: { files: train.sources, tokens: trainTokens.length },
        validation: { files: validationSources, tokens: validationTokens?.length ?? 0, heldOutFraction: validationFraction },
      },
      progress: { step, microStep: checkpoint.progress.microStep, tokens: checkpoint.progress.tokens, elapsedMs: checkpoint.progress.elapsedMs },
      result: {
        complete,
        step,
        totalSteps: trainer.totalSteps,
        tokensSeen: checkpoint.progress.tokens,
        epochs: checkpoint.progress.tokens / Math.max(1, trainTokens.length),
        finalTrainLoss,
        finalTrainLossSteps: recentLosses.length || (earlierRecord?.result.finalTrainLossSteps ?? 0),
        lastEval,
      },
      sessions: [...earlierSessions.filter((s) => s.toStep <= startStep), session],
      approximateResumes,
      machine: gpu.adapter,
    };
    await writeAtomic(join(outDir, PRETRAIN_FILE), JSON.stringify(record, null, 2) + '\n');
    await writeAtomic(join(outDir, 'MODEL_CARD.md'), modelCard(record, settings.name));
    trainer.destroy();
    model.destroy();

    const result = {
      type: 'result',
      out: outDir,
      reason,
      complete,
      step,
      totalSteps: trainer.totalSteps,
      tokensSeen: record.result.tokensSeen,
      epochs: record.result.epochs,
      finalTrainLoss,
      validationLoss: lastEval?.loss ?? null,
      validationPerplexity: lastEval?.perplexity ?? null,
      validationStep: lastEval?.step ?? null,
      tokenized: !train.cached,
      resume: session.resume,
      trainingMs: session.trainingMs,
      wallMs: Math.round(performance.now()),
      tokensPerSecond: session.tokensPerSecond,
    };
    if (!values.json) {
      log(
        `${reason} at step ${step}/${trainer.totalSteps}; wrote the model, ${PRETRAIN_FILE}, metrics.jsonl and ${CHECKPOINT_DIR}/ to ${out}` +
          (complete ? '' : ` (continue with --resume ${out})`),
      );
    }
    process.stdout.write(JSON.stringify(result) + '\n');
    return reason === 'interrupted' ? 130 : 0;
  });
}

/**
 * An approximate resume: the trainer's weights are already the saved model's (the model was loaded from that
 * directory); this puts back the step counters and data position, with AdamW's moments and bias correction from zero.
 */
async function restoreApproximately(
  trainer: Trainer,
  progress: PretrainRecord['progress'],
  config: ModelConfig,
  stepsPerEpoch: number,
): Promise<void> {
  const weights = await trainer.readTrainable();
  const shapes = new Map(gpt2ParameterLayout(config).entries.map((e) => [e.name, e.shape]));
  trainer.restore({
    config: trainer.config as unknown as Record<string, unknown>,
    progress: { ...progress, epoch: Math.floor(progress.microStep / stepsPerEpoch) },
    rngStates: {},
    weights: [...weights].map(([name, w]) => ({ name, shape: shapes.get(name)!, data: w })),
    optimizer: {
      step: 0,
      tensors: [...weights].map(([name, w]) => ({ name, m: new Float32Array(w.length), v: new Float32Array(w.length) })),
    },
  });
}

/** Metric lines of earlier invocations, without steps past `startStep` (a checkpoint older than the metrics). */
function earlierMetricLines(bytes: Uint8Array | null, startStep: number): string[] {
  if (!bytes) return [];
  return new TextDecoder()
    .decode(bytes)
    .split('\n')
    .filter((line) => {
      if (!line) return false;
      const e = JSON.parse(line) as TrainEvent;
      return !((e.type === 'step' || e.type === 'eval') && e.step > startStep);
    });
}

/** The model directory's files as the weights stand now. */
async function writeModelFiles(outDir: string, model: CliModel, modelDir: string, dtype: 'f32' | 'f16', step: number): Promise<void> {
  const weights = await model.model.read();
  await writeAtomic(
    join(outDir, 'model.safetensors'),
    writeSafetensors(parameterTensors(weights), {
      dtype: dtype === 'f16' ? 'F16' : 'F32',
      metadata: { format: 'pt', creator: 'tunelab pretrain', step: String(step) },
    }),
  );
  const { config, configJson, tokenizerJson } = model.loaded;
  const savedConfig = modelConfigToJson(config, { ...configJson, torch_dtype: dtype === 'f16' ? 'float16' : 'float32' });
  await writeAtomic(join(outDir, 'config.json'), JSON.stringify(savedConfig, null, 2) + '\n');
  await writeAtomic(join(outDir, 'tokenizer.json'), JSON.stringify(tokenizerJson) + '\n');
  const tokenizerConfig = await readOptional(join(modelDir, 'tokenizer_config.json'));
  if (tokenizerConfig) await writeAtomic(join(outDir, 'tokenizer_config.json'), tokenizerConfig);
}

function tokensPerStepOf(trainer: Trainer): number {
  return trainer.config.batchSize * trainer.config.gradientAccumulationSteps * trainer.data.sequenceLength;
}

// ---- the model card ------------------------------------------------------------------------------------------------

const count = (n: number) => n.toLocaleString('en-US');
const size = (bytes: number) => (bytes >= 1e6 ? `${(bytes / 1e6).toFixed(1)} MB` : `${(bytes / 1e3).toFixed(1)} kB`);

/** MODEL_CARD.md from the record: the facts of the run (samples and fine-tuning results are added by hand). */
function modelCard(r: PretrainRecord, name: string): string {
  const { model: m, train: t, result } = r;
  const ev = result.lastEval;
  const files = (sources: TokenSource[]) => sources.map((s) => `\`${basename(s.name)}\` (${size(s.bytes)})`).join(', ');
  const trainingMs = r.sessions.reduce((sum, s) => sum + s.trainingMs, 0);
  const wallMs = r.sessions.reduce((sum, s) => sum + s.wallMs, 0);
  const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? '' : 's'}`;

  const architecture =
    `GPT-2 (pre-LayerNorm, GELU, tied embedding): ${m.layers} layers, width ${m.width}, ${m.heads} heads, ` +
    `context ${m.context}, vocabulary ${m.vocabulary}`;
  const tokenizer =
    `\`tokenizer.json\`, vocabulary ${count(r.tokenizer.vocabulary)}, end-of-text id ${r.tokenizer.endOfTextId} ` +
    `(sha256 ${r.tokenizer.sha256.slice(0, 12)}…)`;
  const { validation } = r.corpus;
  const heldOut = validation.files.length
    ? `${files(validation.files)}, ${count(validation.tokens)} tokens, never trained on`
    : validation.heldOutFraction > 0
      ? `the last ${100 * validation.heldOutFraction}% of the corpus tokens (${count(validation.tokens)}), never trained on`
      : 'none';
  const accumulated = t.gradientAccumulationSteps > 1 ? ` × ${t.gradientAccumulationSteps} accumulated` : '';
  const steps =
    `${count(result.step)} of ${count(result.totalSteps)}${result.complete ? '' : ' (not finished)'}, ` +
    `batch ${t.batchSize} × ${r.settings.sequenceLength} tokens${accumulated}, ${r.settings.sampling} blocks`;
  const warmup = t.warmupSteps > 0 ? `${t.warmupSteps} warmup steps` : `warmup ${100 * t.warmupRatio}% of the steps`;
  const optimizer =
    `AdamW, lr ${t.learningRate} (${t.schedule}, ${warmup}, down to ${t.minLrRatio}×), weight decay ${t.weightDecay}, ` +
    `β ${t.beta1}/${t.beta2}, gradient clipping ${t.maxGradNorm || 'off'}, seed ${r.settings.seed}`;
  const trainLoss =
    result.finalTrainLoss === null
      ? '—'
      : `${result.finalTrainLoss.toFixed(4)} (mean of the last ${result.finalTrainLossSteps} steps; ` +
        `perplexity ${perplexity(result.finalTrainLoss).toFixed(2)})`;
  const validationLoss = ev
    ? `${ev.loss.toFixed(4)}, perplexity ${ev.perplexity.toFixed(2)}, token accuracy ${(100 * ev.accuracy).toFixed(1)}% ` +
      `(step ${count(ev.step)}, ${count(ev.tokens)} tokens)`
    : '—';
  const approximate = r.approximateResumes ? ` (${plural(r.approximateResumes, 'approximate resume')}: AdamW's moments restarted)` : '';
  const time =
    `${formatDuration(trainingMs)} of training, ${formatDuration(wallMs)} of wall time over ` +
    `${plural(r.sessions.length, 'invocation')}${approximate}`;

  const rows: [string, string][] = [
    ['architecture', architecture],
    ['parameters', count(m.parameters)],
    ['tokenizer', tokenizer],
    ['training text', `${files(r.corpus.train.files)}: ${count(r.corpus.train.tokens)} tokens`],
    ['validation text', heldOut],
    ['steps', steps],
    ['tokens seen', `${count(result.tokensSeen)} (${result.epochs.toFixed(2)} epochs of the training text)`],
    ['optimizer', optimizer],
    ['final training loss', trainLoss],
    ['validation loss', validationLoss],
    ['machine', `${r.machine.name} (${r.machine.description || r.machine.vendor}), WebGPU via Dawn`],
    ['time', time],
  ];
  return [
    `# ${name}`,
    '',
    "A small GPT-2-architecture language model pretrained from random weights by `tunelab pretrain` (Tunelab's own",
    'WebGPU engine).',
    '',
    '| | |',
    '|---|---|',
    ...rows.map(([k, v]) => `| ${k} | ${v.replace(/\|/g, '\\|')} |`),
    '',
  ].join('\n');
}
