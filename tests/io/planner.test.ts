// The memory planner: sizes by formula for every training mode (pure arithmetic), refusals that name the buffer,
// the limit and a setting that fits, and — on WebGPU — that the plan is exactly what the engine allocates (every
// buffer a Trainer takes from the pool, by label and size) and that a run too large for the device is refused before
// anything is allocated.

import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { TunelabError } from '../../src/engine/errors.ts';
import type { GpuContext } from '../../src/engine/gpu/context.ts';
import { GPT2_SMALL, modelConfig } from '../../src/engine/model/config.ts';
import { Gpt2Run } from '../../src/engine/model/gpt2.ts';
import { LoraAdapter, loraConfig, loraParameterSpecs } from '../../src/engine/model/lora.ts';
import {
  MemoryRefusal,
  checkMemoryPlan,
  findLimitBreach,
  planGpt2Run,
  planMemory,
  planTraining,
  type DeviceLimits,
  type MemoryPlan,
  type PlanRequest,
} from '../../src/engine/model/planner.ts';
import { gpt2ParameterLayout, partitionLayout, parameterCount } from '../../src/engine/model/weights.ts';
import { Trainer } from '../../src/engine/train/trainer.ts';
import { testGpu } from '../helpers/gpu.ts';
import { QA, qaData, tinyConfig, tinyModel } from '../train/tiny.ts';

const GiB = 2 ** 30;
const MiB = 2 ** 20;
/** A desktop GPU's limits, large enough that nothing below breaks them unless a test wants it to. */
const ROOMY: DeviceLimits = { maxBufferSize: 4 * GiB, maxStorageBufferBindingSize: 4 * GiB - 4 };
/** WebGPU's default limits. */
const DEFAULTS: DeviceLimits = { maxBufferSize: 256 * MiB, maxStorageBufferBindingSize: 128 * MiB };

/** Every count a multiple of 64 floats, so no alignment padding hides in the totals: N = 64, C = 64, V = 320. */
const SMALL = modelConfig({ nLayer: 3, nHead: 4, nEmbd: 64, nPositions: 64, vocabSize: 320, bosTokenId: 0, eosTokenId: 0 });
const B = 2;
const T = 32;
const N = B * T;
const C = 64;
const L = 3;
const NH = 4;
const V = 320;
/** Readback slots of a run (3 × 64 floats) and the gradient norm's partials and result (64 floats each here). */
const RING = 3 * 64;

function request(overrides: Partial<PlanRequest> = {}): PlanRequest {
  return { config: SMALL, batchSize: B, sequenceLength: T, mode: { kind: 'full' }, limits: ROOMY, evaluation: false, ...overrides };
}

function viewNames(plan: MemoryPlan, purpose: string): string[] {
  return plan.buffers.filter((b) => b.purpose === purpose).flatMap((b) => b.views.map((v) => v.name));
}

function refusal(action: () => unknown): MemoryRefusal {
  try {
    action();
  } catch (error) {
    expect(error).toBeInstanceOf(MemoryRefusal);
    expect(error).toBeInstanceOf(TunelabError);
    expect((error as TunelabError).code).toBe('too-large');
    return error as MemoryRefusal;
  }
  throw new Error('expected a refusal');
}

async function refusalOf(action: () => Promise<unknown>): Promise<MemoryRefusal> {
  let caught: unknown;
  await action().catch((error: unknown) => (caught = error));
  return refusal(() => {
    if (caught) throw caught;
  });
}

describe('memory planner: sizes', () => {
  it('full training: params, grads and both Adam moments are the whole model; activations follow the formula', () => {
    const plan = planMemory(request());
    const P = gpt2ParameterLayout(SMALL).totalElements * 4;
    expect(plan.parameterCount).toBe(parameterCount(SMALL));
    expect(plan.trainableParameterCount).toBe(parameterCount(SMALL));
    expect(plan.bytesByPurpose.params).toBe(P);
    expect(plan.bytesByPurpose.grads).toBe(P);
    expect(plan.bytesByPurpose.optimizer).toBe(2 * P);
    // Per layer: ln1, qkv(3), atty, attproj, residual2, ln2, fch(4), fchGelu(4), fcproj, residual3 = 18·N·C,
    // plus 4 mean/rstd vectors of N and lse of (B,NH,T). Global: ids, targets, mask, losses, correct (N each), the
    // metric sums (padded to 64), encoded, lnf (+ 2 N) and the logits (N,V).
    const perLayer = 18 * N * C + 4 * N + B * NH * T;
    const global = 5 * N + 64 + N * C + N * C + 2 * N + N * V;
    expect(plan.bytesByPurpose.activations).toBe(4 * (L * perLayer + global));
    expect(plan.run.chunk).toBe(N);
    expect(plan.evaluationRun).toBeNull();
    expect(plan.totalBytes).toBe(Object.values(plan.bytesByPurpose).reduce((a, b) => a + b, 0));
    // Scratch: dresidual, btc (N,C), two (N,4C), delta (B,NH,T), layernorm partials and, because wte trains, the
    // token segments; then the readback slots, the gradient norm's buffers and AdamW's step count.
    const scratch = plan.buffers.filter((b) => b.purpose === 'scratch').map((b) => b.name);
    expect(scratch).toEqual([
      'scratch.dresidual',
      'scratch.btc',
      'scratch.bt4c',
      'scratch.bt4cGelu',
      'scratch.attDelta',
      'scratch.lnPartials',
      'scratch.segmentTokens',
      'scratch.segmentOffsets',
      'scratch.segmentPositions',
      'gpt2.metrics.0',
      'gpt2.metrics.1',
      'gpt2.metrics.2',
      'gradnorm.partials',
      'gradnorm.result',
      'adam.step',
    ]);
  });

  it('the evaluation run: inference buffers of the same shape, one transient set of block activations', () => {
    const withEval = planMemory(request({ evaluation: true }));
    const without = planMemory(request());
    const evalRun = withEval.evaluationRun!;
    expect(evalRun.bytesByPurpose.gradients + evalRun.bytesByPurpose.scratch).toBe(0);
    const perLayer = 18 * N * C + 4 * N + B * NH * T;
    const global = 5 * N + 64 + N * C + N * C + 2 * N + N * V;
    expect(evalRun.totalBytes).toBe(4 * (perLayer + global));
    expect(withEval.totalBytes - without.totalBytes).toBe(evalRun.totalBytes + 4 * RING);
    expect(withEval.buffers.find((b) => b.name === 'eval.act.fch')!.views.map((v) => v.name)).toEqual(['transient.fch']);
  });

  it('inference alone: weights (and adapter), no gradients or optimizer; keepLogits holds every row', () => {
    const lora = { rank: 4, targets: ['c_attn'] as const, layers: 'all' as const };
    const plan = planMemory(request({ mode: { kind: 'inference', lora: { ...lora, targets: [...lora.targets] } }, keepLogits: true }));
    expect(plan.bytesByPurpose.grads + plan.bytesByPurpose.optimizer).toBe(0);
    expect(plan.trainableParameterCount).toBe(0);
    expect(plan.loraParameterCount).toBe(L * (4 * C + 3 * C * 4));
    expect(plan.buffers.find((b) => b.name === 'act.logits')!.bytes).toBe(4 * N * V);
  });

  it('LoRA: frozen weights get no gradients or optimizer state; LoRA tensors and their u activations do', () => {
    const R = 4;
    const plan = planMemory(request({ mode: { kind: 'lora', rank: R, targets: ['mlp.c_proj', 'c_attn'], layers: { last: 2 } } }));
    // c_attn: A (R,C) + B (3C,R); mlp.c_proj: A (R,4C) + B (C,R); on layers 1 and 2.
    const loraCount = 2 * (R * C + 3 * C * R + R * 4 * C + C * R);
    expect(plan.loraParameterCount).toBe(loraCount);
    expect(plan.trainableParameterCount).toBe(loraCount);
    expect(viewNames(plan, 'grads')).toEqual([
      'h.1.attn.c_attn.lora_A',
      'h.1.attn.c_attn.lora_B',
      'h.1.mlp.c_proj.lora_A',
      'h.1.mlp.c_proj.lora_B',
      'h.2.attn.c_attn.lora_A',
      'h.2.attn.c_attn.lora_B',
      'h.2.mlp.c_proj.lora_A',
      'h.2.mlp.c_proj.lora_B',
    ]);
    expect(plan.bytesByPurpose.grads).toBe(4 * loraCount); // every LoRA tensor here is a multiple of 64 floats
    expect(plan.bytesByPurpose.optimizer).toBe(2 * plan.bytesByPurpose.grads);
    expect(plan.bytesByPurpose.params).toBe(gpt2ParameterLayout(SMALL).totalElements * 4 + 4 * loraCount);
    expect(plan.buffers.find((b) => b.name === 'lora')!.bytes).toBe(4 * loraCount);
    expect(viewNames(plan, 'activations')).toEqual(
      expect.arrayContaining(['h1.attn.c_attn.u', 'h2.attn.c_attn.u', 'h1.mlp.c_proj.u', 'h2.mlp.c_proj.u']),
    );
    // Block 0 is below the first adapted block: the backward never reaches it, so it keeps no activations of its own.
    expect(viewNames(plan, 'activations')).toEqual(expect.arrayContaining(['transient.fch', 'h1.fch', 'h2.fch']));
    expect(viewNames(plan, 'activations')).not.toContain('h0.fch');
    expect(viewNames(plan, 'scratch')).not.toContain('segmentTokens');
    expect(plan.buffers.map((b) => b.name)).toContain('scratch.loraDu');
    expect(planMemory(request()).totalBytes).toBeGreaterThan(plan.totalBytes);
  });

  it('LoRA layer lists and PEFT shapes (lora.ts is the one place LoRA tensors are specified)', () => {
    const specs = loraParameterSpecs(SMALL, { rank: 8, targets: ['c_fc', 'attn.c_proj'], layers: [2, 0, 2] });
    expect(specs.map((s) => [s.name, s.shape])).toEqual([
      ['h.0.attn.c_proj.lora_A', [8, C]],
      ['h.0.attn.c_proj.lora_B', [C, 8]],
      ['h.0.mlp.c_fc.lora_A', [8, C]],
      ['h.0.mlp.c_fc.lora_B', [4 * C, 8]],
      ['h.2.attn.c_proj.lora_A', [8, C]],
      ['h.2.attn.c_proj.lora_B', [C, 8]],
      ['h.2.mlp.c_fc.lora_A', [8, C]],
      ['h.2.mlp.c_fc.lora_B', [4 * C, 8]],
    ]);
    expect(() => loraParameterSpecs(SMALL, { rank: 8, targets: ['c_fc'], layers: [3] })).toThrow(/layer 3 does not exist/);
    expect(() => loraParameterSpecs(SMALL, { rank: 8, targets: ['c_fc'], layers: { last: 4 } })).toThrow(/last must be 1\.\.3/);
    expect(() => planMemory(request({ mode: { kind: 'lora', rank: 65, targets: ['c_fc'], layers: 'all' } }))).toThrow(/rank must be an integer from 1 to 64/);
  });

  it('LoRA with explicit sites (a PEFT regex adapter) instead of targets × layers', () => {
    const sites = [
      { layer: 2, module: 'mlp.c_fc' as const },
      { layer: 0, module: 'attn.c_attn' as const },
    ];
    const plan = planMemory(request({ mode: { kind: 'lora', rank: 2, targets: ['c_attn'], layers: 'all', sites } }));
    expect(viewNames(plan, 'grads')).toEqual(['h.0.attn.c_attn.lora_A', 'h.0.attn.c_attn.lora_B', 'h.2.mlp.c_fc.lora_A', 'h.2.mlp.c_fc.lora_B']);
    const u = viewNames(plan, 'activations').filter((n) => n.endsWith('.u'));
    expect(u).toEqual(['h0.attn.c_attn.u', 'h2.mlp.c_fc.u']);
    expect(() => planMemory(request({ mode: { kind: 'lora', rank: 2, targets: [], layers: 'all', sites: [sites[0], sites[0]] } }))).toThrow(/listed twice/);
  });

  it('selective: only the last blocks and ln_f train', () => {
    const plan = planMemory(request({ mode: { kind: 'selective', lastBlocks: 1 } }));
    const grads = viewNames(plan, 'grads');
    expect(grads.every((n) => n.startsWith('h.2.') || n.startsWith('ln_f.'))).toBe(true);
    expect(grads.length).toBe(12 + 2);
    const perBlock = parameterCount(SMALL) - parameterCount({ ...SMALL, nLayer: 2 });
    expect(plan.trainableParameterCount).toBe(perBlock + 2 * C);
  });

  it('GPT-2 small: parameter count, a classifier chunk that fits 64 MiB, views aligned and inside their buffers', () => {
    const plan = planMemory({ config: GPT2_SMALL, batchSize: 8, sequenceLength: 1024, mode: { kind: 'lora', rank: 8, targets: ['c_attn'], layers: 'all' }, limits: ROOMY });
    expect(plan.parameterCount).toBe(124_439_808);
    expect(plan.run.chunk).toBe(Math.floor((64 * MiB) / (50257 * 4)));
    const logits = plan.buffers.find((b) => b.name === 'act.logits')!;
    expect(logits.views[0].bytes).toBe(plan.run.chunk * 50257 * 4);
    for (const buffer of plan.buffers) {
      expect(buffer.bytes % 256).toBe(0);
      expect(buffer.bytes).toBeLessThanOrEqual(ROOMY.maxBufferSize);
      for (const v of buffer.views) {
        expect(v.offset % 256).toBe(0);
        expect(v.offset + v.bytes).toBeLessThanOrEqual(buffer.bytes);
      }
    }
    expect(findLimitBreach(plan)).toBeNull();
  });

  it('packs parameters exactly as partitionLayout cuts them, and splits per-layer activations under maxBufferSize', () => {
    // wte is 80 KiB, fch (N,4C) 64 KiB per layer: two layers of fch do not share a 96 KiB buffer.
    const limits = { maxBufferSize: 96 * 1024, maxStorageBufferBindingSize: 96 * 1024 };
    const plan = planMemory(request({ limits }));
    const layout = gpt2ParameterLayout(SMALL);
    const segments = partitionLayout(layout, limits.maxBufferSize);
    const params = plan.buffers.filter((b) => b.purpose === 'params');
    expect(params.map((b) => b.name)).toEqual(segments.map((_, i) => `params.${i}`));
    expect(params.map((b) => b.views.map((v) => v.name))).toEqual(segments.map((s) => s.entries.map((e) => e.name)));
    expect(params.map((b) => b.bytes)).toEqual(segments.map((s) => s.elementCount * 4));
    params.forEach((b, i) => {
      for (const v of b.views) expect(v.offset / 4 + segments[i].firstElement).toBe(layout.byName.get(v.name)!.offset);
    });
    expect(plan.buffers.filter((b) => b.name.startsWith('act.fch.')).map((b) => b.views.map((v) => v.name))).toEqual([['h0.fch'], ['h1.fch'], ['h2.fch']]);
    expect(plan.buffers.find((b) => b.name === 'act.ln1')!.views.map((v) => v.name)).toEqual(['h0.ln1', 'h1.ln1', 'h2.ln1']);
  });

  it("the run's buffers are planGpt2Run's, the plan Gpt2Run allocates", () => {
    const plan = planMemory(request({ mode: { kind: 'selective', lastBlocks: 2 } }));
    const run = planGpt2Run(SMALL, { batchSize: B, sequenceLength: T, mode: { kind: 'selective', lastBlocks: 2 } }, ROOMY);
    expect(plan.run).toEqual(run);
    const names = new Set(plan.buffers.map((b) => b.name));
    for (const b of run.buffers) expect(names.has(b.name), b.name).toBe(true);
  });

  it('refuses a sequence longer than the context', () => {
    expect(() => planMemory(request({ sequenceLength: 65 }))).toThrow(/sequence length 65 is longer than the model's context of 64/);
  });
});

describe('memory planner: refusals', () => {
  it('over budget: names the largest buffer and the budget, suggests the largest batch that fits', () => {
    const req: PlanRequest = { config: GPT2_SMALL, batchSize: 16, sequenceLength: 1024, mode: { kind: 'lora', rank: 8, targets: ['c_attn'], layers: 'all' }, limits: ROOMY, budgetBytes: 8 * GiB };
    const plan = planMemory(req);
    expect(plan.totalBytes).toBeGreaterThan(8 * GiB);
    const error = refusal(() => checkMemoryPlan(plan));
    expect(error.breach.limit).toBe('budget');
    expect(error.largest.name).toBe('act.fch');
    expect(error.message).toMatch(/needs [\d.]+ GiB, more than the memory budget of 8\.00 GiB/);
    expect(error.message).toMatch(/largest buffer is act\.fch \(activations, /);
    const s = error.suggestion!;
    expect(s.sequenceLength).toBe(1024);
    expect(s.batchSize).toBeLessThan(16);
    expect(error.message).toContain(`It would fit with batch size ${s.batchSize}, sequence length 1024 unchanged`);
    // The suggestion is the largest batch that fits: it fits, one more does not.
    expect(planTraining({ ...req, batchSize: s.batchSize }).totalBytes).toBe(s.totalBytes);
    expect(() => planTraining({ ...req, batchSize: s.batchSize + 1 })).toThrow(MemoryRefusal);
  });

  // fch is (N,4C) f32 = 1 KiB per token; the largest weight, wte, is 80 KiB; the limit 96 KiB.
  const LONG = { ...SMALL, nPositions: 128 };
  const binding96 = { maxBufferSize: MiB, maxStorageBufferBindingSize: 96 * 1024 };

  it('a binding that breaks maxStorageBufferBindingSize: names view, buffer and limit, suggests a smaller batch', () => {
    const req = request({ config: LONG, batchSize: 2, sequenceLength: 64, limits: binding96 });
    const error = refusal(() => planTraining(req));
    expect(error.breach).toMatchObject({ limit: 'maxStorageBufferBindingSize', limitBytes: 96 * 1024, view: 'h0.fch', bytes: 128 * 1024 });
    expect(error.message).toMatch(
      /^h0\.fch in buffer act\.fch needs 128\.0 KiB, more than this device's largest binding \(maxStorageBufferBindingSize\) of 96\.0 KiB/,
    );
    expect(error.suggestion).toMatchObject({ batchSize: 1, sequenceLength: 64 });
    expect(error.message).toContain('It would fit with batch size 1, sequence length 64 unchanged');
  });

  it('when batch 1 is not enough, suggests the longest sequence that fits', () => {
    const req = request({ config: LONG, batchSize: 1, sequenceLength: 128, limits: binding96 });
    const error = refusal(() => planTraining(req));
    expect(error.suggestion).toMatchObject({ batchSize: 1, sequenceLength: 96 });
    expect(() => planTraining({ ...req, sequenceLength: 96 })).not.toThrow();
    expect(() => planTraining({ ...req, sequenceLength: 97 })).toThrow(MemoryRefusal);
  });

  it("GPT-2 small's wte under WebGPU's default binding limit: no setting fits, choose a smaller model", () => {
    const error = refusal(() =>
      planTraining({ config: GPT2_SMALL, batchSize: 1, sequenceLength: 64, mode: { kind: 'lora', rank: 8, targets: ['c_attn'], layers: 'all' }, limits: DEFAULTS }),
    );
    expect(error.breach).toMatchObject({ limit: 'maxStorageBufferBindingSize', buffer: 'params.0', view: 'wte.weight', bytes: 50257 * 768 * 4 });
    expect(error.suggestion).toBeNull();
    expect(error.message).toMatch(/^wte\.weight in buffer params\.0 needs 147\.2 MiB, more than .*maxStorageBufferBindingSize\) of 128\.0 MiB/);
    expect(error.message).toMatch(/the weight wte\.weight itself is too large for this device\. Choose a smaller model/);
  });

  it('a classifier chunk too wide for a binding: suggests the widest chunk that fits, in whole row alignments', () => {
    // Narrow model (C = 16) so that only the logits are wide: a row of logits is 320 f32 = 1280 bytes, and a chunk
    // shorter than the batch is a multiple of 4 rows (4·16 floats = 256 bytes).
    const narrow = modelConfig({ ...SMALL, nEmbd: 16, nHead: 2 });
    const limits = { maxBufferSize: GiB, maxStorageBufferBindingSize: 64 * 1024 };
    const error = refusal(() => planTraining(request({ config: narrow, classifierChunk: 64, limits })));
    expect(error.breach.view).toBe('logits');
    // 51 rows fit 64 KiB; 48 is the largest multiple of 4 below.
    expect(error.suggestion).toMatchObject({ classifierChunk: 48, batchSize: B, sequenceLength: T });
    expect(error.message).toContain('It would fit with classifier chunk 48 tokens');
  });

  it('full training over budget even at batch 1 suggests LoRA', () => {
    const full = planMemory(request({ batchSize: 1, sequenceLength: 1 }));
    const lora = planMemory(request({ mode: { kind: 'lora', rank: 8, targets: ['c_attn'], layers: 'all' } }));
    const budget = Math.floor((full.totalBytes + lora.totalBytes) / 2);
    expect(lora.totalBytes).toBeLessThan(budget);
    const error = refusal(() => planTraining(request({ budgetBytes: budget })));
    expect(error.suggestion?.mode).toEqual({ kind: 'lora', rank: 8, targets: ['c_attn'], layers: 'all' });
    expect(error.message).toContain('It would fit with LoRA rank 8 on c_attn instead of full fine-tuning');
  });

  it('a plan that fits passes the check unchanged', () => {
    const plan = planMemory(request({ budgetBytes: 64 * MiB, limits: DEFAULTS }));
    expect(checkMemoryPlan(plan)).toBe(plan);
  });
});

describe('memory planner on WebGPU: the plan is what the engine allocates', () => {
  let gpu: GpuContext;
  /** Every buffer taken from the pool while recording: GPU label and size (dispatch uniforms left out). */
  let taken: { label: string; bytes: number }[] = [];
  let recording = false;
  beforeAll(async () => {
    gpu = await testGpu();
    const acquire = gpu.pool.acquire.bind(gpu.pool);
    gpu.pool.acquire = (byteLength, usage, label) => {
      const buffer = acquire(byteLength, usage, label);
      if (recording && !(usage & GPUBufferUsage.UNIFORM)) taken.push({ label, bytes: buffer.size });
      return buffer;
    };
  });
  afterEach(() => {
    recording = false;
    taken = [];
  });
  const sorted = (list: { label: string; bytes: number }[]) => list.map((b) => `${b.label} ${b.bytes}`).sort();

  it('a LoRA trainer takes from the pool exactly the planned buffers: weights, adapter, both runs, AdamW', async () => {
    const config = tinyConfig();
    const data = qaData({ batchSize: 2, pairs: QA.slice(0, 2) });
    const lora = { rank: 4, targets: ['c_attn', 'c_fc'] as const, layers: { last: 1 } };
    recording = true;
    const model = tinyModel(gpu, config);
    const trainer = await Trainer.create(gpu, {
      model,
      data: data.batcher,
      config: { mode: 'lora', batchSize: 2, lora: { ...lora, targets: [...lora.targets] }, maxSteps: 1 },
    });
    recording = false;
    const plan = planTraining({
      config,
      batchSize: 2,
      sequenceLength: data.batcher.sequenceLength,
      mode: { kind: 'lora', rank: 4, targets: [...lora.targets], layers: lora.layers },
      limits: gpu.device.limits,
      evaluation: data.batcher.validationRows > 0,
    });
    expect(plan.evaluationRun).not.toBeNull();
    // On the GPU the evaluation run's buffers carry the training run's labels.
    expect(sorted(taken)).toEqual(sorted(plan.buffers.map((b) => ({ label: b.name.replace(/^eval\./, ''), bytes: b.bytes }))));
    trainer.destroy();
    model.destroy();
  }, 300_000); // it compiles every kernel of a training step on SwiftShader: slow on a busy machine

  it('Gpt2Run.create refuses a batch too large for the device before allocating anything, with the planner\'s message', async () => {
    const model = tinyModel(gpu);
    const adapter = LoraAdapter.create(gpu, model.config, loraConfig({ rank: 4 }), { seed: 1 });
    const limit = gpu.device.limits.maxStorageBufferBindingSize;
    // fch (B·T, 4C) f32 is B·32·128·4 bytes: a batch whose fch is just over the binding limit.
    const batchSize = Math.floor(limit / (32 * 4 * model.config.nEmbd * 4)) + 1;
    const before = gpu.pool.bytesInUse;
    recording = true;
    const error = await refusalOf(() => Gpt2Run.create(gpu, model, { batchSize, sequenceLength: 32, mode: { kind: 'lora' }, adapter }));
    expect(taken).toEqual([]);
    expect(gpu.pool.bytesInUse).toBe(before);
    expect(error.breach).toMatchObject({ limit: 'maxStorageBufferBindingSize', limitBytes: limit });
    expect(error.breach.view).toMatch(/\.fch(Gelu)?$|^bt4c/);
    expect(error.message).toContain(`more than this device's largest binding (maxStorageBufferBindingSize)`);
    expect(error.message).toMatch(/The largest buffer is [\w.]+ \(/);
    const s = error.suggestion!;
    expect(s.batchSize).toBeLessThan(batchSize);
    expect(error.message).toContain(`It would fit with batch size ${s.batchSize}, sequence length 32 unchanged`);
    adapter.destroy();
    model.destroy();
  });

  it('a Trainer with too large a configuration is refused the same way, and the pool is as it was', async () => {
    const model = tinyModel(gpu);
    const limit = gpu.device.limits.maxStorageBufferBindingSize;
    const T = qaData({ batchSize: 1, pairs: QA.slice(0, 2) }).batcher.sequenceLength;
    const batchSize = Math.floor(limit / (T * 4 * model.config.nEmbd * 4)) + 1;
    const data = qaData({ batchSize, pairs: QA.slice(0, 2) });
    const before = gpu.pool.bytesInUse;
    recording = true;
    const error = await refusalOf(() => Trainer.create(gpu, { model, data: data.batcher, config: { mode: 'full', batchSize } }));
    expect(taken).toEqual([]);
    expect(gpu.pool.bytesInUse).toBe(before);
    expect(error.message).toMatch(/^\S+ in buffer \S+ needs [\d.]+ GiB, more than this device's largest binding/);
    expect(error.message).toMatch(/full fine-tuning\)\. The largest buffer is/);
    expect(error.message).toMatch(/It would fit with batch size \d+, sequence length \d+ unchanged/);
    model.destroy();
  });
});
