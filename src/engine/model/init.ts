// A fresh, seeded GPT-2 with GPT-2's initialization, and the files of a model directory (config.json,
// model.safetensors, tokenizer.json, MODEL_CARD.md) for `tunelab init`, tests and the app's "train from scratch".
// Same config and seed give the same bytes.

import { writeSafetensors, type WriteDtype } from '../io/safetensors.ts';
import { Rng } from '../random.ts';
import { modelConfigToJson, validateModelConfig, type ModelConfig } from './config.ts';
import { gpt2ParameterLayout, parameterTensors, type ParameterSet } from './weights.ts';
import type { TokenizerJson } from './load.ts';

/** GPT-2's standard deviation for embeddings and linear weights. */
export const INIT_STD = 0.02;

/**
 * GPT-2's initialization: weights and embeddings normal(0, 0.02); the projections that write into the residual
 * stream (attn.c_proj, mlp.c_proj) scaled by 1/sqrt(2·L) so the stream's variance does not grow with depth; biases
 * 0; LayerNorm weight 1. Tensors are filled in layout order from one Rng(seed).
 */
export function initGpt2Parameters(config: ModelConfig, seed: number): ParameterSet {
  validateModelConfig(config);
  const layout = gpt2ParameterLayout(config);
  const data = new Float32Array(layout.totalElements);
  const rng = new Rng(seed);
  const residualStd = INIT_STD / Math.sqrt(2 * config.nLayer);
  for (const entry of layout.entries) {
    const view = data.subarray(entry.offset, entry.offset + entry.elementCount);
    switch (entry.kind) {
      case 'embedding':
      case 'linear-weight': {
        const std = /\.c_proj\.weight$/.test(entry.name) ? residualStd : INIT_STD;
        for (let i = 0; i < view.length; i++) view[i] = std * rng.normal();
        break;
      }
      case 'layernorm-weight':
        view.fill(1);
        break;
      case 'linear-bias':
      case 'layernorm-bias':
        break; // already 0
    }
  }
  return { layout, data };
}

export interface ModelDirectoryOptions {
  config: ModelConfig;
  seed: number;
  /** Storage dtype of model.safetensors (default f32). */
  dtype?: 'f32' | 'f16';
  tokenizerJson: TokenizerJson;
  /** For the model card: "byte-level (256 bytes + <|endoftext|>)", "copied from models/gpt2". */
  tokenizerDescription: string;
  /** For the model card: the command that made it. */
  command?: string;
  /** Defaults to 'tunelab-init'. */
  name?: string;
}

export interface ModelDirectory {
  /** File name → contents, ready to be written to a directory or served. */
  readonly files: Record<'config.json' | 'model.safetensors' | 'tokenizer.json' | 'MODEL_CARD.md', Uint8Array>;
  readonly parameters: ParameterSet;
}

/** Builds every file of a freshly initialized model directory. */
export function createModelDirectory(options: ModelDirectoryOptions): ModelDirectory {
  const { config, seed, tokenizerJson } = options;
  const dtype = options.dtype ?? 'f32';
  const parameters = initGpt2Parameters(config, seed);
  const safetensorsDtype: WriteDtype = dtype === 'f16' ? 'F16' : 'F32';
  const checkpoint = writeSafetensors(parameterTensors(parameters), {
    dtype: safetensorsDtype,
    // transformers refuses a safetensors checkpoint whose metadata does not name its format.
    metadata: { format: 'pt', creator: 'tunelab init', seed: String(seed) },
  });
  const configJson = modelConfigToJson(config, { torch_dtype: dtype === 'f16' ? 'float16' : 'float32' });
  const encoder = new TextEncoder();
  return {
    parameters,
    files: {
      'config.json': encoder.encode(JSON.stringify(configJson, null, 2) + '\n'),
      'model.safetensors': checkpoint,
      'tokenizer.json': encoder.encode(JSON.stringify(tokenizerJson) + '\n'),
      'MODEL_CARD.md': encoder.encode(modelCard({ ...options, dtype }, parameters.layout.parameterCount)),
    },
  };
}

function modelCard(options: ModelDirectoryOptions & { dtype: 'f32' | 'f16' }, parameterCount: number): string {
  const c = options.config;
  const lines = [
    `# ${options.name ?? 'tunelab-init'}`,
    '',
    'A GPT-2-architecture model with **random weights**, made by `tunelab init`. It writes noise until it is',
    'trained: train it from scratch on your data (or use it in tests).',
    '',
    `- Layers ${c.nLayer}, width ${c.nEmbd}, heads ${c.nHead}, context ${c.nPositions} tokens, vocabulary ${c.vocabSize}`,
    `- Parameters: ${parameterCount.toLocaleString('en-US')}`,
    `- Tokenizer: ${options.tokenizerDescription}; end-of-text id ${c.eosTokenId}`,
    `- Initialization: GPT-2's (normal, std ${INIT_STD}; residual projections scaled by 1/sqrt(2·layers); biases 0;`,
    `  LayerNorm weights 1), seed ${options.seed}`,
    `- Weights stored as ${options.dtype}, in the Hugging Face layout (GPT2LMHeadModel's names and config.json)`,
  ];
  if (options.command) lines.push('', 'Made with:', '', '```', options.command, '```');
  return lines.join('\n') + '\n';
}
