import { describe, expect, it } from 'vitest';
import { TunelabError } from '../../src/engine/errors.ts';
import {
  GPT2_SMALL,
  TINY,
  headSize,
  modelConfig,
  modelConfigToJson,
  parseModelConfig,
  validateModelConfig,
} from '../../src/engine/model/config.ts';

/** The fields of Hugging Face's gpt2 config.json. */
const HF_GPT2 = {
  activation_function: 'gelu_new',
  architectures: ['GPT2LMHeadModel'],
  attn_pdrop: 0.1,
  bos_token_id: 50256,
  embd_pdrop: 0.1,
  eos_token_id: 50256,
  initializer_range: 0.02,
  layer_norm_epsilon: 1e-5,
  model_type: 'gpt2',
  n_ctx: 1024,
  n_embd: 768,
  n_head: 12,
  n_layer: 12,
  n_positions: 1024,
  resid_pdrop: 0.1,
  summary_activation: null,
  summary_first_dropout: 0.1,
  summary_proj_to_labels: true,
  summary_type: 'cls_index',
  summary_use_proj: true,
  task_specific_params: { 'text-generation': { do_sample: true, max_length: 50 } },
  vocab_size: 50257,
};

function expectRefusal(action: () => unknown, pattern: RegExp): void {
  try {
    action();
  } catch (error) {
    expect(error).toBeInstanceOf(TunelabError);
    expect((error as TunelabError).code).toBe('bad-model');
    expect((error as TunelabError).message).toMatch(pattern);
    return;
  }
  throw new Error(`expected a refusal matching ${pattern}`);
}

describe('ModelConfig', () => {
  it("parses Hugging Face's gpt2 config.json (object or text) into GPT-2 small", () => {
    expect(parseModelConfig(HF_GPT2)).toEqual(GPT2_SMALL);
    expect(parseModelConfig(JSON.stringify(HF_GPT2))).toEqual(GPT2_SMALL);
    expect(headSize(GPT2_SMALL)).toBe(64);
  });

  it('accepts the older n_ctx alone, and the other names of tanh GELU', () => {
    const { n_positions: _, ...old } = HF_GPT2;
    expect(parseModelConfig({ ...old, n_ctx: 512 }).nPositions).toBe(512);
    expect(parseModelConfig({ ...HF_GPT2, activation_function: 'gelu_pytorch_tanh' }).activation).toBe('gelu_new');
  });

  it('distilgpt2-style config (6 layers) parses', () => {
    expect(parseModelConfig({ ...HF_GPT2, n_layer: 6 })).toEqual({ ...GPT2_SMALL, nLayer: 6 });
  });

  it('refuses other architectures, naming what is supported', () => {
    expectRefusal(() => parseModelConfig({ ...HF_GPT2, model_type: 'llama' }), /model_type "llama".*supports.*"gpt2"/);
    const { model_type: _, ...untyped } = HF_GPT2;
    expectRefusal(() => parseModelConfig(untyped), /has no model_type.*"gpt2"/);
  });

  it('refuses GPT-2 variants whose math differs', () => {
    expectRefusal(() => parseModelConfig({ ...HF_GPT2, activation_function: 'relu' }), /"relu" is not supported/);
    expectRefusal(() => parseModelConfig({ ...HF_GPT2, n_inner: 1000 }), /n_inner=1000/);
    expectRefusal(() => parseModelConfig({ ...HF_GPT2, tie_word_embeddings: false }), /tie_word_embeddings/);
    expectRefusal(() => parseModelConfig({ ...HF_GPT2, scale_attn_by_inverse_layer_idx: true }), /inverse_layer_idx/);
  });

  it('refuses broken configs', () => {
    expectRefusal(() => parseModelConfig('{"model_type": "gpt2",'), /not valid JSON/);
    expectRefusal(() => parseModelConfig([1]), /not a JSON object/);
    expectRefusal(() => parseModelConfig({ ...HF_GPT2, n_embd: 770 }), /770 must be divisible .* nHead=12/);
    expectRefusal(() => parseModelConfig({ ...HF_GPT2, n_layer: 0 }), /nLayer must be a positive integer/);
    expectRefusal(() => parseModelConfig({ ...HF_GPT2, n_head: '12' }), /"n_head" is missing or not a number/);
    expectRefusal(() => parseModelConfig({ ...HF_GPT2, eos_token_id: 50257 }), /eosTokenId=50257/);
  });

  it('quotes a value of any shape or size in a short message, even one nested 10000 deep', () => {
    const deep = (asObject: boolean) => JSON.parse(asObject ? `${'{"a":'.repeat(10_000)}1${'}'.repeat(10_000)}` : `${'['.repeat(10_000)}1${']'.repeat(10_000)}`) as unknown;
    for (const asObject of [false, true]) {
      const shown = asObject ? '\\{"a":\\{"a":\\{"a":\\{…\\}\\}\\}\\}' : '\\[\\[\\[\\[…\\]\\]\\]\\]';
      expectRefusal(() => parseModelConfig({ ...HF_GPT2, model_type: deep(asObject) }), new RegExp(`has model_type ${shown};`));
      expectRefusal(() => parseModelConfig({ ...HF_GPT2, activation_function: deep(asObject) }), new RegExp(`activation_function ${shown} is not supported`));
      expectRefusal(() => parseModelConfig({ ...HF_GPT2, n_inner: deep(asObject) }), new RegExp(`n_inner=${shown} is not supported`));
    }
    // Objects as JSON rather than "[object Object]"; an 8000-character value cut to a readable length.
    expectRefusal(() => parseModelConfig({ ...HF_GPT2, n_inner: { size: 3072 } }), /n_inner=\{"size":3072\} is not supported/);
    let message = '';
    try {
      parseModelConfig({ ...HF_GPT2, model_type: 'x'.repeat(8000) });
    } catch (error) {
      message = (error as Error).message;
    }
    expect(message).toMatch(/has model_type "x+…;/);
    expect(message.length).toBeLessThan(300);
    expect(() => validateModelConfig({ ...TINY, nLayer: { n: 2 } as unknown as number })).toThrow(/nLayer must be a positive integer, got \{"n":2\}/);
    // A damaged activation_function in the base of a saved config is replaced, not turned into text.
    expect(modelConfigToJson(TINY, { activation_function: deep(false) }).activation_function).toBe('gelu_new');
  });

  it('validates overrides', () => {
    expect(modelConfig({ nLayer: 2 }).nLayer).toBe(2);
    expect(() => modelConfig({ nEmbd: 0 })).toThrow(TunelabError);
    expect(() => validateModelConfig({ ...TINY, layerNormEpsilon: 0 })).toThrow(/layerNormEpsilon/);
    expect(() => validateModelConfig({ ...TINY, nPositions: 1.5 })).toThrow(/nPositions/);
  });

  it('serializes to a config.json that parses back, keeps unmodelled fields, and sorts keys', () => {
    const json = modelConfigToJson(TINY, { task_specific_params: { x: 1 }, n_layer: 99 });
    expect(json.architectures).toEqual(['GPT2LMHeadModel']);
    expect(json.model_type).toBe('gpt2');
    expect(json.bos_token_id).toBe(256);
    expect(json.eos_token_id).toBe(256);
    expect(json.n_layer).toBe(2); // the config wins over the base
    expect(json.task_specific_params).toEqual({ x: 1 });
    expect(Object.keys(json)).toEqual([...Object.keys(json)].sort());
    expect(parseModelConfig(JSON.parse(JSON.stringify(json)))).toEqual(TINY);
    expect(parseModelConfig(modelConfigToJson(GPT2_SMALL, HF_GPT2))).toEqual(GPT2_SMALL);
  });
});
