// Each input format, detected and chosen, and the shapes real files come in: CRLF, a byte-order mark, blank lines,
// unicode, very long lines, a file cut off mid-line, UTF-16 from a spreadsheet.
import { describe, expect, it } from 'vitest';
import { parseDataFile, prepareDataset, type Example } from '../../src/engine/data/index.ts';
import { byteTokenizer, chat, issueSites, jsonl, manyChats } from './helpers.ts';

const pairs = Array.from({ length: 12 }, (_, i) => ({ prompt: `What is ${i} + ${i}?`, completion: ` ${2 * i}` }));

function summary(examples: Example[]): string[] {
  return examples.map((e) =>
    e.kind === 'chat'
      ? e.messages.map((m) => `${m.role}:${m.content}`).join('|')
      : e.kind === 'completion'
        ? `${e.prompt}=>${e.completion}`
        : `text:${e.text.length}`,
  );
}

describe('formats', () => {
  it('detects chat JSONL', () => {
    const parsed = parseDataFile(jsonl(chat('Hi', 'Hello!'), { messages: [{ role: 'system', content: 'Be kind.' }, { role: 'user', content: 'Q' }, { role: 'assistant', content: 'A', weight: 1 }] }));
    expect(parsed.format).toEqual({ container: 'jsonl', kind: 'chat', label: 'JSON Lines, chat messages', detected: true });
    expect(summary(parsed.examples)).toEqual(['user:Hi|assistant:Hello!', 'system:Be kind.|user:Q|assistant:A']);
    expect(parsed.examples[1].kind === 'chat' && parsed.examples[1].messages[2].weight).toBe(1);
    expect(parsed.issues).toEqual([]);
  });

  it('detects prompt/completion JSONL', () => {
    const parsed = parseDataFile(jsonl(...pairs.slice(0, 2)));
    expect(parsed.format.container).toBe('jsonl');
    expect(parsed.format.kind).toBe('completion');
    expect(summary(parsed.examples)).toEqual(['What is 0 + 0?=> 0', 'What is 1 + 1?=> 2']);
  });

  it('detects a JSON list of either kind, pretty-printed, with lines pointing at each item', () => {
    const chats = parseDataFile(JSON.stringify([chat('a', 'b'), chat('c', 'd')], null, 2));
    expect([chats.format.container, chats.format.kind]).toEqual(['json', 'chat']);
    expect(chats.examples.map((e) => e.origin.line)).toEqual([2, 14]); // each item's opening '{'
    const completions = parseDataFile(JSON.stringify(pairs.slice(0, 3)));
    expect([completions.format.container, completions.format.kind]).toEqual(['json', 'completion']);
    expect(completions.examples).toHaveLength(3);
  });

  it('reads CSV from a spreadsheet: header names (any case, synonyms), quoted fields, CRLF', () => {
    const csv = 'ID,Question,Answer\r\n1,"Hello, you","Hi! ""Quoted"" and\r\nmultiline"\r\n2,2+2,4\r\n';
    const parsed = parseDataFile(csv);
    expect(parsed.format).toMatchObject({ container: 'csv', kind: 'completion' });
    expect(summary(parsed.examples)).toEqual(['Hello, you=>Hi! "Quoted" and\r\nmultiline', '2+2=>4']);
    expect(parsed.examples.map((e) => e.origin.line)).toEqual([2, 4]);
    expect(issueSitesOf(parsed)).toEqual(['ignored-key@1']);
  });

  it('reads TSV pasted from a spreadsheet', () => {
    const parsed = parseDataFile('prompt\tcompletion\nfirst\tone, two\n"a\ttab"\tx\n');
    expect(parsed.format.container).toBe('tsv');
    expect(summary(parsed.examples)).toEqual(['first=>one, two', 'a\ttab=>x']);
  });

  it('treats anything else as plain text, kept whole', () => {
    const text = 'Once upon a time, there was a tiny model.\n\nIt learned to write.\n';
    const parsed = parseDataFile(text);
    expect(parsed.format).toMatchObject({ container: 'text', kind: 'text' });
    expect(parsed.examples).toEqual([{ kind: 'text', text, origin: { source: 'train', line: 1, index: 0 } }]);
  });

  it('cuts plain text into context-sized blocks that overlap by one token', () => {
    const text = 'abcdefghij'.repeat(10); // 100 bytes + end of text = 101 tokens
    const prepared = prepareDataset({ train: text }, byteTokenizer(), { context: 16, validationFraction: 0 });
    const blocks = prepared.train;
    expect(blocks).toHaveLength(7); // 100 predictions / 16 per block
    expect(blocks.slice(0, 6).every((b) => b.ids.length === 17)).toBe(true);
    expect(blocks[1].ids[0]).toBe(blocks[0].ids[16]);
    const stitched = [...blocks[0].ids, ...blocks.slice(1).flatMap((b) => [...b.ids.slice(1)])];
    expect(stitched).toEqual([...new TextEncoder().encode(text), 256]);
    expect(prepared.report.stats.lossTokens).toBe(100);
  });

  it('takes an explicitly chosen format over detection', () => {
    const text = jsonl(...pairs.slice(0, 2));
    expect(parseDataFile(text, { format: 'text' }).format).toMatchObject({ container: 'text', detected: false });
    // Forcing the chat kind on prompt/completion data reports the examples as the wrong format.
    const forced = parseDataFile(text, { format: 'chat' });
    expect(forced.format).toMatchObject({ container: 'jsonl', kind: 'chat' });
    expect(issueSitesOf(forced)).toEqual(['mixed-formats@1', 'mixed-formats@2']);
    const csvAsTsv = parseDataFile('prompt,completion\na,b\n', { format: 'tsv' });
    expect(issueSitesOf(csvAsTsv)).toEqual(['missing-columns@1']);
    expect(parseDataFile('a\tb\n', { format: 'csv' }).format.container).toBe('csv');
    expect(parseDataFile(JSON.stringify(pairs), { format: 'completion' }).format).toMatchObject({ container: 'json', kind: 'completion' });
  });

  it('asks for the prompt and completion columns when a table header names neither', () => {
    const parsed = parseDataFile('input_text,label\nhello,1\nbye,0\n');
    expect(parsed.format.container).toBe('csv');
    expect(issueSitesOf(parsed)).toEqual(['missing-columns@1']);
  });

  it('reads CRLF line ends with the same lines and columns', () => {
    const lf = jsonl(...manyChats(3), { messages: [{ role: 'user', content: 'x' }, { role: 'robot', content: 'y' }] });
    const crlf = lf.replaceAll('\n', '\r\n');
    const a = parseDataFile(lf);
    const b = parseDataFile(crlf);
    expect(summary(b.examples)).toEqual(summary(a.examples));
    expect(b.issues).toEqual(a.issues);
    expect(issueSitesOf(b)).toEqual(['unrecognized-role@4']);
  });

  it('skips a UTF-8 byte-order mark without shifting columns, and keeps the text as given', () => {
    const text = '\uFEFF' + jsonl(chat('a', 'b')) + '{"messages": 5}\n';
    const parsed = parseDataFile(text);
    expect(parsed.text).toBe(text);
    expect(parsed.format.kind).toBe('chat');
    expect(parsed.examples).toHaveLength(1);
    const withBom = parseDataFile('\uFEFF{bad}\n');
    expect(withBom.issues[0]).toMatchObject({ code: 'json-syntax', line: 1, column: 2 });
    // CSV and text files too.
    expect(parseDataFile('\uFEFFprompt,completion\na,b\n').format.container).toBe('csv');
    expect(parseDataFile('\uFEFFjust text').examples).toMatchObject([{ text: 'just text' }]);
  });

  it('reads bytes with a BOM, UTF-16 LE/BE (spreadsheet "Unicode text"), and reports invalid UTF-8', () => {
    const text = 'prompt\tcompletion\nGrüße\t😀\n';
    const utf8 = new Uint8Array([0xef, 0xbb, 0xbf, ...new TextEncoder().encode(text)]);
    const utf16le = new Uint8Array([0xff, 0xfe, ...[...text].flatMap((c) => utf16(c, true))]);
    const utf16be = new Uint8Array([0xfe, 0xff, ...[...text].flatMap((c) => utf16(c, false))]);
    for (const bytes of [utf8, utf16le, utf16be]) {
      const { files } = prepareDataset({ train: bytes }, byteTokenizer());
      expect(summary(files.train.examples)).toEqual(['Grüße=>😀']);
    }
  });

  it('skips blank lines (and whitespace-only lines) but keeps line numbers', () => {
    const text = '\n\n' + JSON.stringify(chat('a', 'b')) + '\n   \n\t\n' + JSON.stringify({ messages: [] }) + '\n\n';
    const parsed = parseDataFile(text);
    expect(parsed.examples.map((e) => e.origin.line)).toEqual([3]);
    expect(issueSitesOf(parsed)).toEqual(['no-assistant-message@6']);
    expect(parsed.exampleCount).toBe(2);
  });

  it('keeps unicode exactly: emoji, combining marks, right-to-left, line separators, escapes', () => {
    const content = 'e\u0301 😀👩‍👩‍👧 مرحبا \u2028 tab\t"quote" \\ \u0000';
    const parsed = parseDataFile(jsonl(chat(content, '日本語')));
    expect(parsed.examples[0]).toMatchObject({ messages: [{ content }, { content: '日本語' }] });
    const tokens = prepareDataset({ train: jsonl(chat(content, '日本語')) }, byteTokenizer(), { validationFraction: 0 }).train[0];
    expect(byteTokenizer().decode(tokens.ids)).toBe(`User: ${content}\nAssistant: 日本語<|endoftext|>`);
  });

  it('handles very long lines (a 1 MB example) and reports how much is cut', () => {
    const long = 'word '.repeat(200_000);
    const { report } = prepareDataset({ train: jsonl(...manyChats(10), chat('Summarize', long)) }, byteTokenizer(), { context: 1024 });
    expect(issueSites(report)).toEqual(['too-long@11']);
    expect(report.stats.maxTokens).toBe(1_000_000 + 'User: Summarize\nAssistant: '.length + 1);
    expect(report.stats.cutTokens).toBe(report.stats.maxTokens - 1025);
    expect(report.trainable).toBe(true);
  });

  it('reports a file cut off mid-line on its last line and keeps the examples before it', () => {
    const whole = jsonl(...manyChats(11));
    const cut = whole.slice(0, whole.length - 30);
    const parsed = parseDataFile(cut);
    expect(parsed.examples).toHaveLength(10);
    expect(parsed.issues).toHaveLength(1);
    expect(parsed.issues[0]).toMatchObject({ code: 'json-syntax', line: 11, message: expect.stringMatching(/was it cut off\?/) });
    // Cut inside a string: the error points at the string's opening quote.
    const inString = parseDataFile(jsonl(chat('a', 'b')) + '{"messages": [{"role": "user", "content": "Hel');
    expect(inString.issues[0]).toMatchObject({ line: 2, column: 43, message: expect.stringMatching(/never closed.*cut off/) });
  });

  it('says when a JSON Lines file is one pretty-printed object', () => {
    const parsed = parseDataFile(JSON.stringify(chat('a', 'b'), null, 2));
    expect(parsed.issues).toHaveLength(1);
    expect(parsed.issues[0]).toMatchObject({ code: 'json-syntax', line: 1, message: expect.stringMatching(/spread over several lines/) });
  });

  it('points at the list inside a JSON object wrapping the examples', () => {
    const parsed = parseDataFile(JSON.stringify({ data: [chat('a', 'b')] }), { format: 'json' });
    expect(parsed.issues[0]).toMatchObject({ code: 'wrong-type', message: expect.stringMatching(/list under "data"/) });
  });

  it('takes the kind most examples use and reports the others as mixed formats', () => {
    const parsed = parseDataFile(jsonl(pairs[0], chat('a', 'b'), pairs[1], pairs[2]));
    expect(parsed.format.kind).toBe('completion');
    expect(issueSitesOf(parsed)).toEqual(['mixed-formats@2']);
  });

  it('reads a separate validation file, in its own format', () => {
    const prepared = prepareDataset(
      { train: jsonl(...manyChats(12)), validation: 'prompt,completion\nQuestion?,Answer.\n' },
      byteTokenizer(),
    );
    expect(prepared.report.validationFormat).toMatchObject({ container: 'csv', kind: 'completion' });
    expect(prepared.report.stats).toMatchObject({ trainExamples: 12, validationExamples: 1 });
    expect(prepared.report.trainable).toBe(true);
  });
});

function issueSitesOf(parsed: { issues: { code: string; line?: number }[] }): string[] {
  return parsed.issues.map((i) => `${i.code}@${i.line ?? '-'}`);
}

function utf16(char: string, littleEndian: boolean): number[] {
  const out: number[] = [];
  for (let i = 0; i < char.length; i++) {
    const unit = char.charCodeAt(i);
    out.push(...(littleEndian ? [unit & 0xff, unit >> 8] : [unit >> 8, unit & 0xff]));
  }
  return out;
}
