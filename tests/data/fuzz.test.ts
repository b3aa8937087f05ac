// Property test: thousands of random and mutated inputs, in every format and with random options, never throw and
// always give a well-formed report whose findings point at real lines; trainable data always gives valid batches.
import { describe, expect, it } from 'vitest';
import {
  ERROR_CODES,
  FORMAT_CHOICES,
  WARNING_CODES,
  prepareDataset,
  type DataInput,
  type DatasetOptions,
  type PreparedDataset,
} from '../../src/engine/data/index.ts';
import { Rng } from '../../src/engine/random.ts';
import { byteTokenizer, chat, jsonl, manyChats } from './helpers.ts';

const CODES = new Set<string>([...ERROR_CODES, ...WARNING_CODES]);
const ALPHABET = [
  ...'{}[]",:\\\'\n\r\t  ',
  ...'abcxyz019-+.eE',
  'true', 'null', 'messages', 'role', 'content', 'user', 'assistant', 'system', 'weight', 'prompt', 'completion',
  'é', '😀', '\uFEFF', '\u0000', '\uD800', '<|endoftext|>', '\u2028',
];

function pick<T>(rng: Rng, items: readonly T[]): T {
  return items[rng.int(items.length)];
}

function randomText(rng: Rng, length: number): string {
  let out = '';
  for (let i = 0; i < length; i++) out += pick(rng, ALPHABET);
  return out;
}

/** A random JSON value built from the keys and values the checks care about, so deep checks get exercised. */
function randomJsonish(rng: Rng, depth = 0): unknown {
  const scalars = [null, true, 0, 1, 0.5, -2, '', ' ', 'user', 'assistant', 'system', 'tool', 'hello', '<|endoftext|>'];
  const roll = rng.int(depth > 3 ? 2 : 5);
  if (roll === 0) return pick(rng, scalars);
  if (roll === 1) return randomText(rng, rng.int(6));
  if (roll === 2) return Array.from({ length: rng.int(4) }, () => randomJsonish(rng, depth + 1));
  const keys = ['messages', 'role', 'content', 'weight', 'prompt', 'completion', 'name', 'id'];
  const out: Record<string, unknown> = {};
  for (let i = rng.int(4); i >= 0; i--) out[pick(rng, keys)] = randomJsonish(rng, depth + 1);
  if (rng.next() < 0.3) out.messages = Array.from({ length: rng.int(4) }, () => ({ role: pick(rng, scalars), content: pick(rng, scalars), ...(rng.next() < 0.2 ? { weight: pick(rng, scalars) } : {}) }));
  return out;
}

function validSeeds(rng: Rng): string[] {
  const pairs = Array.from({ length: 1 + rng.int(12) }, (_, i) => ({ prompt: `p${i} ${randomText(rng, 3)}`, completion: `c${i}` }));
  return [
    jsonl(...manyChats(1 + rng.int(12))),
    jsonl(...pairs),
    JSON.stringify(manyChats(1 + rng.int(5)), null, rng.int(2) ? 2 : undefined),
    'prompt,completion\r\n' + pairs.map((p) => `"${p.prompt.replaceAll('"', '""')}",${p.completion}`).join('\r\n'),
    'Question\tAnswer\n' + pairs.map((p) => `${p.prompt.replaceAll('\t', ' ').replaceAll('\n', ' ')}\t${p.completion}`).join('\n'),
    'Some plain text.\n\nMore text ' + randomText(rng, 40),
    jsonl(chat('a', 'b'), { messages: [{ role: 'assistant', content: 'x', weight: 0 }] }, randomJsonish(rng)),
  ];
}

function mutate(rng: Rng, text: string): string {
  const rounds = 1 + rng.int(4);
  for (let r = 0; r < rounds; r++) {
    const at = rng.int(text.length + 1);
    const span = rng.int(Math.min(20, text.length - at) + 1);
    switch (rng.int(9)) {
      case 0: // delete
        text = text.slice(0, at) + text.slice(at + span);
        break;
      case 1: // insert noise
        text = text.slice(0, at) + randomText(rng, 1 + rng.int(5)) + text.slice(at);
        break;
      case 2: // duplicate a span
        text = text.slice(0, at + span) + text.slice(at, at + span) + text.slice(at + span);
        break;
      case 3: // cut off
        text = text.slice(0, at);
        break;
      case 4: // CRLF
        text = text.replaceAll('\n', '\r\n');
        break;
      case 5: // byte-order mark somewhere
        text = (rng.next() < 0.5 ? '\uFEFF' : '') + text.slice(0, at) + '\uFEFF' + text.slice(at);
        break;
      case 6: // swap two halves
        text = text.slice(at) + text.slice(0, at);
        break;
      case 7: // a random JSON line
        text = text.slice(0, at) + '\n' + JSON.stringify(randomJsonish(rng)) + '\n' + text.slice(at);
        break;
      default: // a long run
        text = text.slice(0, at) + pick(rng, ALPHABET).repeat(rng.int(3000)) + text.slice(at);
    }
  }
  return text;
}

function randomOptions(rng: Rng): DatasetOptions {
  return {
    format: rng.next() < 0.6 ? 'auto' : pick(rng, FORMAT_CHOICES),
    context: 1 + rng.int(80),
    batchSize: 1 + rng.int(5),
    packing: rng.next() < 0.5,
    trainOn: rng.next() < 0.8 ? 'completions' : 'all',
    validationFraction: pick(rng, [0, 0.1, 0.5, 0.9]),
    seed: rng.int(1000),
    ...(rng.next() < 0.1 ? { template: { rawCompletions: true } } : {}),
  };
}

function checkPrepared(prepared: PreparedDataset, input: DataInput): void {
  const { report } = prepared;
  expect(Array.isArray(report.errors) && Array.isArray(report.warnings)).toBe(true);
  expect(report.trainable).toBe(report.errors.length === 0);
  for (const [file, text] of [
    [prepared.files.train, input.train],
    [prepared.files.validation, input.validation],
  ] as const) {
    if (typeof text === 'string') expect(file?.text).toBe(text); // the input is never altered
  }
  for (const issue of [...report.errors, ...report.warnings]) {
    expect(CODES.has(issue.code)).toBe(true);
    expect(issue.severity).toBe((ERROR_CODES as readonly string[]).includes(issue.code) ? 'error' : 'warning');
    expect(typeof issue.message === 'string' && issue.message.length > 0).toBe(true);
    if (issue.severity === 'error') expect(issue.line).toBeDefined(); // the CLI prints FILE:LINE for every error
    if (issue.line !== undefined) {
      const file = issue.source === 'train' ? prepared.files.train : prepared.files.validation!;
      expect(issue.line).toBeGreaterThanOrEqual(1);
      expect(issue.line, `${issue.code}: ${issue.message}`).toBeLessThanOrEqual(file.lines.lineCount);
    }
    if (issue.column !== undefined) expect(issue.column).toBeGreaterThanOrEqual(1);
  }
  const s = report.stats;
  for (const value of Object.values(s)) if (typeof value === 'number') expect(Number.isFinite(value) && value >= 0).toBe(true);
  expect(s.minTokens).toBeLessThanOrEqual(s.maxTokens);
  if (report.trainable && prepared.batcher.stepsPerEpoch > 0) {
    const batch = prepared.batcher.trainBatch(prepared.batcher.stepsPerEpoch);
    let masked = 0;
    for (let i = 0; i < batch.inputIds.length; i++) {
      expect(batch.inputIds[i] < 257 && batch.targets[i] < 257).toBe(true);
      expect(batch.lossMask[i] === 0 || batch.lossMask[i] === 1).toBe(true);
      masked += batch.lossMask[i];
    }
    expect(batch.lossTokens).toBe(masked);
  }
}

describe('fuzz: random and mutated inputs', () => {
  it('never throws and always reports (3000 seeded inputs)', () => {
    const rng = new Rng(20240611);
    const tokenizer = byteTokenizer();
    let trainable = 0;
    let withErrors = 0;
    for (let i = 0; i < 3000; i++) {
      let train: string | Uint8Array;
      const kind = rng.int(10);
      if (kind < 2) train = randomText(rng, rng.int(200));
      else if (kind < 3) train = Uint8Array.from({ length: rng.int(200) }, () => rng.int(256));
      else if (kind < 4) train = jsonl(...Array.from({ length: 1 + rng.int(6) }, () => randomJsonish(rng)));
      else train = mutate(rng, pick(rng, validSeeds(rng)));
      const input: DataInput = rng.next() < 0.15 ? { train, validation: mutate(rng, pick(rng, validSeeds(rng))) } : { train };
      const options = randomOptions(rng);
      let prepared: PreparedDataset;
      try {
        prepared = prepareDataset(input, tokenizer, options);
      } catch (error) {
        throw new Error(`input ${i} threw ${(error as Error).stack}\ninput: ${JSON.stringify(input)}\noptions: ${JSON.stringify(options)}`);
      }
      checkPrepared(prepared, input);
      if (prepared.report.trainable) trainable++;
      else withErrors++;
    }
    // The generator reaches both outcomes often, so both paths are really exercised.
    expect(trainable).toBeGreaterThan(300);
    expect(withErrors).toBeGreaterThan(300);
  });
});
