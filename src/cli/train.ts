// `tunelab train`: fine-tunes a model directory on a data file with the engine's trainer and writes the result to
// --out: a PEFT adapter (adapter_config.json + adapter_model.safetensors) for LoRA, or a complete model directory for
// selective/full training; metrics.jsonl (one event per line); training_config.json (everything needed to repeat
// the run, and the chat template generate/eval must use); checkpoint/ (resume with --resume OUT/checkpoint).
// Progress is a bar on a terminal, log lines otherwise, or JSON lines on stdout with --json.

import { mkdir, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { FORMAT_CHOICES, formatIssue, prepareDataset, resolveTemplate, type DatasetOptions } from '../engine/data/index.ts';
import { TunelabError } from '../engine/errors.ts';
import { exportPeftAdapter } from '../engine/interop/peft.ts';
import { writeSafetensors } from '../engine/io/safetensors.ts';
import { modelConfigToJson } from '../engine/model/config.ts';
import type { Gpt2Mode } from '../engine/model/gpt2.ts';
import { LORA_TARGETS, type LayerSelection, type LoraTarget } from '../engine/model/lora.ts';
import { parameterTensors } from '../engine/model/weights.ts';
import { CHECKPOINT_FILES, decodeCheckpoint, encodeCheckpoint, type TrainingCheckpoint } from '../engine/train/checkpoint.ts';
import { DEFAULT_TRAIN_CONFIG, Trainer, type TrainConfig } from '../engine/train/trainer.ts';
import {
  ADAPTER_CONFIG_FILE,
  ADAPTER_WEIGHTS_FILE,
  TRAINING_CONFIG_FILE,
  exists,
  loadCliModel,
  MODEL_OPTION_HELP,
  modelDirOrDefault,
  parseChoice,
  parseFraction,
  parseNumber,
  parseWhole,
  progressReporter,
  readInput,
  readOptional,
  runCommand,
  UsageError,
  withCliGpu,
  type DataSettings,
  type OptionValues,
} from './common.ts';

const d = DEFAULT_TRAIN_CONFIG;
const USAGE = `usage: tunelab train [--model DIR] --data FILE --out DIR [options]
       tunelab train --resume OUT/checkpoint --out OUT [options]

Fine-tunes the model in DIR on FILE and writes the adapter (or weights), metrics.jsonl, ${TRAINING_CONFIG_FILE} and
checkpoint/ to --out.

model:
${MODEL_OPTION_HELP}
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
  --f16-weights               keep the weight matrices that do not train as f16 on the GPU (half their memory; f32
                              math, on weights rounded to f16); saved weights stay exact
LoRA:
  --lora-rank N (default 8)   --lora-alpha X (default 16)   --lora-dropout X (default 0)   --rslora
  --lora-targets LIST         comma-separated ${LORA_TARGETS.join(',')} (default c_attn)
  --lora-layers L             all | last:N | comma-separated block indices (default all)
output:
  --out DIR                   where to write the results
  --save-every N              also checkpoint every N steps (default: only at the end)
  --resume DIR                continue from a checkpoint directory (e.g. OUT/checkpoint) with the run's model, data
                              and settings; flags given override them
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
  'f16-weights': { type: 'boolean', default: false },
} as const;

const positive = (v: number) => v > 0;
const nonNegative = (v: number) => v >= 0;
const unit = (v: number) => v >= 0 && v < 1;
const fromZeroToOne = (v: number) => v >= 0 && v <= 1;
const integer = (v: number) => Number.isSafeInteger(v);

/** Hyperparameters given on the command line (only those given, so a resumed run keeps the rest). */
function trainOverrides(values: OptionValues): Partial<TrainConfig> {
  const s = (name: string) => values[name] as string | undefined;
  const o: Partial<TrainConfig> = {};
  const set = <K extends keyof TrainConfig>(key: K, value: TrainConfig[K] | undefined) => {
    if (value !== undefined) o[key] = value;
  };
  set('mode', parseChoice(s('mode'), 'mode', ['lora', 'selective', 'full'] as const));
  set('lastBlocks', parseWhole(s('last-blocks'), 'last-blocks'));
  set('learningRate', parseNumber(s('lr'), 'lr', nonNegative, 'a number ≥ 0'));
  set('schedule', parseChoice(s('schedule'), 'schedule', ['constant', 'linear', 'cosine'] as const));
  set('warmupSteps', parseWhole(s('warmup-steps'), 'warmup-steps'));
  set('warmupRatio', parseNumber(s('warmup-ratio'), 'warmup-ratio', fromZeroToOne, 'a number from 0 to 1'));
  set('minLrRatio', parseNumber(s('min-lr-ratio'), 'min-lr-ratio', fromZeroToOne, 'a number from 0 to 1'));
  set('epochs', parseNumber(s('epochs'), 'epochs', positive, 'a positive number'));
  set('maxSteps', parseWhole(s('max-steps'), 'max-steps', 1));
  set('batchSize', parseWhole(s('batch-size'), 'batch-size', 1));
  set('gradientAccumulationSteps', parseWhole(s('grad-accum'), 'grad-accum', 1));
  set('maxGradNorm', parseNumber(s('max-grad-norm'), 'max-grad-norm', nonNegative, 'a number ≥ 0'));
  set('weightDecay', parseNumber(s('weight-decay'), 'weight-decay', nonNegative, 'a number ≥ 0'));
  set('beta1', parseNumber(s('beta1'), 'beta1', unit, 'a number in [0, 1)'));
  set('beta2', parseNumber(s('beta2'), 'beta2', unit, 'a number in [0, 1)'));
  set('eps', parseNumber(s('eps'), 'eps', positive, 'a positive number'));
  set('evalEvery', parseWhole(s('eval-every'), 'eval-every'));
  set('evalBatches', parseWhole(s('eval-batches'), 'eval-batches'));
  if (values['no-eval-at-start']) o.evalAtStart = false;
  set('seed', parseNumber(s('seed'), 'seed', integer, 'a whole number'));

  const lora: Record<string, unknown> = {};
  const rank = parseWhole(s('lora-rank'), 'lora-rank', 1);
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
function dataSettings(values: OptionValues, recorded: Partial<DataSettings> | undefined, modelContext: number, seed: number): DataSettings {
  const s = (name: string) => values[name] as string | undefined;
  const context = parseWhole(s('context'), 'context', 1) ?? recorded?.context ?? modelContext;
  return {
    format: parseChoice(s('format'), 'format', FORMAT_CHOICES) ?? recorded?.format ?? 'auto',
    validationFormat: recorded?.validationFormat ?? 'auto',
    template: resolveTemplate({ ...(recorded?.template ?? {}), ...(values['raw-completions'] ? { rawCompletions: true } : {}) }),
    trainOn: parseChoice(s('train-on'), 'train-on', ['completions', 'all'] as const) ?? recorded?.trainOn ?? 'completions',
    context: Math.min(context, modelContext),
    packing: (values.packing as boolean | undefined) ?? recorded?.packing ?? false,
    validationFraction: parseFraction(s('validation-fraction'), 'validation-fraction') ?? recorded?.validationFraction ?? 0.1,
    seed: parseNumber(s('data-seed'), 'data-seed', integer, 'a whole number') ?? recorded?.seed ?? seed,
  };
}

export function train(args: string[]): Promise<number> {
  return runCommand(
    {
      name: 'train',
      usage: USAGE,
      options: OPTIONS,
      // The trainer's and LoRA's config checks name the setting; they are the command line's fault.
      isUsageError: (error) => error instanceof RangeError && /config|schedule|LoRA|lora/.test(error.message),
    },
    args,
    (values) => runTrain(values, args),
  );
}

/** What `tunelab train` keeps in a checkpoint beside the trainer's state, so --resume needs no other flag. */
interface RecordedRun {
  data?: Partial<DataSettings>;
  model?: string;
  dataFile?: string;
  validationFile?: string | null;
}

async function runTrain(values: OptionValues, args: string[]): Promise<number> {
  const out = values.out as string | undefined;
  if (!out) throw new UsageError('--out DIR is required');
  let checkpoint: TrainingCheckpoint | undefined;
  const resumeDir = values.resume as string | undefined;
  if (resumeDir) {
    const files: Record<string, Uint8Array> = {};
    for (const name of Object.values(CHECKPOINT_FILES)) {
      const bytes = await readOptional(join(resumeDir, name));
      if (bytes) files[name] = bytes;
    }
    checkpoint = decodeCheckpoint(files);
  }
  const recorded = (checkpoint?.extra ?? {}) as RecordedRun;
  const dataFile = (values.data as string | undefined) ?? recorded.dataFile;
  const validationFile = (values.validation as string | undefined) ?? recorded.validationFile ?? undefined;
  if (!dataFile) throw new UsageError('--data FILE is required');
  const modelDir = modelDirOrDefault((values.model as string | undefined) ?? recorded.model, 'train');
  const overrides = trainOverrides(values);
  const saveEvery = parseWhole(values['save-every'] as string | undefined, 'save-every', 1) ?? 0;

  const outDir = resolve(out);
  await mkdir(outDir, { recursive: true });
  const products = ['metrics.jsonl', TRAINING_CONFIG_FILE, ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE, 'model.safetensors'];
  if (!values.force && !resumeDir) {
    for (const name of products) {
      if (await exists(join(outDir, name))) throw new TunelabError('bad-data', `${join(out, name)} already exists; pass --force to overwrite it`);
    }
  }

  return withCliGpu(async (gpu) => {
    const config = { ...DEFAULT_TRAIN_CONFIG, ...((checkpoint?.config ?? {}) as Partial<TrainConfig>), ...overrides };
    // --f16-weights packs only what this mode leaves frozen: the trained blocks of a selective run stay f32.
    const training: Gpt2Mode = config.mode === 'selective' ? { kind: 'selective', lastBlocks: config.lastBlocks } : { kind: config.mode };
    const { loaded, tokenizer, model } = await loadCliModel(gpu, modelDir, { frozenWeights: values['f16-weights'] ? 'f16' : 'f32', training });
    let owned: Trainer | undefined;
    try {
      for (const w of loaded.warnings) process.stderr.write(`tunelab train: warning: ${w}\n`);
      const data = dataSettings(values, recorded.data, loaded.config.nPositions, config.seed);
      const datasetOptions: DatasetOptions = { ...data, batchSize: config.batchSize };
      const prepared = prepareDataset(
        { train: await readInput(dataFile), ...(validationFile ? { validation: await readInput(validationFile) } : {}) },
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
      owned = trainer;
      const metricsPath = join(outDir, 'metrics.jsonl');
      // A resumed run appends to the metrics of the run it continues.
      const earlier = resumeDir ? await readOptional(metricsPath) : null;
      const metricsLines: string[] = earlier ? new TextDecoder().decode(earlier).split('\n').filter(Boolean) : [];
      const progress = progressReporter('train', values.json === true);
      const run: RecordedRun = { data, model: resolve(modelDir), dataFile: resolve(dataFile), validationFile: validationFile ? resolve(validationFile) : null };
      trainer.checkpointExtra = { ...run };
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
        const { spec, tensors } = await trainer.adapter!.toPeft(resolve(modelDir));
        const files = exportPeftAdapter(spec, tensors, loaded.config);
        await writeFile(join(outDir, ADAPTER_CONFIG_FILE), files.adapterConfigJson);
        await writeFile(join(outDir, ADAPTER_WEIGHTS_FILE), files.adapterModel);
        written.push(ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE);
      } else {
        const weights = await model.read(loaded.weights); // packed f16 weights are frozen: their exact values are the loaded ones
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
    } finally {
      owned?.destroy();
      model.destroy();
    }
  });
}
