// `tunelab pretrain` end to end, spawning the real command on a tiny model from `tunelab init` (2 layers, width 32,
// byte-level vocabulary of 257, context 32) and a slice of the bundled corpus: the validation loss falls far below
// the ln(V) of random weights; `tunelab eval` on the written model reproduces the last validation loss; a run stopped
// at --until-step and resumed gives exactly the losses of the uninterrupted run without tokenizing again; --time-limit
// stops early, in time, with a checkpoint and everything written, here in a run resumed approximately from the model
// files alone (which restores weights and data position). Four GPU processes: each one spends most of its time
// compiling pipelines on SwiftShader, the steps themselves are cheap.

import { spawn } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync, gzipSync } from 'node:zlib';
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

/** The JSON lines of a successful --json run: its events and its final result. */
function events(result: Result): { steps: any[]; evals: any[]; result: any; log: string } {
  if (result.status !== 0) throw new Error(`exit ${result.status}\n${result.stderr}`);
  const lines = result.stdout.trim().split('\n').map((line) => JSON.parse(line));
  return { steps: lines.filter((e) => e.type === 'step'), evals: lines.filter((e) => e.type === 'eval'), result: lines[lines.length - 1], log: result.stderr };
}

function metricsOf(dir: string): { steps: any[]; evals: any[] } {
  const lines = readFileSync(join(dir, 'metrics.jsonl'), 'utf8').trim().split('\n').map((line) => JSON.parse(line));
  return { steps: lines.filter((e) => e.type === 'step'), evals: lines.filter((e) => e.type === 'eval') };
}

const readJson = (path: string) => JSON.parse(readFileSync(path, 'utf8'));
/** dtype of wte.weight in a safetensors file (its header is JSON after an 8-byte length). */
function storedDtype(path: string): string {
  const bytes = readFileSync(path);
  const length = Number(bytes.readBigUInt64LE(0));
  return JSON.parse(bytes.subarray(8, 8 + length).toString('utf8'))['wte.weight'].dtype;
}

const LN_V = Math.log(257);
const scratch = mkdtempSync(join(tmpdir(), 'tunelab-pretrain-'));
const modelDir = join(scratch, 'model');
const corpusFile = join(scratch, 'train.txt.gz');
const validationFile = join(scratch, 'validation.txt');
const light = join(scratch, 'light');
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

/** One run's flags: 10 steps of 4 rows × 32 bytes at a high rate, evaluations at steps 0, 5 and 10. */
const RUN = ['--model', modelDir, '--corpus', corpusFile, '--validation', validationFile, '--steps', '10', '--batch-size', '4', '--seq', '32',
  '--lr', '1e-2', '--warmup', '2', '--eval-every', '5', '--json'];

describe('tunelab pretrain', () => {
  let continuous: ReturnType<typeof events>;

  beforeAll(async () => {
    const train = gunzipSync(readFileSync('corpus/train.txt.gz')).toString('utf8').slice(0, 60_000);
    writeFileSync(corpusFile, gzipSync(train));
    writeFileSync(validationFile, gunzipSync(readFileSync('corpus/validation.txt.gz')).toString('utf8').slice(0, 400));
    const init = await tunelab('init', '--out', modelDir, '--layers', '2', '--dim', '32', '--heads', '2', '--context', '32', '--seed', '1');
    if (init.status !== 0) throw new Error(init.stderr);
  });

  it('trains from scratch until the validation loss is far below ln(V), writes the model, and eval reproduces it', async () => {
    const out = join(scratch, 'continuous');
    continuous = events(await tunelab('pretrain', ...RUN, '--out', out));
    const { steps, evals, result } = continuous;
    expect(steps.map((e) => e.step)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    expect(evals.map((e) => e.step)).toEqual([0, 5, 10]);
    expect(Math.abs(evals[0].loss - LN_V)).toBeLessThan(0.3); // random weights: nearly uniform over 257 bytes
    expect(evals[2].loss).toBeLessThan(LN_V - 1.5);
    expect(evals[2].tokens).toBe(400); // 400 bytes + end-of-text: every byte after the first and the end is predicted once
    expect(steps[9].tokens).toBe(10 * 4 * 32);
    expect(result).toMatchObject({ reason: 'completed', complete: true, step: 10, tokensSeen: 1280, tokenized: true, resume: 'none' });
    expect(result.validationLoss).toBe(evals[2].loss);

    for (const file of ['config.json', 'model.safetensors', 'tokenizer.json', 'MODEL_CARD.md', 'metrics.jsonl', 'pretrain.json',
      'checkpoint/trainer_state.json', 'checkpoint/checkpoint.safetensors', 'tokens/train.tokens', 'tokens/validation.tokens']) {
      expect(existsSync(join(out, file)), file).toBe(true);
    }
    expect(storedDtype(join(out, 'model.safetensors'))).toBe('F32');
    const record = readJson(join(out, 'pretrain.json'));
    expect(record.progress).toMatchObject({ step: 10, microStep: 10, tokens: 1280 });
    expect(record.model.parameters).toBe(34_720);
    expect(record.corpus.validation.tokens).toBe(401);
    expect(readFileSync(join(out, 'MODEL_CARD.md'), 'utf8')).toMatch(/\| parameters \| 34,720 \|[\s\S]*\| tokens seen \| 1,280 /);

    const scored = await tunelab('eval', '--model', out, '--data', validationFile, '--format', 'text', '--batch-size', '4');
    if (scored.status !== 0) throw new Error(scored.stderr);
    const evaluation = JSON.parse(scored.stdout.trim().split('\n').pop()!);
    expect(evaluation.tokens).toBe(400);
    expect(Math.abs(evaluation.loss - evals[2].loss)).toBeLessThan(1e-5);
  }, 300_000);

  it('resumes at --until-step exactly, from the cached tokens, without tokenizing again', async () => {
    const out = join(scratch, 'chunked');
    const first = events(await tunelab('pretrain', ...RUN, '--out', out, '--until-step', '4'));
    expect(first.result).toMatchObject({ reason: 'until-step', complete: false, step: 4 });
    // What a GPU machine sends back: the model and pretrain.json, no checkpoint (too large to carry); used below.
    mkdirSync(light);
    for (const file of ['config.json', 'model.safetensors', 'tokenizer.json', 'pretrain.json', 'metrics.jsonl']) copyFileSync(join(out, file), join(light, file));

    const second = events(await tunelab('pretrain', '--resume', out, '--json'));
    expect(second.result).toMatchObject({ reason: 'completed', step: 10, tokenized: false, resume: 'exact' });
    expect(second.steps.map((e) => e.step)).toEqual([5, 6, 7, 8, 9, 10]);
    const chunked = metricsOf(out);
    expect(chunked.steps.map((e) => e.loss)).toEqual(continuous.steps.map((e) => e.loss));
    expect(chunked.steps.map((e) => e.gradNorm)).toEqual(continuous.steps.map((e) => e.gradNorm));
    expect(chunked.evals.map((e) => [e.step, e.loss])).toEqual(continuous.evals.map((e) => [e.step, e.loss]));
    const record = readJson(join(out, 'pretrain.json'));
    expect(record.sessions.map((s: any) => [s.fromStep, s.toStep, s.resume])).toEqual([[0, 4, 'none'], [4, 10, 'exact']]);
  }, 300_000);

  it('--time-limit stops before the deadline with a checkpoint and the model written; an approximate resume restores weights and data position', async () => {
    const out = join(scratch, 'limited');
    // Time for the start and some steps: the first run's whole time on this machine now, and 10 s more.
    const limitSeconds = Math.ceil((continuous.result.wallMs + 10_000) / 1000);
    const limited = events(await tunelab('pretrain', '--resume', light, '--out', out, '--steps', '1000', '--dtype', 'f16', '--time-limit', String(limitSeconds), '--json'));
    expect(limited.result).toMatchObject({ reason: 'time-limit', complete: false, resume: 'approximate' });
    expect(limited.result.step).toBeLessThan(1000);
    expect(limited.result.wallMs, limited.log).toBeLessThanOrEqual(limitSeconds * 1000);
    // The weights after step 4 and the data of step 5, so step 5's loss (taken before its update) is the uninterrupted run's.
    expect(limited.steps[0]).toMatchObject({ step: 5, loss: continuous.steps[4].loss });
    const state = readJson(join(out, 'checkpoint', 'trainer_state.json'));
    expect(state.progress.step).toBe(limited.result.step);
    const record = readJson(join(out, 'pretrain.json'));
    expect(record.result).toMatchObject({ complete: false, step: limited.result.step, totalSteps: 1000 });
    expect(record.approximateResumes).toBe(1);
    expect(record.sessions.map((s: any) => s.resume)).toEqual(['none', 'approximate']);
    expect(storedDtype(join(out, 'model.safetensors'))).toBe('F16');
    expect(readFileSync(join(out, 'MODEL_CARD.md'), 'utf8')).toMatch(/not finished[\s\S]*1 approximate resume/);
  }, 300_000);
});
