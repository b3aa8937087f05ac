// A thin wrapper over `@huggingface/tokenizers`: loads a model's tokenizer.json and gives the engine what it needs —
// text to ids, ids to text, the vocabulary size and the end-of-text token. Loading problems become a typed
// `bad-model` error; encoding and decoding never change the text (no clean-up of spaces, no added special tokens).
//
// The library trusts its input: it sizes tables by the largest id it is given (an id of 20000000, or "20000000",
// costs seconds and hundreds of megabytes), keeps ids that are not numbers, and throws TypeErrors while encoding when
// a section is misshapen. So ids and the shapes the library reads while encoding are checked here first, a sample is
// encoded and decoded while loading, and any later failure of the library becomes a TunelabError.
import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';
import { describeValue } from '../describe.ts';
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

/**
 * Token ids lie in [0, TOKEN_ID_LIMIT): far above any real vocabulary (the largest have about 256k tokens) and f32
 * holds every such id exactly, while a damaged id cannot make the library build a table of billions of entries.
 */
export const TOKEN_ID_LIMIT = 2 ** 24;

/** Text pushed through a tokenizer while it loads, so a file that loads but cannot encode is refused at once. */
const SAMPLE_TEXT = 'Hello, world! The cat sat on the mat: 1 + 2 = 3.\n\tÉté 😀 ';

export function isTokenId(value: unknown): value is number {
  return typeof value === 'number' && Number.isInteger(value) && value >= 0 && value < TOKEN_ID_LIMIT;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function badIds(name: string, message: string): TunelabError {
  return new TunelabError(
    'bad-model',
    `${name}: ${message}; the file is damaged or was not written by Hugging Face tokenizers`,
  );
}

const ID_RULE = `token ids must be whole numbers from 0 to ${TOKEN_ID_LIMIT - 1}`;

/**
 * Checks every id of a parsed tokenizer.json (model.vocab, model.unk_id, added_tokens) and the fields of its added
 * tokens, and returns how many ids it can produce: the largest id + 1, or undefined when its model keeps no
 * vocabulary. Throws TunelabError('bad-model') naming the first wrong entry. Runs before the library sees the file.
 */
export function checkTokenizerIds(
  json: Record<string, unknown> & { model: Record<string, unknown> },
  name = 'tokenizer.json',
): number | undefined {
  let largest = -1;
  let hasVocabulary = true;
  const vocab = json.model.vocab;
  if (Array.isArray(vocab)) {
    // Unigram: [piece, score] pairs; a piece's id is its index.
    if (vocab.length > TOKEN_ID_LIMIT) {
      throw badIds(name, `model.vocab has ${vocab.length} entries, more than ${TOKEN_ID_LIMIT}`);
    }
    for (let i = 0; i < vocab.length; i++) {
      const entry: unknown = vocab[i];
      const isPair = Array.isArray(entry) && entry.length === 2 && typeof entry[0] === 'string' && Number.isFinite(entry[1]);
      if (!isPair) {
        throw badIds(name, `model.vocab[${i}] is ${describeValue(entry)}, not a [piece, score] pair of a string and a number`);
      }
    }
    largest = vocab.length - 1;
    const unkId = json.model.unk_id;
    if (unkId !== undefined && unkId !== null && !(isTokenId(unkId) && unkId < vocab.length)) {
      throw badIds(
        name,
        `model.unk_id is ${describeValue(unkId)}, not the index of one of the ${vocab.length} pieces of model.vocab`,
      );
    }
  } else if (isRecord(vocab)) {
    for (const token in vocab) {
      if (!Object.hasOwn(vocab, token)) continue;
      const id = vocab[token];
      if (!isTokenId(id)) {
        throw badIds(name, `model.vocab gives ${describeValue(token)} the id ${describeValue(id)}; ${ID_RULE}`);
      }
      if (id > largest) largest = id;
    }
  } else if (vocab === undefined || vocab === null) {
    hasVocabulary = false;
  } else {
    throw badIds(
      name,
      `model.vocab is ${describeValue(vocab)}; it must map tokens to ids (or list [piece, score] pairs)`,
    );
  }

  const added = json.added_tokens;
  if (added !== undefined && added !== null) {
    if (!Array.isArray(added)) throw badIds(name, `added_tokens is ${describeValue(added)}, not a list`);
    for (let i = 0; i < added.length; i++) {
      const token: unknown = added[i];
      const where = `added_tokens[${i}]`;
      if (!isRecord(token)) throw badIds(name, `${where} is ${describeValue(token)}, not an object`);
      if (!isTokenId(token.id)) throw badIds(name, `${where} has the id ${describeValue(token.id)}; ${ID_RULE}`);
      if (typeof token.content !== 'string' || token.content.length === 0) {
        throw badIds(name, `${where} has the content ${describeValue(token.content)}; it must be the token's text`);
      }
      for (const flag of ['special', 'single_word', 'lstrip', 'rstrip', 'normalized']) {
        const value = token[flag];
        if (value !== undefined && value !== null && typeof value !== 'boolean') {
          throw badIds(name, `${where} has ${flag} ${describeValue(value)}; it must be true or false`);
        }
      }
      if (token.id > largest) largest = token.id;
    }
  }
  return hasVocabulary || largest >= 0 ? largest + 1 : undefined;
}

/**
 * The sections around the model are null or objects with a string `type` (the library otherwise reports an
 * "Unknown type" of whatever String() makes of the value); the post-processor's templates are checked too.
 */
function checkSections(json: Record<string, unknown> & { model: Record<string, unknown> }, name: string): void {
  for (const key of ['normalizer', 'pre_tokenizer', 'post_processor', 'decoder']) {
    const section = json[key];
    if (section === undefined || section === null) continue;
    if (!isRecord(section) || typeof section.type !== 'string') {
      throw badIds(name, `${key} is ${describeValue(section)}; it must be null or an object with a "type" name`);
    }
  }
  if (json.model.type !== undefined && typeof json.model.type !== 'string') {
    throw badIds(name, `model.type is ${describeValue(json.model.type)}; it must be a name such as "BPE"`);
  }
  checkPostProcessor(json.post_processor, name);
}

/** Post-processors nest (Sequence of Sequence …); a real file nests one or two deep. */
const MAX_POST_PROCESSOR_DEPTH = 8;

/**
 * Checks the post-processor templates the library walks on every encode (a TemplateProcessing whose `single` is
 * 42 or holds `false` loads fine and throws a TypeError later), through Sequence post-processors.
 */
function checkPostProcessor(section: unknown, name: string, path = 'post_processor', depth = 0): void {
  if (section === undefined || section === null) return;
  if (!isRecord(section)) throw badIds(name, `${path} is ${describeValue(section)}, not an object`);
  if (section.type === 'Sequence') {
    if (depth >= MAX_POST_PROCESSOR_DEPTH) {
      throw badIds(name, `${path} nests Sequence post-processors more than ${MAX_POST_PROCESSOR_DEPTH} deep`);
    }
    const processors = section.processors ?? [];
    if (!Array.isArray(processors)) {
      throw badIds(name, `${path}.processors is ${describeValue(processors)}, not a list`);
    }
    processors.forEach((p, i) => checkPostProcessor(p, name, `${path}.processors[${i}]`, depth + 1));
    return;
  }
  if (section.type !== 'TemplateProcessing') return;
  for (const [key, sequences] of [['single', ['A']], ['pair', ['A', 'B']]] as const) {
    const template = section[key];
    if (key === 'pair' && (template === undefined || template === null)) continue;
    if (!Array.isArray(template)) {
      throw badIds(name, `${path}.${key} is ${describeValue(template)}, not a list of template pieces`);
    }
    template.forEach((piece: unknown, i) => {
      const special = isRecord(piece) ? piece.SpecialToken : undefined;
      const sequence = isRecord(piece) ? piece.Sequence : undefined;
      const valid =
        (isRecord(special) && typeof special.id === 'string') ||
        (isRecord(sequence) && (sequences as readonly unknown[]).includes(sequence.id));
      if (!valid) {
        throw badIds(
          name,
          `${path}.${key}[${i}] is ${describeValue(piece)}; a template piece is {"SpecialToken": {"id": …}} or ` +
            `{"Sequence": {"id": ${sequences.map((s) => `"${s}"`).join(' or ')}}}`,
        );
      }
    });
  }
}

/** The library's own error, short: it is quoted inside a message for a learner. */
function libraryReason(error: unknown): string {
  const message = error instanceof Error ? error.message : describeValue(error);
  return message.length > 200 ? `${message.slice(0, 199)}…` : message;
}

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
    const json = tokenizerJson as Record<string, unknown> & { model: Record<string, unknown> };
    const vocabSize = checkTokenizerIds(json, name) ?? 0;
    checkSections(json, name);
    // The library expects every section to be present, null when unused, as the Rust library writes them.
    const complete: Record<string, unknown> = { ...json, added_tokens: json.added_tokens ?? [] };
    for (const key of ['normalizer', 'pre_tokenizer', 'post_processor', 'decoder']) complete[key] ??= null;
    // Spaces before punctuation must survive decoding, so the library's clean-up is off whatever the config says.
    const config = { ...(options.config ?? {}), clean_up_tokenization_spaces: false };
    let hf: HfTokenizer;
    try {
      hf = new HfTokenizer(complete, config);
    } catch (error) {
      throw new TunelabError('bad-model', `${name} could not be loaded: ${libraryReason(error)}`);
    }
    if (vocabSize === 0) throw new TunelabError('bad-model', `${name} has an empty vocabulary`);

    const configEos = typeof options.config?.eos_token === 'string' ? options.config.eos_token : undefined;
    const wanted = options.endOfText ?? configEos;
    const candidates = wanted !== undefined ? [wanted] : END_OF_TEXT_CANDIDATES;
    const endOfText = candidates.find((token) => isTokenId(hf.token_to_id(token)));
    if (endOfText === undefined) {
      throw new TunelabError(
        'bad-model',
        `${name} has no end-of-text token (looked for ${candidates.map((c) => describeValue(c, 40)).join(', ')}); ` +
          'Tunelab needs one to end answers',
      );
    }
    const tokenizer = new Tokenizer(hf, endOfText, hf.token_to_id(endOfText)!, vocabSize, name);
    // The sections the library reads only while encoding and decoding may still be misshapen: try them now. Text
    // the vocabulary does not cover is no reason to refuse the file here; encode() reports it for the text at hand.
    tokenizer.decode(tokenizer.libraryEncode(SAMPLE_TEXT + endOfText).filter(isTokenId));
    return tokenizer;
  }

  /** Token ids of `text`. Text equal to a special token (such as `<|endoftext|>`) becomes that token. */
  encode(text: string): number[] {
    if (text.length === 0) return [];
    const ids = this.libraryEncode(text);
    for (const id of ids) {
      // An unknown piece of text with no unknown token to stand for it comes back as `undefined`.
      if (!(isTokenId(id) && id < this.vocabSize)) {
        throw new TunelabError(
          'bad-model',
          `${this.name} cannot encode ${describeValue(text, 60)}: it has no token for part of it (got id ` +
            `${describeValue(id)}) and no unknown token to stand in; use a tokenizer that covers all text (byte-level)`,
        );
      }
    }
    return ids as number[];
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
    let text: unknown;
    try {
      text = this.hf.decode(known, {
        skip_special_tokens: options.skipSpecialTokens ?? false,
        clean_up_tokenization_spaces: false,
      });
    } catch (error) {
      throw this.failure('decode', known, error);
    }
    if (typeof text !== 'string') {
      throw this.failure('decode', known, new Error(`it gave ${describeValue(text)}, not text`));
    }
    return text;
  }

  /** The vocabulary entry of one id (byte-level tokenizers show a space as `Ġ`), for displays of tokens. */
  tokenString(id: number): string | undefined {
    if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) return undefined;
    const token: unknown = this.hf.id_to_token(id);
    return typeof token === 'string' ? token : undefined;
  }

  /** The library's ids for `text` (possibly `undefined` where no token and no unknown token fits). */
  private libraryEncode(text: string): unknown[] {
    try {
      return this.hf.encode(text, { add_special_tokens: false }).ids;
    } catch (error) {
      throw this.failure('encode', text, error);
    }
  }

  /** A failure inside the library: the file loaded, but a section of it is malformed. */
  private failure(action: 'encode' | 'decode', input: unknown, error: unknown): TunelabError {
    return new TunelabError(
      'bad-model',
      `${this.name} failed to ${action} ${describeValue(input, 60)} (${libraryReason(error)}); a section of the ` +
        'file (normalizer, pre_tokenizer, post_processor, decoder or model) is malformed: re-save it with Hugging ' +
        'Face tokenizers',
    );
  }
}

/** The byte-level tokenizer (see byte-level.ts), ready to use. */
export function byteLevelTokenizer(): Tokenizer {
  return Tokenizer.fromJson(byteLevelTokenizerJson(), { name: 'byte-level' });
}
