// `tunelab train`, `tunelab generate` and `tunelab eval` end to end, spawning the real command on a tiny model made by
// `tunelab init`: full training on a question→answer file drives the loss well down and generation then gives the
// learned answers; a LoRA adapter is written in PEFT's layout and `eval`/`generate` use it, with eval reproducing the
// validation loss that training reported for it.

import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

interface Result {
  status: number | null;
  stdout: string;
  stderr: string;
}

function tunelab(...args: string[]): Promise<Result> {
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

function expectOk(result: Result): void {
  if (result.status !== 0) throw new Error(`exit ${result.status}\n${result.stderr}`);
}

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
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

describe('tunelab train / generate / eval', () => {
  beforeAll(async () => {
    writeFileSync(dataFile, PAIRS.map(([q, a]) => JSON.stringify({ prompt: prompt(q), completion: ` ${a}` })).join('\n') + '\n');
    expectOk(await tunelab('init', '--out', modelDir, '--layers', '2', '--dim', '32', '--heads', '2', '--context', '32', '--seed', '1'));
  });

  it('trains a tiny model until it answers, writing weights, metrics and config; generate and eval use them', async () => {
    const out = join(scratch, 'full');
    const trained = await tunelab(
      'train', '--model', modelDir, '--data', dataFile, '--validation', dataFile, '--out', out,
      '--mode', 'full', '--raw-completions', '--batch-size', '4', '--max-steps', '32', '--lr', '1e-2',
      '--schedule', 'constant', '--warmup-steps', '5', '--eval-every', '16', '--json',
    );
    expectOk(trained);
    const lines = trained.stdout.trim().split('\n').map((line) => JSON.parse(line));
    const steps = lines.filter((e) => e.type === 'step');
    const evals = lines.filter((e) => e.type === 'eval');
    expect(steps).toHaveLength(32);
    expect(evals.map((e) => e.step)).toEqual([0, 16, 32]);
    expect(steps[31].loss).toBeLessThan(0.1 * steps[0].loss);
    expect(evals[2].perplexity).toBeLessThan(2);
    const result = lines[lines.length - 1];
    expect(result).toMatchObject({ type: 'result', reason: 'completed', step: 32 });
    for (const file of ['model.safetensors', 'config.json', 'tokenizer.json', 'metrics.jsonl', 'training_config.json', 'checkpoint/trainer_state.json']) {
      expect(existsSync(join(out, file)), file).toBe(true);
    }
    const metrics = readFileSync(join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((line) => JSON.parse(line));
    expect(metrics.filter((e) => e.type === 'step')).toHaveLength(32);
    const recorded = JSON.parse(readFileSync(join(out, 'training_config.json'), 'utf8'));
    expect(recorded.train).toMatchObject({ mode: 'full', learningRate: 1e-2, maxSteps: 32, batchSize: 4 });
    expect(recorded.data.template.rawCompletions).toBe(true);

    const generated = await tunelab('generate', '--model', out, '--prompt', prompt('grass'), '--temperature', '0', '--max-new-tokens', '8', '--json');
    expectOk(generated);
    expect(JSON.parse(generated.stdout)).toMatchObject({ text: ' green', reason: 'end-of-text', promptKind: 'completion' });

    const evaluated = await tunelab('eval', '--model', out, '--data', dataFile);
    expectOk(evaluated);
    const scores = JSON.parse(evaluated.stdout);
    // The same examples, template and weights as the last validation: the same numbers.
    expect(scores.loss).toBeCloseTo(evals[2].loss, 6);
    expect(scores.accuracy).toBe(evals[2].accuracy);
    expect(scores.perplexity).toBeCloseTo(Math.exp(scores.loss), 10);
  });

  it('writes a PEFT LoRA adapter that eval and generate load', async () => {
    const out = join(scratch, 'lora');
    const trained = await tunelab(
      'train', '--model', modelDir, '--data', dataFile, '--validation', dataFile, '--out', out,
      '--raw-completions', '--batch-size', '4', '--max-steps', '4', '--lr', '1e-2', '--eval-every', '0',
      '--lora-rank', '4', '--lora-targets', 'c_attn,mlp.c_proj', '--json',
    );
    expectOk(trained);
    const lines = trained.stdout.trim().split('\n').map((line) => JSON.parse(line));
    const result = lines[lines.length - 1];
    expect(result).toMatchObject({ type: 'result', reason: 'completed', step: 4 });
    // The evaluation before the first step scores the base model (LoRA's B starts at zero).
    const baseLoss = lines.find((e) => e.type === 'eval' && e.step === 0).loss;
    const adapterConfig = JSON.parse(readFileSync(join(out, 'adapter_config.json'), 'utf8'));
    expect(adapterConfig).toMatchObject({ peft_type: 'LORA', r: 4, lora_alpha: 16, fan_in_fan_out: true });
    expect(existsSync(join(out, 'adapter_model.safetensors'))).toBe(true);

    const withAdapter = JSON.parse((await tunelab('eval', '--model', modelDir, '--adapter', out, '--data', dataFile)).stdout);
    expect(withAdapter.loss).toBeCloseTo(result.validationLoss, 6);
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
  });
});
