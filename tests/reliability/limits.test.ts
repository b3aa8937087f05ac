// Limits (issue 9), from the trainer's side: a configuration that does not fit — one that breaks the device's largest
// binding, or a memory budget — is refused by Trainer.create with the memory planner's MemoryRefusal (TunelabError
// 'too-large', naming the buffer, the limit and a setting that would fit) before the trainer allocates anything:
// the pool's bytes and the number of GPUBuffers are what they were. The setting it suggests then trains.

import { beforeAll, describe, expect, it } from 'vitest';
import type { GpuContext } from '../../src/engine/gpu/context.ts';
import { MemoryRefusal } from '../../src/engine/model/planner.ts';
import { Trainer, type TrainConfig } from '../../src/engine/train/trainer.ts';
import { testGpu } from '../helpers/gpu.ts';
import { microModel, randomTokenData } from './helpers.ts';

const LORA: Partial<TrainConfig> = { mode: 'lora', maxSteps: 2, evalAtStart: false, evalEvery: 0, lora: { rank: 2 } };

/** Trainer.create's rejection, with what the pool and the device held before and after it. */
async function refusal(gpu: GpuContext, create: () => Promise<Trainer>) {
  let created = 0;
  const device = gpu.device;
  const createBuffer = device.createBuffer.bind(device);
  device.createBuffer = (descriptor: GPUBufferDescriptor) => {
    created++;
    return createBuffer(descriptor);
  };
  const before = { inUse: gpu.pool.bytesInUse, allocated: gpu.pool.bytesAllocated };
  try {
    const error = await create().then(
      (trainer) => {
        trainer.destroy();
        return undefined;
      },
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(MemoryRefusal);
    const after = { inUse: gpu.pool.bytesInUse, allocated: gpu.pool.bytesAllocated, buffersCreated: created };
    expect(after).toEqual({ ...before, buffersCreated: 0 });
    return error as MemoryRefusal;
  } finally {
    device.createBuffer = createBuffer;
  }
}

describe('Trainer.create refuses a configuration that does not fit, before allocating', () => {
  let gpu: GpuContext;
  beforeAll(async () => {
    gpu = await testGpu();
  });

  it("refuses a batch whose activations break the device's largest binding, and suggests one that fits", async () => {
    const model = microModel(gpu);
    const limit = gpu.device.limits.maxStorageBufferBindingSize;
    // The MLP activations (B·T, 4C) of 16-wide rows: B·T·64·4 bytes, over the limit for this many rows of 16 tokens.
    const batchSize = Math.ceil(limit / (16 * 64 * 4)) + 1;
    const data = randomTokenData({ rows: 2, sequenceLength: 16, batchSize });
    const error = await refusal(gpu, () => Trainer.create(gpu, { model, data, config: { ...LORA, batchSize } }));
    expect(error.code).toBe('too-large');
    expect(error.breach.limit).toBe('maxStorageBufferBindingSize');
    expect(error.message).toMatch(/largest binding/);
    expect(error.suggestion).not.toBeNull();
    expect(error.suggestion!.batchSize).toBeLessThan(batchSize);
    expect(error.message).toContain(`batch size ${error.suggestion!.batchSize}`);
    model.destroy();
  });

  it('refuses a run over the memory budget, naming the budget; the same run within budget trains', async () => {
    const model = microModel(gpu);
    const data = randomTokenData({ rows: 4, validationRows: 1, sequenceLength: 8, batchSize: 2 });
    const config = { ...LORA, batchSize: 2 };
    const error = await refusal(gpu, () => Trainer.create(gpu, { model, data, config, memoryBudgetBytes: 64 * 1024 }));
    expect(error.code).toBe('too-large');
    expect(error.breach.limit).toBe('budget');
    expect(error.message).toMatch(/more than the memory budget of 64\.0 KiB/);
    const needed = error.breach.bytes;
    const trainer = await Trainer.create(gpu, { model, data, config, memoryBudgetBytes: needed });
    const summary = await trainer.train();
    expect(summary).toMatchObject({ reason: 'completed', step: 2 });
    trainer.destroy();
    model.destroy();
  });
});
