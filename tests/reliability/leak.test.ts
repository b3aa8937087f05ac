// No leaks (issue 9): 1000 training steps of a tiny LoRA run (1 layer, width 16, vocabulary 64, batch 1 × 8 tokens)
// on Dawn + SwiftShader, with an evaluation and a checkpoint every 100 steps as a real run has. From step 10 to step
// 1000 the pool's bytes in use and bytes allocated stay exactly the same, and so does the number of live GPUBuffers
// (every device.createBuffer counted, minus every destroy()): nothing is allocated per step, and the staging buffers
// of checkpoint readbacks are all destroyed. Destroying the trainer and the model gives every pooled byte back.

import { expect, it } from 'vitest';
import { Trainer } from '../../src/engine/train/trainer.ts';
import type { GpuContext } from '../../src/engine/gpu/context.ts';
import { testGpu } from '../helpers/gpu.ts';
import { microModel, randomTokenData } from './helpers.ts';

const STEPS = 1000;
const FIRST_CHECKED_STEP = 10;

/** Counts the device's GPUBuffers: created, destroyed, and live (created and not destroyed). */
function countBuffers(gpu: GpuContext) {
  const counts = { created: 0, destroyed: 0 };
  const device = gpu.device;
  const createBuffer = device.createBuffer.bind(device);
  device.createBuffer = (descriptor: GPUBufferDescriptor): GPUBuffer => {
    const buffer = createBuffer(descriptor);
    counts.created++;
    const destroy = buffer.destroy.bind(buffer);
    let destroyed = false;
    buffer.destroy = () => {
      if (!destroyed) counts.destroyed++;
      destroyed = true;
      destroy();
    };
    return buffer;
  };
  return {
    counts,
    live: () => counts.created - counts.destroyed,
    restore: () => {
      device.createBuffer = createBuffer;
    },
  };
}

it(`keeps GPU memory flat over ${STEPS} steps of a tiny model: no per-step allocation, no growing buffer count`, async () => {
  const gpu = await testGpu();
  const buffers = countBuffers(gpu);
  const pooledBefore = gpu.pool.bytesInUse;
  const model = microModel(gpu);
  const data = randomTokenData({ rows: 8, validationRows: 1, sequenceLength: 8, batchSize: 1 });
  const trainer = await Trainer.create(gpu, {
    model,
    data,
    config: {
      mode: 'lora',
      batchSize: 1,
      maxSteps: STEPS,
      learningRate: 1e-3,
      evalAtStart: false,
      evalEvery: 100,
      lora: { rank: 2, dropout: 0.1, targets: ['c_attn'] },
    },
  });
  const samples: { step: number; inUse: number; allocated: number; live: number }[] = [];
  let evaluations = 0;
  trainer.subscribe((e) => {
    if (e.type === 'step') {
      samples.push({ step: e.step, inUse: gpu.pool.bytesInUse, allocated: gpu.pool.bytesAllocated, live: buffers.live() });
    }
    if (e.type === 'eval') evaluations++;
  });
  let checkpoints = 0;
  const started = performance.now();
  const summary = await trainer.train({
    checkpointEvery: 100,
    onCheckpoint: () => {
      checkpoints++;
    },
  });
  const seconds = (performance.now() - started) / 1000;
  expect(summary).toMatchObject({ reason: 'completed', step: STEPS });
  expect(summary.losses.every(Number.isFinite)).toBe(true);
  expect(evaluations).toBe(STEPS / 100);
  expect(checkpoints).toBe(STEPS / 100 - 1); // none after the last step
  expect(buffers.counts.destroyed).toBeGreaterThanOrEqual(checkpoints); // checkpoint readbacks made and destroyed staging buffers

  expect(samples.map((s) => s.step)).toEqual(Array.from({ length: STEPS }, (_, i) => i + 1));
  const reference = samples[FIRST_CHECKED_STEP - 1];
  const drift = samples
    .slice(FIRST_CHECKED_STEP - 1)
    .filter((s) => s.inUse !== reference.inUse || s.allocated !== reference.allocated || s.live !== reference.live);
  expect(drift, `memory at step ${FIRST_CHECKED_STEP}: ${JSON.stringify(reference)}`).toEqual([]);
  expect(reference.inUse).toBeGreaterThan(pooledBefore);
  console.log(
    `leak test: ${STEPS} steps in ${seconds.toFixed(1)} s (${((1000 * seconds) / STEPS).toFixed(1)} ms/step); ` +
      `pool ${reference.inUse} bytes in use, ${reference.allocated} allocated, ${reference.live} live GPUBuffers ` +
      `from step ${FIRST_CHECKED_STEP} to ${STEPS}`,
  );

  trainer.destroy();
  model.destroy();
  expect(gpu.pool.bytesInUse).toBe(pooledBefore);
  buffers.restore();
}, 600_000); // 1000 steps on SwiftShader: about a minute when the machine is idle
