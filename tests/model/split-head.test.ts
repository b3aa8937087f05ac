// The LM head's backward with a split reduction: with a vocabulary of 4,100 the tied head's dlnf = dlogits·wte
// reduces over K = V ≥ 4096, so the model splits it (ops/matmul.ts splitKFor) into partial products held in the bt4c
// scratch, which the block backward reuses right after. Judged by the Float64 reference model
// (src/engine/reference/gpt2.ts) as tests/model/gpt2.test.ts judges the unsplit head: loss 1e-4 absolute, LoRA
// gradients REDUCTION; with f32 and with f16 frozen weights (the reference then on f16-rounded weights).

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { GpuContext } from '../../src/engine/gpu/context.ts';
import { modelConfig } from '../../src/engine/model/config.ts';
import { Gpt2Model, Gpt2Run, type FrozenWeightStorage } from '../../src/engine/model/gpt2.ts';
import { LoraAdapter, loraConfig } from '../../src/engine/model/lora.ts';
import { gpt2ParameterLayout, type ParameterSet } from '../../src/engine/model/weights.ts';
import { splitKFor } from '../../src/engine/ops/matmul.ts';
import { Rng } from '../../src/engine/random.ts';
import { roundToF16 } from '../../src/engine/reference/f16.ts';
import { gpt2ReferenceBackward, gpt2ReferenceForward, randomGpt2ReferenceWeights } from '../../src/engine/reference/gpt2.ts';
import { REDUCTION, expectClose } from '../helpers/check.ts';
import { testGpu } from '../helpers/gpu.ts';
import { randomLora } from './random-lora.ts';

const V = 4100;
const config = modelConfig({ nLayer: 2, nHead: 2, nEmbd: 16, nPositions: 16, vocabSize: V, bosTokenId: 0, eosTokenId: 0 });
const B = 2;
const T = 8;
const rng = new Rng(77);
const exact = randomGpt2ReferenceWeights(config, rng, 0.2);
const layout = gpt2ParameterLayout(config);
const weights: ParameterSet = { layout, data: new Float32Array(layout.totalElements) };
for (const e of layout.entries) {
  weights.data.set(exact.get(e.name)!, e.offset);
  exact.set(e.name, Float64Array.from(weights.data.subarray(e.offset, e.offset + e.elementCount)));
}
const lora = loraConfig({ rank: 2, alpha: 4, targets: ['c_attn', 'mlp.c_proj'] });
const { tensors: loraTensors, reference: referenceLora } = randomLora(config, lora, rng);
const ids = Array.from({ length: B * T }, () => rng.int(V));
const targets = Array.from({ length: B * T }, () => rng.int(V));
const mask = Array.from({ length: B * T }, (_, i) => (i % T === 0 ? 0 : 1));

let gpu: GpuContext;
beforeAll(async () => {
  gpu = await testGpu();
});
afterAll(() => {
  expect(gpu.pool.bytesInUse).toBe(0);
});

describe('LM head backward with a split reduction', () => {
  for (const frozenWeights of ['f32', 'f16'] as FrozenWeightStorage[]) {
    it(`LoRA gradients and loss match the reference (${frozenWeights} frozen weights)`, async () => {
      const C = config.nEmbd;
      // One classifier chunk of all B·T rows: the split must be what this shape gets.
      expect(splitKFor('forward', { M: B * T, N: C, K: V }, 4)).toBe(2);
      const model = Gpt2Model.create(gpu, config, weights, { frozenWeights, training: { kind: 'lora' } });
      const adapter = LoraAdapter.create(gpu, config, lora, { tensors: loraTensors });
      const run = await Gpt2Run.create(gpu, model, { batchSize: B, sequenceLength: T, mode: { kind: 'lora' }, adapter });
      try {
        expect(run.forward.filter((d) => d.kernel === 'matmul_split_reduce')).toHaveLength(1);
        const reference = new Map(exact);
        if (frozenWeights === 'f16') for (const name of model.packedWeights) reference.set(name, exact.get(name)!.map(roundToF16));
        const batch = { B, T, ids, targets, mask };
        const forward = gpt2ReferenceForward(config, reference, referenceLora, batch);
        const grads = gpt2ReferenceBackward(config, reference, referenceLora, batch, forward);
        run.setBatch({ ids, targets, mask });
        await run.step();
        expectClose([(await run.readMetrics()).loss], [forward.loss], { atol: 1e-4, rtol: 0 }, 'loss');
        const got = await run.readGradients();
        for (const [path, pair] of grads.lora) {
          expectClose(got.get(`${path}.lora_A`)!, pair.a, REDUCTION, `${path}.lora_A`);
          expectClose(got.get(`${path}.lora_B`)!, pair.b, REDUCTION, `${path}.lora_B`);
        }
      } finally {
        run.destroy();
        adapter.destroy();
        model.destroy();
      }
    });
  }
});
