// A Tunelab run exported as a recipe to repeat at scale with Hugging Face TRL and PEFT: a folder (or zip) with
//   train.jsonl, validation.jsonl   the examples, OpenAI-style JSONL (chat `messages` or `prompt`/`completion`);
//                                   plain-text runs get train.txt / validation.txt instead
//   train.py                        a short script: the run's hyperparameters and LoRA settings as constants, the
//                                   chat template and the loss mask rebuilt exactly as Tunelab builds them, SFTTrainer
//   README.md                       how to install, run, and bring the adapter back into Tunelab
// The adapter the script saves (adapter_config.json + adapter_model.safetensors) is a PEFT adapter that
// importPeftAdapter (peft.ts) reads.
//
// The script tokenizes the data itself and hands TRL rows of input_ids and completion_mask, because TRL's own chat
// handling needs a chat template GPT-2 does not have, and because only then do multi-turn examples, weight-0 answers
// and "train on everything" mean in TRL what they mean in the tab.

import { zipSync } from 'fflate';
import { TunelabError } from '../errors.ts';
import type { Example } from '../data/examples.ts';
import { exampleSegments, renderSegments, resolveTemplate, type ChatTemplate, type TrainOn } from '../data/template.ts';
import type { TrainConfig } from '../train/trainer.ts';
import { ADAPTER_TARGETS, type AdapterSpec } from './peft.ts';

/**
 * The trainer's settings the recipe leaves out: evaluation timing that only shapes Tunelab's curve (the script
 * evaluates every EVAL_EVERY steps with TRL), and what trains, which the recipe's AdapterSpec says (always LoRA).
 */
const NOT_IN_RECIPE = ['evalAtStart', 'evalBatches', 'mode', 'lastBlocks', 'lora'] as const satisfies readonly (keyof TrainConfig)[];

/**
 * The training settings a recipe carries: every field of the trainer's TrainConfig but NOT_IN_RECIPE, with the same
 * names and meanings, so a field added to TrainConfig is one here too and train.py must say how to write it
 * (TRAINING_CONSTANTS) before this compiles.
 */
export type RecipeTrainingConfig = Omit<TrainConfig, (typeof NOT_IN_RECIPE)[number]>;

export interface RunRecipeInput {
  /** What from_pretrained loads: a Hub id ('openai-community/gpt2', 'distilgpt2') or a folder; '' = adapter.baseModel. */
  modelId: string;
  /** The LoRA settings (rank, alpha, dropout, rsLoRA, target modules, layers). */
  adapter: AdapterSpec;
  training: RecipeTrainingConfig;
  /** Tokens per row (the run's context, at most the model's n_positions); SFTConfig.max_length. */
  maxSequenceLength: number;
  /** The examples as the run split them (for plain text, validation may be empty: the tab splits blocks, not texts). */
  data: { train: readonly Example[]; validation?: readonly Example[] };
  /** Changes to the default chat template, as the run had them. */
  template?: Partial<ChatTemplate>;
  /** 'completions' (default) or 'all'. */
  trainOn?: TrainOn;
  packing?: boolean;
  /** For the README and the script's header ('my run'). */
  runName?: string;
}

/** The versions the generated script is written against (the newest releases when this was written). */
export const RECIPE_PACKAGES: Readonly<Record<string, string>> = Object.freeze({
  transformers: '5.23.0',
  trl: '1.16.0',
  peft: '0.21.2',
  datasets: '5.2.0',
  accelerate: '1.15.0',
});

const END_OF_TEXT = '<|endoftext|>';

// ---- the dataset ---------------------------------------------------------------------------------------------------

/** One example as OpenAI-style JSON: {"messages": [...]} or {"prompt", "completion"}. Plain text has no JSON form. */
export function exampleToJson(example: Exclude<Example, { kind: 'text' }>): Record<string, unknown> {
  if (example.kind === 'completion') return { prompt: example.prompt, completion: example.completion };
  return {
    messages: example.messages.map((m) =>
      m.weight === undefined ? { role: m.role, content: m.content } : { role: m.role, content: m.content, weight: m.weight },
    ),
  };
}

/** The dataset files of one split: '<split>.jsonl', or '<split>.txt' for plain text (texts joined by a blank line). */
function datasetFile(split: 'train' | 'validation', examples: readonly Example[]): [string, string] | null {
  if (examples.length === 0) return null;
  const texts = examples.filter((e) => e.kind === 'text');
  if (texts.length === examples.length) return [`${split}.txt`, texts.map((e) => e.text).join('\n\n')];
  if (texts.length > 0) {
    throw new TunelabError('bad-data', `the ${split} examples mix plain text with chat or prompt/completion examples`);
  }
  const lines = examples.map((e) => JSON.stringify(exampleToJson(e as Exclude<Example, { kind: 'text' }>)));
  return [`${split}.jsonl`, `${lines.join('\n')}\n`];
}

// ---- Python literals -------------------------------------------------------------------------------------------------

/** A double-quoted Python string literal; controls and line separators escaped, other characters as they are. */
export function pythonString(text: string): string {
  let out = '"';
  for (const char of text) {
    const code = char.codePointAt(0)!;
    if (char === '\\') out += '\\\\';
    else if (char === '"') out += '\\"';
    else if (char === '\n') out += '\\n';
    else if (char === '\r') out += '\\r';
    else if (char === '\t') out += '\\t';
    else if (code < 0x20 || (code >= 0x7f && code <= 0x9f)) out += `\\x${code.toString(16).padStart(2, '0')}`;
    else if (code === 0x2028 || code === 0x2029 || (code >= 0xd800 && code <= 0xdfff)) out += `\\u${code.toString(16)}`;
    else out += char;
  }
  return `${out}"`;
}

function pythonNumber(value: number, what: string): string {
  if (!Number.isFinite(value)) throw new RangeError(`recipe: ${what} must be a finite number, got ${value}`);
  return String(value);
}

/** A float setting written so that it reads as one ('1.0', '0.0002', '1e-8'). */
function pythonFloat(value: number, what: string): string {
  const text = pythonNumber(value, what);
  return Number.isInteger(value) && !/e/.test(text) ? `${text}.0` : text;
}

function pythonInt(value: number, what: string, min: number): string {
  if (!(Number.isSafeInteger(value) && value >= min)) throw new RangeError(`recipe: ${what} must be a whole number ≥ ${min}, got ${value}`);
  return String(value);
}

const pythonBool = (value: boolean) => (value ? 'True' : 'False');

// ---- the script ------------------------------------------------------------------------------------------------------

interface Scheduler {
  type: string;
  kwargs: string;
  note: string;
}

/** Transformers' scheduler closest to Tunelab's: the same shapes, and the floor where Transformers has one. */
function schedulerFor(t: RecipeTrainingConfig): Scheduler {
  const hasWarmup = t.warmupSteps > 0 || t.warmupRatio > 0;
  switch (t.schedule) {
    case 'constant':
      return { type: hasWarmup ? 'constant_with_warmup' : 'constant', kwargs: '{}', note: 'Tunelab "constant"' };
    case 'cosine':
      if (t.minLrRatio > 0) {
        return {
          type: 'cosine_with_min_lr',
          kwargs: `{"min_lr_rate": ${pythonFloat(t.minLrRatio, 'minLrRatio')}}`,
          note: `Tunelab "cosine" down to ${t.minLrRatio} x the peak`,
        };
      }
      return { type: 'cosine', kwargs: '{}', note: 'Tunelab "cosine"' };
    case 'linear':
      return {
        type: 'linear',
        kwargs: '{}',
        note:
          t.minLrRatio > 0
            ? `Tunelab "linear" stopped at ${t.minLrRatio} x the peak; Transformers' linear decays to 0`
            : 'Tunelab "linear"',
      };
  }
}

/**
 * train.py's constant lines for each training setting, in the script's order. Its type names every field of
 * RecipeTrainingConfig, so a setting cannot be carried without being written.
 */
const TRAINING_CONSTANTS: { readonly [K in keyof RecipeTrainingConfig]-?: (t: RecipeTrainingConfig) => readonly string[] } = {
  learningRate: (t) => [`LEARNING_RATE = ${pythonFloat(t.learningRate, 'learningRate')}  # the peak, reached after warmup`],
  schedule: (t) => {
    const scheduler = schedulerFor(t);
    return [`LR_SCHEDULER_TYPE = ${pythonString(scheduler.type)}  # ${scheduler.note}`, `LR_SCHEDULER_KWARGS = ${scheduler.kwargs}`];
  },
  // The floor is part of the scheduler's kwargs (schedulerFor).
  minLrRatio: () => [],
  warmupSteps: (t) => [`WARMUP_STEPS = ${pythonInt(t.warmupSteps, 'warmupSteps', 0)}  # when 0, WARMUP_RATIO of the optimizer steps`],
  warmupRatio: (t) => [`WARMUP_RATIO = ${pythonFloat(t.warmupRatio, 'warmupRatio')}`],
  epochs: (t) => [`EPOCHS = ${pythonFloat(t.epochs, 'epochs')}`],
  maxSteps: (t) => [`MAX_STEPS = ${pythonInt(t.maxSteps, 'maxSteps', 0)}  # 0: as many as EPOCHS take`],
  batchSize: (t) => [`BATCH_SIZE = ${pythonInt(t.batchSize, 'batchSize', 1)}  # rows per micro-batch (per GPU)`],
  gradientAccumulationSteps: (t) => [
    `GRADIENT_ACCUMULATION_STEPS = ${pythonInt(t.gradientAccumulationSteps, 'gradientAccumulationSteps', 1)}`,
  ],
  maxGradNorm: (t) => [`MAX_GRAD_NORM = ${pythonFloat(t.maxGradNorm, 'maxGradNorm')}  # 0: no clipping`],
  weightDecay: (t) => [`WEIGHT_DECAY = ${pythonFloat(t.weightDecay, 'weightDecay')}`],
  beta1: (t) => [`ADAM_BETA1 = ${pythonFloat(t.beta1, 'beta1')}`],
  beta2: (t) => [`ADAM_BETA2 = ${pythonFloat(t.beta2, 'beta2')}`],
  eps: (t) => [`ADAM_EPSILON = ${pythonFloat(t.eps, 'eps')}`],
  seed: (t) => [`SEED = ${pythonInt(t.seed, 'seed', 0)}`],
  evalEvery: (t) => [
    `EVAL_EVERY = ${pythonInt(t.evalEvery, 'evalEvery', 0)}  # optimizer steps between validation losses; 0: at the end only`,
  ],
};

const RECIPE_TRAINING_KEYS = Object.keys(TRAINING_CONSTANTS) as (keyof RecipeTrainingConfig)[];

function trainingConstants(t: RecipeTrainingConfig): string {
  return RECIPE_TRAINING_KEYS.flatMap((key) => TRAINING_CONSTANTS[key](t)).join('\n');
}

/** The recipe's part of a full training config (a run's TrainConfig, as trainConfig() completed it). */
export function recipeTrainingConfig(config: TrainConfig): RecipeTrainingConfig {
  return Object.fromEntries(RECIPE_TRAINING_KEYS.map((key) => [key, config[key]])) as unknown as RecipeTrainingConfig;
}

function checkInput(input: RunRecipeInput): void {
  const t = input.training;
  if (!(t.epochs > 0) && !(t.maxSteps > 0)) throw new RangeError('recipe: epochs or maxSteps must be above 0');
  if (!(t.learningRate >= 0)) throw new RangeError(`recipe: learningRate must be ≥ 0, got ${t.learningRate}`);
  for (const key of ['warmupRatio', 'minLrRatio'] as const) {
    if (!(t[key] >= 0 && t[key] <= 1)) throw new RangeError(`recipe: ${key} must be in [0, 1], got ${t[key]}`);
  }
  const a = input.adapter;
  if (!(Number.isSafeInteger(a.rank) && a.rank >= 1)) throw new RangeError(`recipe: LoRA rank must be a whole number ≥ 1, got ${a.rank}`);
  if (!(a.dropout >= 0 && a.dropout < 1)) throw new RangeError(`recipe: LoRA dropout must be in [0, 1), got ${a.dropout}`);
  if (a.targetModules.length === 0) throw new RangeError('recipe: the adapter has no target modules');
  for (const target of a.targetModules) {
    if (!ADAPTER_TARGETS.includes(target)) throw new RangeError(`recipe: unknown target module "${target}"; use ${ADAPTER_TARGETS.join(', ')}`);
  }
  if (input.data.train.length === 0) throw new TunelabError('bad-data', 'the run has no training examples to export');
}

/** The example conversation of the script's comment, rendered with the run's template. */
function templateExample(template: ChatTemplate): { text: string; trained: string } {
  const example: Example = {
    kind: 'chat',
    messages: [
      { role: 'system', content: 'Be brief.' },
      { role: 'user', content: 'Capital of France?' },
      { role: 'assistant', content: 'Paris.' },
    ],
    origin: { source: 'train', line: 1, index: 0 },
  };
  const segments = exampleSegments(example, template);
  return {
    text: renderSegments(segments, END_OF_TEXT),
    trained: renderSegments(
      segments.filter((s) => s.part === 'answer' && s.weight === 1),
      END_OF_TEXT,
    ),
  };
}

function trainPy(input: RunRecipeInput, modelId: string, runName: string): string {
  const t = input.training;
  const a = input.adapter;
  const template = resolveTemplate(input.template);
  const trainOn = input.trainOn ?? 'completions';
  const example = templateExample(template);
  const targets = ADAPTER_TARGETS.filter((m) => a.targetModules.includes(m));
  const layers = a.layers === null ? 'None' : `[${[...new Set(a.layers)].sort((x, y) => x - y).map((l) => pythonInt(l, 'LoRA layer', 0)).join(', ')}]`;

  const header = [
    `# Fine-tunes ${modelId} with LoRA on the data in this folder: the Tunelab run ${JSON.stringify(runName)}, repeated`,
    '# with Hugging Face TRL and PEFT on a machine of your choice (see README.md).',
    '#',
    '#   python train.py                 one GPU, or the CPU',
    '#   accelerate launch train.py      several GPUs (BATCH_SIZE is per GPU)',
    '#',
    '# The adapter is saved to ./adapter (adapter_config.json + adapter_model.safetensors); Tunelab imports it back.',
  ].join('\n');

  const settings = String.raw`import json
import math
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

# ---- The model --------------------------------------------------------------------------------------------------
# A Hub id, or a folder holding config.json, model.safetensors and tokenizer.json (a model exported from Tunelab).
MODEL = ${pythonString(modelId)}
OUTPUT_DIR = os.path.join(HERE, "adapter")

# ---- The run's settings, as Tunelab had them ----------------------------------------------------------------------
MAX_LENGTH = ${pythonInt(input.maxSequenceLength, 'maxSequenceLength', 2)}  # tokens per row; longer examples lose their end
${trainingConstants(t)}
PACKING = ${pythonBool(input.packing ?? false)}
TRAIN_ON = ${pythonString(trainOn)}  # "completions": only answers count for the loss; "all": every token

# ---- LoRA (PEFT) --------------------------------------------------------------------------------------------------
LORA_R = ${pythonInt(a.rank, 'rank', 1)}
LORA_ALPHA = ${pythonNumber(a.alpha, 'alpha')}
LORA_DROPOUT = ${pythonFloat(a.dropout, 'dropout')}
LORA_TARGET_MODULES = [${targets.map(pythonString).join(', ')}]  # of GPT-2's c_attn, attn.c_proj, c_fc, mlp.c_proj
LORA_LAYERS = ${layers}  # None: every block; else the blocks h.N to adapt (PEFT's layers_to_transform)
USE_RSLORA = ${pythonBool(a.useRslora)}  # scale by alpha/sqrt(r) instead of alpha/r

# ---- The chat template ----------------------------------------------------------------------------------------------
# GPT-2 has no chat format, so Tunelab writes a conversation as plain text with these templates. The example
#   system "Be brief.", user "Capital of France?", assistant "Paris."
# becomes ${pythonString(example.text)}
# and only ${pythonString(example.trained)} counts for the loss: the answers and their end-of-text token (unless
# TRAIN_ON = "all"; an assistant message with "weight": 0 is shown but not trained). The prompt text between two
# answers is tokenized as one string and each answer as another, exactly as Tunelab does, so the token ids match the
# tab's. Prompt/completion examples are one user turn and one answer (with RAW_COMPLETIONS: prompt + completion as
# they are); a plain-text file is cut into rows of MAX_LENGTH tokens, all trained.
SYSTEM_TEMPLATE = ${pythonString(template.system)}
USER_TEMPLATE = ${pythonString(template.user)}
ASSISTANT_CUE = ${pythonString(template.assistantCue)}
ASSISTANT_TEMPLATE = ${pythonString(template.assistant)}
RAW_COMPLETIONS = ${pythonBool(template.rawCompletions)}
`;

  const code = String.raw`

def fill(template, content):
    return template.replace("{content}", content, 1)


def pieces(example):
    """(text, is_answer, trained) pieces of a chat or prompt/completion example; text None is the end-of-text token."""
    if "messages" not in example:
        if RAW_COMPLETIONS:
            return [(example["prompt"], False, False), (example["completion"], True, True), (None, True, True)]
        turns = [{"role": "user", "content": example["prompt"]}, {"role": "assistant", "content": example["completion"]}]
        return pieces({"messages": turns})
    out = []
    for message in example["messages"]:
        role, content = message["role"], message["content"]
        if role == "assistant":
            trained = message.get("weight", 1) == 1
            out += [(ASSISTANT_CUE, False, False), (fill(ASSISTANT_TEMPLATE, content), True, trained), (None, True, trained)]
        else:
            out.append((fill(SYSTEM_TEMPLATE if role == "system" else USER_TEMPLATE, content), False, False))
    return out


def encode_example(example, encode, eot_id):
    """Token ids and completion mask (1 = predicting this token counts for the loss) of one example."""
    ids, mask = [], []

    def push(new_ids, trained):
        ids.extend(new_ids)
        mask.extend([1 if trained or TRAIN_ON == "all" else 0] * len(new_ids))

    prompt = ""
    for text, is_answer, trained in pieces(example):
        if not is_answer:
            prompt += text
            continue
        if prompt:
            push(encode(prompt), False)
            prompt = ""
        push([eot_id] if text is None else encode(text), trained)
    if prompt:
        push(encode(prompt), False)
    return ids, mask


def rows(examples, encode, eot_id):
    """The examples as TRL rows {input_ids, completion_mask} of at most MAX_LENGTH tokens."""
    out = []
    for example in examples:
        if "text" in example:
            # Plain text: one stream cut into rows that overlap by one token, so each token is predicted once.
            ids = encode(example["text"]) + [eot_id]
            for start in range(0, max(1, len(ids) - 1), MAX_LENGTH - 1):
                block = ids[start : start + MAX_LENGTH]
                out.append({"input_ids": block, "completion_mask": [1] * len(block)})
        else:
            ids, mask = encode_example(example, encode, eot_id)
            out.append({"input_ids": ids[:MAX_LENGTH], "completion_mask": mask[:MAX_LENGTH]})
    return out


def load_examples(split):
    """The examples of "train" or "validation": <split>.jsonl (one JSON example a line) or <split>.txt (plain text)."""
    jsonl = os.path.join(HERE, split + ".jsonl")
    if os.path.exists(jsonl):
        with open(jsonl, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    text = os.path.join(HERE, split + ".txt")
    if os.path.exists(text):
        with open(text, encoding="utf-8") as f:
            return [{"text": f.read()}]
    return []


def warmup_steps(train_rows):
    """WARMUP_STEPS, or WARMUP_RATIO of the optimizer steps, counted as Tunelab counts them."""
    if WARMUP_STEPS > 0 or WARMUP_RATIO == 0:
        return WARMUP_STEPS
    micro_batches_per_epoch = math.ceil(train_rows / BATCH_SIZE)
    total = MAX_STEPS or max(1, math.ceil(EPOCHS * micro_batches_per_epoch / GRADIENT_ACCUMULATION_STEPS))
    return min(total, math.ceil(WARMUP_RATIO * total))


def main():
    # Imported here, so that the data functions above can be checked without these libraries.
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    tokenizer = AutoTokenizer.from_pretrained(MODEL)

    def encode(text):
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    train_rows = rows(load_examples("train"), encode, tokenizer.eos_token_id)
    validation_rows = rows(load_examples("validation"), encode, tokenizer.eos_token_id)
    if not train_rows:
        sys.exit("train.jsonl (or train.txt) has no examples")
    print(f"{len(train_rows)} training rows, {len(validation_rows)} validation rows")

    lora = LoraConfig(
        r=LORA_R,
        lora_alpha=LORA_ALPHA,
        lora_dropout=LORA_DROPOUT,
        target_modules=LORA_TARGET_MODULES,
        layers_to_transform=LORA_LAYERS,
        layers_pattern="h" if LORA_LAYERS is not None else None,
        use_rslora=USE_RSLORA,
        fan_in_fan_out=True,  # GPT-2's Conv1D stores its weights as [in, out]
        bias="none",
        task_type="CAUSAL_LM",
    )
    evaluate = bool(validation_rows) and EVAL_EVERY > 0
    config = SFTConfig(
        output_dir=os.path.join(HERE, "checkpoints"),
        max_length=MAX_LENGTH,
        packing=PACKING,
        completion_only_loss=True,  # the rows' completion_mask is Tunelab's loss mask
        learning_rate=LEARNING_RATE,
        lr_scheduler_type=LR_SCHEDULER_TYPE,
        lr_scheduler_kwargs=LR_SCHEDULER_KWARGS,
        warmup_steps=warmup_steps(len(train_rows)),
        num_train_epochs=EPOCHS,
        max_steps=MAX_STEPS if MAX_STEPS > 0 else -1,
        per_device_train_batch_size=BATCH_SIZE,
        per_device_eval_batch_size=BATCH_SIZE,
        gradient_accumulation_steps=GRADIENT_ACCUMULATION_STEPS,
        max_grad_norm=MAX_GRAD_NORM,
        weight_decay=WEIGHT_DECAY,
        adam_beta1=ADAM_BETA1,
        adam_beta2=ADAM_BETA2,
        adam_epsilon=ADAM_EPSILON,
        seed=SEED,
        data_seed=SEED,
        eval_strategy="steps" if evaluate else "no",
        eval_steps=EVAL_EVERY if evaluate else None,
        logging_steps=10,
        save_strategy="no",  # the adapter is saved once, at the end
        report_to="none",
        # Tunelab trains in float32; bfloat16 is faster where the GPU has it, at a small cost in precision.
        bf16=torch.cuda.is_available() and torch.cuda.is_bf16_supported(),
        gradient_checkpointing=False,
    )
    trainer = SFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(MODEL),
        args=config,
        train_dataset=Dataset.from_list(train_rows),
        eval_dataset=Dataset.from_list(validation_rows) if validation_rows else None,
        processing_class=tokenizer,
        peft_config=lora,
    )
    trainer.train()
    if validation_rows:
        loss = trainer.evaluate()["eval_loss"]
        print(f"validation loss {loss:.4f}, perplexity {math.exp(loss):.2f}")
    trainer.save_model(OUTPUT_DIR)
    print(f"adapter saved to {OUTPUT_DIR}: import adapter_config.json and adapter_model.safetensors in Tunelab")


if __name__ == "__main__":
    main()
`;
  return `${header}\n\n${settings}${code}`;
}

// ---- the README --------------------------------------------------------------------------------------------------------

function readme(input: RunRecipeInput, modelId: string, runName: string, files: string[]): string {
  const t = input.training;
  const a = input.adapter;
  const trainCount = input.data.train.length;
  const validationCount = input.data.validation?.length ?? 0;
  const pins = Object.entries(RECIPE_PACKAGES)
    .map(([name, version]) => `"${name}==${version}"`)
    .join(' ');
  const layers = a.layers === null ? 'all blocks' : `blocks ${[...new Set(a.layers)].sort((x, y) => x - y).join(', ')}`;
  const steps = t.maxSteps > 0 ? `${t.maxSteps} optimizer steps` : `${t.epochs} epoch${t.epochs === 1 ? '' : 's'}`;
  const dataFiles = files.filter((f) => f !== 'train.py' && f !== 'README.md');
  const settingsRows: [string, string][] = [
    ['learning rate', `${t.learningRate}, ${t.schedule} schedule${t.minLrRatio > 0 ? ` down to ${t.minLrRatio} × the peak` : ''}`],
    ['warmup', t.warmupSteps > 0 ? `${t.warmupSteps} steps` : t.warmupRatio > 0 ? `${t.warmupRatio * 100}% of the steps` : 'none'],
    ['length', steps],
    ['batch', `${t.batchSize} rows × ${t.gradientAccumulationSteps} accumulated = ${t.batchSize * t.gradientAccumulationSteps} per step`],
    ['tokens per row', String(input.maxSequenceLength)],
    ['optimizer', `AdamW, betas ${t.beta1}/${t.beta2}, eps ${t.eps}, weight decay ${t.weightDecay}, gradient clip ${t.maxGradNorm || 'off'}`],
    ['LoRA', `rank ${a.rank}, alpha ${a.alpha}${a.useRslora ? ' (rsLoRA)' : ''}, dropout ${a.dropout}`],
    ['adapted', `${a.targetModules.join(', ')} in ${layers}`],
    ['seed', String(t.seed)],
  ];
  return `# ${runName}: the Tunelab run as a TRL + PEFT recipe

This folder repeats the LoRA fine-tune of \`${modelId}\` that was run in Tunelab, with Hugging Face's TRL and PEFT
libraries, so it can run on a bigger machine or a bigger dataset. The adapter it saves loads back into Tunelab.

| file | what it is |
| --- | --- |
${dataFiles.map((f) => `| \`${f}\` | ${f.startsWith('train') ? `training data (${trainCount} example${trainCount === 1 ? '' : 's'})` : `validation data (${validationCount} example${validationCount === 1 ? '' : 's'})`} |`).join('\n')}
| \`train.py\` | the script: settings at the top, then data preparation and \`SFTTrainer\` |

## Run it

With Python 3.10 or newer, and PyTorch installed for your machine (the CUDA build for an NVIDIA GPU):

\`\`\`
python -m venv .venv && . .venv/bin/activate
pip install torch ${pins}
python train.py
\`\`\`

On several GPUs, \`accelerate launch train.py\` (\`BATCH_SIZE\` is then per GPU: divide it, or
\`GRADIENT_ACCUMULATION_STEPS\`, by the GPU count to keep the run's effective batch). The script was written for
the versions above; newer ones usually work too.

The run's settings (constants at the top of \`train.py\`: change them there):

| setting | value |
| --- | --- |
${settingsRows.map(([name, value]) => `| ${name} | ${value} |`).join('\n')}

## Bring the adapter back

The adapter lands in \`adapter/\`: \`adapter_config.json\` and \`adapter_model.safetensors\` (PEFT's format). In
Tunelab, load the same base model (\`${modelId}\`) and import those two files as an adapter. In Python,
\`PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained("${modelId}"), "adapter")\` loads it too.

## How it matches the tab

- **Data**: ${dataFiles.map((f) => `\`${f}\``).join(' and ')} ${dataFiles.length === 1 ? 'holds' : 'hold'} the examples as the run split them${
    dataFiles.some((f) => f.endsWith('.jsonl'))
      ? ", in OpenAI's JSONL format (chat `messages`, or `prompt`/`completion`)"
      : ' (plain text, cut into rows of `MAX_LENGTH` tokens)'
  }. Tunelab reads them back as they are.
- **Chat template and loss**: GPT-2 has no chat template, so \`train.py\` writes each conversation as plain text with
  Tunelab's templates (\`SYSTEM_TEMPLATE\`, \`USER_TEMPLATE\`, \`ASSISTANT_CUE\`, \`ASSISTANT_TEMPLATE\`) and
  tokenizes it itself, giving TRL \`input_ids\` and a \`completion_mask\`: only the answers and their end-of-text
  token count for the loss${input.trainOn === 'all' ? ' (this run trained on every token: `TRAIN_ON = "all"`)' : ''}.
- **LoRA**: the same rank, alpha, dropout, modules and layers; \`fan_in_fan_out=True\` because GPT-2 stores its
  Conv1D weights as [in, out].
- **Small differences**: LoRA's A starts from other random numbers and dropout draws other masks; Transformers'
  warmup starts at a learning rate of 0 where Tunelab's first step already uses peak/W; rows hold \`MAX_LENGTH\`
  tokens where the tab reads that many and predicts one more; bfloat16 is used where the GPU supports it (Tunelab
  computes in float32). Curves will be close, not identical.
`;
}

// ---- export ---------------------------------------------------------------------------------------------------------

/** The recipe's files by path (train.jsonl or train.txt, validation.*, train.py, README.md). */
export function exportRunRecipe(input: RunRecipeInput): Map<string, Uint8Array> {
  checkInput(input);
  const modelId = input.modelId || input.adapter.baseModel;
  if (!modelId) throw new TunelabError('bad-model', 'recipe: the base model has no name (modelId and adapter.baseModel are empty)');
  const runName = input.runName?.trim() || 'tunelab-run';
  const text = new Map<string, string>();
  for (const split of ['train', 'validation'] as const) {
    const file = datasetFile(split, (split === 'train' ? input.data.train : input.data.validation) ?? []);
    if (file) text.set(file[0], file[1]);
  }
  text.set('train.py', trainPy(input, modelId, runName));
  text.set('README.md', readme(input, modelId, runName, [...text.keys(), 'README.md']));
  const encoder = new TextEncoder();
  return new Map([...text].map(([path, content]) => [path, encoder.encode(content)]));
}

/** The files as one zip, inside a folder named `folder`. */
export function zipRunRecipe(files: ReadonlyMap<string, Uint8Array>, folder = 'tunelab-recipe'): Uint8Array {
  const entries: Record<string, Uint8Array> = {};
  for (const [path, bytes] of files) entries[folder ? `${folder}/${path}` : path] = bytes;
  return zipSync(entries, { level: 6 });
}
