// Shared pieces of the reliability tests: a tiny random GPT-2 and a DataBatcher of random token rows over a small
// vocabulary, so that a training step costs little even on SwiftShader.

import { DataBatcher } from '../../src/engine/data/batches.ts';
import type { TokenSequence } from '../../src/engine/data/tokenize.ts';
import type { GpuContext } from '../../src/engine/gpu/context.ts';
import { TINY, type ModelConfig } from '../../src/engine/model/config.ts';
import { Gpt2Model } from '../../src/engine/model/gpt2.ts';
import { initGpt2Parameters } from '../../src/engine/model/init.ts';
import type { ParameterSet } from '../../src/engine/model/weights.ts';
import { Rng } from '../../src/engine/random.ts';

/** 1 layer, width 16, 2 heads, vocabulary 64, context 16. */
export function microConfig(overrides: Partial<ModelConfig> = {}): ModelConfig {
  return { ...TINY, nLayer: 1, nEmbd: 16, nHead: 2, nPositions: 16, vocabSize: 64, bosTokenId: 63, eosTokenId: 63, ...overrides };
}

/** The model's initial weights on the CPU (kept, so a model can be rebuilt on a new device). */
export function microWeights(config: ModelConfig = microConfig(), seed = 1): ParameterSet {
  return initGpt2Parameters(config, seed);
}

export function microModel(gpu: GpuContext, config: ModelConfig = microConfig(), seed = 1): Gpt2Model {
  return Gpt2Model.create(gpu, config, microWeights(config, seed));
}

/**
 * `rows` random token rows of `sequenceLength + 1` tokens (ids below the end-of-text id) as training data, and
 * `validationRows` more as validation data; every position after the first counts for the loss.
 */
export function randomTokenData(options: {
  config?: ModelConfig;
  rows: number;
  validationRows?: number;
  sequenceLength: number;
  batchSize: number;
  seed?: number;
}): DataBatcher {
  const config = options.config ?? microConfig();
  const rng = new Rng(options.seed ?? 11);
  const row = (index: number): TokenSequence => {
    const n = options.sequenceLength + 1;
    const ids = Uint32Array.from({ length: n }, () => rng.int(config.vocabSize - 1));
    const trainMask = new Uint8Array(n).fill(1);
    trainMask[0] = 0;
    return { ids, trainMask, fullLength: n, origin: { source: 'train', line: index + 1, index } };
  };
  const train = Array.from({ length: options.rows }, (_, i) => row(i));
  const validation = Array.from({ length: options.validationRows ?? 0 }, (_, i) => row(i));
  return new DataBatcher(train, validation, {
    batchSize: options.batchSize,
    context: config.nPositions,
    packing: false,
    seed: options.seed ?? 11,
    padId: config.eosTokenId,
    sequenceLength: options.sequenceLength,
  });
}
