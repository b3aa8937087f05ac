// The whole data path in one call: read, parse and check the files, tokenize with the chat template, split off
// validation, find duplicates and overlaps, and plan batches — returning the validation report the CLI and the app
// show, and the sequences and batcher the trainer uses. Bad data never throws; it is reported.
import type { Tokenizer } from '../tokenizer/tokenizer.ts';
import { Rng } from '../random.ts';
import { DataBatcher } from './batches.ts';
import type { Example } from './examples.ts';
import type { DataIssue, DataSourceName, ErrorCode, WarningCode } from './issues.ts';
import { parseDataFile, type DataFormat, type FormatChoice, type ParsedFile } from './parse.ts';
import { resolveTemplate, type ChatTemplate, type TrainOn } from './template.ts';
import { decodeDataBytes } from './text.ts';
import { textBlocks, tokenizeExample, windowLength, type TokenSequence } from './tokenize.ts';

export interface DatasetOptions {
  /** Format of the training file; default 'auto' (detected). */
  format?: FormatChoice;
  /** Format of the validation file; default: detected. */
  validationFormat?: FormatChoice;
  /** Changes to the default chat template (template.ts). */
  template?: Partial<ChatTemplate>;
  /** 'completions' (default): only answers count for the loss; 'all': every token does. */
  trainOn?: TrainOn;
  /** The model's context in tokens (config.json n_positions); default 1024, GPT-2's. */
  context?: number;
  /** Rows per batch, for the steps an epoch takes; default 8. */
  batchSize?: number;
  /** Pack several examples per row instead of padding each; default false. */
  packing?: boolean;
  /** Share of examples held out for validation when no validation file is given; default 0.1. */
  validationFraction?: number;
  /** Seeds the train/validation split and the per-epoch shuffles; default 0. */
  seed?: number;
}

export type ResolvedDatasetOptions = Required<Omit<DatasetOptions, 'template'>> & { template: ChatTemplate };

/** The user's data: text (pasted) or bytes (a file, any of UTF-8, UTF-8 with BOM, UTF-16). */
export interface DataInput {
  train: string | Uint8Array;
  validation?: string | Uint8Array;
}

export interface DataStats {
  /** Valid examples in all files (plain text: context-sized blocks). */
  examples: number;
  trainExamples: number;
  validationExamples: number;
  /** Examples left out because they have errors. */
  invalidExamples: number;
  /** Tokens of all valid examples as rendered by the template, before truncation. */
  totalTokens: number;
  /** Training positions that count for the loss in one epoch, after truncation. */
  lossTokens: number;
  /** Validation positions that count for the loss. */
  validationLossTokens: number;
  /** Tokens per example, before truncation (0 when there are none). */
  minTokens: number;
  meanTokens: number;
  maxTokens: number;
  /** Examples longer than the context, and the tokens cut from them. */
  truncatedExamples: number;
  cutTokens: number;
  context: number;
  /** T of the batches (the longest row less one, at most the context). */
  sequenceLength: number;
  batchSize: number;
  packing: boolean;
  /** Optimizer steps one pass over the training rows takes. */
  stepsPerEpoch: number;
}

export interface DataReport {
  format: DataFormat;
  validationFormat?: DataFormat;
  /** Name of the tokenizer used for counting. */
  tokenizer: string;
  /** Sorted: training file first, then by line. */
  errors: DataIssue[];
  warnings: DataIssue[];
  stats: DataStats;
  /** No errors: training can start. */
  trainable: boolean;
}

export interface PreparedDataset {
  report: DataReport;
  options: ResolvedDatasetOptions;
  files: { train: ParsedFile; validation?: ParsedFile };
  train: TokenSequence[];
  validation: TokenSequence[];
  /** Batches at the options' batch size and packing, T = stats.sequenceLength. */
  batcher: DataBatcher;
}

export const FEW_EXAMPLES = 10;

export function resolveDatasetOptions(options: DatasetOptions = {}): ResolvedDatasetOptions {
  return {
    format: options.format ?? 'auto',
    validationFormat: options.validationFormat ?? 'auto',
    template: resolveTemplate(options.template),
    trainOn: options.trainOn ?? 'completions',
    context: options.context ?? 1024,
    batchSize: options.batchSize ?? 8,
    packing: options.packing ?? false,
    validationFraction: Math.min(Math.max(options.validationFraction ?? 0.1, 0), 1),
    seed: options.seed ?? 0,
  };
}

/** Checks and prepares data. Throws only for invalid options (TunelabError 'bad-data'), never for bad data. */
export function prepareDataset(input: DataInput, tokenizer: Tokenizer, options: DatasetOptions = {}): PreparedDataset {
  const resolved = resolveDatasetOptions(options);
  const { context, template, trainOn } = resolved;
  const extraIssues: DataIssue[] = [];
  const issue = (severity: 'error' | 'warning', code: ErrorCode | WarningCode, source: DataSourceName, message: string, line?: number) =>
    extraIssues.push({ severity, code, source, message, ...(line !== undefined ? { line } : {}) });

  const read = (data: string | Uint8Array, source: DataSourceName, format: FormatChoice): ParsedFile => {
    if (typeof data === 'string') return parseDataFile(data, { format, source });
    const decoded = decodeDataBytes(data, source);
    const parsed = parseDataFile(decoded.text, { format, source });
    return { ...parsed, issues: [...decoded.issues, ...parsed.issues] };
  };
  const trainFile = read(input.train, 'train', resolved.format);
  const validationFile = input.validation !== undefined ? read(input.validation, 'validation', resolved.validationFormat) : undefined;

  // Tokenize every valid example; plain text becomes blocks.
  const tokenize = (file: ParsedFile): TokenSequence[] =>
    file.examples.flatMap((example) =>
      example.kind === 'text'
        ? textBlocks(example, tokenizer, context)
        : [tokenizeExample(example, tokenizer, template, trainOn, context)],
    );
  const trainAll = tokenize(trainFile);
  const validationAll = validationFile ? tokenize(validationFile) : [];
  const exampleOf = new Map<TokenSequence, Example>();
  for (const file of [trainFile, validationFile]) {
    if (!file) continue;
    const sequences = file === trainFile ? trainAll : validationAll;
    // Text files have one example and several blocks; others have one sequence per example, in order.
    sequences.forEach((sequence, i) => exampleOf.set(sequence, file.examples[file.format.kind === 'text' ? 0 : i]));
  }

  // Train/validation split.
  let train = trainAll;
  let validation = validationAll;
  if (!validationFile) {
    const split = splitIndices(trainAll.length, resolved.validationFraction, resolved.seed);
    train = split.train.map((i) => trainAll[i]);
    validation = split.validation.map((i) => trainAll[i]);
    if (resolved.validationFraction > 0 && validation.length === 0 && trainAll.length > 0) {
      const message = 'too few examples to hold some out for validation; validation loss will not be measured';
      issue('warning', 'no-validation', 'train', message);
    }
  }

  // Warnings about examples.
  const structured = trainFile.format.kind !== 'text';
  const exampleCount = trainFile.examples.length;
  if (structured && exampleCount > 0 && exampleCount < FEW_EXAMPLES) {
    issue(
      'warning',
      'few-examples',
      'train',
      `only ${exampleCount} example${exampleCount === 1 ? '' : 's'}; fine-tuning usually needs at least ${FEW_EXAMPLES}, ` +
        'and 50 to 100 well-chosen ones make a clear difference',
    );
  }
  for (const sequence of [...trainAll, ...validationAll]) {
    const cut = sequence.fullLength - sequence.ids.length;
    if (cut <= 0) continue;
    const lost = sequence.trainMask.every((m, i) => i === 0 || m === 0) ? ' — nothing it should learn is left' : '';
    issue(
      'warning',
      'too-long',
      sequence.origin.source,
      `example is ${sequence.fullLength} tokens; a context of ${context} holds ${windowLength(context)} ` +
        `(the model reads ${context} and predicts one more), so its last ${cut} tokens are cut${lost}`,
      sequence.origin.line,
    );
  }
  for (const file of [trainFile, validationFile]) {
    if (file && file.format.kind !== 'text') findDuplicates(file, issue);
  }
  if (structured) findOverlap(train, validation, exampleOf, validationFile !== undefined, issue);
  for (const file of [trainFile, validationFile]) {
    if (file && file.format.kind !== 'text') findSpecialTokens(file, tokenizer, issue);
  }

  const batcher = new DataBatcher(train, validation, {
    batchSize: resolved.batchSize,
    context,
    packing: resolved.packing,
    seed: resolved.seed,
    padId: tokenizer.endOfTextId,
  });
  const sequences = [...trainAll, ...validationAll];
  if (train.length > 0 && batcher.trainLossTokens === 0) {
    // About the whole data set, but every error gets a line: the first training example's.
    issue(
      'error',
      'no-training-tokens',
      'train',
      'no token counts for the loss: every answer has weight 0 or is cut off by the context',
      train[0].origin.line,
    );
  }

  const allIssues = [...trainFile.issues, ...(validationFile?.issues ?? []), ...extraIssues].sort(
    (a, b) =>
      (a.source === b.source ? 0 : a.source === 'train' ? -1 : 1) || (a.line ?? 0) - (b.line ?? 0) || (a.column ?? 0) - (b.column ?? 0),
  );
  const lengths = sequences.map((s) => s.fullLength);
  const totalTokens = lengths.reduce((a, b) => a + b, 0);
  const invalid = (file?: ParsedFile) => (file ? file.exampleCount - file.examples.length : 0);
  const stats: DataStats = {
    examples: sequences.length,
    trainExamples: train.length,
    validationExamples: validation.length,
    invalidExamples: invalid(trainFile) + invalid(validationFile),
    totalTokens,
    lossTokens: batcher.trainLossTokens,
    validationLossTokens: batcher.validationLossTokens,
    minTokens: lengths.length ? lengths.reduce((a, b) => Math.min(a, b)) : 0,
    meanTokens: lengths.length ? totalTokens / lengths.length : 0,
    maxTokens: lengths.length ? lengths.reduce((a, b) => Math.max(a, b)) : 0,
    truncatedExamples: sequences.filter((s) => s.fullLength > s.ids.length).length,
    cutTokens: sequences.reduce((sum, s) => sum + s.fullLength - s.ids.length, 0),
    context,
    sequenceLength: batcher.sequenceLength,
    batchSize: resolved.batchSize,
    packing: resolved.packing,
    stepsPerEpoch: batcher.stepsPerEpoch,
  };
  const errors = allIssues.filter((i) => i.severity === 'error');
  const report: DataReport = {
    format: trainFile.format,
    ...(validationFile ? { validationFormat: validationFile.format } : {}),
    tokenizer: tokenizer.name,
    errors,
    warnings: allIssues.filter((i) => i.severity === 'warning'),
    stats,
    trainable: errors.length === 0,
  };
  return {
    report,
    options: resolved,
    files: validationFile ? { train: trainFile, validation: validationFile } : { train: trainFile },
    train,
    validation,
    batcher,
  };
}

/** Only the report. */
export function validateDataset(input: DataInput, tokenizer: Tokenizer, options: DatasetOptions = {}): DataReport {
  return prepareDataset(input, tokenizer, options).report;
}

/**
 * Seeded split of n items: round(n * fraction) go to validation (at least 1 when the fraction is positive and n >= 2,
 * never all). Both lists come back in their original order.
 */
export function splitIndices(n: number, fraction: number, seed: number): { train: number[]; validation: number[] } {
  let count = Math.round(n * fraction);
  if (fraction > 0 && n >= 2) count = Math.max(count, 1);
  count = Math.min(count, n - 1);
  if (count <= 0) return { train: Array.from({ length: n }, (_, i) => i), validation: [] };
  const order = new Rng(seed).shuffle(Array.from({ length: n }, (_, i) => i));
  const held = new Set(order.slice(0, count));
  const train: number[] = [];
  const validation: number[] = [];
  for (let i = 0; i < n; i++) (held.has(i) ? validation : train).push(i);
  return { train, validation };
}

type IssueSink = (
  severity: 'error' | 'warning',
  code: ErrorCode | WarningCode,
  source: DataSourceName,
  message: string,
  line?: number,
) => void;

/** The example's content, exactly; and normalized (case, runs of whitespace) for near-duplicates. */
export function exampleKeys(example: Example): { exact: string; near: string } {
  const fields =
    example.kind === 'chat'
      ? example.messages.flatMap((m) => [m.role, m.content, String(m.weight ?? 1)])
      : example.kind === 'completion'
        ? ['', example.prompt, example.completion]
        : [example.text];
  const normalize = (s: string) => s.toLowerCase().replace(/\s+/g, ' ').trim();
  return { exact: JSON.stringify(fields), near: JSON.stringify(fields.map(normalize)) };
}

function findDuplicates(file: ParsedFile, issue: IssueSink): void {
  const exact = new Map<string, number>();
  const near = new Map<string, number>();
  for (const example of file.examples) {
    const keys = exampleKeys(example);
    const line = example.origin.line;
    const sameExact = exact.get(keys.exact);
    const sameNear = near.get(keys.near);
    if (sameExact !== undefined) {
      issue('warning', 'duplicate', file.source, `same example as line ${sameExact}; repeats weigh it more in training`, line);
    } else if (sameNear !== undefined) {
      issue('warning', 'near-duplicate', file.source, `same as line ${sameNear} apart from case and spacing`, line);
    }
    if (sameExact === undefined) exact.set(keys.exact, line);
    if (sameNear === undefined) near.set(keys.near, line);
  }
}

function findOverlap(
  train: TokenSequence[],
  validation: TokenSequence[],
  exampleOf: Map<TokenSequence, Example>,
  separateFile: boolean,
  issue: IssueSink,
): void {
  const trainLines = new Map<string, number>();
  for (const sequence of train) {
    const key = exampleKeys(exampleOf.get(sequence)!).near;
    if (!trainLines.has(key)) trainLines.set(key, sequence.origin.line);
  }
  for (const sequence of validation) {
    const trainLine = trainLines.get(exampleKeys(exampleOf.get(sequence)!).near);
    if (trainLine === undefined) continue;
    const where = separateFile ? `the training file (line ${trainLine})` : `line ${trainLine}, which is in training`;
    const intro = separateFile ? 'this validation example is also in' : 'this example was held out for validation, but it repeats';
    issue(
      'warning',
      'train-validation-overlap',
      sequence.origin.source,
      `${intro} ${where}; validation loss will look better than the model is`,
      sequence.origin.line,
    );
  }
}

function findSpecialTokens(file: ParsedFile, tokenizer: Tokenizer, issue: IssueSink): void {
  const eot = tokenizer.endOfText;
  for (const example of file.examples) {
    const texts =
      example.kind === 'chat'
        ? example.messages.map((m) => m.content)
        : example.kind === 'completion'
          ? [example.prompt, example.completion]
          : [];
    if (texts.some((text) => text.includes(eot))) {
      issue(
        'warning',
        'special-token-in-text',
        file.source,
        `the text contains "${eot}", which the tokenizer reads as the end-of-text token: the model learns to stop there`,
        example.origin.line,
      );
    }
  }
}
