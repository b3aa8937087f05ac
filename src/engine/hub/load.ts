// Loads a GPT-2-family model by Hub id or URL: config.json first (a model Tunelab cannot run is refused before the big
// download), then tokenizer.json, then the weights (model.safetensors, or the shards that
// model.safetensors.index.json names, joined into one). Progress is reported per file and overall; everything can be
// aborted. A cache (ModelCache) keeps the files: a model found there loads without the network, and a model that was
// downloaded is stored there (a full store does not fail the load; it is reported in `cacheError`).
//
//   const hub = await fetchHubModel('distilgpt2', { cache: new CacheApiModelCache(), onProgress, signal });
//   const model = await loadModel(hub.source);

import { parseModelConfig } from '../model/config.ts';
import { loadModel, type LoadedModel, type ModelSource } from '../model/load.ts';
import { TunelabError } from '../errors.ts';
import { cacheWriteError, type ModelCache } from './cache.ts';
import { downloadFile, type DownloadResult, type RetryOptions } from './download.ts';
import { HubError } from './errors.ts';
import { modelFileUrl, resolveModelRef, type ModelLocation, type ModelRefOptions } from './ref.ts';
import { mergeSafetensorsShards, parseShardIndex } from './shards.ts';

/** The files a loaded model consists of, as the cache stores them. */
export const MODEL_FILE_NAMES = ['config.json', 'tokenizer.json', 'model.safetensors'] as const;

export interface HubProgress {
  /** The file being downloaded: 'config.json', 'model.safetensors', 'model-00001-of-00002.safetensors', ... */
  file: string;
  fileLoaded: number;
  /** Null until the server says the size. */
  fileTotal: number | null;
  /** Bytes of all files so far. */
  loaded: number;
  /** Bytes of all files; null until every file's size is known (the weights' answer tells the last). */
  total: number | null;
}

export interface HubLoadOptions extends ModelRefOptions {
  /** Keep and reuse downloads here; null or absent: download every time, keep nothing. */
  cache?: ModelCache | null;
  /** Download even when the cache has the model (and replace the cached copy). */
  refresh?: boolean;
  signal?: AbortSignal;
  onProgress?: (progress: HubProgress) => void;
  retry?: Partial<RetryOptions>;
  /** A Hugging Face access token, for private or gated models the user has access to. */
  accessToken?: string;
  fetch?: typeof fetch;
  /** For telling CORS from network failures; default location.origin (none in Node). */
  pageOrigin?: string | null;
}

export interface HubModelFiles {
  location: ModelLocation;
  /** Reads the model's three files; give it to loadModel. */
  source: ModelSource;
  /** True when nothing was downloaded. */
  fromCache: boolean;
  files: { name: string; bytes: number }[];
  totalBytes: number;
  /** Shards the weights were joined from (0: one model.safetensors). */
  shardCount: number;
  /** Set when the model loaded but could not be kept in the cache (reason 'quota' or 'storage'). */
  cacheError: HubError | null;
}

/** Overall progress over files fetched one after another. */
class ProgressTracker {
  private readonly done = new Map<string, number>();
  private readonly totals = new Map<string, number | null>();
  constructor(
    private readonly planned: string[],
    private readonly emit: ((p: HubProgress) => void) | undefined,
  ) {
    for (const name of planned) this.totals.set(name, null);
  }

  plan(names: string[]): void {
    for (const name of names) {
      if (!this.planned.includes(name)) this.planned.push(name);
      if (!this.totals.has(name)) this.totals.set(name, null);
    }
  }

  unplan(name: string): void {
    this.planned.splice(this.planned.indexOf(name), 1);
    this.totals.delete(name);
    this.done.delete(name);
  }

  update(file: string, loaded: number, total: number | null): void {
    this.done.set(file, loaded);
    this.totals.set(file, total);
    if (!this.emit) return;
    let sum = 0;
    for (const value of this.done.values()) sum += value;
    let overall: number | null = 0;
    for (const name of this.planned) {
      const t = this.totals.get(name);
      overall = t === null || t === undefined || overall === null ? null : overall + t;
    }
    this.emit({ file, fileLoaded: loaded, fileTotal: total, loaded: sum, total: overall });
  }
}

function notFound(location: ModelLocation, result: Extract<DownloadResult, { kind: 'missing' }>): HubError {
  const url = modelFileUrl(location, 'config.json');
  if (location.kind === 'url') {
    return new HubError(
      'not-found',
      `${location.baseUrl} has no config.json (HTTP ${result.status}); the URL must be the folder that holds ` +
        'config.json, tokenizer.json and model.safetensors',
      { url, status: result.status },
    );
  }
  const page = `${location.endpoint}/${location.repo}`;
  if (result.errorCode === 'RevisionNotFound') {
    return new HubError('not-found', `the model ${location.repo} has no revision "${location.revision}" (check ${page})`, {
      url,
      status: result.status,
    });
  }
  if (result.errorCode === 'GatedRepo') {
    return new HubError(
      'not-found',
      `${location.repo} is gated: its authors require you to log in on ${page} and accept their terms, and to give ` +
        'Tunelab an access token. Pick an open model such as gpt2 or distilgpt2',
      { url, status: result.status },
    );
  }
  return new HubError(
    'not-found',
    `no such model "${location.repo}"${location.revision === 'main' ? '' : ` at revision ${location.revision}`} on ` +
      `${location.endpoint === 'https://huggingface.co' ? 'the Hugging Face Hub' : location.endpoint}, or it is gated or ` +
      `private (HTTP ${result.status}). Check the spelling at ${page}; GPT-2 models are e.g. gpt2, distilgpt2, ` +
      'openai-community/gpt2-medium',
    { url, status: result.status },
  );
}

function missingFile(location: ModelLocation, fileName: string, hint: string): HubError {
  return new HubError('missing-file', `${location.description} has no ${fileName}; ${hint}`, {
    url: modelFileUrl(location, fileName),
  });
}

/** Refuses a config.json Tunelab cannot run, naming what it is. */
function checkArchitecture(location: ModelLocation, bytes: Uint8Array): void {
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch {
    throw new HubError('unsupported-architecture', `config.json of ${location.description} is not valid JSON`);
  }
  const c = (typeof json === 'object' && json !== null ? json : {}) as Record<string, unknown>;
  if (c.model_type !== 'gpt2') {
    const architectures = Array.isArray(c.architectures) ? ` (${c.architectures.join(', ')})` : '';
    const what =
      typeof c.model_type === 'string' ? `a ${c.model_type} model${architectures}` : `a model with no model_type in config.json`;
    throw new HubError(
      'unsupported-architecture',
      `${location.name} is ${what}. Tunelab runs GPT-2-family models (model_type "gpt2"): gpt2, distilgpt2, ` +
        'openai-community/gpt2-medium, and fine-tunes of them',
    );
  }
  try {
    parseModelConfig(c);
  } catch (error) {
    if (error instanceof TunelabError) {
      throw new HubError('unsupported-architecture', `${location.name}: ${error.message}`, { cause: error });
    }
    throw error;
  }
}

function memoryFilesSource(files: ReadonlyMap<string, Uint8Array>, description: string): ModelSource {
  return {
    description,
    async read(fileName) {
      return files.get(fileName) ?? null;
    },
  };
}

function cachedSource(cache: ModelCache, key: string, description: string): ModelSource {
  return {
    description: `${description} (saved in ${cache.description})`,
    read: (fileName) => cache.get(key, fileName),
  };
}

/**
 * Finds the model's files: from the cache when it has them (no network), else by downloading them (and then
 * storing them in the cache). Throws HubError with a reason the UI can act on (see errors.ts).
 */
export async function fetchHubModel(ref: string, options: HubLoadOptions = {}): Promise<HubModelFiles> {
  const location = resolveModelRef(ref, options);
  const cache = options.cache ?? null;

  if (cache && !options.refresh && (await cache.has(location.cacheKey))) {
    const info = (await cache.list()).find((e) => e.key === location.cacheKey);
    return {
      location,
      source: cachedSource(cache, location.cacheKey, location.description),
      fromCache: true,
      files: info?.files ?? [],
      totalBytes: info?.totalBytes ?? 0,
      shardCount: 0,
      cacheError: null,
    };
  }

  const tracker = new ProgressTracker([...MODEL_FILE_NAMES], options.onProgress);
  const headers: Record<string, string> = options.accessToken ? { Authorization: `Bearer ${options.accessToken}` } : {};
  const download = (fileName: string): Promise<DownloadResult> =>
    downloadFile(modelFileUrl(location, fileName), {
      fetch: options.fetch,
      signal: options.signal,
      retry: options.retry,
      headers,
      pageOrigin: options.pageOrigin,
      onProgress: (loaded, total) => tracker.update(fileName, loaded, total),
    });

  const files = new Map<string, Uint8Array>();

  const config = await download('config.json');
  if (config.kind === 'missing') throw notFound(location, config);
  checkArchitecture(location, config.bytes);
  files.set('config.json', config.bytes);

  const tokenizer = await download('tokenizer.json');
  if (tokenizer.kind === 'missing') {
    throw missingFile(
      location,
      'tokenizer.json',
      'Tunelab reads the tokenizer from tokenizer.json (a model with only vocab.json and merges.txt can be converted ' +
        "by loading it with transformers' AutoTokenizer and calling save_pretrained)",
    );
  }
  files.set('tokenizer.json', tokenizer.bytes);

  let shardCount = 0;
  const weights = await download('model.safetensors');
  if (weights.kind === 'ok') {
    files.set('model.safetensors', weights.bytes);
  } else {
    tracker.unplan('model.safetensors');
    const indexName = 'model.safetensors.index.json';
    tracker.plan([indexName]);
    const index = await download(indexName);
    if (index.kind === 'missing') {
      throw missingFile(
        location,
        'model.safetensors (nor model.safetensors.index.json)',
        'Tunelab reads weights in the safetensors format. A model saved only as pytorch_model.bin can be converted ' +
          'with save_pretrained(safe_serialization=True); many Hub models also have a safetensors version on a ' +
          'branch such as refs/pr/1',
      );
    }
    const { shards, weightMap } = parseShardIndex(index.bytes);
    tracker.plan(shards);
    const shardFiles: { name: string; bytes: Uint8Array }[] = [];
    for (const shard of shards) {
      const result = await download(shard);
      if (result.kind === 'missing') {
        throw missingFile(location, shard, `${indexName} names it, but it is not there (HTTP ${result.status})`);
      }
      shardFiles.push({ name: shard, bytes: result.bytes });
    }
    shardCount = shards.length;
    files.set('model.safetensors', mergeSafetensorsShards(shardFiles, weightMap));
  }

  const fileList = MODEL_FILE_NAMES.map((name) => ({ name, bytes: files.get(name)!.length }));
  const totalBytes = fileList.reduce((sum, f) => sum + f.bytes, 0);
  let cacheError: HubError | null = null;
  if (cache) {
    try {
      await cache.put(location.cacheKey, files, location.description);
    } catch (error) {
      cacheError = await cacheWriteError(error, cache, location.name, totalBytes, location.cacheKey);
    }
  }
  return {
    location,
    source: memoryFilesSource(files, location.description),
    fromCache: false,
    files: fileList,
    totalBytes,
    shardCount,
    cacheError,
  };
}

/** fetchHubModel, then loadModel on its files. */
export async function loadHubModel(ref: string, options: HubLoadOptions = {}): Promise<{ model: LoadedModel; hub: HubModelFiles }> {
  const hub = await fetchHubModel(ref, options);
  return { model: await loadModel(hub.source), hub };
}
