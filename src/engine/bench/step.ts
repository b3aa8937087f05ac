// Training-step benchmark: one full LoRA step of a GPT-2-shaped model with random weights — set the batch, forward,
// chunked classifier + cross-entropy, backward, global gradient norm and clipping, AdamW on the adapter — one submit,
// timed as PyTorch's peer times its step (wall clock from the step's start until the GPU is idle again), so the
// two figures compare. The GPU's own time for the submit (timestamp queries) comes with it where the device has them.
// The memory benchmark builds the same step and reports the buffer pool's figures.

import { TunelabError } from '../errors.ts';
import type { GpuContext } from '../gpu/context.ts';
import { validateModelConfig, GPT2_SMALL, type ModelConfig } from '../model/config.ts';
import { Gpt2Model, Gpt2Run, type FrozenWeightStorage, type Gpt2Batch } from '../model/gpt2.ts';
import { initGpt2Parameters } from '../model/init.ts';
import { LoraAdapter, loraConfig } from '../model/lora.ts';
import { Rng } from '../random.ts';
import { AdamWOptimizer } from '../train/optimizer.ts';
import { recordBase, round, timingFields, type BenchRecord, type RunCounts } from './records.ts';
import { profileDispatches, profileRecord } from './profile.ts';
import { gpuTimeOfSubmits, median, timeWallClock } from './timing.ts';

/** The model and batch a step benchmark trains; bench/peer.py takes the same numbers. */
export interface StepBenchConfig {
  /** L */
  layers: number;
  /** C */
  width: number;
  /** NH */
  heads: number;
  /** V */
  vocab: number;
  /** Rows of wpe (the model's context). */
  positions: number;
  /** B */
  batch: number;
  /** T */
  seq: number;
  /** R: LoRA rank on every block's attn.c_attn (alpha = 2R, no dropout). */
  rank: number;
}

/** Issue 7's shape: GPT-2 small, batch 8 × 256 tokens, rank 8 on c_attn. */
export const GPT2_SMALL_STEP: Readonly<StepBenchConfig> = Object.freeze({
  layers: 12,
  width: 768,
  heads: 12,
  vocab: 50257,
  positions: 1024,
  batch: 8,
  seq: 256,
  rank: 8,
});

/** For software adapters (SwiftShader): the same step on a model a CPU trains in a fraction of a second. */
export const SCALED_STEP: Readonly<StepBenchConfig> = Object.freeze({
  layers: 2,
  width: 64,
  heads: 4,
  vocab: 512,
  // Room for the generation bench's 16-token prompt and 128 new tokens.
  positions: 256,
  batch: 2,
  seq: 32,
  rank: 8,
});

const LEARNING_RATE = 1e-4;

export function stepModelConfig(c: StepBenchConfig): ModelConfig {
  return validateModelConfig({
    ...GPT2_SMALL,
    nLayer: c.layers,
    nEmbd: c.width,
    nHead: c.heads,
    vocabSize: c.vocab,
    nPositions: c.positions,
    bosTokenId: c.vocab - 1,
    eosTokenId: c.vocab - 1,
  });
}

/** A random (B,T) batch: ids and their next tokens from one random (B,T+1) stream. */
export function randomBatch(c: StepBenchConfig, seed: number): Gpt2Batch {
  const rng = new Rng(seed);
  const ids = new Uint32Array(c.batch * c.seq);
  const targets = new Uint32Array(c.batch * c.seq);
  for (let b = 0; b < c.batch; b++) {
    let token = rng.int(c.vocab);
    for (let t = 0; t < c.seq; t++) {
      const next = rng.int(c.vocab);
      ids[b * c.seq + t] = token;
      targets[b * c.seq + t] = next;
      token = next;
    }
  }
  return { ids, targets };
}

/** Everything a step needs, built once (as the trainer builds it). */
export interface StepHarness {
  readonly config: StepBenchConfig;
  readonly model: Gpt2Model;
  readonly adapter: LoraAdapter;
  readonly run: Gpt2Run;
  readonly optimizer: AdamWOptimizer;
  readonly batch: Gpt2Batch;
  /** Milliseconds to initialize the weights on the CPU, upload them and prepare every dispatch. */
  readonly buildMs: number;
  /** One training step: inputs, forward, backward, clip, AdamW; one submit. Does not wait. */
  step(): Promise<void>;
  destroy(): void;
}

/**
 * Builds model, adapter, run and optimizer. Throws TunelabError 'too-large' when a tensor exceeds the device's
 * binding limit (GPT-2 small's wte is 154 MB: above 128 MiB, below the H100's 2 GiB).
 */
export async function buildStepHarness(gpu: GpuContext, config: StepBenchConfig, frozenWeights: FrozenWeightStorage = 'f32'): Promise<StepHarness> {
  const start = performance.now();
  const modelConfig = stepModelConfig(config);
  const parts: { model?: Gpt2Model; adapter?: LoraAdapter; run?: Gpt2Run; optimizer?: AdamWOptimizer } = {};
  try {
    parts.model = Gpt2Model.create(gpu, modelConfig, initGpt2Parameters(modelConfig, 1), { frozenWeights, training: { kind: 'lora' } });
    const lora = loraConfig({ rank: config.rank, alpha: 2 * config.rank, dropout: 0, targets: ['c_attn'], layers: 'all' });
    parts.adapter = LoraAdapter.create(gpu, modelConfig, lora, { seed: 2 });
    // PEFT starts B at zero, which makes the first step's dA zero; random B keeps every product of the step non-trivial.
    parts.adapter.setTensors(randomAdapterTensors(parts.adapter, new Rng(3)));
    const run = await Gpt2Run.create(gpu, parts.model, { batchSize: config.batch, sequenceLength: config.seq, mode: { kind: 'lora' }, adapter: parts.adapter });
    parts.run = run;
    const trainable = run.trainable.map((t) => ({ ...t, shape: run.plan.trainable.byName.get(t.name)!.shape }));
    parts.optimizer = await AdamWOptimizer.create(gpu, trainable, { maxGradNorm: 1 });
  } catch (error) {
    parts.optimizer?.release();
    parts.run?.destroy();
    parts.adapter?.destroy();
    parts.model?.destroy();
    throw error;
  }
  const { model, adapter, run, optimizer } = parts as Required<typeof parts>;
  const batch = randomBatch(config, 4);
  let seed = 0;
  return {
    config,
    model,
    adapter,
    run,
    optimizer,
    batch,
    buildMs: performance.now() - start,
    async step() {
      run.setBatch({ ...batch, dropoutSeed: seed++ });
      optimizer.prepareStep(LEARNING_RATE);
      await run.step({ after: optimizer.dispatches, readback: [optimizer.gradNormResult] });
    },
    destroy() {
      optimizer.release();
      run.destroy();
      adapter.destroy();
      model.destroy();
    },
  };
}

function randomAdapterTensors(adapter: LoraAdapter, rng: Rng): Map<string, Float32Array> {
  const out = new Map<string, Float32Array>();
  for (const e of adapter.layout.entries) {
    const bound = 1 / Math.sqrt(e.shape[1]);
    const values = new Float32Array(e.elementCount);
    for (let i = 0; i < values.length; i++) values[i] = (rng.next() * 2 - 1) * bound;
    out.set(e.name, values);
  }
  return out;
}

function configFields(c: StepBenchConfig): Record<string, unknown> {
  return { config: { ...c, targets: ['c_attn'] } };
}

/** A record saying why a bench did not run (the suite goes on with the others). */
function skipped(gpu: GpuContext, bench: string, c: StepBenchConfig, scaled: boolean, error: TunelabError): BenchRecord {
  return { ...recordBase(gpu, bench, scaled), ...configFields(c), skipped: true, reason: error.message };
}

/**
 * Times `counts.iters` training steps (after `counts.warmup`), each from its start until the GPU is idle, and
 * returns the step record and the memory record of the same build.
 */
export async function benchStep(
  gpu: GpuContext,
  config: StepBenchConfig,
  counts: RunCounts,
  scaled: boolean,
  frozenWeights: FrozenWeightStorage = 'f32',
  profile = false,
): Promise<BenchRecord[]> {
  let harness: StepHarness;
  try {
    harness = await buildStepHarness(gpu, config, frozenWeights);
  } catch (error) {
    if (error instanceof TunelabError && error.code === 'too-large') return [skipped(gpu, 'step', config, scaled, error), skipped(gpu, 'memory', config, scaled, error)];
    throw error;
  }
  try {
    const memory = memoryRecord(gpu, harness, scaled);
    const timeStep = async () => {
      await harness.step();
      await gpu.sync();
    };
    for (let i = 0; i < counts.warmup; i++) await timeStep();
    let wall: Awaited<ReturnType<typeof timeWallClock>> | undefined;
    const gpuSamples = await gpuTimeOfSubmits(gpu, counts.iters, async () => {
      wall = await timeWallClock(timeStep, { warmup: 0, iters: counts.iters });
    });
    const metrics = await harness.run.flushMetrics();
    const last = metrics[metrics.length - 1];
    const tokens = config.batch * config.seq;
    const timing = wall!;
    // Zeros mean timestamps too coarse to see the step (Dawn's rounding left on): no GPU figure then.
    const gpuMs = gpuSamples && gpuSamples.every((s) => Number.isFinite(s) && s > 0) ? median(gpuSamples) : undefined;
    const step: BenchRecord = {
      ...recordBase(gpu, 'step', scaled),
      ...configFields(config),
      ...timingFields(timing, counts),
      tokens_per_s: round((tokens * 1000) / timing.ms),
      ...(gpuMs !== undefined ? { gpu_ms: round(gpuMs), gpu_timing: 'timestamp-query' } : {}),
      optimizer: 'adamw',
      includes: 'setBatch + forward + backward + clip + adamw, one submit',
      dispatches: harness.run.forward.length + harness.run.backward.length + harness.optimizer.dispatches.length,
      loss: last ? round(last.loss) : null,
      build_ms: round(harness.buildMs),
      frozen_weights: frozenWeights,
      tensor_cores: frozenWeights === 'f16' && gpu.features.tensorCoresF16 && gpu.useTensorCores,
    };
    const records = [step, memory];
    if (profile) {
      const kernels = await profileDispatches(gpu, 2048, timeStep);
      if (kernels) records.push(profileRecord(gpu, 'step', scaled, kernels, { ...configFields(config), frozen_weights: frozenWeights }));
    }
    return records;
  } finally {
    harness.destroy();
  }
}

/** The pool's figures after building the step (every buffer a run needs is allocated up front). */
export function memoryRecord(gpu: GpuContext, harness: StepHarness, scaled: boolean): BenchRecord {
  const model = harness.model.bytes;
  const adapter = harness.adapter.bytes;
  const run = harness.run.bytes;
  const inUse = gpu.pool.bytesInUse;
  return {
    ...recordBase(gpu, 'memory', scaled),
    ...configFields(harness.config),
    bytes_in_use: inUse,
    bytes_allocated: gpu.pool.bytesAllocated,
    model_bytes: model,
    frozen_weights: harness.model.frozenWeights,
    adapter_bytes: adapter,
    run_bytes: run,
    // Optimizer moments, gradient-norm scratch and the dispatches' uniform buffers.
    other_bytes: inUse - model - adapter - run,
    run_bytes_by_purpose: harness.run.plan.bytesByPurpose,
  };
}

/** `bench memory` on its own: build the step, report, tear down. */
export async function benchMemory(
  gpu: GpuContext,
  config: StepBenchConfig,
  scaled: boolean,
  frozenWeights: FrozenWeightStorage = 'f32',
): Promise<BenchRecord[]> {
  let harness: StepHarness;
  try {
    harness = await buildStepHarness(gpu, config, frozenWeights);
  } catch (error) {
    if (error instanceof TunelabError && error.code === 'too-large') return [skipped(gpu, 'memory', config, scaled, error)];
    throw error;
  }
  try {
    return [memoryRecord(gpu, harness, scaled)];
  } finally {
    harness.destroy();
  }
}
