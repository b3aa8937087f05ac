// The chat template and loss masks: what the model sees, which tokens it learns from (token by token), and that
// generation asks exactly the way training taught.
import { describe, expect, it } from 'vitest';
import {
  answerFromGenerated,
  DEFAULT_CHAT_TEMPLATE,
  encodeGenerationPrompt,
  encodeSegments,
  exampleSegments,
  prepareDataset,
  renderGenerationPrompt,
  renderSegments,
  resolveTemplate,
  type ChatExample,
  type Example,
  type GenerationInput,
} from '../../src/engine/data/index.ts';
import { TunelabError } from '../../src/engine/errors.ts';
import { Tokenizer } from '../../src/engine/tokenizer/index.ts';
import type { Tokenizer as TokenizerType } from '../../src/engine/tokenizer/tokenizer.ts';
import { byteTokenizer, jsonl, tinyBpeTokenizerJson } from './helpers.ts';

const origin = { source: 'train' as const, line: 1, index: 0 };
const conversation: ChatExample = {
  kind: 'chat',
  messages: [
    { role: 'system', content: 'Be brief.' },
    { role: 'user', content: 'Hi' },
    { role: 'assistant', content: 'Hello.' },
  ],
  origin,
};

/** Each token's text, in [brackets] where it counts for the loss. */
function showMask(example: Example, tokenizer: TokenizerType, trainOn: 'completions' | 'all' = 'completions', template = DEFAULT_CHAT_TEMPLATE): string {
  const { ids, trainMask } = encodeSegments(exampleSegments(example, template), tokenizer, trainOn);
  // Byte tokens of one character are shown together; every id here is a whole character or the end-of-text token.
  return ids.map((id, i) => (trainMask[i] ? `[${tokenizer.decode([id])}]` : tokenizer.decode([id]))).join('');
}

describe('chat template', () => {
  it('renders the documented plain-text layout', () => {
    expect(renderSegments(exampleSegments(conversation, DEFAULT_CHAT_TEMPLATE), '<|endoftext|>')).toBe(
      'System: Be brief.\nUser: Hi\nAssistant: Hello.<|endoftext|>',
    );
  });

  it('masks a chat example token by token: only the answer and its end-of-text token count', () => {
    expect(showMask(conversation, byteTokenizer())).toBe(
      'System: Be brief.\nUser: Hi\nAssistant:[ ][H][e][l][l][o][.][<|endoftext|>]',
    );
    // The same, asserted on raw ids and mask: every masked id is one of " Hello." or end-of-text.
    const { ids, trainMask } = encodeSegments(exampleSegments(conversation, DEFAULT_CHAT_TEMPLATE), byteTokenizer());
    const prompt = 'System: Be brief.\nUser: Hi\nAssistant:';
    expect(ids).toEqual([...new TextEncoder().encode(prompt + ' Hello.'), 256]);
    expect(trainMask).toEqual([...Array(prompt.length).fill(0), ...Array(' Hello.'.length + 1).fill(1)]);
  });

  it('skips answers with weight 0 in multi-turn chats, and trains the later turns', () => {
    const multi: ChatExample = {
      kind: 'chat',
      messages: [
        { role: 'user', content: '1+1?' },
        { role: 'assistant', content: '3', weight: 0 },
        { role: 'user', content: 'Sure?' },
        { role: 'assistant', content: '2' },
      ],
      origin,
    };
    expect(showMask(multi, byteTokenizer())).toBe('User: 1+1?\nAssistant: 3<|endoftext|>User: Sure?\nAssistant:[ ][2][<|endoftext|>]');
  });

  it('trains on every token with trainOn "all"', () => {
    const all = showMask(conversation, byteTokenizer(), 'all');
    expect(all).toBe('[S][y][s][t][e][m][:][ ][B][e][ ][b][r][i][e][f][.][\n][U][s][e][r][:][ ][H][i][\n][A][s][s][i][s][t][a][n][t][:][ ][H][e][l][l][o][.][<|endoftext|>]');
  });

  it('makes prompt/completion one user turn and an answer, or joins them raw', () => {
    const pair: Example = { kind: 'completion', prompt: 'Translate: cat', completion: 'chat', origin };
    expect(showMask(pair, byteTokenizer())).toBe('User: Translate: cat\nAssistant:[ ][c][h][a][t][<|endoftext|>]');
    const raw = resolveTemplate({ rawCompletions: true });
    expect(showMask(pair, byteTokenizer(), 'completions', raw)).toBe('Translate: cat[c][h][a][t][<|endoftext|>]');
  });

  it('applies a custom template the same way', () => {
    const custom = resolveTemplate({ user: '### Question\n{content}\n', assistantCue: '### Answer\n', assistant: '{content}' });
    expect(showMask({ kind: 'completion', prompt: 'Q', completion: 'A', origin }, byteTokenizer(), 'completions', custom)).toBe(
      '### Question\nQ\n### Answer\n[A][<|endoftext|>]',
    );
  });

  it('rejects a message template without exactly one {content}', () => {
    expect(() => resolveTemplate({ user: 'User: ' })).toThrow(TunelabError);
    expect(() => resolveTemplate({ assistant: '{content}{content}' })).toThrow(/exactly once/);
  });

  it('asks for generation with exactly the ids training used before the answer', () => {
    for (const tokenizer of [byteTokenizer(), Tokenizer.fromJson(tinyBpeTokenizerJson())]) {
      const trained = encodeSegments(exampleSegments({ ...conversation, messages: [...conversation.messages.slice(0, 2), { role: 'assistant', content: 'the end' }] }, DEFAULT_CHAT_TEMPLATE), tokenizer);
      const firstTrained = trained.trainMask.indexOf(1);
      const input: GenerationInput = { kind: 'chat', messages: conversation.messages.slice(0, 2) };
      expect(encodeGenerationPrompt(input, tokenizer, DEFAULT_CHAT_TEMPLATE)).toEqual(trained.ids.slice(0, firstTrained));
    }
    // With the tiny BPE the answer " the end" starts with the merged token " the" (259), as GPT-2 would write it.
    const bpe = Tokenizer.fromJson(tinyBpeTokenizerJson());
    const answer = encodeSegments(exampleSegments({ kind: 'completion', prompt: 'x', completion: 'the end', origin }, DEFAULT_CHAT_TEMPLATE), bpe);
    expect(answer.ids.slice(answer.trainMask.indexOf(1))).toEqual([259, 32, 101, 110, 100, 256]);
  });

  it('renders generation prompts for each kind of data', () => {
    const t = DEFAULT_CHAT_TEMPLATE;
    expect(renderGenerationPrompt({ kind: 'completion', prompt: 'Hi' }, t, '<eot>')).toBe('User: Hi\nAssistant:');
    expect(renderGenerationPrompt({ kind: 'completion', prompt: 'Hi' }, resolveTemplate({ rawCompletions: true }), '<eot>')).toBe('Hi');
    expect(renderGenerationPrompt({ kind: 'text', text: 'Once' }, t, '<eot>')).toBe('Once');
    expect(
      renderGenerationPrompt(
        { kind: 'chat', messages: [{ role: 'user', content: 'a' }, { role: 'assistant', content: 'b' }, { role: 'user', content: 'c' }] },
        t,
        '<eot>',
      ),
    ).toBe('User: a\nAssistant: b<eot>User: c\nAssistant:');
  });

  it('extracts the answer from generated text', () => {
    const t = DEFAULT_CHAT_TEMPLATE;
    expect(answerFromGenerated(' Paris.<|endoftext|>User: more', t, '<|endoftext|>')).toBe('Paris.');
    expect(answerFromGenerated(' Paris, still going', t, '<|endoftext|>')).toBe('Paris, still going');
    expect(answerFromGenerated('no space', t, '<|endoftext|>')).toBe('no space');
  });

  it('is what prepareDataset tokenizes and masks', () => {
    const prepared = prepareDataset({ train: jsonl({ messages: conversation.messages }) }, byteTokenizer(), { validationFraction: 0 });
    const [sequence] = prepared.train;
    const expected = encodeSegments(exampleSegments(conversation, DEFAULT_CHAT_TEMPLATE), byteTokenizer());
    expect([...sequence.ids]).toEqual(expected.ids);
    expect([...sequence.trainMask]).toEqual(expected.trainMask);
    expect(prepared.report.stats.lossTokens).toBe(' Hello.'.length + 1);
  });
});
