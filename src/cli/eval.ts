// `tunelab eval`: loss, perplexity and token accuracy of a model (optionally with a LoRA adapter) on a data file, over
// the tokens training would count (answers only, unless --train-on all), rendered with the chat template the model
// or adapter was trained with when it records one. Prints one JSON object on stdout and a summary line on stderr.

import { DataBatcher, FORMAT_CHOICES, formatIssue, prepareDataset } from '../engine/data/index.ts';
import { Gpt2Run } from '../engine/model/gpt2.ts';
import type { LoraAdapter } from '../engine/model/lora.ts';
import { evaluateBatches } from '../engine/train/trainer.ts';
import {
  checkAdapterDirectory,
  loadCliAdapter,
  loadCliModel,
  MODEL_OPTION_HELP,
  modelDirOrDefault,
  parseChoice,
  parseWhole,
  readInput,
  recordedTemplate,
  runCommand,
  UsageError,
  withCliGpu,
} from './common.ts';

const USAGE = `usage: tunelab eval [--model DIR] [--adapter DIR] --data FILE [options]

${MODEL_OPTION_HELP}
  --adapter DIR               a LoRA adapter (adapter_config.json + adapter_model.safetensors)
  --f16-weights               keep the frozen weight matrices as f16 on the GPU (half their memory; f32 math)
  --data FILE                 the examples to score (same formats as training)
  --format F                  ${FORMAT_CHOICES.join('|')} (default auto)
  --train-on completions|all  which tokens count (default completions, as in training)
  --batch-size N              rows per batch (default 8)
  --context N                 longest row in tokens (default: the model's context)
  --json                      (accepted for symmetry; the result is always JSON on stdout)
`;

const OPTIONS = {
  model: { type: 'string' },
  adapter: { type: 'string' },
  'f16-weights': { type: 'boolean', default: false },
  data: { type: 'string' },
  format: { type: 'string' },
  'train-on': { type: 'string' },
  'batch-size': { type: 'string' },
  context: { type: 'string' },
  json: { type: 'boolean', default: false },
} as const;

export function evaluate(args: string[]): Promise<number> {
  return runCommand({ name: 'eval', usage: USAGE, options: OPTIONS }, args, async (values) => {
    const s = (name: string) => values[name] as string | undefined;
    const dataFile = s('data');
    const adapterDir = s('adapter');
    if (!dataFile) throw new UsageError('--data FILE is required');
    const format = parseChoice(s('format'), 'format', FORMAT_CHOICES) ?? 'auto';
    const trainOn = parseChoice(s('train-on'), 'train-on', ['completions', 'all'] as const) ?? 'completions';
    const batchSize = parseWhole(s('batch-size'), 'batch-size', 1) ?? 8;
    const contextLimit = parseWhole(s('context'), 'context', 1);
    if (adapterDir) await checkAdapterDirectory(adapterDir);
    const bytes = await readInput(dataFile);
    const modelDir = modelDirOrDefault(s('model'), 'eval');

    return withCliGpu(async (gpu) => {
      const warn = (message: string) => process.stderr.write(`tunelab eval: warning: ${message}\n`);
      const { tokenizer, model, template: modelTemplate } = await loadCliModel(gpu, modelDir, { frozenWeights: values['f16-weights'] ? 'f16' : 'f32' });
      let adapter: LoraAdapter | undefined;
      let run: Gpt2Run | undefined;
      try {
        adapter = adapterDir ? await loadCliAdapter(gpu, model.config, adapterDir, warn) : undefined;
        const template = (adapterDir ? await recordedTemplate(adapterDir) : undefined) ?? modelTemplate;
        const context = Math.min(contextLimit ?? model.config.nPositions, model.config.nPositions);
        const prepared = prepareDataset({ train: bytes }, tokenizer, {
          format,
          trainOn,
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
        run = await Gpt2Run.create(gpu, model, { batchSize, sequenceLength: batcher.sequenceLength, mode: { kind: 'inference' }, adapter });
        const result = await evaluateBatches(run, batcher.validationBatches());
        process.stderr.write(
          `tunelab eval: ${batcher.validationRows} examples, ${result.tokens} tokens: loss ${result.loss.toFixed(4)}, ` +
            `perplexity ${result.perplexity.toFixed(3)}, token accuracy ${(100 * result.accuracy).toFixed(1)}%\n`,
        );
        process.stdout.write(JSON.stringify({ data: dataFile, examples: batcher.validationRows, ...result }) + '\n');
        return 0;
      } finally {
        run?.destroy();
        adapter?.destroy();
        model.destroy();
      }
    });
  });
}
