// Writes the TRL + PEFT recipe of a fine-tune without the app: the data file prepared as `tunelab train` prepares it,
// LoRA and training settings as given, the base model folder as the model id. For checking that a recipe runs and
// that the adapter it trains loads back into Tunelab (scripts/interop/README.md).
//
//   node scripts/interop/make-recipe.mjs --model public/models/tiny --data src/ui/datasets/sentiment.jsonl \
//     --out /tmp/recipe [--steps 20 --lr 1e-3 --rank 4 --targets c_attn,c_fc]

import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { prepareDataset, type Example } from '../../src/engine/data/index.ts';
import type { AdapterTarget } from '../../src/engine/interop/peft.ts';
import { exportRunRecipe, recipeTrainingConfig } from '../../src/engine/interop/recipe.ts';
import { loadModel } from '../../src/engine/model/load.ts';
import { directorySource } from '../../src/cli/common.ts';
import { Tokenizer } from '../../src/engine/tokenizer/index.ts';
import { trainConfig } from '../../src/engine/train/trainer.ts';

const { values } = parseArgs({
  options: {
    model: { type: 'string' },
    data: { type: 'string' },
    out: { type: 'string' },
    steps: { type: 'string', default: '20' },
    lr: { type: 'string', default: '1e-3' },
    rank: { type: 'string', default: '4' },
    targets: { type: 'string', default: 'c_attn' },
  },
});
if (!values.model || !values.data || !values.out) {
  console.error('usage: make-recipe.mjs --model DIR --data FILE --out DIR [--steps N --lr X --rank N --targets LIST]');
  process.exit(2);
}
const loaded = await loadModel(directorySource(values.model));
const tokenizer = Tokenizer.fromJson(loaded.tokenizerJson, { name: 'tokenizer.json' });
const config = trainConfig({ learningRate: Number(values.lr), maxSteps: Number(values.steps), batchSize: 4 });
const prepared = prepareDataset({ train: await readFile(values.data, 'utf8') }, tokenizer, {
  context: loaded.config.nPositions,
  batchSize: config.batchSize,
  validationFraction: 0.1,
  seed: config.seed,
});
const byOrigin = new Map<string, Example>();
for (const example of prepared.files.train.examples) byOrigin.set(`${example.origin.source}:${example.origin.index}`, example);
const examplesOf = (sequences: typeof prepared.train) =>
  sequences.map((s) => byOrigin.get(`${s.origin.source}:${s.origin.index}`)).filter((e): e is Example => e !== undefined);
const rank = Number(values.rank);
const files = exportRunRecipe({
  modelId: resolve(values.model),
  adapter: {
    rank,
    alpha: 2 * rank,
    dropout: 0,
    useRslora: false,
    targetModules: values.targets.split(',') as AdapterTarget[],
    layers: null,
    baseModel: resolve(values.model),
  },
  training: recipeTrainingConfig(config),
  maxSequenceLength: prepared.batcher.sequenceLength,
  data: { train: examplesOf(prepared.train), validation: examplesOf(prepared.validation) },
  template: prepared.options.template,
  trainOn: prepared.options.trainOn,
  packing: prepared.options.packing,
  runName: 'recipe check',
});
for (const [name, bytes] of files) {
  const path = join(values.out, name);
  await mkdir(dirname(path), { recursive: true });
  await writeFile(path, bytes);
}
console.log(`wrote ${[...files.keys()].join(', ')} to ${values.out}`);
