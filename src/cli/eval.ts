// `tunelab eval`: loss, perplexity and token accuracy of a model (optionally with a LoRA adapter) on a data file, over
// the tokens training would count (answers only, unless --train-on all), rendered with the chat template the model
// or adapter was trained with when it records one. Prints one JSON object on stdout and a summary line on stderr.

import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { DataBatcher, FORMAT_CHOICES, formatIssue, prepareDataset, type FormatChoice } from '../engine/data/index.ts';
import { TunelabError } from '../engine/errors.ts';
import { Gpt2Run } from '../engine/model/gpt2.ts';
import { evaluateBatches } from '../engine/train/trainer.ts';
import { checkAdapterDirectory, loadCliAdapter, loadCliModel, parseNumber, recordedTemplate, UsageError, wholeAtLeast, withCliGpu } from './train.ts';

const USAGE = `usage: tunelab eval --model DIR [--adapter DIR] --data FILE [options]

  --model DIR                 model directory (config.json, model.safetensors, tokenizer.json)
  --adapter DIR               a LoRA adapter (adapter_config.json + adapter_model.safetensors)
  --data FILE                 the examples to score (same formats as training)
  --format F                  ${FORMAT_CHOICES.join('|')} (default auto)
  --train-on completions|all  which tokens count (default completions, as in training)
  --batch-size N              rows per batch (default 8)
  --context N                 longest row in tokens (default: the model's context)
  --json                      (accepted for symmetry; the result is always JSON on stdout)
`;

export async function evaluate(args: string[]): Promise<number> {
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({
      args,
      options: {
        model: { type: 'string' },
        adapter: { type: 'string' },
        data: { type: 'string' },
        format: { type: 'string', default: 'auto' },
        'train-on': { type: 'string', default: 'completions' },
        'batch-size': { type: 'string' },
        context: { type: 'string' },
        json: { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (error) {
    process.stderr.write(`tunelab eval: ${(error as Error).message}\n\n${USAGE}`);
    return 2;
  }
  if (values.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  let batchSize: number;
  let contextLimit: number | undefined;
  try {
    if (!values.model) throw new UsageError('--model DIR is required');
    if (!values.data) throw new UsageError('--data FILE is required');
    if (!(FORMAT_CHOICES as readonly string[]).includes(values.format as string)) {
      throw new UsageError(`--format must be one of ${FORMAT_CHOICES.join(', ')}`);
    }
    if (values['train-on'] !== 'completions' && values['train-on'] !== 'all') throw new UsageError('--train-on must be completions or all');
    batchSize = parseNumber(values['batch-size'] as string | undefined, 'batch-size', wholeAtLeast(1), 'a whole number ≥ 1') ?? 8;
    contextLimit = parseNumber(values.context as string | undefined, 'context', wholeAtLeast(1), 'a whole number ≥ 1');
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    process.stderr.write(`tunelab eval: ${error.message}\n\n${USAGE}`);
    return 2;
  }

  if (values.adapter) await checkAdapterDirectory(values.adapter as string);
  return withCliGpu(async (gpu) => {
    const modelDir = values.model as string;
    const adapterDir = values.adapter as string | undefined;
    const dataFile = values.data as string;
    const { tokenizer, model, template: modelTemplate } = await loadCliModel(gpu, modelDir);
    const adapter = adapterDir ? await loadCliAdapter(gpu, model.config, adapterDir) : undefined;
    const template = (adapterDir ? await recordedTemplate(adapterDir) : undefined) ?? modelTemplate;
    let bytes: Uint8Array;
    try {
      bytes = new Uint8Array(await readFile(dataFile));
    } catch (error) {
      throw new TunelabError('bad-data', `cannot read ${dataFile}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
    }
    const context = Math.min(contextLimit ?? model.config.nPositions, model.config.nPositions);
    const prepared = prepareDataset({ train: bytes }, tokenizer, {
      format: values.format as FormatChoice,
      trainOn: values['train-on'] as 'completions' | 'all',
      context,
      batchSize,
      validationFraction: 0,
      ...(template ? { template } : {}),
    });
    for (const issue of prepared.report.errors) process.stderr.write(`${formatIssue(issue, dataFile)}\n`);
    if (!prepared.report.trainable) {
      process.stderr.write(`tunelab eval: ${dataFile} has errors; nothing was scored\n`);
      return 1;
    }
    // Every example, in file order, as fixed batches (the batcher's validation side never shuffles).
    const batcher = new DataBatcher([], prepared.train, { batchSize, context, packing: false, seed: 0, padId: tokenizer.endOfTextId });
    const batches = batcher.validationBatches();
    const run = await Gpt2Run.create(gpu, model, {
      batchSize,
      sequenceLength: batcher.sequenceLength,
      mode: { kind: 'inference' },
      adapter,
    });
    const result = await evaluateBatches(run, batches);
    run.destroy();
    adapter?.destroy();
    model.destroy();
    process.stderr.write(
      `tunelab eval: ${batcher.validationRows} examples, ${result.tokens} tokens: loss ${result.loss.toFixed(4)}, ` +
        `perplexity ${result.perplexity.toFixed(3)}, token accuracy ${(100 * result.accuracy).toFixed(1)}%\n`,
    );
    process.stdout.write(JSON.stringify({ data: dataFile, examples: batcher.validationRows, ...result }) + '\n');
    return 0;
  });
}
