// The scale-out recipe: the files exist (and zip), the JSONL round-trips through Tunelab's dataset parser, train.py
// carries the run's hyperparameters and LoRA settings (read back from its constants), and, with Debian's python3,
// train.py compiles, its constants evaluate to the same values in Python, and its data preparation (run without
// torch/TRL, on a byte-level encoder) gives exactly the token ids and loss masks Tunelab's template code gives.

import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { unzipSync } from 'fflate';
import { describe, expect, it } from 'vitest';
import { TunelabError } from '../../src/engine/errors.ts';
import {
  encodeSegments,
  exampleSegments,
  parseDataFile,
  resolveTemplate,
  textBlocks,
  type ChatTemplate,
  type Example,
} from '../../src/engine/data/index.ts';
import type { AdapterSpec } from '../../src/engine/interop/peft.ts';
import {
  exportRunRecipe,
  pythonString,
  RECIPE_PACKAGES,
  recipeTrainingConfig,
  zipRunRecipe,
  type RecipeTrainingConfig,
  type RunRecipeInput,
} from '../../src/engine/interop/recipe.ts';
import { byteLevelTokenizer } from '../../src/engine/tokenizer/index.ts';
import { DEFAULT_TRAIN_CONFIG, trainConfig } from '../../src/engine/train/trainer.ts';

const PYTHON = '/usr/bin/python3';
const origin = (index: number) => ({ source: 'train' as const, line: index + 1, index });

const TRAIN: Example[] = [
  {
    kind: 'chat',
    messages: [
      { role: 'system', content: 'Answer in one word.' },
      { role: 'user', content: 'Capital of France?' },
      { role: 'assistant', content: 'Paris.' },
    ],
    origin: origin(0),
  },
  {
    kind: 'chat',
    messages: [
      { role: 'user', content: 'Say "hi" twice\\n' },
      { role: 'assistant', content: 'hi hi', weight: 0 },
      { role: 'user', content: 'Now in French — please.' },
      { role: 'assistant', content: 'salut salut' },
    ],
    origin: origin(1),
  },
  {
    kind: 'chat',
    messages: [
      { role: 'user', content: 'A long one: ' + 'x'.repeat(150) },
      { role: 'assistant', content: 'y'.repeat(40) },
    ],
    origin: origin(2),
  },
];
const VALIDATION: Example[] = [
  { kind: 'completion', prompt: '2 + 2 =', completion: ' 4', origin: { source: 'validation', line: 1, index: 0 } },
  { kind: 'completion', prompt: 'Café?', completion: ' Oui.', origin: { source: 'validation', line: 2, index: 1 } },
];

const ADAPTER: AdapterSpec = {
  rank: 4,
  alpha: 8,
  dropout: 0.05,
  useRslora: true,
  targetModules: ['c_attn', 'mlp.c_proj'],
  layers: [1, 0],
  baseModel: 'openai-community/gpt2',
};

const TRAINING: RecipeTrainingConfig = {
  learningRate: 3e-4,
  schedule: 'cosine',
  warmupSteps: 0,
  warmupRatio: 0.1,
  minLrRatio: 0.1,
  epochs: 2,
  maxSteps: 0,
  batchSize: 2,
  gradientAccumulationSteps: 2,
  maxGradNorm: 0.5,
  weightDecay: 0.01,
  beta1: 0.9,
  beta2: 0.95,
  eps: 1e-8,
  seed: 42,
  evalEvery: 5,
};

/** A template with characters that need escaping in Python: quotes, a backslash, a tab, non-ASCII. */
const TEMPLATE: Partial<ChatTemplate> = { user: '### "User" \\ {content}\n', assistantCue: '\tBot →' };

const INPUT: RunRecipeInput = {
  modelId: 'openai-community/gpt2',
  adapter: ADAPTER,
  training: TRAINING,
  maxSequenceLength: 128,
  data: { train: TRAIN, validation: VALIDATION },
  template: TEMPLATE,
  runName: 'capitals',
};

const text = (files: Map<string, Uint8Array>, path: string) => new TextDecoder().decode(files.get(path)!);

function withoutOrigin(examples: readonly Example[]): unknown[] {
  return examples.map(({ origin: _origin, ...rest }) => rest);
}

/** NAME = value lines of train.py, the value read as a Python literal of the kinds the recipe writes. */
function pythonConstants(source: string): Record<string, unknown> {
  const constants: Record<string, unknown> = {};
  for (const line of source.split('\n')) {
    const match = /^([A-Z][A-Z0-9_]*) = (.+?)(?:  # .*)?$/.exec(line);
    if (!match || match[2].startsWith('os.')) continue;
    const json = match[2].replace(/\bTrue\b/g, 'true').replace(/\bFalse\b/g, 'false').replace(/\bNone\b/g, 'null');
    constants[match[1]] = JSON.parse(json);
  }
  return constants;
}

function expectedConstants(): Record<string, unknown> {
  const template = resolveTemplate(TEMPLATE);
  return {
    MODEL: 'openai-community/gpt2',
    MAX_LENGTH: 128,
    LEARNING_RATE: 3e-4,
    LR_SCHEDULER_TYPE: 'cosine_with_min_lr',
    LR_SCHEDULER_KWARGS: { min_lr_rate: 0.1 },
    WARMUP_STEPS: 0,
    WARMUP_RATIO: 0.1,
    EPOCHS: 2,
    MAX_STEPS: 0,
    BATCH_SIZE: 2,
    GRADIENT_ACCUMULATION_STEPS: 2,
    MAX_GRAD_NORM: 0.5,
    WEIGHT_DECAY: 0.01,
    ADAM_BETA1: 0.9,
    ADAM_BETA2: 0.95,
    ADAM_EPSILON: 1e-8,
    SEED: 42,
    EVAL_EVERY: 5,
    PACKING: false,
    TRAIN_ON: 'completions',
    LORA_R: 4,
    LORA_ALPHA: 8,
    LORA_DROPOUT: 0.05,
    LORA_TARGET_MODULES: ['c_attn', 'mlp.c_proj'],
    LORA_LAYERS: [0, 1],
    USE_RSLORA: true,
    SYSTEM_TEMPLATE: template.system,
    USER_TEMPLATE: template.user,
    ASSISTANT_CUE: template.assistantCue,
    ASSISTANT_TEMPLATE: template.assistant,
    RAW_COMPLETIONS: false,
  };
}

describe('exportRunRecipe', () => {
  const files = exportRunRecipe(INPUT);

  it('writes the data, the script and the README, and zips them in a folder', () => {
    expect([...files.keys()].sort()).toEqual(['README.md', 'train.jsonl', 'train.py', 'validation.jsonl']);
    const zip = unzipSync(zipRunRecipe(files, 'capitals-recipe'));
    expect(Object.keys(zip).sort()).toEqual([...files.keys()].map((p) => `capitals-recipe/${p}`).sort());
    for (const [path, bytes] of files) expect(zip[`capitals-recipe/${path}`]).toEqual(bytes);
  });

  it('writes JSONL that Tunelab parses back into the same examples', () => {
    const train = parseDataFile(text(files, 'train.jsonl'), { source: 'train' });
    expect(train.issues.filter((i) => i.severity === 'error')).toEqual([]);
    expect(train.format).toMatchObject({ container: 'jsonl', kind: 'chat' });
    expect(withoutOrigin(train.examples)).toEqual(withoutOrigin(TRAIN));
    const validation = parseDataFile(text(files, 'validation.jsonl'), { source: 'validation' });
    expect(validation.issues.filter((i) => i.severity === 'error')).toEqual([]);
    expect(validation.format.kind).toBe('completion');
    expect(withoutOrigin(validation.examples)).toEqual(withoutOrigin(VALIDATION));
    // One example a line, OpenAI-style.
    expect(text(files, 'train.jsonl').trimEnd().split('\n').map((l) => Object.keys(JSON.parse(l)))).toEqual([['messages'], ['messages'], ['messages']]);
  });

  it("puts the run's hyperparameters and LoRA settings in train.py", () => {
    const source = text(files, 'train.py');
    expect(pythonConstants(source)).toEqual(expectedConstants());
    expect(source).toMatch(/^ {4}from trl import SFTConfig, SFTTrainer$/m);
    expect(source).toMatch(/^ {4}from peft import LoraConfig$/m);
    expect(source).toMatch(/^ {8}fan_in_fan_out=True,/m);
    expect(source).toMatch(/^ {8}completion_only_loss=True,/m);
    for (const name of ['learning_rate=LEARNING_RATE', 'max_grad_norm=MAX_GRAD_NORM', 'weight_decay=WEIGHT_DECAY', 'seed=SEED',
      'use_rslora=USE_RSLORA', 'layers_to_transform=LORA_LAYERS', 'max_length=MAX_LENGTH', 'gradient_accumulation_steps=GRADIENT_ACCUMULATION_STEPS']) {
      expect(source).toContain(name);
    }
    expect(source).toContain('trainer.save_model(OUTPUT_DIR)');
  });

  it("takes its settings from the trainer's TrainConfig: every field but the run's evaluation timing and mode", () => {
    const full = trainConfig({ ...TRAINING, evalAtStart: false, evalBatches: 3, lora: { rank: 4 } });
    expect(recipeTrainingConfig(full)).toEqual(TRAINING);
    const left = Object.keys(DEFAULT_TRAIN_CONFIG).filter((key) => !(key in recipeTrainingConfig(DEFAULT_TRAIN_CONFIG)));
    expect(left.sort()).toEqual(['evalAtStart', 'evalBatches', 'lastBlocks', 'lora', 'mode']);
    expect(text(exportRunRecipe({ ...INPUT, training: recipeTrainingConfig(full) }), 'train.py')).toBe(text(files, 'train.py'));
  });

  it('explains in the README how to install, run and import back', () => {
    const readme = text(files, 'README.md');
    for (const [name, version] of Object.entries(RECIPE_PACKAGES)) expect(readme).toContain(`"${name}==${version}"`);
    expect(readme).toContain('python train.py');
    expect(readme).toMatch(/adapter_config\.json.*adapter_model\.safetensors/);
    expect(readme).toContain('PeftModel.from_pretrained');
    expect(readme).toContain('| learning rate | 0.0003, cosine schedule down to 0.1 × the peak |');
    expect(readme).toContain('| warmup | 10% of the steps |');
    expect(readme).toContain('| batch | 2 rows × 2 accumulated = 4 per step |');
    expect(readme).toContain('| adapted | c_attn, mlp.c_proj in blocks 0, 1 |');
  });

  it('maps each schedule to its Transformers scheduler', () => {
    const scheduler = (overrides: Partial<RecipeTrainingConfig>) =>
      pythonConstants(text(exportRunRecipe({ ...INPUT, training: { ...TRAINING, ...overrides } }), 'train.py'));
    expect(scheduler({ schedule: 'constant', warmupRatio: 0 }).LR_SCHEDULER_TYPE).toBe('constant');
    expect(scheduler({ schedule: 'constant', warmupSteps: 3 }).LR_SCHEDULER_TYPE).toBe('constant_with_warmup');
    expect(scheduler({ schedule: 'cosine', minLrRatio: 0 })).toMatchObject({ LR_SCHEDULER_TYPE: 'cosine', LR_SCHEDULER_KWARGS: {} });
    expect(scheduler({ schedule: 'linear', minLrRatio: 0 }).LR_SCHEDULER_TYPE).toBe('linear');
    expect(text(exportRunRecipe({ ...INPUT, training: { ...TRAINING, schedule: 'linear' } }), 'train.py')).toMatch(
      /LR_SCHEDULER_TYPE = "linear"  # Tunelab "linear" stopped at 0\.1 x the peak; Transformers' linear decays to 0/,
    );
    const everything = pythonConstants(text(exportRunRecipe({ ...INPUT, adapter: { ...ADAPTER, layers: null }, trainOn: 'all', packing: true }), 'train.py'));
    expect(everything).toMatchObject({ LORA_LAYERS: null, TRAIN_ON: 'all', PACKING: true });
  });

  it('writes plain-text runs as train.txt', () => {
    const textRun = exportRunRecipe({ ...INPUT, data: { train: [{ kind: 'text', text: 'Once upon a time.', origin: origin(0) }] } });
    expect([...textRun.keys()].sort()).toEqual(['README.md', 'train.py', 'train.txt']);
    const parsed = parseDataFile(text(textRun, 'train.txt'));
    expect(parsed.format.kind).toBe('text');
    expect(parsed.examples.map((e) => (e.kind === 'text' ? e.text : ''))).toEqual(['Once upon a time.']);
  });

  it('refuses a run it cannot export', () => {
    expect(() => exportRunRecipe({ ...INPUT, data: { train: [] } })).toThrow(TunelabError);
    const mixed: Example[] = [...TRAIN, { kind: 'text', text: 'loose text', origin: origin(3) }];
    expect(() => exportRunRecipe({ ...INPUT, data: { train: mixed } })).toThrow(/mix plain text/);
    expect(() => exportRunRecipe({ ...INPUT, adapter: { ...ADAPTER, rank: 0 } })).toThrow(/rank must be a whole number/);
    expect(() => exportRunRecipe({ ...INPUT, training: { ...TRAINING, epochs: 0 } })).toThrow(/epochs or maxSteps/);
    expect(() => exportRunRecipe({ ...INPUT, maxSequenceLength: 1 })).toThrow(/maxSequenceLength/);
    expect(() => exportRunRecipe({ ...INPUT, modelId: '', adapter: { ...ADAPTER, baseModel: '' } })).toThrow(/no name/);
  });

  it('writes Python string literals', () => {
    expect(pythonString('a"b\\c\nd\te')).toBe('"a\\"b\\\\c\\nd\\te"');
    expect(pythonString('\u0001\u2028é')).toBe('"\\x01\\u2028é"');
  });
});

describe.runIf(existsSync(PYTHON))('train.py under python3', () => {
  /** Writes the recipe to a temporary folder and runs a Python snippet there with train.py importable. */
  function runPython(files: Map<string, Uint8Array>, snippet: string): string {
    const dir = mkdtempSync(join(tmpdir(), 'tunelab-recipe-'));
    try {
      for (const [path, bytes] of files) writeFileSync(join(dir, path), bytes);
      return execFileSync(PYTHON, ['-c', snippet], { cwd: dir, encoding: 'utf8', timeout: 60_000 });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }
  const importTrain =
    'import importlib.util, json, sys\n' +
    'spec = importlib.util.spec_from_file_location("train", "train.py")\n' +
    'train = importlib.util.module_from_spec(spec)\n' +
    'spec.loader.exec_module(train)\n' +
    'encode = lambda s: list(s.encode("utf-8"))\n';

  it('compiles, and its constants are the same values in Python', () => {
    const files = exportRunRecipe(INPUT);
    const output = runPython(
      files,
      'import ast, json, py_compile\n' +
        'py_compile.compile("train.py", doraise=True)\n' +
        'tree = ast.parse(open("train.py", encoding="utf-8").read())\n' +
        'values = {}\n' +
        'for node in tree.body:\n' +
        '    if isinstance(node, ast.Assign) and node.targets[0].id.isupper():\n' +
        '        try: values[node.targets[0].id] = ast.literal_eval(node.value)\n' +
        '        except ValueError: pass\n' +
        'print(json.dumps(values))\n',
    );
    expect(JSON.parse(output)).toEqual(expectedConstants());
  });

  it("prepares the same token ids and loss masks as Tunelab's template code", () => {
    const files = exportRunRecipe(INPUT);
    const output = runPython(
      files,
      importTrain +
        'print(json.dumps({s: train.rows(train.load_examples(s), encode, 256) for s in ("train", "validation")}))\n',
    );
    const rows = JSON.parse(output) as Record<string, { input_ids: number[]; completion_mask: number[] }[]>;
    const tokenizer = byteLevelTokenizer();
    const template = resolveTemplate(TEMPLATE);
    const expected = (examples: Example[]) =>
      examples.map((example) => {
        const { ids, trainMask } = encodeSegments(exampleSegments(example, template), tokenizer, 'completions');
        return { input_ids: ids.slice(0, 128), completion_mask: trainMask.slice(0, 128) };
      });
    expect(rows.train).toEqual(expected(TRAIN));
    expect(rows.validation).toEqual(expected(VALIDATION));
    expect(rows.train[1].completion_mask.some((m) => m === 1)).toBe(true);
    expect(rows.train[2].input_ids.length).toBe(128); // cut to MAX_LENGTH

    // Training on everything, and raw completions.
    const allFiles = exportRunRecipe({ ...INPUT, trainOn: 'all', template: { ...TEMPLATE, rawCompletions: true } });
    const allRows = JSON.parse(runPython(allFiles, importTrain + 'print(json.dumps(train.rows(train.load_examples("validation"), encode, 256)))\n'));
    const rawTemplate = resolveTemplate({ ...TEMPLATE, rawCompletions: true });
    expect(allRows).toEqual(
      VALIDATION.map((example) => {
        const { ids, trainMask } = encodeSegments(exampleSegments(example, rawTemplate), tokenizer, 'all');
        return { input_ids: ids, completion_mask: trainMask };
      }),
    );
  });

  it('cuts plain text into the same overlapping blocks, and counts warmup steps as Tunelab does', () => {
    const story = 'The quick brown fox jumps over the lazy dog. '.repeat(4);
    const files = exportRunRecipe({ ...INPUT, maxSequenceLength: 16, data: { train: [{ kind: 'text', text: story, origin: origin(0) }] } });
    const output = runPython(
      files,
      importTrain + 'print(json.dumps({"rows": train.rows(train.load_examples("train"), encode, 256), "warmup": [train.warmup_steps(n) for n in (1, 5, 40)]}))\n',
    );
    const result = JSON.parse(output) as { rows: { input_ids: number[]; completion_mask: number[] }[]; warmup: number[] };
    const blocks = textBlocks({ kind: 'text', text: story, origin: origin(0) }, byteLevelTokenizer(), 15);
    expect(result.rows.map((r) => r.input_ids)).toEqual(blocks.map((b) => Array.from(b.ids)));
    expect(result.rows.map((r) => r.completion_mask)).toEqual(blocks.map((b) => Array.from(b.trainMask)));
    // warmupRatio 0.1 of ceil(2 epochs × ceil(rows / 2) / 2 accumulation) steps, rounded up.
    const tunelabWarmup = (rows: number) => Math.ceil(0.1 * Math.max(1, Math.ceil((2 * Math.ceil(rows / 2)) / 2)));
    expect(result.warmup).toEqual([1, 5, 40].map(tunelabWarmup));
  });
});
