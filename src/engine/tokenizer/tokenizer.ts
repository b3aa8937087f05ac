// A thin wrapper over `@huggingface/tokenizers`: loads a model's tokenizer.json and gives the engine what it needs —
// text to ids, ids to text, the vocabulary size and the end-of-text token. Loading problems become a typed
// `bad-model` error; encoding and decoding never change the text (no clean-up of spaces, no added special tokens).
import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';
import { TunelabError } from '../errors.ts';
import { END_OF_TEXT, byteLevelTokenizerJson } from './byte-level.ts';

export interface TokenizerOptions {
  /** The contents of tokenizer_config.json, when the model has one (its `eos_token` names the end-of-text token). */
  config?: Record<string, unknown>;
  /** The end-of-text token's text; default: the config's `eos_token`, else `<|endoftext|>`, `</s>` or `<eos>`. */
  endOfText?: string;
  /** Shown in reports ("byte-level", "gpt2 (models/gpt2/tokenizer.json)"). */
  name?: string;
}

const END_OF_TEXT_CANDIDATES = [END_OF_TEXT, '</s>', '<eos>', '<|end_of_text|>'];

export class Tokenizer {
  /** Number of ids the tokenizer can produce (largest id + 1). A model's vocabulary may be larger (padded). */
  readonly vocabSize: number;
  /** Id of the token that ends a document or an answer; generation stops on it. */
  readonly endOfTextId: number;
  /** Text of the end-of-text token, e.g. `<|endoftext|>`. */
  readonly endOfText: string;
  readonly name: string;
  private readonly hf: HfTokenizer;

  private constructor(hf: HfTokenizer, endOfText: string, endOfTextId: number, vocabSize: number, name: string) {
    this.hf = hf;
    this.endOfText = endOfText;
    this.endOfTextId = endOfTextId;
    this.vocabSize = vocabSize;
    this.name = name;
  }

  /** Loads a parsed tokenizer.json. Throws TunelabError('bad-model') when it cannot be used. */
  static fromJson(tokenizerJson: unknown, options: TokenizerOptions = {}): Tokenizer {
    const name = options.name ?? 'tokenizer.json';
    if (!isRecord(tokenizerJson) || !isRecord(tokenizerJson.model)) {
      throw new TunelabError('bad-model', `${name} is not a tokenizer: it has no "model" object`);
    }
    // The library expects every section to be present, null when unused, as the Rust library writes them.
    const complete: Record<string, unknown> = { added_tokens: [], ...tokenizerJson };
    for (const key of ['normalizer', 'pre_tokenizer', 'post_processor', 'decoder']) complete[key] ??= null;
    // Spaces before punctuation must survive decoding, so the library's clean-up is off whatever the config says.
    const config = { ...(options.config ?? {}), clean_up_tokenization_spaces: false };
    let hf: HfTokenizer;
    try {
      hf = new HfTokenizer(complete, config);
    } catch (error) {
      throw new TunelabError('bad-model', `${name} could not be loaded: ${(error as Error).message}`);
    }
    let vocabSize = 0;
    for (const id of hf.get_vocab(true).values()) vocabSize = Math.max(vocabSize, id + 1);
    if (vocabSize === 0) throw new TunelabError('bad-model', `${name} has an empty vocabulary`);

    const configEos = typeof options.config?.eos_token === 'string' ? options.config.eos_token : undefined;
    const wanted = options.endOfText ?? configEos;
    const candidates = wanted !== undefined ? [wanted] : END_OF_TEXT_CANDIDATES;
    const endOfText = candidates.find((token) => hf.token_to_id(token) !== undefined);
    if (endOfText === undefined) {
      throw new TunelabError(
        'bad-model',
        `${name} has no end-of-text token (looked for ${candidates.join(', ')}); Tunelab needs one to end answers`,
      );
    }
    return new Tokenizer(hf, endOfText, hf.token_to_id(endOfText)!, vocabSize, name);
  }

  /** Token ids of `text`. Text equal to a special token (such as `<|endoftext|>`) becomes that token. */
  encode(text: string): number[] {
    if (text.length === 0) return [];
    return this.hf.encode(text, { add_special_tokens: false }).ids;
  }

  /**
   * Text of `ids`. Ids the tokenizer does not know (a model's padded vocabulary) are skipped. For well-formed
   * strings decode(encode(text)) === text; unpaired UTF-16 surrogates cannot be encoded and come back as U+FFFD.
   */
  decode(ids: ArrayLike<number>, options: { skipSpecialTokens?: boolean } = {}): string {
    const known: number[] = [];
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i];
      if (Number.isInteger(id) && id >= 0 && id < this.vocabSize && this.hf.id_to_token(id) !== undefined) known.push(id);
    }
    if (known.length === 0) return '';
    return this.hf.decode(known, {
      skip_special_tokens: options.skipSpecialTokens ?? false,
      clean_up_tokenization_spaces: false,
    });
  }

  /** The vocabulary entry of one id (byte-level tokenizers show a space as `Ġ`), for displays of tokens. */
  tokenString(id: number): string | undefined {
    return this.hf.id_to_token(id);
  }
}

/** The byte-level tokenizer (see byte-level.ts), ready to use. */
export function byteLevelTokenizer(): Tokenizer {
  return Tokenizer.fromJson(byteLevelTokenizerJson(), { name: 'byte-level' });
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
