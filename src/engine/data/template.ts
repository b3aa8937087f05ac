// The chat template for GPT-2-class models, which have no chat format of their own. It is plain text, and the same
// code renders it for training and for generation, so the model is asked exactly the way it was taught.
//
// With the default template the conversation
//   [{system: "Be brief."}, {user: "Capital of France?"}, {assistant: "Paris."}]
// becomes (⟨eot⟩ = the end-of-text token, e.g. GPT-2's <|endoftext|>):
//
//   System: Be brief.\n
//   User: Capital of France?\n
//   Assistant: Paris.⟨eot⟩
//
// "Assistant:" is the cue that ends every prompt; the answer starts with its leading space (GPT-2's tokens carry the
// space in front of a word: " Paris") and ends with ⟨eot⟩, which is where generation stops. Later turns follow the
// ⟨eot⟩ directly. Only the answer and its ⟨eot⟩ count for the loss (unless training on all tokens); `weight: 0`
// answers are shown but not trained. Prompt/completion examples are one user turn and one answer, or, with
// `rawCompletions`, the prompt and completion joined as they are, followed by ⟨eot⟩ (OpenAI's legacy format, where the
// data carries its own separators). Plain text is trained whole.
//
// Tokenization goes by unit: the prompt text between answers is encoded as one string, each answer as another, and
// ⟨eot⟩ is added as its id. encodeGenerationPrompt uses the same units, which makes the prompt's ids identical to the
// ids of the same turns in training (encoding the whole text at once could split tokens differently at the seams).
import { TunelabError } from '../errors.ts';
import type { Tokenizer } from '../tokenizer/tokenizer.ts';
import type { ChatMessage, Example, Role } from './examples.ts';

export interface ChatTemplate {
  /** A system message; `{content}` stands for its text. */
  system: string;
  /** A user message. */
  user: string;
  /** Ends every prompt; the model writes the answer after it. Never trained on. */
  assistantCue: string;
  /** An answer as trained and generated, followed by the end-of-text token. */
  assistant: string;
  /** Prompt/completion examples: false = a user turn and an answer; true = prompt + completion as they are. */
  rawCompletions: boolean;
}

export const DEFAULT_CHAT_TEMPLATE: Readonly<ChatTemplate> = Object.freeze({
  system: 'System: {content}\n',
  user: 'User: {content}\n',
  assistantCue: 'Assistant:',
  assistant: ' {content}',
  rawCompletions: false,
});

const PLACEHOLDER = '{content}';

/** The default template with `overrides`. Throws TunelabError('bad-data') if a message template lacks `{content}`. */
export function resolveTemplate(overrides: Partial<ChatTemplate> = {}): ChatTemplate {
  const template = { ...DEFAULT_CHAT_TEMPLATE, ...overrides };
  for (const key of ['system', 'user', 'assistant'] as const) {
    const count = template[key].split(PLACEHOLDER).length - 1;
    if (count !== 1) {
      throw new TunelabError('bad-data', `chat template "${key}" must contain ${PLACEHOLDER} exactly once: "${template[key]}"`);
    }
  }
  return template;
}

/** Which tokens count for the loss: answers only (default) or everything. */
export type TrainOn = 'completions' | 'all';

/** A piece of a rendered example. `answer` pieces with weight 1 are what the model learns to write. */
export type Segment =
  | { type: 'text'; text: string; part: 'prompt' | 'answer'; weight: 0 | 1 }
  | { type: 'end-of-text'; part: 'prompt' | 'answer'; weight: 0 | 1 };

function fill(template: string, content: string): string {
  return template.replace(PLACEHOLDER, () => content);
}

function messageSegments(message: Pick<ChatMessage, 'role' | 'content' | 'weight'>, template: ChatTemplate): Segment[] {
  if (message.role !== 'assistant') {
    return [{ type: 'text', text: fill(template[message.role], message.content), part: 'prompt', weight: 0 }];
  }
  const weight = message.weight ?? 1;
  return [
    { type: 'text', text: template.assistantCue, part: 'prompt', weight: 0 },
    { type: 'text', text: fill(template.assistant, message.content), part: 'answer', weight },
    { type: 'end-of-text', part: 'answer', weight },
  ];
}

/** The segments of a training example. */
export function exampleSegments(example: Example, template: ChatTemplate): Segment[] {
  switch (example.kind) {
    case 'chat':
      return example.messages.flatMap((message) => messageSegments(message, template));
    case 'completion':
      if (template.rawCompletions) {
        return [
          { type: 'text', text: example.prompt, part: 'prompt', weight: 0 },
          { type: 'text', text: example.completion, part: 'answer', weight: 1 },
          { type: 'end-of-text', part: 'answer', weight: 1 },
        ];
      }
      return [
        ...messageSegments({ role: 'user', content: example.prompt }, template),
        ...messageSegments({ role: 'assistant', content: example.completion }, template),
      ];
    case 'text':
      return [
        { type: 'text', text: example.text, part: 'answer', weight: 1 },
        { type: 'end-of-text', part: 'answer', weight: 1 },
      ];
  }
}

/** What a user asks the model in the playground, in the shape of the data it was trained on. */
export type GenerationInput =
  | { kind: 'chat'; messages: { role: Role; content: string }[] }
  | { kind: 'completion'; prompt: string }
  | { kind: 'text'; text: string };

/** The segments of a generation prompt: the conversation so far, then the assistant cue. */
export function generationSegments(input: GenerationInput, template: ChatTemplate): Segment[] {
  switch (input.kind) {
    case 'chat':
      return [
        ...input.messages.flatMap((message) => messageSegments(message, template)),
        { type: 'text', text: template.assistantCue, part: 'prompt', weight: 0 },
      ];
    case 'completion':
      if (template.rawCompletions) return [{ type: 'text', text: input.prompt, part: 'prompt', weight: 0 }];
      return generationSegments({ kind: 'chat', messages: [{ role: 'user', content: input.prompt }] }, template);
    case 'text':
      return [{ type: 'text', text: input.text, part: 'prompt', weight: 0 }];
  }
}

/** The text the model sees, with the end-of-text token written out; for showing people. */
export function renderSegments(segments: Segment[], endOfText: string): string {
  return segments.map((s) => (s.type === 'text' ? s.text : endOfText)).join('');
}

export interface EncodedSegments {
  ids: number[];
  /** Per token: 1 where predicting this token counts for the loss. */
  trainMask: number[];
}

/** Token ids of segments, by the units described at the top of this file, and the loss mask per token. */
export function encodeSegments(segments: Segment[], tokenizer: Tokenizer, trainOn: TrainOn = 'completions'): EncodedSegments {
  const ids: number[] = [];
  const trainMask: number[] = [];
  const push = (newIds: number[], trained: boolean) => {
    for (const id of newIds) {
      ids.push(id);
      trainMask.push(trained || trainOn === 'all' ? 1 : 0);
    }
  };
  let prompt = '';
  const flushPrompt = () => {
    if (prompt !== '') push(tokenizer.encode(prompt), false);
    prompt = '';
  };
  for (const segment of segments) {
    if (segment.type === 'text' && segment.part === 'prompt') {
      prompt += segment.text;
      continue;
    }
    flushPrompt();
    const trained = segment.part === 'answer' && segment.weight === 1;
    if (segment.type === 'text') push(tokenizer.encode(segment.text), trained);
    else push([tokenizer.endOfTextId], trained);
  }
  flushPrompt();
  return { ids, trainMask };
}

/** Token ids to feed the model to generate an answer; identical to the ids of the same turns in training. */
export function encodeGenerationPrompt(input: GenerationInput, tokenizer: Tokenizer, template: ChatTemplate): number[] {
  return encodeSegments(generationSegments(input, template), tokenizer).ids;
}

/** The prompt as text (for display). */
export function renderGenerationPrompt(input: GenerationInput, template: ChatTemplate, endOfText: string): string {
  return renderSegments(generationSegments(input, template), endOfText);
}

/**
 * The answer inside generated text: what follows the prompt, without the template's text around `{content}` (the
 * leading space by default) and cut at the end-of-text token if the text holds one.
 */
export function answerFromGenerated(generated: string, template: ChatTemplate, endOfText: string): string {
  const [before, after] = template.assistant.split(PLACEHOLDER);
  let answer = generated;
  const end = answer.indexOf(endOfText);
  if (end !== -1) answer = answer.slice(0, end);
  if (before && answer.startsWith(before)) answer = answer.slice(before.length);
  if (after && answer.endsWith(after)) answer = answer.slice(0, answer.length - after.length);
  return answer;
}
