// Generation benchmark: batch 1, a random prompt, then greedy tokens with the KV cache (generate/generator.ts's
// Gpt2Decoder), in tokens/s over the whole generation, prefill included — as the peer's model.generate is timed.
// As the Generator decodes greedily: the first token is the argmax of the prefill's logits on the CPU, the rest are
// chosen on the GPU by decoder.greedy in chunks of 2, 4, … 32 tokens per submit (--per-token: one submit, one logits
// readback and a CPU argmax per token, the path sampling takes). No text is decoded (random weights, no tokenizer),
// and end-of-text does not stop it, so every run makes exactly `newTokens` tokens.

import type { GpuContext } from '../gpu/context.ts';
import { Gpt2Decoder, MAX_GREEDY_CHUNK } from '../generate/generator.ts';
import { argmaxToken } from '../generate/sampling.ts';
import { Gpt2Model, type FrozenWeightStorage } from '../model/gpt2.ts';
import { initGpt2Parameters } from '../model/init.ts';
import { LoraAdapter, loraConfig } from '../model/lora.ts';
import { Rng } from '../random.ts';
import { recordBase, round, timingFields, type BenchRecord, type RunCounts } from './records.ts';
import { stepModelConfig, type StepBenchConfig } from './step.ts';
import { profileDispatches, profileRecord } from './profile.ts';
import { median, timeWallClock } from './timing.ts';

export interface GenerateBenchOptions {
  /** Prompt tokens before generation starts. */
  prompt: number;
  /** Tokens generated (greedy, no early stop at end-of-text). */
  newTokens: number;
  /**
   * One submit and one logits readback per token, the argmax on the CPU (the path sampling takes), instead of the
   * greedy chunks chosen on the GPU (false).
   */
  perToken?: boolean;
}

export const GENERATE_DEFAULTS: Readonly<GenerateBenchOptions> = Object.freeze({ prompt: 16, newTokens: 128, perToken: false });

/**
 * Times `counts.iters` generations of `options.newTokens` tokens with the model of `model` (its batch, sequence and
 * rank fields: rank only, for the adapter that is applied, as the peer's LoRA model applies its own).
 */
export async function benchGenerate(
  gpu: GpuContext,
  model: StepBenchConfig,
  options: GenerateBenchOptions,
  counts: RunCounts,
  scaled: boolean,
  frozenWeights: FrozenWeightStorage = 'f32',
  profile = false,
): Promise<BenchRecord[]> {
  const config = stepModelConfig(model);
  if (options.prompt + options.newTokens > config.nPositions) {
    throw new RangeError(`generate bench: prompt ${options.prompt} + ${options.newTokens} new tokens exceed the context ${config.nPositions}`);
  }
  const perToken = options.perToken ?? false;
  const start = performance.now();
  const gpt2 = Gpt2Model.create(gpu, config, initGpt2Parameters(config, 1), { frozenWeights });
  const parts: { adapter?: LoraAdapter; decoder?: Gpt2Decoder } = {};
  try {
    const lora = loraConfig({ rank: model.rank, alpha: 2 * model.rank, dropout: 0, targets: ['c_attn'], layers: 'all' });
    parts.adapter = LoraAdapter.create(gpu, config, lora, { seed: 2 });
    const decoder = await Gpt2Decoder.create(gpu, gpt2, { adapter: parts.adapter, batchSize: 1 });
    parts.decoder = decoder;
    const rng = new Rng(5);
    const prompt = Array.from({ length: options.prompt }, () => rng.int(config.vocabSize));
    const buildMs = performance.now() - start;

    const prefillMs: number[] = [];
    const produced: number[] = [];
    const generate = async () => {
      const begin = performance.now();
      const logits = await decoder.prefill(prompt, { useAdapter: true });
      prefillMs.push(performance.now() - begin);
      const tokens = [argmaxToken(logits)];
      if (perToken) {
        while (tokens.length < options.newTokens) tokens.push(argmaxToken(await decoder.step([tokens[tokens.length - 1]])));
      } else {
        // As the Generator decodes greedily: chunks of 2, 4, … MAX_GREEDY_CHUNK tokens chosen on the GPU.
        let chunk = 1;
        while (tokens.length < options.newTokens) {
          chunk = Math.min(2 * chunk, MAX_GREEDY_CHUNK, options.newTokens - tokens.length);
          tokens.push(...(await decoder.greedy(tokens[tokens.length - 1], chunk)));
        }
      }
      produced.push(tokens.length);
    };
    const timing = await timeWallClock(generate, counts);
    if (produced.some((n) => n !== options.newTokens)) throw new Error(`generate bench: made ${produced.join(', ')} tokens, not ${options.newTokens}`);
    const measuredPrefill = median(prefillMs.slice(counts.warmup));
    // The fused step against the general pass on this device: the same prompt and tokens, the largest logit gap.
    let fusedVsGeneral: number | null = null;
    let generalDispatches: number | null = null;
    if (decoder.fastStepUnavailable === null) {
      const general = await Gpt2Decoder.create(gpu, gpt2, { adapter: parts.adapter, batchSize: 1, fastStep: false });
      try {
        let a = await decoder.prefill(prompt, { useAdapter: true });
        let b = await general.prefill(prompt, { useAdapter: true });
        generalDispatches = await general.dispatchesPerToken();
        fusedVsGeneral = 0;
        for (let i = 0; i < 8; i++) {
          for (let v = 0; v < a.length; v++) fusedVsGeneral = Math.max(fusedVsGeneral, Math.abs(a[v] - b[v]));
          const token = argmaxToken(b);
          a = await decoder.step([token]);
          b = await general.step([token]);
        }
      } finally {
        general.destroy();
      }
    }
    const profiles: BenchRecord[] = [];
    if (profile) {
      // One decode step (the steady state), its logits readback included in the wall clock beside it.
      let logits = await decoder.prefill(prompt, { useAdapter: true });
      let readbackMs = 0;
      const kernels = await profileDispatches(gpu, 1024, async () => {
        const begin = performance.now();
        logits = await decoder.step([argmaxToken(logits)]);
        readbackMs = performance.now() - begin;
      });
      if (kernels) profiles.push(profileRecord(gpu, 'decode-token', scaled, kernels, { frozen_weights: frozenWeights, wall_ms_profiled: round(readbackMs) }));
    }
    return [
      {
        ...recordBase(gpu, 'generate', scaled),
        config: { layers: model.layers, width: model.width, heads: model.heads, vocab: model.vocab, positions: model.positions },
        batch: 1,
        prompt: options.prompt,
        new_tokens: options.newTokens,
        lora: true,
        frozen_weights: frozenWeights,
        tensor_cores: frozenWeights === 'f16' && gpu.features.tensorCoresF16 && gpu.useTensorCores,
        ...timingFields(timing, counts),
        tokens_per_s: round((options.newTokens * 1000) / timing.ms),
        prefill_ms: round(measuredPrefill),
        // The steady state: one token's submit, GPU work and logits readback.
        ms_per_token: round((timing.ms - measuredPrefill) / Math.max(1, options.newTokens - 1)),
        per_token: perToken,
        // Largest |logit| difference, fused step vs general pass, over a prefill and 8 steps (null: no fused step).
        fused_vs_general_max_abs: fusedVsGeneral,
        dispatches_per_token: await decoder.dispatchesPerToken(),
        general_pass_dispatches_per_token: generalDispatches,
        fused_step: decoder.fastStepUnavailable === null,
        includes: perToken
          ? 'prefill + greedy decode with the KV cache, one submit and logits readback per token, argmax on the CPU'
          : `prefill + greedy decode with the KV cache, tokens chosen on the GPU in chunks of 2, 4, … ${MAX_GREEDY_CHUNK} per submit`,
        build_ms: round(buildMs),
        decoder_bytes: decoder.bytes,
      },
      ...profiles,
    ];
  } finally {
    parts.decoder?.destroy();
    parts.adapter?.destroy();
    gpt2.destroy();
  }
}
