// Checkpoint files (src/engine/train/checkpoint.ts): encode → decode gives back every value bit for bit, and broken
// or foreign files are refused with a message that names the problem.

import { describe, expect, it } from 'vitest';
import { TunelabError } from '../../src/engine/errors.ts';
import { Rng } from '../../src/engine/random.ts';
import { CHECKPOINT_FILES, decodeCheckpoint, encodeCheckpoint, type TrainingCheckpoint } from '../../src/engine/train/checkpoint.ts';

function sample(): TrainingCheckpoint {
  const rng = new Rng(5);
  const values = (n: number) => Float32Array.from({ length: n }, () => rng.normal() * 1e-3 + (rng.next() < 0.1 ? 1e-39 : 0));
  const dropout = new Rng(9);
  dropout.nextU32();
  return {
    config: { learningRate: 2e-4, schedule: 'cosine', lora: { rank: 4, targets: ['c_attn'] } },
    progress: { step: 7, microStep: 14, epoch: 1, tokens: 1234, elapsedMs: 5678.5 },
    rngStates: { loraDropout: dropout.getState() },
    // Names sort differently from list order on purpose: 'h.10' < 'h.2' as strings.
    weights: [
      { name: 'h.2.attn.c_attn.lora_A', shape: [4, 12], data: values(48) },
      { name: 'h.10.attn.c_attn.lora_A', shape: [4, 12], data: values(48) },
      { name: 'ln_f.weight', shape: [12], data: values(12) },
    ],
    optimizer: {
      step: 7,
      tensors: [
        { name: 'h.2.attn.c_attn.lora_A', m: values(48), v: values(48) },
        { name: 'h.10.attn.c_attn.lora_A', m: values(48), v: values(48) },
        { name: 'ln_f.weight', m: values(12), v: values(12) },
      ],
    },
    extra: { model: 'tiny', validationLoss: [3.2, 2.9] },
  };
}

const bits = (a: Float32Array) => Array.from(new Uint32Array(a.buffer, a.byteOffset, a.length));

describe('checkpoint encoding', () => {
  it('round-trips weights, moments (subnormals included), progress, RNG states and config exactly', () => {
    const original = sample();
    const files = encodeCheckpoint(original);
    expect(Object.keys(files).sort()).toEqual([CHECKPOINT_FILES.tensors, CHECKPOINT_FILES.state].sort());
    const restored = decodeCheckpoint(files);
    expect(restored.config).toEqual(original.config);
    expect(restored.progress).toEqual(original.progress);
    expect(restored.rngStates).toEqual(original.rngStates);
    expect(restored.extra).toEqual(original.extra);
    expect(restored.weights.map((w) => [w.name, w.shape])).toEqual(original.weights.map((w) => [w.name, w.shape]));
    restored.weights.forEach((w, i) => expect(bits(w.data)).toEqual(bits(original.weights[i].data)));
    expect(restored.optimizer.step).toBe(7);
    expect(restored.optimizer.tensors.map((t) => t.name)).toEqual(original.optimizer.tensors.map((t) => t.name));
    restored.optimizer.tensors.forEach((t, i) => {
      expect(bits(t.m)).toEqual(bits(original.optimizer.tensors[i].m));
      expect(bits(t.v)).toEqual(bits(original.optimizer.tensors[i].v));
    });
    // A restored RNG continues the same stream.
    const a = new Rng(0);
    a.setState(original.rngStates.loraDropout);
    const b = new Rng(0);
    b.setState(restored.rngStates.loraDropout);
    expect([a.nextU32(), a.nextU32()]).toEqual([b.nextU32(), b.nextU32()]);
  });

  it('refuses missing files, foreign JSON and a tensor file without the listed weights', () => {
    const files = encodeCheckpoint(sample());
    expect(() => decodeCheckpoint({ [CHECKPOINT_FILES.state]: files[CHECKPOINT_FILES.state] })).toThrow(/checkpoint.safetensors is missing/);
    const foreign = new TextEncoder().encode(JSON.stringify({ hello: 1 }));
    expect(() => decodeCheckpoint({ ...files, [CHECKPOINT_FILES.state]: foreign })).toThrow(/not a Tunelab checkpoint/);
    const other = encodeCheckpoint({ ...sample(), weights: sample().weights.slice(1) });
    let caught: unknown;
    try {
      decodeCheckpoint({ ...files, [CHECKPOINT_FILES.tensors]: other[CHECKPOINT_FILES.tensors] });
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(TunelabError);
    expect((caught as Error).message).toMatch(/no tensor weights\/h\.2\.attn\.c_attn\.lora_A/);
  });
});
