// Fuzz test of config.json reading (parseModelConfig): thousands of seeded random and mutated configs, as text and as
// parsed JSON, each end in a valid ModelConfig or a TunelabError('bad-model') that names config.json, quickly.

import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { TunelabError } from '../../src/engine/errors.ts';
import { parseModelConfig, validateModelConfig, type ModelConfig } from '../../src/engine/model/config.ts';
import {
  expectEachResultOrTunelabError,
  fuzz,
  mutateJson,
  mutateText,
  pick,
  preview,
  randomJson,
  summary,
  withDeepValue,
} from './helpers.ts';
import { HANG_MS } from './helpers.ts';

const TINY_CONFIG = readFileSync(new URL('../../public/models/tiny/config.json', import.meta.url), 'utf8');

/** Hugging Face's gpt2 config.json, the other shape a user brings. */
const HF_GPT2_CONFIG = JSON.stringify({
  activation_function: 'gelu_new',
  architectures: ['GPT2LMHeadModel'],
  bos_token_id: 50256,
  eos_token_id: 50256,
  layer_norm_epsilon: 1e-5,
  model_type: 'gpt2',
  n_ctx: 1024,
  n_embd: 768,
  n_head: 12,
  n_layer: 12,
  n_positions: 1024,
  task_specific_params: { 'text-generation': { do_sample: true, max_length: 50 } },
  vocab_size: 50257,
});

/** The fields parseModelConfig reads, so mutations hit them often. */
const KEYS = [
  'model_type', 'n_layer', 'n_head', 'n_embd', 'n_positions', 'n_ctx', 'vocab_size', 'layer_norm_epsilon',
  'activation_function', 'n_inner', 'bos_token_id', 'eos_token_id', 'scale_attn_by_inverse_layer_idx',
  'scale_attn_weights', 'tie_word_embeddings',
];

const CASES = 20_000;

describe('fuzz: config.json', () => {
  it(`parseModelConfig gives a valid config or a bad-model TunelabError (${CASES} seeded inputs)`, async () => {
    const outcome = await fuzz<unknown>({
      seed: 1101,
      cases: CASES,
      generate(rng) {
        const base = pick(rng, [TINY_CONFIG, HF_GPT2_CONFIG]);
        switch (rng.int(5)) {
          case 0:
            return mutateText(rng, base);
          case 1:
            return randomJson(rng, KEYS);
          case 2: // parsed, mutated, then handed over as text
            return JSON.stringify(mutateJson(rng, JSON.parse(base), KEYS));
          default: // parsed and mutated: the loader hands parseModelConfig the parsed object
            return mutateJson(rng, JSON.parse(base), KEYS);
        }
      },
      parse: (input) => parseModelConfig(input),
      show: (input) => preview(input),
      check(result) {
        const config = result as ModelConfig;
        expect(validateModelConfig(config)).toBe(config);
        expect(config.activation).toBe('gelu_new');
      },
    });
    console.log(summary('config.json', outcome));
    // Both outcomes, and many distinct refusals: the fuzzer reaches the checks rather than failing at JSON.parse.
    expect(outcome.accepted).toBeGreaterThan(300);
    expect(outcome.refused).toBeGreaterThan(2000);
    expect(outcome.refusals.size).toBeGreaterThan(15);
    expect(outcome.slowestMs).toBeLessThan(HANG_MS);
  });

  it('a field nested thousands deep ends in a config or a TunelabError, not a stack overflow', async () => {
    const base = JSON.parse(TINY_CONFIG) as Record<string, unknown>;
    await expectEachResultOrTunelabError(
      KEYS.flatMap((key) =>
        [false, true].map((asObject) => ({
          label: `"${key}" nested 10000 deep (${asObject ? 'objects' : 'arrays'})`,
          call: () => parseModelConfig(withDeepValue(base, [key], 10_000, asObject)),
        })),
      ),
    );
  });

  it('every refusal names config.json', () => {
    for (const input of ['{', '[]', '{"model_type":"llama"}', '{"model_type":"gpt2","n_embd":"768"}']) {
      let caught: unknown;
      try {
        parseModelConfig(input);
      } catch (error) {
        caught = error;
      }
      expect(caught).toBeInstanceOf(TunelabError);
      expect((caught as TunelabError).code).toBe('bad-model');
      expect((caught as TunelabError).message).toMatch(/^config\.json: /);
    }
  });
});
