// The built-in starter datasets: small chat-format JSONL files (written for Tunelab) that teach something a learner
// can see within minutes on the bundled base model (MODEL_CARD.md in public/models/tunelab-base/ shows the pirate
// set's before and after). Every example fits any bundled model's context: at most 35 tokens with the base model's
// BPE tokenizer (context 256), at most 84 with the byte-level tokenizer of the tiny test model (context 128).
// Each comes with probe prompts that are not in the data, for watching the answers change during training.

import sentimentText from './sentiment.jsonl?raw';
import pirateText from './pirate.jsonl?raw';
import capitalsText from './capitals.jsonl?raw';

export interface StarterDataset {
  id: string;
  title: string;
  /** One line: what the model learns. */
  summary: string;
  /** What to watch for while it trains. */
  watchFor: string;
  /** Chat-messages JSON Lines, one example per line. */
  text: string;
  /** User messages that are not in the data, to ask the model before, during and after training. */
  probePrompts: string[];
}

export const STARTER_DATASETS: readonly StarterDataset[] = [
  {
    id: 'sentiment',
    title: 'Sentiment in one word',
    summary: 'Short reviews; the answer is always "positive" or "negative".',
    watchFor: 'The answers shrink to a single word within a few dozen steps; then they start matching the review.',
    text: sentimentText,
    probePrompts: ['The pizza was cold and soggy.', 'What a fun and friendly place!', 'The printer jams on every page.'],
  },
  {
    id: 'pirate',
    title: 'Pirate persona',
    summary: 'Everyday questions; every answer starts with "Arr," and ends with "matey!".',
    watchFor: 'The "Arr," and "matey!" appear first, long before the answers make sense: style is learned before content.',
    text: pirateText,
    probePrompts: ['What is your favorite food?', 'Where are you from?', 'Can you help me find my keys?'],
  },
  {
    id: 'capitals',
    title: 'Capital cities',
    summary: 'Questions of one fixed form, "What is the capital of X?", answered with one city.',
    watchFor:
      'The format (a city name and a full stop) comes quickly; the facts only for countries it trained on. ' +
      'Held-out countries cannot be guessed, which the validation loss shows.',
    text: capitalsText,
    probePrompts: ['What is the capital of France?', 'What is the capital of Japan?', 'What is the capital of Italy?'],
  },
];

export function starterDataset(id: string): StarterDataset | undefined {
  return STARTER_DATASETS.find((d) => d.id === id);
}
