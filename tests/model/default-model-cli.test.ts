// The CLI's default model (issue 6): without --model, `train`, `generate`, `eval` and `validate` use the bundled base
// model, public/models/tunelab-base, found from the package rather than the working directory, and say so on stderr;
// each command's --help names the default. Spawns the real command from a temporary directory.

import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';

const BIN = fileURLToPath(new URL('../../bin/tunelab.mjs', import.meta.url));
const BASE_DIR = fileURLToPath(new URL('../../public/models/tunelab-base', import.meta.url));
const elsewhere = mkdtempSync(join(tmpdir(), 'tunelab-default-model-'));
afterAll(() => rmSync(elsewhere, { recursive: true, force: true }));

function tunelab(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  // SwiftShader compiles every pipeline of a 10M-parameter model on first use: a minute or two on a busy machine.
  const result = spawnSync(process.execPath, [BIN, ...args], { cwd: elsewhere, encoding: 'utf8', timeout: 600_000 });
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

describe('the default model of the tunelab commands', () => {
  it('is named in the --help of train, generate, eval and validate', () => {
    for (const command of ['train', 'generate', 'eval', 'validate']) {
      const { status, stdout } = tunelab(command, '--help');
      expect(status, command).toBe(0);
      expect(stdout.replace(/\s+/g, ' '), command).toContain('(default: the bundled base model, public/models/tunelab-base of this package)');
    }
  });

  it('counts tokens for validate with the base model, run from any directory', () => {
    const line = JSON.stringify({ messages: [{ role: 'user', content: 'Where are you from?' }, { role: 'assistant', content: 'Arr, the sea, matey!' }] });
    writeFileSync(join(elsewhere, 'data.jsonl'), `${line}\n`);
    const { status, stdout } = tunelab('validate', 'data.jsonl');
    expect(status).toBe(0);
    expect(stdout).toContain("no --model given: counting with the bundled base model tunelab-base's tokenizer (vocabulary 8192), context 256");
  });

  it('generates with the base model when no --model is given, run from any directory', () => {
    const { status, stdout, stderr } = tunelab('generate', '--prompt', 'It is my duty to', '--temperature', '0', '--max-new-tokens', '3', '--json');
    expect(status, stderr).toBe(0);
    expect(stderr).toContain(`tunelab generate: no --model given: using the bundled base model tunelab-base (${BASE_DIR})`);
    const result = JSON.parse(stdout);
    // The base model's tokenizer: five tokens for this prompt (a byte-level model would read 16).
    expect(result).toMatchObject({ promptKind: 'text', promptTokens: 5, newTokens: 3 });
    expect(result.text).toMatch(/^ [a-z]+/);
  });
});
