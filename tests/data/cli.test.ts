// `tunelab validate` end to end: spawns the real command on good and bad files and checks exit codes and the
// `FILE:LINE: code: message` lines.
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { tinyBpeTokenizerJson } from './helpers.ts';

const FIXTURES = 'tests/data/fixtures';

function tunelab(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const result = spawnSync(process.execPath, ['bin/tunelab.mjs', 'validate', ...args], { encoding: 'utf8', timeout: 60_000 });
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

const scratch = mkdtempSync(join(tmpdir(), 'tunelab-validate-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

describe('tunelab validate', () => {
  it('accepts good chat data: exit 0, the format, the tokenizer it counted with, statistics', () => {
    const { status, stdout } = tunelab(`${FIXTURES}/good-chat.jsonl`);
    expect(status).toBe(0);
    expect(stdout).toContain(`${FIXTURES}/good-chat.jsonl: JSON Lines, chat messages (detected)`);
    expect(stdout).toContain("no --model given: counting with the bundled base model tunelab-base's tokenizer (vocabulary 8192), context 256");
    expect(stdout).toMatch(/^examples\s+12 \(11 training, 1 validation\)$/m);
    expect(stdout).toMatch(/^steps per epoch\s+2 at batch size 8/m);
    expect(stdout).toMatch(/^trainable \(0 errors, 0 warnings\)$/m);
  });

  it('rejects bad data: exit 1, each error on its own line as FILE:LINE: code: message', () => {
    const file = `${FIXTURES}/bad-chat.jsonl`;
    const { status, stdout } = tunelab(file);
    expect(status).toBe(1);
    const findings = stdout.split('\n').filter((line) => /^[^:]+:\d+: /.test(line));
    const errors = findings.filter((line) => !line.includes(': warning: '));
    expect(errors.every((line) => line.startsWith(`${file}:`))).toBe(true);
    expect(errors.map((line) => line.match(/^[^:]+:(\d+): ([a-z-]+): /)?.slice(1).join(' '))).toEqual([
      '3 no-assistant-message',
      '5 bad-weight',
      '6 json-syntax',
      '8 json-syntax',
    ]);
    expect(stdout).toContain(`${file}:8: json-syntax: the line ends before the JSON is complete`);
    expect(stdout).toMatch(/was it cut off\?/);
    expect(stdout).toContain(`${file}:7: warning: duplicate: same example as line 1`);
    expect(stdout).toMatch(/^not trainable \(4 errors, \d+ warnings\)$/m);
  });

  it('prints the report as JSON with --json', () => {
    const { status, stdout } = tunelab(`${FIXTURES}/bad-chat.jsonl`, '--json', '--batch-size', '2');
    expect(status).toBe(1);
    const report = JSON.parse(stdout);
    expect(report.trainable).toBe(false);
    expect(report.errors.map((e: { code: string; line: number }) => `${e.code}@${e.line}`)).toEqual([
      'no-assistant-message@3',
      'bad-weight@5',
      'json-syntax@6',
      'json-syntax@8',
    ]);
    expect(report.stats.batchSize).toBe(2);
    expect(report.format).toMatchObject({ container: 'jsonl', kind: 'chat' });
  });

  it('reads CSV with CRLF and quotes, and a chosen format', () => {
    const csv = tunelab(`${FIXTURES}/qa.csv`);
    expect(csv.status).toBe(0);
    expect(csv.stdout).toContain('CSV, prompt/completion (detected)');
    const asText = tunelab(`${FIXTURES}/bad-chat.jsonl`, '--format', 'text');
    expect(asText.status).toBe(0);
    expect(asText.stdout).toContain('plain text');
  });

  it('counts with a model folder: its tokenizer.json and its context from config.json', () => {
    const model = join(scratch, 'model');
    rmSync(model, { recursive: true, force: true });
    mkdirSync(model);
    writeFileSync(join(model, 'tokenizer.json'), JSON.stringify(tinyBpeTokenizerJson()));
    writeFileSync(join(model, 'config.json'), JSON.stringify({ model_type: 'gpt2', n_positions: 96, vocab_size: 260 }));
    const { status, stdout } = tunelab(`${FIXTURES}/good-chat.jsonl`, '--model', model);
    expect(status).toBe(0);
    expect(stdout).toContain(`counting with ${model}/tokenizer.json (vocabulary 260), context 96`);
    // Line 7 is the longest example: 110 tokens with this tokenizer.
    expect(stdout).toContain(`${FIXTURES}/good-chat.jsonl:7: warning: too-long: example is 110 tokens; a context of 96 holds 97`);
    const missing = tunelab(`${FIXTURES}/good-chat.jsonl`, '--model', scratch);
    expect(missing.status).toBe(1);
    expect(missing.stderr).toMatch(/no tokenizer\.json/);
  });

  it('checks a separate validation file and names it in its findings', () => {
    const { status, stdout } = tunelab(`${FIXTURES}/good-chat.jsonl`, '--validation', `${FIXTURES}/validation-chat.jsonl`);
    expect(status).toBe(0);
    expect(stdout).toContain(`${FIXTURES}/validation-chat.jsonl:2: warning: train-validation-overlap: this validation example is also in the training file (line 1)`);
    expect(stdout).toMatch(/^examples\s+14 \(12 training, 2 validation\)$/m);
  });

  it('exits 2 on bad usage and 1 on a file it cannot read', () => {
    expect(tunelab().status).toBe(2);
    expect(tunelab(`${FIXTURES}/good-chat.jsonl`, '--format', 'yaml').status).toBe(2);
    expect(tunelab(`${FIXTURES}/good-chat.jsonl`, '--bogus').status).toBe(2);
    expect(tunelab(`${FIXTURES}/good-chat.jsonl`, '--batch-size', '0').status).toBe(2);
    const missing = tunelab(join(scratch, 'nope.jsonl'));
    expect(missing.status).toBe(1);
    expect(missing.stderr).toMatch(/cannot read .*nope\.jsonl: ENOENT/);
  });
});
