// Shared helpers of the data tests: tokenizers that need no download, and shortcuts to build inputs and read reports.
import type { DataReport, IssueCode } from '../../src/engine/data/index.ts';
import { byteLevelTokenizer, byteLevelTokenizerJson, Tokenizer } from '../../src/engine/tokenizer/index.ts';

let bytes: Tokenizer | undefined;
/** The byte-level tokenizer: token id = UTF-8 byte, end-of-text = 256. */
export function byteTokenizer(): Tokenizer {
  return (bytes ??= byteLevelTokenizer());
}

/**
 * A GPT-2-shaped BPE tokenizer with three merges on top of the byte-level vocabulary:
 * "Ġ t" → "Ġt" (257), "h e" → "he" (258), "Ġt he" → "Ġthe" (259). Enough to see merges happen.
 */
export function tinyBpeTokenizerJson(): Record<string, unknown> {
  const json = byteLevelTokenizerJson() as { model: { vocab: Record<string, number>; merges: string[] } };
  json.model.vocab['Ġt'] = 257;
  json.model.vocab['he'] = 258;
  json.model.vocab['Ġthe'] = 259;
  json.model.merges = ['Ġ t', 'h e', 'Ġt he'];
  return json;
}

export function jsonl(...examples: unknown[]): string {
  return examples.map((e) => JSON.stringify(e)).join('\n') + '\n';
}

export function chat(user: string, assistant: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { messages: [{ role: 'user', content: user }, { role: 'assistant', content: assistant }], ...extra };
}

/** `count` distinct chat examples, so tests do not trip the few-examples warning unless they mean to. */
export function manyChats(count: number): Record<string, unknown>[] {
  return Array.from({ length: count }, (_, i) => chat(`Question number ${i}?`, `Answer number ${i}.`));
}

export function issueCodes(report: DataReport): IssueCode[] {
  return [...report.errors, ...report.warnings].map((i) => i.code);
}

/** `code@line` for each finding, for compact assertions. */
export function issueSites(report: DataReport): string[] {
  return [...report.errors, ...report.warnings].map((i) => `${i.code}@${i.line ?? '-'}`);
}
