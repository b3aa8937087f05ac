// From the user's text to examples: detects the format (or takes the one chosen), parses it, and checks every example.
// Pure and total: any string gives a ParsedFile, with errors and warnings pointing at lines of that same string.
import { parseCsv, type CsvRecord } from './csv.ts';
import {
  checkChatExample,
  checkCompletionExample,
  jsonExampleKind,
  type Example,
  type ExampleKind,
  type FindingSink,
} from './examples.ts';
import type { DataIssue, DataSourceName, ErrorCode, WarningCode } from './issues.ts';
import { parseJson, type JsonNode } from './json.ts';
import { contentStart, LineIndex } from './text.ts';

/** How the examples are stored. */
export type Container = 'jsonl' | 'json' | 'csv' | 'tsv' | 'text';
/** What a user may ask for: a container, an example kind (JSONL or a JSON list of that kind), or auto-detection. */
export type FormatChoice = 'auto' | Container | 'chat' | 'completion';
export const FORMAT_CHOICES: readonly FormatChoice[] = ['auto', 'jsonl', 'json', 'csv', 'tsv', 'text', 'chat', 'completion'];

export interface DataFormat {
  container: Container;
  kind: ExampleKind;
  /** For people: "JSON Lines, chat messages". */
  label: string;
  /** True when detected; false when the user chose a format. */
  detected: boolean;
}

export interface ParsedFile {
  source: DataSourceName;
  format: DataFormat;
  /** The examples without errors, in file order. */
  examples: Example[];
  /** All examples found, valid or not. */
  exampleCount: number;
  issues: DataIssue[];
  /** The text as given (never changed) and its line index, for pointing at lines later. */
  text: string;
  lines: LineIndex;
}

export interface ParseOptions {
  format?: FormatChoice;
  source?: DataSourceName;
}

/** Column names accepted in a CSV/TSV header (compared without case and surrounding spaces). */
export const PROMPT_COLUMNS = ['prompt', 'input', 'question', 'instruction', 'query', 'user'];
export const COMPLETION_COLUMNS = ['completion', 'output', 'answer', 'response', 'assistant', 'target'];

export function parseDataFile(text: string, options: ParseOptions = {}): ParsedFile {
  const source = options.source ?? 'train';
  const choice = options.format ?? 'auto';
  const lines = new LineIndex(text);
  const issues: DataIssue[] = [];
  const ignoredSeen = new Set<string>();
  const at = (offset: number) => lines.position(Math.min(offset, text.length));
  const sink: FindingSink = {
    error: (code: ErrorCode, message: string, offset: number) =>
      issues.push({ severity: 'error', code, message, source, ...at(offset) }),
    warning: (code: WarningCode, message: string, offset: number) => {
      // A key or column that is ignored is worth saying once per file, not on every line.
      if (code === 'ignored-key') {
        if (ignoredSeen.has(message)) return;
        ignoredSeen.add(message);
      }
      issues.push({ severity: 'warning', code, message, source, ...at(offset) });
    },
  };

  const start = contentStart(text);
  const container = chooseContainer(text, start, choice);
  const forcedKind = choice === 'chat' || choice === 'completion' ? choice : undefined;
  let result: { kind: ExampleKind; examples: Example[]; count: number };
  switch (container) {
    case 'jsonl':
    case 'json': {
      const nodes = container === 'jsonl' ? jsonLines(text, start, sink) : jsonList(text, start, sink);
      result = { ...checkJsonExamples(nodes.items, forcedKind, source, lines, sink), count: nodes.count };
      break;
    }
    case 'csv':
    case 'tsv':
      result = tableExamples(text, start, container === 'csv' ? ',' : '\t', source, lines, sink);
      break;
    case 'text': {
      const hasText = text.slice(start).trim() !== '';
      const examples: Example[] = hasText ? [{ kind: 'text', text: text.slice(start), origin: { source, line: 1, index: 0 } }] : [];
      result = { kind: 'text', examples, count: examples.length };
      break;
    }
  }
  if (result.count === 0 && !issues.some((issue) => issue.severity === 'error')) {
    const table = container === 'csv' || container === 'tsv';
    const why = table ? 'it has a header row and no rows under it' : 'it is empty or only blank lines';
    sink.error('no-examples', `the file has no examples (${why})`, start);
  }
  const format: DataFormat = {
    container,
    kind: result.kind,
    label: formatLabel(container, result.kind),
    detected: choice === 'auto',
  };
  issues.sort((a, b) => (a.line ?? 0) - (b.line ?? 0) || (a.column ?? 0) - (b.column ?? 0));
  return { source, format, examples: result.examples, exampleCount: result.count, issues, text, lines };
}

export function formatLabel(container: Container, kind: ExampleKind): string {
  const containerName = { jsonl: 'JSON Lines', json: 'JSON list', csv: 'CSV', tsv: 'TSV', text: 'plain text' }[container];
  if (container === 'text') return 'plain text (continuation, cut into context-sized blocks)';
  return `${containerName}, ${kind === 'chat' ? 'chat messages' : 'prompt/completion'}`;
}

function chooseContainer(text: string, start: number, choice: FormatChoice): Container {
  if (choice === 'jsonl' || choice === 'json' || choice === 'csv' || choice === 'tsv' || choice === 'text') return choice;
  const first = firstNonWhitespace(text, start);
  if (first === -1) return choice === 'auto' ? 'text' : 'jsonl';
  if (text[first] === '[') {
    if (parseJson(text, start).ok) return 'json';
    // JSON Lines whose first line happens to be a list: the first line parses alone and more lines follow.
    const lineEnd = endOfLine(text, first);
    if (parseJson(text, first, lineEnd, 'line').ok && firstNonWhitespace(text, lineEnd) !== -1) return 'jsonl';
    return 'json';
  }
  if (choice !== 'auto' || text[first] === '{') return 'jsonl';
  return tableDelimiter(text, start) ?? 'text';
}

/** 'csv' or 'tsv' when the first line is a header naming the prompt and completion columns, or looks like a header. */
function tableDelimiter(text: string, start: number): 'csv' | 'tsv' | undefined {
  const headerEnd = endOfLine(text, start);
  const header = text.slice(start, headerEnd);
  const delimiter = header.includes('\t') ? '\t' : header.includes(',') ? ',' : undefined;
  if (!delimiter) return undefined;
  const container = delimiter === '\t' ? 'tsv' : 'csv';
  const cells = parseCsv(header, delimiter).records[0]?.fields.map((f) => f.value.trim().toLowerCase()) ?? [];
  if (cells.some((c) => PROMPT_COLUMNS.includes(c)) && cells.some((c) => COMPLETION_COLUMNS.includes(c))) return container;
  // A header of other names (so that the report can say which columns are needed): short identifier-like cells, and
  // a second row with as many fields.
  if (cells.length < 2 || !cells.every((c) => /^[a-z_][a-z0-9_ \-]{0,39}$/.test(c))) return undefined;
  const sample = parseCsv(text.slice(0, Math.min(text.length, headerEnd + 65536)), delimiter, start).records;
  return sample.length >= 2 && sample[1].fields.length === cells.length ? container : undefined;
}

function firstNonWhitespace(text: string, from: number): number {
  for (let i = from; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c !== 0x20 && c !== 0x09 && c !== 0x0a && c !== 0x0d) return i;
  }
  return -1;
}

/** Offset of the '\n' ending the line that holds `offset`, or the text's length. */
function endOfLine(text: string, offset: number): number {
  const n = text.indexOf('\n', offset);
  return n === -1 ? text.length : n;
}

interface ParsedNodes {
  items: JsonNode[];
  /** Examples seen, including lines that are not valid JSON. */
  count: number;
}

function jsonLines(text: string, start: number, sink: FindingSink): ParsedNodes {
  const items: JsonNode[] = [];
  let count = 0;
  let lineStart = start;
  while (lineStart < text.length) {
    const newline = text.indexOf('\n', lineStart);
    const lineEnd = newline === -1 ? text.length : newline;
    const nextStart = newline === -1 ? text.length : newline + 1;
    if (isBlank(text, lineStart, lineEnd)) {
      lineStart = nextStart;
      continue;
    }
    count++;
    const parsed = parseJson(text, lineStart, lineEnd, 'line');
    if (parsed.ok) items.push(parsed.value);
    else {
      if (count === 1) {
        // One JSON value written over several lines (pretty-printed) fails on its first line; say so once.
        const whole = parseJson(text, start);
        if (whole.ok && whole.value.end > lineEnd) {
          const asList = whole.value.type === 'array' ? ' (it is a list: choose the JSON format)' : '';
          sink.error(
            'json-syntax',
            `the file is one JSON value spread over several lines${asList}; JSON Lines needs each example on a line of its own`,
            lineStart,
          );
          return { items: [], count: 1 };
        }
      }
      const cutOff = newline === -1 && parsed.error.endedEarly;
      const hint = cutOff ? ' — the file ends in the middle of this example; was it cut off?' : '';
      sink.error('json-syntax', parsed.error.message + hint, parsed.error.offset);
    }
    lineStart = nextStart;
  }
  return { items, count };
}

function isBlank(text: string, from: number, to: number): boolean {
  for (let i = from; i < to; i++) {
    const c = text.charCodeAt(i);
    if (c !== 0x20 && c !== 0x09 && c !== 0x0d) return false;
  }
  return true;
}

function jsonList(text: string, start: number, sink: FindingSink): ParsedNodes {
  const parsed = parseJson(text, start, text.length, 'file');
  if (!parsed.ok) {
    sink.error('json-syntax', parsed.error.message, parsed.error.offset);
    return { items: [], count: 1 };
  }
  const root = parsed.value;
  if (root.type === 'array') return { items: root.items, count: root.items.length };
  let hint = '';
  if (root.type === 'object') {
    const list = root.members.find((m) => m.value.type === 'array');
    hint = list ? ` (the examples may be the list under "${list.key}": make that list the whole file)` : '';
  }
  sink.error('wrong-type', `a JSON file must be a list [...] of examples${hint}`, root.start);
  return { items: [], count: 1 };
}

function checkJsonExamples(
  nodes: JsonNode[],
  forcedKind: 'chat' | 'completion' | undefined,
  source: DataSourceName,
  lines: LineIndex,
  sink: FindingSink,
): { kind: ExampleKind; examples: Example[] } {
  // The file's kind is the one most examples use (ties: the first one seen); the others are mixed-formats errors.
  const firstLine = { chat: 0, completion: 0 };
  const counts = { chat: 0, completion: 0 };
  for (const node of nodes) {
    const kind = jsonExampleKind(node);
    if (!kind) continue;
    counts[kind]++;
    if (!firstLine[kind]) firstLine[kind] = lines.line(node.start);
  }
  let kind: 'chat' | 'completion' = forcedKind ?? 'chat';
  if (!forcedKind && counts.completion > 0) {
    if (counts.completion > counts.chat || (counts.completion === counts.chat && firstLine.completion < firstLine.chat)) {
      kind = 'completion';
    }
  }
  const examples: Example[] = [];
  nodes.forEach((node, index) => {
    const origin = { source, line: lines.line(node.start), index };
    const nodeKind = jsonExampleKind(node);
    if (nodeKind && nodeKind !== kind) {
      const names = { chat: 'chat "messages"', completion: '"prompt"/"completion"' };
      const majority = firstLine[kind] ? ` (as on line ${firstLine[kind]})` : '';
      sink.error(
        'mixed-formats',
        `this example uses ${names[nodeKind]} but the file uses ${names[kind]}${majority}; keep one format per file`,
        node.start,
      );
      return;
    }
    const example = kind === 'chat' ? checkChatExample(node, origin, sink) : checkCompletionExample(node, origin, sink);
    if (example) examples.push(example);
  });
  return { kind, examples };
}

function tableExamples(
  text: string,
  start: number,
  delimiter: ',' | '\t',
  source: DataSourceName,
  lines: LineIndex,
  sink: FindingSink,
): { kind: ExampleKind; examples: Example[]; count: number } {
  const { records, errors } = parseCsv(text, delimiter, start);
  for (const error of errors) sink.error('csv-syntax', error.message, error.offset);
  const examples: Example[] = [];
  const header = records[0];
  if (!header) return { kind: 'completion', examples, count: 0 };
  const names = header.fields.map((f) => f.value.trim().toLowerCase());
  const promptColumn = names.findIndex((name) => PROMPT_COLUMNS.includes(name));
  const completionColumn = names.findIndex((name) => COMPLETION_COLUMNS.includes(name));
  const rows = records.slice(1);
  if (promptColumn === -1 || completionColumn === -1) {
    const found = header.fields.map((f) => `"${f.value.trim()}"`).join(', ');
    sink.error(
      'missing-columns',
      `the header row must name a prompt column and a completion column (found ${found}); accepted names: ` +
        `${PROMPT_COLUMNS.join('/')} and ${COMPLETION_COLUMNS.join('/')} (if this is plain text, choose the text format)`,
      header.start,
    );
    return { kind: 'completion', examples, count: rows.length };
  }
  header.fields.forEach((field, column) => {
    if (column !== promptColumn && column !== completionColumn && field.value.trim() !== '') {
      sink.warning('ignored-key', `column "${field.value.trim()}" is not used for training; it is ignored`, field.start);
    }
  });
  const needed = Math.max(promptColumn, completionColumn) + 1;
  const separator = delimiter === ',' ? 'comma' : 'tab';
  rows.forEach((row: CsvRecord, index) => {
    const fields = row.fields;
    const extra = fields.slice(header.fields.length).some((f) => f.value.trim() !== '');
    if (fields.length < needed || extra) {
      const hint =
        fields.length < needed
          ? ' — a field is missing'
          : ` — a ${separator} inside a field needs the field in double quotes`;
      sink.error(
        'column-count',
        `this row has ${fields.length} field${fields.length === 1 ? '' : 's'} but the header has ${header.fields.length}${hint}`,
        row.start,
      );
      return;
    }
    const completion = fields[completionColumn];
    if (completion.value.trim() === '') {
      sink.warning('empty-completion', 'the completion is empty: the model learns to answer this prompt with nothing', completion.start);
    }
    const origin = { source, line: lines.line(row.start), index };
    examples.push({ kind: 'completion', prompt: fields[promptColumn].value, completion: completion.value, origin });
  });
  return { kind: 'completion', examples, count: rows.length };
}
