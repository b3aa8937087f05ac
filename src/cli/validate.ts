// `tunelab validate FILE`: checks a data set the way training will read it and prints the report. Exit status 0 when
// the data is trainable, 1 when it has errors (each on its own line as `FILE:LINE: code: message`), 2 on bad usage.
// Counts use the model's tokenizer and context with --model DIR, else the byte-level tokenizer and a 1024 context.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import {
  FORMAT_CHOICES,
  formatIssue,
  prepareDataset,
  type DataReport,
  type DatasetOptions,
  type FormatChoice,
} from '../engine/data/index.ts';
import { TunelabError } from '../engine/errors.ts';
import { byteLevelTokenizer, Tokenizer } from '../engine/tokenizer/index.ts';

const USAGE = `usage: tunelab validate FILE [options]

  --model DIR                 count tokens with DIR/tokenizer.json, context from DIR/config.json (n_positions)
                              (default: byte-level tokenizer, context 1024)
  --format F                  ${FORMAT_CHOICES.join('|')} (default auto)
  --validation FILE           a separate validation file (default: hold out --validation-fraction of FILE)
  --validation-fraction X     share held out for validation, 0..1 (default 0.1)
  --batch-size N              for the steps an epoch takes (default 8)
  --context N                 limit the context (default: the model's)
  --packing                   pack several examples per row instead of padding each
  --train-on completions|all  which tokens count for the loss (default completions)
  --seed N                    seed of the split (default 0)
  --json                      print the report as JSON
`;

const DEFAULT_CONTEXT = 1024;

class UsageError extends Error {}

export async function validate(args: string[]): Promise<number> {
  let values: Record<string, string | boolean | undefined>;
  let positionals: string[];
  try {
    ({ values, positionals } = parseArgs({
      args,
      options: {
        model: { type: 'string' },
        format: { type: 'string', default: 'auto' },
        validation: { type: 'string' },
        'validation-fraction': { type: 'string' },
        'batch-size': { type: 'string' },
        context: { type: 'string' },
        packing: { type: 'boolean', default: false },
        'train-on': { type: 'string', default: 'completions' },
        seed: { type: 'string' },
        json: { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false },
      },
      strict: true,
      allowPositionals: true,
    }));
    if (values.help) {
      process.stdout.write(USAGE);
      return 0;
    }
    if (positionals.length !== 1) throw new UsageError(positionals.length === 0 ? 'give the data file to check' : 'give one data file');
  } catch (error) {
    process.stderr.write(`tunelab validate: ${(error as Error).message}\n\n${USAGE}`);
    return 2;
  }

  let options: DatasetOptions;
  try {
    const format = values.format as string;
    if (!(FORMAT_CHOICES as readonly string[]).includes(format)) {
      throw new UsageError(`--format must be one of ${FORMAT_CHOICES.join(', ')}`);
    }
    const trainOn = values['train-on'] as string;
    if (trainOn !== 'completions' && trainOn !== 'all') throw new UsageError('--train-on must be completions or all');
    options = {
      format: format as FormatChoice,
      trainOn,
      packing: values.packing as boolean,
      batchSize: integerOption(values, 'batch-size', 1) ?? 8,
      seed: integerOption(values, 'seed', 0) ?? 0,
      validationFraction: fractionOption(values, 'validation-fraction') ?? 0.1,
    };
    const context = integerOption(values, 'context', 1);
    if (context !== undefined) options.context = context;
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    process.stderr.write(`tunelab validate: ${error.message}\n\n${USAGE}`);
    return 2;
  }

  const file = positionals[0];
  const validationFile = values.validation as string | undefined;
  const { tokenizer, context, note } = await loadCounting(values.model as string | undefined);
  options.context = Math.min(options.context ?? context, context);
  const prepared = prepareDataset(
    { train: await readData(file), ...(validationFile ? { validation: await readData(validationFile) } : {}) },
    tokenizer,
    options,
  );
  const { report } = prepared;
  if (values.json) {
    const json = { file, validationFile: validationFile ?? null, tokenizerNote: note, ...report };
    process.stdout.write(JSON.stringify(json, null, 2) + '\n');
  } else {
    process.stdout.write(formatReport(report, file, validationFile, note));
  }
  return report.trainable ? 0 : 1;
}

function integerOption(values: Record<string, unknown>, name: string, min: number): number | undefined {
  const text = values[name] as string | undefined;
  if (text === undefined) return undefined;
  const value = Number(text);
  if (!Number.isInteger(value) || value < min) throw new UsageError(`--${name} must be an integer of at least ${min}, got '${text}'`);
  return value;
}

function fractionOption(values: Record<string, unknown>, name: string): number | undefined {
  const text = values[name] as string | undefined;
  if (text === undefined) return undefined;
  const value = Number(text);
  if (text.trim() === '' || !(value >= 0 && value < 1)) {
    throw new UsageError(`--${name} must be a number from 0 to below 1, got '${text}'`);
  }
  return value;
}

async function readData(path: string): Promise<Uint8Array> {
  try {
    return new Uint8Array(await readFile(path));
  } catch (error) {
    throw new TunelabError('bad-data', `cannot read ${path}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
  }
}

/** The tokenizer and context tokens are counted with, and a line saying which. */
async function loadCounting(modelDir: string | undefined): Promise<{ tokenizer: Tokenizer; context: number; note: string }> {
  if (modelDir === undefined) {
    return {
      tokenizer: byteLevelTokenizer(),
      context: DEFAULT_CONTEXT,
      note:
        `no --model given: counting with the byte-level tokenizer (1 token per UTF-8 byte, several times ` +
        `what a GPT-2 tokenizer counts) and a context of ${DEFAULT_CONTEXT}`,
    };
  }
  const readJson = async (name: string, required: boolean): Promise<Record<string, unknown> | undefined> => {
    let text: string;
    try {
      text = await readFile(join(modelDir, name), 'utf8');
    } catch {
      if (!required) return undefined;
      throw new TunelabError('bad-model', `--model ${modelDir}: there is no ${name} in that folder`);
    }
    try {
      const value: unknown = JSON.parse(text);
      if (typeof value === 'object' && value !== null && !Array.isArray(value)) return value as Record<string, unknown>;
    } catch {
      // reported below
    }
    throw new TunelabError('bad-model', `--model ${modelDir}: ${name} is not a JSON object`);
  };
  const tokenizerJson = await readJson('tokenizer.json', true);
  const config = (await readJson('config.json', true))!;
  const tokenizerConfig = await readJson('tokenizer_config.json', false);
  const context = [config.n_positions, config.n_ctx, config.max_position_embeddings].find(
    (v): v is number => typeof v === 'number' && Number.isInteger(v) && v > 0,
  );
  if (context === undefined) throw new TunelabError('bad-model', `--model ${modelDir}: config.json has no n_positions`);
  const tokenizer = Tokenizer.fromJson(tokenizerJson, {
    name: `${modelDir}/tokenizer.json`,
    ...(tokenizerConfig ? { config: tokenizerConfig } : {}),
  });
  return { tokenizer, context, note: `counting with ${modelDir}/tokenizer.json (vocabulary ${tokenizer.vocabSize}), context ${context}` };
}

/** The report for a terminal: the format, one line per finding, statistics, and the verdict. */
export function formatReport(report: DataReport, file: string, validationFile: string | undefined, note: string): string {
  const out: string[] = [];
  const nameOf = (source: 'train' | 'validation') => (source === 'validation' && validationFile ? validationFile : file);
  out.push(`${file}: ${report.format.label}${report.format.detected ? ' (detected)' : ''}`);
  if (validationFile && report.validationFormat) {
    out.push(`${validationFile}: ${report.validationFormat.label}${report.validationFormat.detected ? ' (detected)' : ''}`);
  }
  out.push(note);
  for (const issue of [...report.errors, ...report.warnings]) out.push(formatIssue(issue, nameOf(issue.source)));
  const s = report.stats;
  const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? '' : 's'}`;
  const unit = report.format.kind === 'text' ? 'block' : 'example';
  const left = s.invalidExamples > 0 ? `, ${plural(s.invalidExamples, 'example')} with errors left out` : '';
  out.push('');
  out.push(`${(unit + 's').padEnd(20)}${s.examples} (${s.trainExamples} training, ${s.validationExamples} validation${left})`);
  const loss = `${s.lossTokens} count for the loss per epoch, ${s.validationLossTokens} in validation`;
  out.push(`${'tokens'.padEnd(20)}${s.totalTokens} in all; ${loss}`);
  if (s.examples > 0) {
    out.push(`${`tokens per ${unit}`.padEnd(20)}min ${s.minTokens}, mean ${s.meanTokens.toFixed(1)}, max ${s.maxTokens}`);
  }
  if (s.truncatedExamples > 0) {
    out.push(`${'truncated'.padEnd(20)}${plural(s.truncatedExamples, unit)}, ${plural(s.cutTokens, 'token')} cut (context ${s.context})`);
  }
  out.push(
    `${'steps per epoch'.padEnd(20)}${s.stepsPerEpoch} at batch size ${s.batchSize} ` +
      `(${s.packing ? 'packed' : 'one example per row'}, sequence length ${s.sequenceLength})`,
  );
  out.push('');
  const counts = `${plural(report.errors.length, 'error')}, ${plural(report.warnings.length, 'warning')}`;
  out.push(report.trainable ? `trainable (${counts})` : `not trainable (${counts})`);
  return out.join('\n') + '\n';
}
