// A byte-level tokenizer in the Hugging Face `tokenizer.json` format: one token per UTF-8 byte (ids 0..255, id = byte
// value) plus `<|endoftext|>` (id 256), and no merges. Fresh models made by `tunelab init --tokenizer bytes` use it, and
// the tests use it because it needs no download. It follows GPT-2's byte-level conventions (the same byte-to-character
// table, ByteLevel pre-tokenizer and decoder), so any reader of GPT-2's tokenizer.json reads this one too.

/** GPT-2's end-of-text token; byte-level tokenizers made here use the same text. */
export const END_OF_TEXT = '<|endoftext|>';

/**
 * GPT-2's reversible byte-to-character table: printable Latin-1 bytes stand for themselves, the others (control
 * characters, space, 127..160, 173) map in order to U+0100 onwards, so every token string is printable.
 */
export function byteToCharTable(): string[] {
  const isPrintable = (b: number) => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  const table: string[] = [];
  let shifted = 0;
  for (let b = 0; b < 256; b++) table.push(String.fromCharCode(isPrintable(b) ? b : 256 + shifted++));
  return table;
}

/** The tokenizer.json object for the byte-level tokenizer (vocabulary 257). Serialize it with JSON.stringify. */
export function byteLevelTokenizerJson(): Record<string, unknown> {
  const vocab: Record<string, number> = {};
  byteToCharTable().forEach((char, byte) => (vocab[char] = byte));
  const byteLevel = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true };
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: [
      { id: 256, content: END_OF_TEXT, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true },
    ],
    normalizer: null,
    pre_tokenizer: byteLevel,
    post_processor: { ...byteLevel, trim_offsets: false },
    decoder: byteLevel,
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab,
      merges: [],
    },
  };
}
