// The GPT-2 model configuration: a typed object with commented defaults, read from and written to Hugging Face's
// GPT-2 `config.json`. Only what changes the math is kept; other fields of a loaded config.json can be carried
// through `modelConfigToJson(config, base)` so a round trip does not lose them.

import { describeValue } from '../describe.ts';
import { TunelabError } from '../errors.ts';

export type Activation = 'gelu_new';

export interface ModelConfig {
  /** L: transformer blocks (GPT-2 small: 12). */
  nLayer: number;
  /** NH: attention heads per block (12). */
  nHead: number;
  /** C: embedding width (768); must be a multiple of nHead, HS = C / NH. */
  nEmbd: number;
  /** maxT: the context, i.e. rows of wpe (1024). */
  nPositions: number;
  /** V: vocabulary size, i.e. rows of wte (50257). */
  vocabSize: number;
  /** Added to the variance in every LayerNorm (1e-5). */
  layerNormEpsilon: number;
  /** The MLP nonlinearity: GELU in its tanh form, as GPT-2 uses (Hugging Face calls it 'gelu_new'). */
  activation: Activation;
  /** Token that starts a text (GPT-2: <|endoftext|> = 50256). */
  bosTokenId: number;
  /** Token that ends a text and stops generation (50256). */
  eosTokenId: number;
}

/** GPT-2 small, the defaults every override starts from. */
export const GPT2_SMALL: Readonly<ModelConfig> = Object.freeze({
  nLayer: 12,
  nHead: 12,
  nEmbd: 768,
  nPositions: 1024,
  vocabSize: 50257,
  layerNormEpsilon: 1e-5,
  activation: 'gelu_new',
  bosTokenId: 50256,
  eosTokenId: 50256,
});

/** The tiny model `tunelab init` makes by default (byte-level vocabulary: 256 bytes + <|endoftext|>). */
export const TINY: Readonly<ModelConfig> = Object.freeze({
  ...GPT2_SMALL,
  nLayer: 2,
  nHead: 4,
  nEmbd: 64,
  nPositions: 64,
  vocabSize: 257,
  bosTokenId: 256,
  eosTokenId: 256,
});

/** GPT-2 small with some fields overridden, validated. */
export function modelConfig(overrides: Partial<ModelConfig> = {}): ModelConfig {
  return validateModelConfig({ ...GPT2_SMALL, ...overrides });
}

/** HS: width of one attention head. */
export function headSize(config: ModelConfig): number {
  return config.nEmbd / config.nHead;
}

function badConfig(message: string): TunelabError {
  return new TunelabError('bad-model', `config.json: ${message}`);
}

function positiveInteger(value: unknown): boolean {
  return typeof value === 'number' && Number.isSafeInteger(value) && value > 0;
}

/** Checks sizes and ids; returns the same config so it can wrap an expression. */
export function validateModelConfig(config: ModelConfig): ModelConfig {
  const sizes = ['nLayer', 'nHead', 'nEmbd', 'nPositions', 'vocabSize'] as const;
  for (const key of sizes) {
    if (!positiveInteger(config[key])) throw badConfig(`${key} must be a positive integer, got ${describeValue(config[key])}`);
  }
  // The parameter layout has entries per block: a damaged n_layer (say 4294967297) would exhaust memory building it.
  if (config.nLayer > 1000) throw badConfig(`nLayer=${config.nLayer} is far more blocks than any GPT-2 has (48); the file is damaged`);
  if (config.nEmbd % config.nHead !== 0) {
    throw badConfig(
      `the width nEmbd=${config.nEmbd} must be divisible by the number of heads nHead=${config.nHead} ` +
        `(try a width that is a multiple of ${config.nHead})`,
    );
  }
  if (!(typeof config.layerNormEpsilon === 'number' && config.layerNormEpsilon > 0 && Number.isFinite(config.layerNormEpsilon))) {
    throw badConfig(`layerNormEpsilon must be a small positive number, got ${describeValue(config.layerNormEpsilon)}`);
  }
  if (config.activation !== 'gelu_new') {
    throw badConfig(`activation ${describeValue(config.activation)} is not supported; Tunelab implements 'gelu_new'`);
  }
  for (const key of ['bosTokenId', 'eosTokenId'] as const) {
    const id = config[key];
    if (!(Number.isSafeInteger(id) && id >= 0 && id < config.vocabSize)) {
      throw badConfig(`${key}=${describeValue(id)} is not a token id of a vocabulary of ${config.vocabSize}`);
    }
  }
  return config;
}

/** Activation names Hugging Face uses for GPT-2's tanh-approximated GELU. */
const TANH_GELU_NAMES = new Set(['gelu_new', 'gelu_pytorch_tanh', 'gelu_fast']);

/**
 * Reads a Hugging Face GPT-2 config.json (parsed object or text). Accepts `n_positions` or the older `n_ctx`.
 * Rejects other architectures and GPT-2 variants whose math Tunelab does not implement, saying what is supported.
 */
export function parseModelConfig(input: unknown): ModelConfig {
  let json = input;
  if (typeof input === 'string') {
    try {
      json = JSON.parse(input);
    } catch (error) {
      throw badConfig(`not valid JSON (${error instanceof Error ? error.message : String(error)})`);
    }
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw badConfig('not a JSON object');
  const c = json as Record<string, unknown>;
  if (c.model_type !== 'gpt2') {
    const got = c.model_type === undefined ? 'has no model_type' : `has model_type ${describeValue(c.model_type)}`;
    throw badConfig(
      `the model ${got}; Tunelab supports GPT-2-architecture models (model_type "gpt2": gpt2, distilgpt2, ` +
        'gpt2-medium, models made by `tunelab init`)',
    );
  }
  const number = (key: string): number => {
    const v = c[key];
    if (typeof v !== 'number') throw badConfig(`"${key}" is missing or not a number`);
    return v;
  };
  const optionalNumber = (key: string, fallback: number): number => {
    const v = c[key];
    if (v === undefined || v === null) return fallback;
    if (typeof v !== 'number') throw badConfig(`"${key}" is not a number`);
    return v;
  };
  const nEmbd = number('n_embd');
  const nPositions = c.n_positions !== undefined ? number('n_positions') : number('n_ctx');
  const activationName = c.activation_function ?? 'gelu_new';
  if (typeof activationName !== 'string' || !TANH_GELU_NAMES.has(activationName)) {
    throw badConfig(
      `activation_function ${describeValue(activationName)} is not supported; Tunelab implements GPT-2's ` +
        `tanh GELU ("gelu_new")`,
    );
  }
  if (c.n_inner !== undefined && c.n_inner !== null && c.n_inner !== 4 * nEmbd) {
    throw badConfig(`n_inner=${describeValue(c.n_inner)} is not supported; Tunelab's MLP is 4 × n_embd = ${4 * nEmbd} wide`);
  }
  if (c.scale_attn_by_inverse_layer_idx === true) {
    throw badConfig('scale_attn_by_inverse_layer_idx=true is not supported (Tunelab implements standard GPT-2 attention)');
  }
  if (c.scale_attn_weights === false) {
    throw badConfig('scale_attn_weights=false is not supported (Tunelab scales attention scores by 1/sqrt(head size))');
  }
  if (c.tie_word_embeddings === false) {
    throw badConfig('tie_word_embeddings=false is not supported; Tunelab uses the token embedding wte as the output head');
  }
  const vocabSize = number('vocab_size');
  const eos = optionalNumber('eos_token_id', Math.min(GPT2_SMALL.eosTokenId, vocabSize - 1));
  return validateModelConfig({
    nLayer: number('n_layer'),
    nHead: number('n_head'),
    nEmbd,
    nPositions,
    vocabSize,
    layerNormEpsilon: optionalNumber('layer_norm_epsilon', GPT2_SMALL.layerNormEpsilon),
    activation: 'gelu_new',
    bosTokenId: optionalNumber('bos_token_id', eos),
    eosTokenId: eos,
  });
}

/**
 * A Hugging Face-compatible config.json object (transformers' GPT2LMHeadModel loads it). Fields of `base` (a
 * loaded config.json) that Tunelab does not model are kept; the ones it does model are overwritten.
 */
export function modelConfigToJson(config: ModelConfig, base: Record<string, unknown> = {}): Record<string, unknown> {
  validateModelConfig(config);
  const json: Record<string, unknown> = {
    activation_function: 'gelu_new',
    architectures: ['GPT2LMHeadModel'],
    attn_pdrop: 0.1,
    embd_pdrop: 0.1,
    resid_pdrop: 0.1,
    initializer_range: 0.02,
    summary_activation: null,
    summary_first_dropout: 0.1,
    summary_proj_to_labels: true,
    summary_type: 'cls_index',
    summary_use_proj: true,
    ...base,
    model_type: 'gpt2',
    n_layer: config.nLayer,
    n_head: config.nHead,
    n_embd: config.nEmbd,
    n_positions: config.nPositions,
    n_ctx: config.nPositions,
    n_inner: null,
    vocab_size: config.vocabSize,
    layer_norm_epsilon: config.layerNormEpsilon,
    bos_token_id: config.bosTokenId,
    eos_token_id: config.eosTokenId,
    tie_word_embeddings: true,
  };
  if (typeof base.activation_function !== 'string' || !TANH_GELU_NAMES.has(base.activation_function)) {
    json.activation_function = 'gelu_new';
  }
  // Sorted keys, like transformers writes them, so diffs of config files stay readable.
  return Object.fromEntries(Object.entries(json).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}
