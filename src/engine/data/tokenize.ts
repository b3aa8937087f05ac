// Examples to token sequences: the template applied, the loss mask per token, and truncation to the context.
import type { Tokenizer } from '../tokenizer/tokenizer.ts';
import type { Example, ExampleOrigin, TextExample } from './examples.ts';
import { encodeSegments, exampleSegments, type ChatTemplate, type TrainOn } from './template.ts';

/** One example (or one block of plain text) as tokens. */
export interface TokenSequence {
  /** (n) token ids, cut to at most context + 1 (the last token is only ever predicted, never read). */
  ids: Uint32Array;
  /** (n) 1 where predicting this token counts for the loss. The first token is never predicted within its row. */
  trainMask: Uint8Array;
  /** Tokens before truncation. */
  fullLength: number;
  origin: ExampleOrigin;
}

/** Longest sequence a row can hold for a context of `context` tokens: the model reads `context`, predicts one more. */
export function windowLength(context: number): number {
  return context + 1;
}

export function tokenizeExample(
  example: Exclude<Example, TextExample>,
  tokenizer: Tokenizer,
  template: ChatTemplate,
  trainOn: TrainOn,
  context: number,
): TokenSequence {
  const { ids, trainMask } = encodeSegments(exampleSegments(example, template), tokenizer, trainOn);
  const kept = Math.min(ids.length, windowLength(context));
  return {
    ids: Uint32Array.from(ids.slice(0, kept)),
    trainMask: Uint8Array.from(trainMask.slice(0, kept)),
    fullLength: ids.length,
    origin: example.origin,
  };
}

/**
 * Plain text as one token stream (ending with end-of-text) cut into blocks of context + 1 tokens that overlap by one,
 * so every token after the first is predicted exactly once. All tokens count for the loss.
 */
export function textBlocks(example: TextExample, tokenizer: Tokenizer, context: number): TokenSequence[] {
  const ids = [...tokenizer.encode(example.text), tokenizer.endOfTextId];
  const blocks: TokenSequence[] = [];
  for (let start = 0; start === 0 || start < ids.length - 1; start += context) {
    const block = ids.slice(start, start + windowLength(context));
    blocks.push({
      ids: Uint32Array.from(block),
      trainMask: new Uint8Array(block.length).fill(1),
      fullLength: block.length,
      origin: { ...example.origin, index: blocks.length },
    });
  }
  return blocks;
}
