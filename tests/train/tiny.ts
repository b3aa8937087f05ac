// Shared pieces of the trainer tests: a tiny random GPT-2 with the byte-level tokenizer, a small question→answer
// dataset in the chat template, and greedy generation by re-running an inference run over the growing text (no KV
// cache; fine for a few short answers). Generation uses the template the data was rendered with.

import type { GpuContext } from '../../src/engine/gpu/context.ts';
import { prepareDataset, type PreparedDataset } from '../../src/engine/data/prepare.ts';
import { encodeGenerationPrompt, resolveTemplate, type ChatTemplate } from '../../src/engine/data/template.ts';
import { TINY, type ModelConfig } from '../../src/engine/model/config.ts';
import { Gpt2Model, Gpt2Run } from '../../src/engine/model/gpt2.ts';
import { initGpt2Parameters } from '../../src/engine/model/init.ts';
import type { LoraAdapter } from '../../src/engine/model/lora.ts';
import { byteLevelTokenizer, type Tokenizer } from '../../src/engine/tokenizer/index.ts';

/** Short questions and answers, distinct enough that a 2-layer model must read the question to answer. */
export const QA: readonly [string, string][] = [
  ['sky?', 'blue'],
  ['grass?', 'green'],
  ['snow?', 'white'],
  ['coal?', 'black'],
  ['sun?', 'yellow'],
  ['rose?', 'red'],
];

export function qaJsonl(pairs: readonly [string, string][] = QA): string {
  return pairs.map(([prompt, completion]) => JSON.stringify({ prompt, completion })).join('\n') + '\n';
}

export function tinyConfig(overrides: Partial<ModelConfig> = {}): ModelConfig {
  return { ...TINY, nLayer: 2, nEmbd: 32, nHead: 2, nPositions: 32, ...overrides };
}

export function tinyModel(gpu: GpuContext, config: ModelConfig = tinyConfig(), seed = 1): Gpt2Model {
  return Gpt2Model.create(gpu, config, initGpt2Parameters(config, seed));
}

let tokenizer: Tokenizer | undefined;
export function bytes(): Tokenizer {
  tokenizer ??= byteLevelTokenizer();
  return tokenizer;
}

/** A compact chat template ("Q: sky?\nA: blue⟨eot⟩", 16 byte tokens) keeps T, and so the tests, small. */
export const QA_TEMPLATE: ChatTemplate = resolveTemplate({ user: 'Q: {content}\n', assistantCue: 'A:', assistant: ' {content}' });

/** The QA pairs for training (batch `batchSize`) and the same pairs as validation, so generation can be checked. */
export function qaData(options: { batchSize: number; seed?: number; pairs?: readonly [string, string][] }): PreparedDataset {
  const text = qaJsonl(options.pairs);
  const prepared = prepareDataset({ train: text, validation: text }, bytes(), {
    context: tinyConfig().nPositions,
    batchSize: options.batchSize,
    seed: options.seed ?? 0,
    template: QA_TEMPLATE,
  });
  if (!prepared.report.trainable) throw new Error(`test data: ${prepared.report.errors.map((e) => e.message).join('; ')}`);
  return prepared;
}

/** Greedy answers to `prompts`, each up to `maxNewTokens` tokens or the end-of-text token. */
export async function greedyAnswers(
  gpu: GpuContext,
  model: Gpt2Model,
  adapter: LoraAdapter | undefined,
  prompts: readonly string[],
  maxNewTokens = 8,
): Promise<string[]> {
  const V = model.config.vocabSize;
  const encoded = prompts.map((prompt) => encodeGenerationPrompt({ kind: 'completion', prompt }, bytes(), QA_TEMPLATE));
  // Causal attention: positions after the text do not change its logits, so one T fits every prompt and answer.
  const T = Math.min(model.config.nPositions, Math.max(...encoded.map((ids) => ids.length)) + maxNewTokens);
  const run = await Gpt2Run.create(gpu, model, { batchSize: 1, sequenceLength: T, mode: { kind: 'inference' }, keepLogits: true, adapter });
  const answers: string[] = [];
  try {
    for (const prompt of encoded) {
      const ids = [...prompt];
      const generated: number[] = [];
      while (generated.length < maxNewTokens && ids.length < T) {
        const padded = new Uint32Array(T).fill(bytes().endOfTextId);
        padded.set(ids);
        run.setBatch({ ids: padded });
        await run.step();
        const logits = await run.readLogits();
        const row = logits.subarray((ids.length - 1) * V, ids.length * V);
        let best = 0;
        for (let v = 1; v < V; v++) if (row[v] > row[best]) best = v;
        if (best === bytes().endOfTextId) break;
        ids.push(best);
        generated.push(best);
      }
      answers.push(bytes().decode(generated).trim());
    }
  } finally {
    run.destroy();
  }
  return answers;
}
