// `tunelab tokenizer train`: trains from plain and gzipped files, writes a tokenizer.json that loads and matches the
// trainer, reports JSON (with bytes per token on --validation), and answers bad usage (2) and bad files (1).
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { main } from '../../src/cli/main.ts';
import { Rng } from '../../src/engine/random.ts';
import { bpeTokenizerJson, trainBpe } from '../../src/engine/tokenizer/bpe-train.ts';
import { END_OF_TEXT, Tokenizer } from '../../src/engine/tokenizer/index.ts';
import { randomWords } from './helpers.ts';

/** Runs the CLI, capturing what it prints. */
async function run(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const out = vi.spyOn(process.stdout, 'write').mockImplementation((chunk) => ((stdout += String(chunk)), true));
  const err = vi.spyOn(process.stderr, 'write').mockImplementation((chunk) => ((stderr += String(chunk)), true));
  try {
    return { code: await main(args), stdout, stderr };
  } finally {
    out.mockRestore();
    err.mockRestore();
  }
}

describe('tunelab tokenizer train', () => {
  let root: string;
  const rng = new Rng(4);
  const first = Array.from({ length: 5 }, () => randomWords(rng, 80, 'abcdef')).join(END_OF_TEXT);
  const second = Array.from({ length: 5 }, () => randomWords(rng, 80, 'abcdef')).join(END_OF_TEXT);
  const heldOut = randomWords(rng, 100, 'abcdef');

  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'tunelab-tokenizer-'));
    await writeFile(join(root, 'a.txt'), first);
    await writeFile(join(root, 'b.txt.gz'), gzipSync(Buffer.from(second)));
    await writeFile(join(root, 'held-out.txt'), heldOut);
    await writeFile(join(root, 'held-out-2.txt'), `${heldOut} ${heldOut}`);
    await writeFile(join(root, 'latin1.txt'), Buffer.from([0x63, 0x61, 0x66, 0xe9]));
    await writeFile(join(root, 'empty.txt'), '');
  });
  afterAll(() => rm(root, { recursive: true, force: true }));
  afterEach(() => vi.restoreAllMocks());

  it('trains on several files (one gzipped) and writes the tokenizer the trainer makes', async () => {
    const out = join(root, 'nested', 'tokenizer.json');
    const args = ['tokenizer', 'train', '--corpus', join(root, 'a.txt'), join(root, 'b.txt.gz')];
    // Two --validation files: the second is held-out text too, never corpus.
    const validation = ['--validation', join(root, 'held-out.txt'), join(root, 'held-out-2.txt')];
    const result = await run([...args, '--vocab', '300', '--out', out, ...validation]);
    expect(result.code).toBe(0);
    const written = JSON.parse(await readFile(out, 'utf8'));
    expect(written).toEqual(bpeTokenizerJson(trainBpe([first, second], { vocabSize: 300 })));

    const summary = JSON.parse(result.stdout);
    expect(summary).toMatchObject({ vocabSize: 300, endOfTextId: 256, merges: 43, stoppedEarly: false });
    const tok = Tokenizer.fromJson(written);
    const expected = Buffer.byteLength(heldOut) / tok.encode(heldOut).length;
    expect(summary.bytesPerToken[join(root, 'held-out.txt')]).toBeCloseTo(expected, 3);
    expect(Object.keys(summary.bytesPerToken)).toHaveLength(2);
    expect(summary.corpus).toEqual([join(root, 'a.txt'), join(root, 'b.txt.gz')]);
    expect(result.stderr).toMatch(/wrote .*tokenizer\.json \(300 tokens, 43 merges\)/);

    // An existing file stays unless --force.
    expect((await run([...args, '--vocab', '290', '--out', out])).code).toBe(1);
    expect(JSON.parse(await readFile(out, 'utf8'))).toEqual(written);
    expect((await run([...args, '--vocab', '290', '--out', out, '--force'])).code).toBe(0);
    expect(Tokenizer.fromJson(JSON.parse(await readFile(out, 'utf8'))).vocabSize).toBe(290);
  });

  it('warns when the text runs out of pairs before the vocabulary is full', async () => {
    const out = join(root, 'small.json');
    const result = await run(['tokenizer', 'train', '--corpus', join(root, 'a.txt'), '--vocab', '5000', '--out', out]);
    expect(result.code).toBe(0);
    expect(result.stderr).toMatch(/warning: no pair occurs 2\+ times/);
    const summary = JSON.parse(result.stdout);
    expect(summary.stoppedEarly).toBe(true);
    expect(summary.vocabSize).toBeLessThan(5000);
  });

  it('answers bad usage with exit 2 and unusable files with exit 1', async () => {
    const out = join(root, 'never.json');
    expect((await run(['tokenizer'])).code).toBe(2);
    expect((await run(['tokenizer', 'fit', '--corpus', join(root, 'a.txt'), '--out', out])).code).toBe(2);
    expect((await run(['tokenizer', 'train', '--out', out])).code).toBe(2); // no corpus
    expect((await run(['tokenizer', 'train', '--corpus', join(root, 'a.txt')])).code).toBe(2); // no --out
    expect((await run(['tokenizer', 'train', '--corpus', join(root, 'a.txt'), '--out', out, '--vocab', '100'])).code).toBe(2);
    expect((await run(['tokenizer', 'train', '--corpus', join(root, 'a.txt'), '--out', out, '--vocab', 'lots'])).code).toBe(2);
    expect((await run(['tokenizer', 'train', '--corpus', join(root, 'a.txt'), '--out', out, '--bogus'])).code).toBe(2);
    expect((await run(['tokenizer', 'train', '--out', out, 'a.txt', '--corpus', join(root, 'a.txt')])).code).toBe(2);

    const latin1 = await run(['tokenizer', 'train', '--corpus', join(root, 'latin1.txt'), '--out', out]);
    expect(latin1.code).toBe(1);
    expect(latin1.stderr).toMatch(/latin1\.txt is not UTF-8/);
    expect((await run(['tokenizer', 'train', '--corpus', join(root, 'missing.txt'), '--out', out])).code).toBe(1);
    expect((await run(['tokenizer', 'train', '--corpus', join(root, 'a.txt.gz'), '--out', out])).code).toBe(1);
    expect((await run(['tokenizer', 'train', '--corpus', join(root, 'empty.txt'), '--out', out])).code).toBe(1);
    await expect(readFile(out)).rejects.toThrow();

    const help = await run(['tokenizer', '--help']);
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/--vocab N/);
    expect((await run(['tokenizer', 'train', '--help'])).code).toBe(0);
  });
});
