// `tunelab train`, `tunelab generate` and `tunelab eval` end to end on a tiny model made by `tunelab init` (the real
// command, spawned): full training on a question→answer file drives the loss well down and generation (KV cache,
// streamed to stdout) then gives a learned answer; a LoRA adapter is written in PEFT's layout and `eval`/`generate`
// load it, eval reproducing the validation loss training reported; a run stopped at step 2 and continued with
// --resume has exactly the losses of the uninterrupted run. The GPU commands run in this process through main(), on
// one shared device, so SwiftShader compiles each kernel once rather than once per command; each command must give
// back every buffer it took.

import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { shareCliGpu } from '../../src/cli/common.ts';
import { answerStream } from '../../src/cli/generate.ts';
import { main } from '../../src/cli/main.ts';
import type { GpuContext } from '../../src/engine/gpu/context.ts';
import { testGpu } from '../helpers/gpu.ts';

interface Result {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** The real command in a process of its own. */
function spawned(...args: string[]): Promise<Result> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['bin/tunelab.mjs', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk) => (stdout += chunk));
    child.stderr.on('data', (chunk) => (stderr += chunk));
    child.on('error', reject);
    child.on('close', (status) => resolve({ status, stdout, stderr }));
  });
}

let gpu: GpuContext;

/** The command through main() on the shared device, capturing what it prints; it must free all it allocated. */
async function tunelab(...args: string[]): Promise<Result> {
  let stdout = '';
  let stderr = '';
  const out = vi.spyOn(process.stdout, 'write').mockImplementation((chunk) => ((stdout += String(chunk)), true));
  const err = vi.spyOn(process.stderr, 'write').mockImplementation((chunk) => ((stderr += String(chunk)), true));
  const before = gpu.pool.bytesInUse;
  let status: number;
  try {
    status = await main(args);
  } finally {
    out.mockRestore();
    err.mockRestore();
  }
  expect(gpu.pool.bytesInUse, `GPU memory left in use by tunelab ${args[0]}`).toBe(before);
  return { status, stdout, stderr };
}

function expectOk(result: Result): void {
  if (result.status !== 0) throw new Error(`exit ${result.status}\n${result.stderr}`);
}

/** The JSON lines `tunelab train --json` printed: every event, then the result. */
function events(result: Result): Record<string, unknown>[] {
  expectOk(result);
  return result.stdout.trim().split('\n').map((line) => JSON.parse(line));
}

const stepLosses = (lines: Record<string, unknown>[]) => lines.filter((e) => e.type === 'step').map((e) => [e.step, e.loss]);

/** Raw prompt/completion pairs: "Q: sky?\nA:" + " blue" + end of text, 16 byte tokens each. */
const PAIRS: [string, string][] = [
  ['sky', 'blue'],
  ['grass', 'green'],
  ['snow', 'white'],
  ['coal', 'black'],
];
const prompt = (q: string) => `Q: ${q}?\nA:`;

const scratch = mkdtempSync(join(tmpdir(), 'tunelab-train-'));
const modelDir = join(scratch, 'model');
const dataFile = join(scratch, 'qa.jsonl');
/** The tests train on SwiftShader, a CPU: minutes on a busy machine. */
const LONG = 600_000;

afterAll(() => {
  shareCliGpu(undefined);
  rmSync(scratch, { recursive: true, force: true });
});

describe('tunelab train / generate / eval', () => {
  beforeAll(async () => {
    writeFileSync(dataFile, PAIRS.map(([q, a]) => JSON.stringify({ prompt: prompt(q), completion: ` ${a}` })).join('\n') + '\n');
    expectOk(await spawned('init', '--out', modelDir, '--layers', '2', '--dim', '32', '--heads', '2', '--context', '32', '--seed', '1'));
    gpu = await testGpu();
    shareCliGpu(gpu);
  });

  it('trains a tiny model until it answers, writing weights, metrics and config; generate streams the answer', async () => {
    const out = join(scratch, 'full');
    const lines = events(
      await tunelab(
        'train', '--model', modelDir, '--data', dataFile, '--validation', dataFile, '--out', out,
        '--mode', 'full', '--raw-completions', '--batch-size', '4', '--max-steps', '32', '--lr', '1e-2',
        '--schedule', 'constant', '--warmup-steps', '5', '--eval-every', '16', '--json',
      ),
    );
    const steps = lines.filter((e) => e.type === 'step') as { loss: number }[];
    const evals = lines.filter((e) => e.type === 'eval') as { step: number; perplexity: number }[];
    expect(steps).toHaveLength(32);
    expect(evals.map((e) => e.step)).toEqual([0, 16, 32]);
    expect(steps[31].loss).toBeLessThan(0.1 * steps[0].loss);
    expect(evals[2].perplexity).toBeLessThan(2);
    expect(lines[lines.length - 1]).toMatchObject({ type: 'result', reason: 'completed', step: 32 });
    for (const file of ['model.safetensors', 'config.json', 'tokenizer.json', 'metrics.jsonl', 'training_config.json', 'checkpoint/trainer_state.json']) {
      expect(existsSync(join(out, file)), file).toBe(true);
    }
    const metrics = readFileSync(join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((line) => JSON.parse(line));
    expect(metrics.filter((e) => e.type === 'step')).toHaveLength(32);
    const recorded = JSON.parse(readFileSync(join(out, 'training_config.json'), 'utf8'));
    expect(recorded.train).toMatchObject({ mode: 'full', learningRate: 1e-2, maxSteps: 32, batchSize: 4 });
    expect(recorded.data.template.rawCompletions).toBe(true);

    // The question goes through the recorded template; the answer streams to stdout, then a newline.
    const generated = await tunelab('generate', '--model', out, '--prompt', prompt('grass'), '--temperature', '0', '--max-new-tokens', '8');
    expectOk(generated);
    expect(generated.stdout).toBe(' green\n');
    expect(generated.stderr).toContain('stopped by end-of-text');
  }, LONG);

  it('writes a PEFT LoRA adapter that eval and generate load; --resume continues with the same losses', async () => {
    const lora = ['--raw-completions', '--batch-size', '4', '--lr', '1e-2', '--schedule', 'constant', '--eval-every', '0', '--lora-rank', '4', '--lora-targets', 'c_attn,mlp.c_proj', '--json'];
    const out = join(scratch, 'lora');
    const lines = events(await tunelab('train', '--model', modelDir, '--data', dataFile, '--validation', dataFile, '--out', out, '--max-steps', '4', ...lora));
    const result = lines[lines.length - 1];
    expect(result).toMatchObject({ type: 'result', reason: 'completed', step: 4 });
    // The evaluation before the first step scores the base model (LoRA's B starts at zero).
    const baseLoss = (lines.find((e) => e.type === 'eval' && e.step === 0) as { loss: number }).loss;
    const adapterConfig = JSON.parse(readFileSync(join(out, 'adapter_config.json'), 'utf8'));
    expect(adapterConfig).toMatchObject({ peft_type: 'LORA', r: 4, lora_alpha: 16, fan_in_fan_out: true, target_modules: ['c_attn', 'mlp.c_proj'] });
    expect(existsSync(join(out, 'adapter_model.safetensors'))).toBe(true);

    // Stopped after 2 steps, then continued from its checkpoint (which knows the model, data and settings) to step 4:
    // the losses of the uninterrupted run.
    const split = join(scratch, 'lora-split');
    const first = events(await tunelab('train', '--model', modelDir, '--data', dataFile, '--validation', dataFile, '--out', split, '--max-steps', '2', ...lora));
    const rest = events(await tunelab('train', '--resume', join(split, 'checkpoint'), '--out', split, '--max-steps', '4', '--json'));
    expect([...stepLosses(first), ...stepLosses(rest)]).toEqual(stepLosses(lines));
    expect(rest[rest.length - 1]).toMatchObject({ type: 'result', step: 4, validationLoss: result.validationLoss });
    const metrics = readFileSync(join(split, 'metrics.jsonl'), 'utf8').trim().split('\n').map((line) => JSON.parse(line));
    expect(metrics.filter((e) => e.type === 'step').map((e) => e.step)).toEqual([1, 2, 3, 4]);

    const scored = await tunelab('eval', '--model', modelDir, '--adapter', out, '--data', dataFile);
    expectOk(scored);
    const withAdapter = JSON.parse(scored.stdout);
    expect(withAdapter.loss).toBeCloseTo(result.validationLoss as number, 6);
    expect(withAdapter.loss).toBeLessThan(baseLoss);

    const generated = await tunelab('generate', '--model', modelDir, '--adapter', out, '--prompt', prompt('sky'), '--max-new-tokens', '3', '--seed', '5', '--json');
    expectOk(generated);
    const output = JSON.parse(generated.stdout);
    expect(output.promptKind).toBe('completion');
    expect(output.promptTokens).toBe(prompt('sky').length);
    expect(output.newTokens).toBeGreaterThan(0);

    const refused = await tunelab('generate', '--model', modelDir, '--adapter', scratch, '--prompt', 'x');
    expect(refused.status).toBe(1);
    expect(refused.stderr).toMatch(/adapter_config\.json and adapter_model\.safetensors/);
  }, LONG);
});

describe('tunelab generate: the streamed answer', () => {
  it("shows each new piece once, without the chat template's text before the answer", () => {
    const shown: string[] = [];
    const stream = answerStream(' ', (text) => shown.push(text));
    // Growing prefixes as the Generator hands them over (a held-back tail makes one repeat).
    for (const text of ['', ' ', ' gr', ' gr', ' green']) stream(text);
    expect(shown).toEqual(['gr', 'een']);
    const other: string[] = [];
    const unprefixed = answerStream(' ', (text) => other.push(text));
    for (const text of ['ye', 'yes']) unprefixed(text);
    expect(other).toEqual(['ye', 's']);
  });
});
