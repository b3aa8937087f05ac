// `tunelab validate FILE`: checks a data set the way training will read it and prints the report. Exit status 0 when
// the data is trainable, 1 when it has errors (each on its own line as `FILE:LINE: code: message`), 2 on bad usage.
// Counts use the tokenizer and context of --model DIR, by default those of the bundled base model (public/models/
// tunelab-base), so they are what `tunelab train` will see.
import { join } from 'node:path';
import { FORMAT_CHOICES, formatIssue, prepareDataset, type DataReport, type DatasetOptions } from '../engine/data/index.ts';
import { TunelabError } from '../engine/errors.ts';
import { Tokenizer } from '../engine/tokenizer/index.ts';
import {
  DEFAULT_MODEL_DIR,
  DEFAULT_MODEL_NAME,
  parseChoice,
  parseFraction,
  parseWhole,
  readInput,
  readJsonObject,
  runCommand,
  UsageError,
  type OptionValues,
} from './common.ts';

const USAGE = `usage: tunelab validate FILE [options]

  --model DIR                 count tokens with DIR/tokenizer.json, context from DIR/config.json (n_positions)
                              (default: the bundled base model, public/models/${DEFAULT_MODEL_NAME} of this package)
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

const OPTIONS = {
  model: { type: 'string' },
  format: { type: 'string' },
  validation: { type: 'string' },
  'validation-fraction': { type: 'string' },
  'batch-size': { type: 'string' },
  context: { type: 'string' },
  packing: { type: 'boolean', default: false },
  'train-on': { type: 'string' },
  seed: { type: 'string' },
  json: { type: 'boolean', default: false },
} as const;

export function validate(args: string[]): Promise<number> {
  return runCommand({ name: 'validate', usage: USAGE, options: OPTIONS, allowPositionals: true }, args, (values, positionals) =>
    runValidate(values, positionals),
  );
}

async function runValidate(values: OptionValues, positionals: string[]): Promise<number> {
  if (positionals.length !== 1) throw new UsageError(positionals.length === 0 ? 'give the data file to check' : 'give one data file');
  const s = (name: string) => values[name] as string | undefined;
  const options: DatasetOptions = {
    format: parseChoice(s('format'), 'format', FORMAT_CHOICES) ?? 'auto',
    trainOn: parseChoice(s('train-on'), 'train-on', ['completions', 'all'] as const) ?? 'completions',
    packing: values.packing as boolean,
    batchSize: parseWhole(s('batch-size'), 'batch-size', 1) ?? 8,
    seed: parseWhole(s('seed'), 'seed') ?? 0,
    validationFraction: parseFraction(s('validation-fraction'), 'validation-fraction') ?? 0.1,
  };
  const context = parseWhole(s('context'), 'context', 1);

  const file = positionals[0];
  const validationFile = s('validation');
  const { tokenizer, context: modelContext, note } = await loadCounting(s('model'));
  options.context = Math.min(context ?? modelContext, modelContext);
  const prepared = prepareDataset(
    { train: await readInput(file), ...(validationFile ? { validation: await readInput(validationFile) } : {}) },
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

/** The tokenizer and context tokens are counted with, and a line saying which. */
async function loadCounting(given: string | undefined): Promise<{ tokenizer: Tokenizer; context: number; note: string }> {
  const modelDir = given ?? DEFAULT_MODEL_DIR;
  const readJson = async (name: string, required: boolean): Promise<Record<string, unknown> | undefined> => {
    const json = await readJsonObject(join(modelDir, name), `--model ${modelDir}: ${name}`);
    if (!json && required) throw new TunelabError('bad-model', `--model ${modelDir}: there is no ${name} in that folder`);
    return json ?? undefined;
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
  const counting = `(vocabulary ${tokenizer.vocabSize}), context ${context}`;
  const note =
    given === undefined
      ? `no --model given: counting with the bundled base model ${DEFAULT_MODEL_NAME}'s tokenizer ${counting}`
      : `counting with ${modelDir}/tokenizer.json ${counting}`;
  return { tokenizer, context, note };
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
