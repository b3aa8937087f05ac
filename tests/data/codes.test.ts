// Every error and warning code, each triggered by a small input and reported on the right line of the user's text.
import { describe, expect, it } from 'vitest';
import {
  ERROR_CODES,
  WARNING_CODES,
  prepareDataset,
  type DataInput,
  type DatasetOptions,
  type IssueCode,
} from '../../src/engine/data/index.ts';
import { byteTokenizer, chat, issueSites, jsonl, manyChats } from './helpers.ts';

const user = (content: unknown) => ({ role: 'user', content });
const assistant = (content: unknown, extra: Record<string, unknown> = {}) => ({ role: 'assistant', content, ...extra });
const pad = manyChats(10);

interface Case {
  code: IssueCode;
  input: DataInput;
  options?: DatasetOptions;
  /** Where the finding must be: `line` (in the file named by `source`), or undefined for whole-data findings. */
  line: number | undefined;
  column?: number;
  source?: 'train' | 'validation';
  message: RegExp;
}

const cases: Case[] = [
  { code: 'json-syntax', input: { train: jsonl(...pad) + '{"messages": [}\n' }, line: 11, column: 15, message: /expected a value|unexpected/ },
  {
    code: 'csv-syntax',
    input: { train: 'prompt,completion\n"a"b,c\n' + 'q,a\n'.repeat(10) },
    line: 2,
    column: 4,
    message: /after a closing quote/,
  },
  { code: 'wrong-type', input: { train: jsonl(...pad, ['not', 'an', 'object']) }, line: 11, message: /JSON object.*found a list/ },
  { code: 'missing-messages', input: { train: jsonl(...pad, { conversation: [] }) }, line: 11, message: /"messages" list.*found "conversation"/ },
  {
    code: 'message-missing-key',
    input: { train: jsonl(...pad, { messages: [{ content: 'hi' }, assistant('yo')] }) },
    line: 11,
    message: /missing "role"/,
  },
  {
    code: 'unrecognized-key',
    input: { train: jsonl(...pad, { messages: [user('hi'), assistant('yo', { mood: 'happy' })] }) },
    line: 11,
    column: 80, // the key "mood" itself
    message: /unrecognized key "mood"/,
  },
  {
    code: 'unrecognized-role',
    input: { train: jsonl(...pad, { messages: [{ role: 'human', content: 'hi' }, assistant('yo')] }) },
    line: 11,
    message: /"human"/,
  },
  { code: 'empty-content', input: { train: jsonl(...pad, { messages: [user('  '), assistant('yo')] }) }, line: 11, message: /user message's content is empty/ },
  { code: 'no-assistant-message', input: { train: jsonl(...pad, { messages: [user('hi')] }) }, line: 11, message: /no assistant message/ },
  {
    code: 'not-a-string',
    input: { train: jsonl(...Array.from({ length: 10 }, (_, i) => ({ prompt: `p${i}`, completion: `c${i}` })), { prompt: 42, completion: 'x' }) },
    line: 11,
    message: /"prompt" must be a string, found a number/,
  },
  {
    code: 'missing-field',
    input: { train: jsonl(...Array.from({ length: 10 }, (_, i) => ({ prompt: `p${i}`, completion: `c${i}` })), { prompt: 'only' }) },
    line: 11,
    message: /no "completion"/,
  },
  {
    code: 'bad-weight',
    input: { train: jsonl(...pad, { messages: [user('hi'), assistant('yo', { weight: 0.5 })] }) },
    line: 11,
    message: /0 or 1, found 0.5/,
  },
  { code: 'mixed-formats', input: { train: jsonl(...pad, { prompt: 'p', completion: 'c' }) }, line: 11, message: /keep one format per file/ },
  { code: 'missing-columns', input: { train: 'question,reply\n' + 'q,a\n'.repeat(10) }, line: 1, message: /prompt column and a completion column/ },
  { code: 'column-count', input: { train: 'prompt,completion\n' + 'q,a\n'.repeat(10) + 'q,a,extra\n' }, line: 12, message: /3 fields but the header has 2/ },
  { code: 'no-examples', input: { train: '\n  \n\n' }, line: 1, message: /no examples/ },
  {
    code: 'no-training-tokens',
    input: { train: jsonl(...Array.from({ length: 10 }, (_, i) => ({ messages: [user(`q${i}`), assistant('a', { weight: 0 })] }))) },
    line: 1,
    message: /no token counts for the loss/,
  },
  { code: 'few-examples', input: { train: jsonl(chat('a', 'b'), chat('c', 'd')) }, line: undefined, message: /only 2 examples/ },
  {
    code: 'too-long',
    input: { train: jsonl(...pad, chat('q', 'x'.repeat(100))) },
    options: { context: 64 },
    line: 11,
    // 'User: q\n' (8) + 'Assistant:' (10) + ' ' + 100 x + eot = 120 tokens; 65 fit.
    message: /example is 120 tokens; a context of 64 holds 65 .*last 55 tokens are cut/,
  },
  { code: 'duplicate', input: { train: jsonl(...pad, pad[3]) }, line: 11, message: /same example as line 4/ },
  { code: 'near-duplicate', input: { train: jsonl(...pad, chat('QUESTION  number 3?', ' answer number 3. ')) }, line: 11, message: /same as line 4 apart from case/ },
  {
    code: 'empty-completion',
    input: { train: 'prompt,completion\n' + 'q,a\n'.repeat(10) + 'question,\n' },
    line: 12,
    message: /completion is empty/,
  },
  {
    code: 'train-validation-overlap',
    input: { train: jsonl(...pad), validation: jsonl(chat('new', 'one'), pad[5]) },
    line: 2,
    source: 'validation',
    message: /also in the training file \(line 6\)/,
  },
  { code: 'ignored-key', input: { train: jsonl(...pad.slice(1), { ...pad[0], id: 7 }) }, line: 10, message: /key "id" is not used/ },
  {
    code: 'special-token-in-text',
    input: { train: jsonl(...pad, chat('q', 'stop<|endoftext|>here')) },
    line: 11,
    message: /reads as the end-of-text token/,
  },
  {
    code: 'nothing-to-train',
    input: { train: jsonl(...pad, { messages: [user('q'), assistant('a', { weight: 0 })] }) },
    line: 11,
    message: /trains nothing/,
  },
  {
    code: 'not-utf8',
    input: { train: new Uint8Array([...new TextEncoder().encode(jsonl(...pad.slice(0, 3))), ...[0x7b, 0xff, 0x7d, 0x0a]]) },
    line: 4,
    message: /not valid UTF-8/,
  },
  { code: 'no-validation', input: { train: jsonl(chat('a', 'b')) }, line: undefined, message: /validation loss will not be measured/ },
];

describe('error and warning codes', () => {
  it('has a case for every code', () => {
    const covered = new Set(cases.map((c) => c.code));
    expect([...ERROR_CODES, ...WARNING_CODES].filter((code) => !covered.has(code))).toEqual([]);
  });

  for (const c of cases) {
    it(`${c.code}: reported at ${c.line === undefined ? 'the data set' : `line ${c.line}`}`, () => {
      const { report } = prepareDataset(c.input, byteTokenizer(), { seed: 1, ...c.options });
      const found = [...report.errors, ...report.warnings].filter((i) => i.code === c.code);
      expect(found, `findings: ${issueSites(report).join(', ')}`).toHaveLength(1);
      const [finding] = found;
      expect(finding.severity).toBe((ERROR_CODES as readonly string[]).includes(c.code) ? 'error' : 'warning');
      expect(finding.line).toBe(c.line);
      expect(finding.source).toBe(c.source ?? 'train');
      if (c.column !== undefined) expect(finding.column).toBe(c.column);
      expect(finding.message).toMatch(c.message);
      // Any error makes the data untrainable; warnings alone do not.
      expect(report.trainable).toBe(report.errors.length === 0);
      if (finding.severity === 'error') expect(report.trainable).toBe(false);
    });
  }

  it('a clean data set has no findings and is trainable', () => {
    const { report } = prepareDataset({ train: jsonl(...manyChats(20)) }, byteTokenizer());
    expect(issueSites(report)).toEqual([]);
    expect(report.trainable).toBe(true);
  });

  it('reports every problem of an example, and every bad example, not just the first', () => {
    const { report } = prepareDataset(
      { train: jsonl(...pad, { messages: [{ role: 'bot', content: 1, extra: true }] }, { messages: [user('')] }) },
      byteTokenizer(),
    );
    expect(issueSites(report).sort()).toEqual(
      ['unrecognized-key@11', 'unrecognized-role@11', 'not-a-string@11', 'empty-content@12'].sort(),
    );
    expect(report.stats.invalidExamples).toBe(2);
    expect(report.stats.examples).toBe(10);
  });

  it('says an ignored key once per file, on its first line', () => {
    const { report } = prepareDataset({ train: jsonl(...pad.map((e, i) => ({ ...e, id: i }))) }, byteTokenizer());
    expect(issueSites(report)).toEqual(['ignored-key@1']);
  });
});

describe('messages', () => {
  it('say why a table has no examples', () => {
    const { report } = prepareDataset({ train: 'prompt,completion\n' }, byteTokenizer());
    expect(report.errors).toMatchObject([{ code: 'no-examples', line: 1, message: expect.stringMatching(/header row and no rows/) }]);
  });
});
