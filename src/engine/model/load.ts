// Loads a model directory in the Hugging Face layout (config.json, model.safetensors, tokenizer.json) through a
// small file-reading abstraction, so Node reads from disk (src/cli/), the browser from a File list or fetch, and
// tests from memory. Every missing or broken file gives a TunelabError('bad-model') that names the file.

import { TunelabError } from '../errors.ts';
import { parseSafetensors } from '../io/safetensors.ts';
import { checkTokenizerIds, isTokenId } from '../tokenizer/tokenizer.ts';
import { parseModelConfig, type ModelConfig } from './config.ts';
import { mapCheckpoint, type MappedWeights } from './weights.ts';

/** Where a model's files come from. `read` resolves to null when the file does not exist. */
export interface ModelSource {
  /** For messages: "directory models/tiny", "https://…/models/gpt2/". */
  readonly description: string;
  read(fileName: string): Promise<Uint8Array | null>;
}

/** Files held in memory (tests, drag-and-drop after reading). */
export function memorySource(files: Record<string, Uint8Array | string>, description = 'in-memory model'): ModelSource {
  return {
    description,
    async read(fileName) {
      const file = files[fileName];
      if (file === undefined) return null;
      return typeof file === 'string' ? new TextEncoder().encode(file) : file;
    },
  };
}

/** Files under a base URL (the app's bundled model, a Hub mirror). A 404 means "missing". */
export function fetchSource(baseUrl: string, fetchImpl: typeof fetch = fetch): ModelSource {
  const base = baseUrl.endsWith('/') ? baseUrl : `${baseUrl}/`;
  return {
    description: base,
    async read(fileName) {
      const response = await fetchImpl(base + fileName);
      if (response.status === 404) return null;
      if (!response.ok) {
        throw new TunelabError('bad-model', `could not fetch ${base + fileName}: HTTP ${response.status}`);
      }
      return new Uint8Array(await response.arrayBuffer());
    },
  };
}

/** Files a user picked (an <input type=file multiple> or a dropped folder); matched by base name. */
export function fileListSource(files: Iterable<File>, description = 'the selected files'): ModelSource {
  const byName = new Map<string, File>();
  for (const f of files) byName.set(f.name.split('/').pop()!, f);
  return {
    description,
    async read(fileName) {
      const file = byName.get(fileName);
      return file ? new Uint8Array(await file.arrayBuffer()) : null;
    },
  };
}

/** A tokenizer.json as parsed JSON; the tokenizer module builds the real tokenizer from it. */
export type TokenizerJson = Record<string, unknown> & { model: Record<string, unknown> };

export interface LoadedModel {
  readonly config: ModelConfig;
  /** config.json as read, so a saved copy keeps fields Tunelab does not model. */
  readonly configJson: Record<string, unknown>;
  readonly weights: MappedWeights;
  readonly tokenizerJson: TokenizerJson;
  /** `__metadata__` of model.safetensors. */
  readonly checkpointMetadata: Readonly<Record<string, string>>;
  readonly warnings: string[];
}

const LAYOUT_HINT = 'a model directory needs config.json, model.safetensors and tokenizer.json (Hugging Face layout)';

async function required(source: ModelSource, fileName: string, hint: string): Promise<Uint8Array> {
  const bytes = await source.read(fileName);
  if (!bytes) throw new TunelabError('bad-model', `${source.description} has no ${fileName}; ${hint}`);
  return bytes;
}

function parseJsonFile(bytes: Uint8Array, fileName: string, source: ModelSource): unknown {
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw new TunelabError('bad-model', `${fileName} in ${source.description} is not UTF-8 text`);
  }
  try {
    return JSON.parse(text);
  } catch (error) {
    const why = error instanceof Error ? error.message : String(error);
    throw new TunelabError('bad-model', `${fileName} in ${source.description} is not valid JSON (${why})`);
  }
}

/**
 * Checks that a parsed tokenizer.json looks like one (an object with a `model` object) and that every token id in it
 * (model.vocab, added_tokens) is a whole number in [0, 2^24), before anything sizes a table by them.
 */
export function checkTokenizerJson(json: unknown, where = 'tokenizer.json'): TokenizerJson {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw new TunelabError('bad-model', `${where} is not a JSON object`);
  }
  const model = (json as Record<string, unknown>).model;
  if (typeof model !== 'object' || model === null || Array.isArray(model)) {
    throw new TunelabError(
      'bad-model',
      `${where} has no "model" section; it must be a Hugging Face tokenizers file (saved by tokenizer.save())`,
    );
  }
  checkTokenizerIds(json as TokenizerJson, where);
  return json as TokenizerJson;
}

/**
 * Token ids a tokenizer.json can produce: one more than the largest id in its vocabulary and added tokens
 * (undefined when it has neither). Throws TunelabError('bad-model') when an id is not a token id.
 */
export function tokenizerVocabSize(json: TokenizerJson): number | undefined {
  return checkTokenizerIds(json);
}

/** The id of `<|endoftext|>` (or of the first special added token) in a tokenizer.json, if it has one. */
export function endOfTextId(json: TokenizerJson): number | undefined {
  const added = Array.isArray(json.added_tokens) ? (json.added_tokens as { id?: unknown; content?: unknown; special?: unknown }[]) : [];
  const byContent = added.find((t) => t?.content === '<|endoftext|>');
  if (isTokenId(byContent?.id)) return byContent.id;
  const vocab = json.model.vocab;
  if (typeof vocab === 'object' && vocab !== null && !Array.isArray(vocab)) {
    const id = (vocab as Record<string, unknown>)['<|endoftext|>'];
    if (isTokenId(id)) return id;
  }
  const special = added.find((t) => t?.special === true && isTokenId(t.id));
  return special ? (special.id as number) : undefined;
}

/** Reads and checks config.json, model.safetensors and tokenizer.json. */
export async function loadModel(source: ModelSource): Promise<LoadedModel> {
  const configBytes = await required(source, 'config.json', LAYOUT_HINT);
  const configJson = parseJsonFile(configBytes, 'config.json', source);
  const config = withSource(source, () => parseModelConfig(configJson));

  const tokenizerBytes = await required(
    source,
    'tokenizer.json',
    `${LAYOUT_HINT}; a model that has only vocab.json and merges.txt can be converted by loading it with ` +
      "transformers' AutoTokenizer and calling save_pretrained",
  );
  const tokenizerJson = checkTokenizerJson(parseJsonFile(tokenizerBytes, 'tokenizer.json', source));
  const tokenizerVocab = tokenizerVocabSize(tokenizerJson);
  if (tokenizerVocab !== undefined && tokenizerVocab > config.vocabSize) {
    throw new TunelabError(
      'bad-model',
      `tokenizer.json can produce token ids up to ${tokenizerVocab - 1}, but config.json's vocab_size is ` +
        `${config.vocabSize}; the tokenizer belongs to a different model`,
    );
  }

  const checkpointBytes = await required(
    source,
    'model.safetensors',
    `${LAYOUT_HINT}; a checkpoint saved as pytorch_model.bin can be converted with save_pretrained(safe_serialization=True)`,
  );
  let weights: MappedWeights;
  let checkpointMetadata: Readonly<Record<string, string>>;
  try {
    const file = parseSafetensors(checkpointBytes);
    checkpointMetadata = file.metadata;
    weights = mapCheckpoint(file, config);
  } catch (error) {
    if (error instanceof TunelabError && error.code === 'bad-model') {
      throw new TunelabError('bad-model', `model.safetensors in ${source.description}: ${error.message}`);
    }
    throw error;
  }
  return {
    config,
    configJson: configJson as Record<string, unknown>,
    weights,
    tokenizerJson,
    checkpointMetadata,
    warnings: weights.warnings.map((w) => `model.safetensors: ${w}`),
  };
}

function withSource<T>(source: ModelSource, parse: () => T): T {
  try {
    return parse();
  } catch (error) {
    if (error instanceof TunelabError && error.code === 'bad-model') {
      throw new TunelabError('bad-model', `${error.message} (in ${source.description})`);
    }
    throw error;
  }
}
