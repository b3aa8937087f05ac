// A GPT-2 whose frozen Conv1D weights and frozen tied wte are stored as packed f16 (Gpt2Model option frozenWeights:
// 'f16'; wte then feeds the f16 embedding lookup and the f16 LM-head matmuls), judged by the
// float64 reference model (src/engine/reference/gpt2.ts) run on the same weights rounded to f16 by the independent
// reference rounding (src/engine/reference/f16.ts): the GPU then differs from its judge only by f32 arithmetic, so the
// tolerances are tests/model/gpt2.test.ts's: logits and loss 1e-4 absolute, gradients REDUCTION (1e-4 + 1e-3 rel).
// The planner's figures are checked to the byte: 'f16' saves exactly the packed weights' f32 bytes less their packed
// bytes, and what the model takes from the pool is what the plan says.
//
// Shape (awkward on purpose): C = 24, V = 50, T = 13, B = 3, three layers, LoRA rank 3 on every module with B ≠ 0,
// classifier chunks of 8 tokens.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { GpuContext } from '../../src/engine/gpu/context.ts';
import { Gpt2Decoder } from '../../src/engine/generate/generator.ts';
import { modelConfig } from '../../src/engine/model/config.ts';
import { Gpt2Model, Gpt2Run } from '../../src/engine/model/gpt2.ts';
import { LoraAdapter, loraConfig } from '../../src/engine/model/lora.ts';
import { packedWeightNames, planMemory, type PlanRequest } from '../../src/engine/model/planner.ts';
import { gpt2ParameterLayout, type ParameterSet } from '../../src/engine/model/weights.ts';
import { Rng } from '../../src/engine/random.ts';
import { randomLora } from './random-lora.ts';
import { roundToF16 } from '../../src/engine/reference/f16.ts';
import { gpt2ReferenceBackward, gpt2ReferenceForward, randomGpt2ReferenceWeights } from '../../src/engine/reference/gpt2.ts';
import { REDUCTION, expectClose, type Tolerance } from '../helpers/check.ts';
import { testGpu } from '../helpers/gpu.ts';
import { maxAbsDiff } from './fixture.ts';

/** Logits and loss: 1e-4 absolute, as in gpt2.test.ts. */
const LOGITS: Tolerance = { atol: 1e-4, rtol: 0 };
/** Gradients: REDUCTION, as in gpt2.test.ts. */
const GRADS: Tolerance = REDUCTION;

const config = modelConfig({ nLayer: 3, nHead: 3, nEmbd: 24, nPositions: 16, vocabSize: 50, bosTokenId: 49, eosTokenId: 49 });
const B = 3;
const T = 13;
const rng = new Rng(1234);
const exact = randomGpt2ReferenceWeights(config, rng, 0.2);
const layout = gpt2ParameterLayout(config);
const weights: ParameterSet = { layout, data: new Float32Array(layout.totalElements) };
for (const e of layout.entries) {
  weights.data.set(exact.get(e.name)!, e.offset);
  exact.set(e.name, Float64Array.from(weights.data.subarray(e.offset, e.offset + e.elementCount))); // f32-rounded
}
/** The reference weights with `packed` rounded to f16, the rest as uploaded (f32). */
function roundedReference(packed: readonly string[]): Map<string, Float64Array> {
  const rounded = new Map(exact);
  for (const name of packed) rounded.set(name, exact.get(name)!.map(roundToF16));
  return rounded;
}

const lora = loraConfig({ rank: 3, alpha: 5, targets: ['c_attn', 'attn.c_proj', 'c_fc', 'mlp.c_proj'] });
const { tensors: loraTensors, reference: referenceLora } = randomLora(config, lora, rng);
const ids = Array.from({ length: B * T }, () => rng.int(50));
const targets = Array.from({ length: B * T }, () => rng.int(50));
const mask = Array.from({ length: B * T }, (_, i) => (i % T < 3 || i % 5 === 0 ? 0 : 1));
const batch = { B, T, ids, targets, mask };
const linearWeights = layout.entries.filter((e) => e.kind === 'linear-weight').map((e) => e.name);
/** What 'f16' packs when wte is frozen (LoRA, inference, selective), in layout order: wte first. */
const frozenWteAndLinear = ['wte.weight', ...linearWeights];

let gpu: GpuContext;
beforeAll(async () => {
  gpu = await testGpu();
});
afterAll(() => {
  expect(gpu.pool.bytesInUse).toBe(0);
});

describe('frozen Conv1D weights and wte stored as f16 (frozenWeights: f16)', () => {
  it('LoRA model: logits, loss and adapter gradients match the reference on f16-rounded weights', async () => {
    const model = Gpt2Model.create(gpu, config, weights, { frozenWeights: 'f16', training: { kind: 'lora' } });
    const adapter = LoraAdapter.create(gpu, config, lora, { tensors: loraTensors });
    try {
      expect(model.packedWeights.sort()).toEqual([...frozenWteAndLinear].sort());
      expect(() => model.tensor('h.0.mlp.c_fc.weight')).toThrow(/packed f16/);
      expect(() => model.tensor('wte.weight')).toThrow(/packed f16/);
      const reference = roundedReference(frozenWteAndLinear);
      const forward = gpt2ReferenceForward(config, reference, referenceLora, batch);
      const grads = gpt2ReferenceBackward(config, reference, referenceLora, batch, forward);
      // The rounding must matter at this tolerance, or the comparison could not tell f16 weights from f32 ones.
      const unrounded = gpt2ReferenceForward(config, exact, referenceLora, batch);
      expect(maxAbsDiff(unrounded.logits, forward.logits)).toBeGreaterThan(10 * LOGITS.atol);
      // So must wte's own rounding, or a GPU that still read an f32 wte would pass.
      const wteUnrounded = gpt2ReferenceForward(config, roundedReference(linearWeights), referenceLora, batch);
      expect(maxAbsDiff(wteUnrounded.logits, forward.logits)).toBeGreaterThan(10 * LOGITS.atol);

      const shape = { batchSize: B, sequenceLength: T };
      const inference = await Gpt2Run.create(gpu, model, { ...shape, mode: { kind: 'inference' }, keepLogits: true, adapter });
      try {
        expect(inference.forward.filter((d) => d.kernel === 'matmul_forward_f16w')).toHaveLength(4 * config.nLayer);
        // The embedding and the logits (one classifier chunk: BT = 39 rows) read the packed wte.
        expect(inference.forward.filter((d) => d.kernel === 'embedding_forward_f16w')).toHaveLength(1);
        expect(inference.forward.filter((d) => d.kernel === 'matmul_backward_input_f16w')).toHaveLength(1);
        const f32WteReaders = inference.forward.filter(
          (d) => d.kernel === 'embedding_forward' || (d.kernel.startsWith('matmul_backward_input') && d.kernel !== 'matmul_backward_input_f16w'),
        );
        expect(f32WteReaders).toHaveLength(0);
        inference.setBatch({ ids, targets, mask });
        await inference.step();
        expectClose(await inference.readLogits(), forward.logits, LOGITS, 'logits');
        expectClose([(await inference.readMetrics()).loss], [forward.loss], LOGITS, 'loss');
      } finally {
        inference.destroy();
      }

      const training = await Gpt2Run.create(gpu, model, { ...shape, mode: { kind: 'lora' }, adapter, classifierChunk: 8 });
      try {
        expect(training.backward.some((d) => d.kernel === 'matmul_backward_input_f16w')).toBe(true);
        // Five classifier chunks of 8 rows: logits and dlnf each read the packed wte once per chunk.
        const chunks = Math.ceil((B * T) / 8);
        expect(training.forward.filter((d) => d.kernel === 'matmul_backward_input_f16w')).toHaveLength(chunks);
        expect(training.forward.filter((d) => d.kernel === 'matmul_forward_f16w')).toHaveLength(4 * config.nLayer + chunks);
        training.setBatch({ ids, targets, mask });
        await training.step();
        expectClose([(await training.readMetrics()).loss], [forward.loss], LOGITS, 'loss (lora run)');
        const gpuGrads = await training.readGradients();
        for (const [path, pair] of grads.lora) {
          expectClose(gpuGrads.get(`${path}.lora_A`)!, pair.a, GRADS, `${path}.lora_A`);
          expectClose(gpuGrads.get(`${path}.lora_B`)!, pair.b, GRADS, `${path}.lora_B`);
        }
      } finally {
        training.destroy();
      }
      // A run that would train a packed weight is refused before allocating.
      await expect(Gpt2Run.create(gpu, model, { ...shape, mode: { kind: 'full' } })).rejects.toThrow(/frozen f16/);
    } finally {
      adapter.destroy();
      model.destroy();
    }
  });

  it('selective model: the trained blocks stay f32, the rest is packed; gradients match the reference', async () => {
    const model = Gpt2Model.create(gpu, config, weights, { frozenWeights: 'f16', training: { kind: 'selective', lastBlocks: 1 } });
    try {
      const packed = frozenWteAndLinear.filter((name) => !name.startsWith('h.2.'));
      expect(model.packedWeights.sort()).toEqual([...packed].sort());
      const reference = roundedReference(packed);
      const forward = gpt2ReferenceForward(config, reference, null, batch);
      const grads = gpt2ReferenceBackward(config, reference, null, batch, forward);
      const run = await Gpt2Run.create(gpu, model, { batchSize: B, sequenceLength: T, mode: { kind: 'selective', lastBlocks: 1 }, classifierChunk: 8 });
      try {
        run.setBatch({ ids, targets, mask });
        await run.step();
        expectClose([(await run.readMetrics()).loss], [forward.loss], LOGITS, 'loss (selective run)');
        const gpuGrads = await run.readGradients();
        expect(gpuGrads.size).toBeGreaterThan(0);
        for (const [name, g] of gpuGrads) expectClose(g, grads.params.get(name)!, GRADS, name);
      } finally {
        run.destroy();
      }
    } finally {
      model.destroy();
    }
  });

  it('the decoder takes the f16 path: prefill logits match the reference on f16-rounded weights', async () => {
    const model = Gpt2Model.create(gpu, config, weights, { frozenWeights: 'f16' });
    const decoder = await Gpt2Decoder.create(gpu, model, { prefillChunk: 8 });
    try {
      const prompt = ids.slice(0, 11); // two prefill passes: 8 rows, then 3 padded to 4
      const logits = await decoder.prefill(prompt);
      const reference = gpt2ReferenceForward(config, roundedReference(frozenWteAndLinear), null, { B: 1, T: 11, ids: prompt });
      expectClose(logits, reference.logits.subarray(10 * 50, 11 * 50), LOGITS, 'prefill logits');
    } finally {
      decoder.destroy();
      model.destroy();
    }
  });

  it('read() refuses rounded weights, and with the CPU weights returns them exactly', async () => {
    const model = Gpt2Model.create(gpu, config, weights, { frozenWeights: 'f16' });
    try {
      await expect(model.read()).rejects.toThrow(/f16/);
      const back = await model.read(weights);
      expect(back.data).toEqual(weights.data);
    } finally {
      model.destroy();
    }
  });

  it('the planner counts exactly what the model allocates, and f16 saves exactly the packed bytes', () => {
    const limits = gpu.device.limits;
    for (const [mode, packed] of [
      [{ kind: 'lora', rank: 3, targets: ['c_attn'], layers: 'all' }, frozenWteAndLinear],
      [{ kind: 'selective', lastBlocks: 1 }, frozenWteAndLinear.filter((name) => !name.startsWith('h.2.'))],
      [{ kind: 'full' }, []],
    ] as const) {
      const request: PlanRequest = { config, batchSize: B, sequenceLength: T, mode, limits };
      expect(packedWeightNames(config, 'f16', mode.kind === 'lora' ? { kind: 'lora' } : mode)).toEqual(packed);
      const f32 = planMemory(request);
      const f16 = planMemory({ ...request, frozenWeights: 'f16' });
      // Everything fits one params buffer here, so each tensor costs its size rounded up to 256 bytes.
      const saved = packed.reduce((sum, name) => {
        const [K, N] = layout.byName.get(name)!.shape;
        return sum + (Math.ceil((K * N * 4) / 256) - Math.ceil((K * Math.ceil(N / 2) * 4) / 256)) * 256;
      }, 0);
      expect(f32.bytesByPurpose.params - f16.bytesByPurpose.params).toBe(saved);
      expect(f32.totalBytes - f16.totalBytes).toBe(saved);
      if (packed.length) expect(saved).toBeGreaterThan(0);
    }
  });

  it("the pool's bytes in use after create equal the plan's params", () => {
    const limits = gpu.device.limits;
    for (const frozenWeights of ['f32', 'f16'] as const) {
      const plan = planMemory({ config, batchSize: 1, sequenceLength: 1, mode: { kind: 'inference' }, limits, frozenWeights });
      const before = gpu.pool.bytesInUse;
      const model = Gpt2Model.create(gpu, config, weights, { frozenWeights });
      try {
        expect(gpu.pool.bytesInUse - before).toBe(plan.bytesByPurpose.params);
        expect(model.bytes).toBe(plan.bytesByPurpose.params);
      } finally {
        model.destroy();
      }
    }
  });
});
