// Worker-side state: the model the user is working with (config, weights on the CPU, tokenizer), kept here between
// coarse calls so that data validation, training and generation all use the same one. Only a plain `ModelSummary`
// ever leaves the worker. Loading a new model replaces the current one only when the new one loaded completely.

import type { FrozenWeightStorage } from '../engine/model/planner.ts';
import { TunelabError } from '../engine/errors.ts';
import type { GpuContext } from '../engine/gpu/context.ts';
import { headSize } from '../engine/model/config.ts';
import { Gpt2Model } from '../engine/model/gpt2.ts';
import type { LoraAdapter, LoraConfig } from '../engine/model/lora.ts';
import { fetchSource, fileListSource, loadModel, type LoadedModel, type ModelSource, type TokenizerJson } from '../engine/model/load.ts';
import { Tokenizer, byteLevelTokenizer } from '../engine/tokenizer/index.ts';
import {
  CacheApiModelCache,
  DEFAULT_HUB_ENDPOINT,
  fetchHubModel,
  HubError,
  resolveModelRef,
  type HubModelFiles,
  type HubProgress,
  type ModelCache,
  type ModelLocation,
} from '../engine/hub/index.ts';
import type { CachedHubModel, CachedHubModels, HubLoadProgress, HubModelLoaded, HubModelRequest, ModelRequest, ModelSummary } from './protocol.ts';

export interface ModelSession {
  readonly loaded: LoadedModel;
  readonly tokenizer: Tokenizer;
  readonly summary: ModelSummary;
}

let current: ModelSession | undefined;
let generation = 0;

/** The model in use, if one has loaded. Training and generation read the weights from `loaded.weights`. */
export function currentModel(): ModelSession | undefined {
  return current;
}

function sourceOf(request: ModelRequest): ModelSource {
  if (request.kind === 'url') return fetchSource(request.url);
  if (request.files.length === 0) {
    throw new TunelabError('bad-model', 'no files were chosen; pick config.json, model.safetensors and tokenizer.json');
  }
  const description = request.name ? `the folder "${request.name}"` : 'the selected files';
  return fileListSource(request.files, description);
}

/** Loads a model from a URL or from files and makes it the current one. A failure leaves the current model as it was. */
export async function openModel(request: ModelRequest): Promise<ModelSummary> {
  const source = sourceOf(request);
  const loaded = await loadModel(source);
  return makeCurrent(loaded, {
    name: request.name || (request.kind === 'files' ? 'model from files' : 'model'),
    origin: request.kind === 'url' ? 'bundled' : 'files',
    source: source.description,
  });
}

/** Builds the tokenizer of a model that loaded completely and makes the model the current one. */
function makeCurrent(loaded: LoadedModel, identity: Pick<ModelSummary, 'name' | 'origin' | 'source'>): ModelSummary {
  const tokenizer = Tokenizer.fromJson(loaded.tokenizerJson, { name: `tokenizer.json of ${identity.name}` });
  generation++;
  const summary = describeModel(loaded, tokenizer, { generation, ...identity });
  current = { loaded, tokenizer, summary };
  return summary;
}

function describeModel(
  loaded: LoadedModel,
  tokenizer: Tokenizer,
  identity: Pick<ModelSummary, 'generation' | 'name' | 'origin' | 'source'>,
): ModelSummary {
  const { config, weights } = loaded;
  return {
    ...identity,
    parameterCount: weights.layout.parameterCount,
    layers: config.nLayer,
    heads: config.nHead,
    width: config.nEmbd,
    headSize: headSize(config),
    context: config.nPositions,
    vocabSize: config.vocabSize,
    weightBytes: weights.layout.parameterCount * 4,
    tokenizer: {
      kind: tokenizerKind(loaded.tokenizerJson),
      vocabSize: tokenizer.vocabSize,
      endOfText: tokenizer.endOfText,
    },
    warnings: [...loaded.warnings],
  };
}

/** Whether a pre-tokenizer (possibly a Sequence of them) splits text into bytes the way GPT-2's does. */
function isByteLevel(preTokenizer: unknown): boolean {
  if (typeof preTokenizer !== 'object' || preTokenizer === null) return false;
  const p = preTokenizer as { type?: unknown; pretokenizers?: unknown };
  if (p.type === 'ByteLevel') return true;
  return p.type === 'Sequence' && Array.isArray(p.pretokenizers) && p.pretokenizers.some(isByteLevel);
}

/** A learner-readable name for the tokenizer: "byte-level (one token per byte)", "byte-level BPE (50,000 merges)". */
export function tokenizerKind(json: TokenizerJson): string {
  const type = typeof json.model.type === 'string' ? json.model.type : 'unknown';
  const byteLevel = isByteLevel(json.pre_tokenizer);
  if (type === 'BPE') {
    const merges = Array.isArray(json.model.merges) ? json.model.merges.length : 0;
    if (merges === 0) return byteLevel ? 'byte-level (one token per byte)' : 'BPE without merges';
    return `${byteLevel ? 'byte-level BPE' : 'BPE'} (${merges.toLocaleString('en-US')} merges)`;
  }
  return byteLevel ? `byte-level ${type}` : type;
}

// ---- the current model's weights on the GPU ----------------------------------------------------------------------

let uploaded: { generation: number; gpu: GpuContext; model: Gpt2Model } | undefined;

/**
 * The current model's weights on the GPU, uploaded on first use and shared by everything that runs the model (training
 * binds them, generation binds them), so that a model is on the GPU once. A new model or a new device replaces it;
 * the replaced weights are freed, so nothing may keep using a Gpt2Model across a model change.
 */
export function currentGpuModel(gpu: GpuContext): Gpt2Model {
  if (!current) throw new TunelabError('bad-model', 'no model is loaded yet');
  if (uploaded && uploaded.generation === current.summary.generation && uploaded.gpu === gpu && uploaded.model.frozenWeights === frozenWeights) {
    return uploaded.model;
  }
  if (uploaded && uploaded.gpu === gpu) uploaded.model.destroy();
  const { config, weights } = current.loaded;
  uploaded = { generation: current.summary.generation, gpu, model: Gpt2Model.create(gpu, config, weights, { frozenWeights }) };
  return uploaded.model;
}

// How the GPU keeps the weights LoRA leaves frozen: f32, or packed f16 (half their memory, f16-rounded weights).
let frozenWeights: FrozenWeightStorage = 'f32';

/** The storage the next upload of the model uses (the app's setting). */
export function frozenWeightStorage(): FrozenWeightStorage {
  return frozenWeights;
}

/**
 * Chooses how the frozen weights are kept on the GPU. The model is uploaded again (in the new form) the next time
 * something runs it; the adapters are not touched.
 */
export function setFrozenWeightStorage(storage: FrozenWeightStorage): void {
  if (storage !== 'f32' && storage !== 'f16') throw new TunelabError('bad-data', `frozen weights are kept as f32 or f16, not ${String(storage)}`);
  frozenWeights = storage;
}

/** Context validation assumes before any model has loaded: GPT-2's. */
export const FALLBACK_CONTEXT = 1024;
let fallbackTokenizer: Tokenizer | undefined;

/** The tokenizer and context data is counted with: the current model's, else the byte-level tokenizer and 1024. */
export function countingTokenizer(): { tokenizer: Tokenizer; context: number; modelGeneration: number | null } {
  if (current) {
    return { tokenizer: current.tokenizer, context: current.loaded.config.nPositions, modelGeneration: current.summary.generation };
  }
  fallbackTokenizer ??= byteLevelTokenizer();
  return { tokenizer: fallbackTokenizer, context: FALLBACK_CONTEXT, modelGeneration: null };
}

// ---- the adapter the last training run left --------------------------------------------------------------------

export interface TrainedAdapter {
  adapter: LoraAdapter;
  /** The LoRA configuration it was trained with. */
  spec: LoraConfig;
  /** The run that trained it (RunRecord.id). */
  runId: string;
  /** The device its weights live on (after a GPU reset they are gone with it). */
  gpu: GpuContext;
}

let trained: (TrainedAdapter & { modelGeneration: number }) | undefined;

/**
 * Makes `adapter` the fine-tuned adapter (the playground generates with it, exportAdapter writes it), or clears it.
 * The adapter it replaces is destroyed: whoever binds it (a generator) must re-read currentTrainedAdapter() before
 * each use and rebuild when the adapter changed.
 */
export function setTrainedAdapter(adapter: TrainedAdapter | null): void {
  const previous = trained;
  trained = adapter ? { ...adapter, modelGeneration: current?.summary.generation ?? -1 } : undefined;
  if (previous && previous.adapter !== adapter?.adapter) previous.adapter.destroy();
}

/** The last run's adapter, or null when there is none or another model has loaded since (it belongs to the old one). */
export function currentTrainedAdapter(): TrainedAdapter | null {
  if (!trained || trained.modelGeneration !== current?.summary.generation) return null;
  const { adapter, spec, runId, gpu } = trained;
  return { adapter, spec, runId, gpu };
}

// ---- models from the Hugging Face Hub ------------------------------------------------------------------------------

/** Progress messages to the page: about ten a second, so a fast download does not flood the message channel. */
const PROGRESS_INTERVAL_MS = 100;

/**
 * Forwards progress at most every PROGRESS_INTERVAL_MS, always at once when the file changes or a file completes (so
 * a stalled download still shows where it stopped), and the newest held-back one after the interval.
 */
class ProgressThrottle {
  private lastSent = 0;
  private lastFile = '';
  private pending: HubLoadProgress | undefined;
  private timer: ReturnType<typeof setTimeout> | undefined;

  constructor(private readonly send: (progress: HubLoadProgress) => void) {}

  push(progress: HubLoadProgress): void {
    const now = Date.now();
    const milestone =
      progress.file !== this.lastFile || progress.stage !== 'download' || progress.fileLoaded === progress.fileTotal;
    if (milestone || now - this.lastSent >= PROGRESS_INTERVAL_MS) {
      this.emit(progress, now);
      return;
    }
    this.pending = progress;
    this.timer ??= setTimeout(() => {
      this.timer = undefined;
      if (this.pending) this.emit(this.pending, Date.now());
    }, PROGRESS_INTERVAL_MS - (now - this.lastSent));
  }

  /** Drops anything held back (the load ended). */
  stop(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.pending = undefined;
  }

  private emit(progress: HubLoadProgress, now: number): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.pending = undefined;
    this.lastSent = now;
    this.lastFile = progress.file;
    this.send(progress);
  }
}

// The browser's Cache Storage, opened on first use; null (with the reason) where this context has none.
let hubCache: { cache: ModelCache | null; unavailable: string | null } | undefined;

function hubModelCache(): { cache: ModelCache | null; unavailable: string | null } {
  if (hubCache) return hubCache;
  try {
    hubCache = { cache: new CacheApiModelCache(), unavailable: null };
  } catch (error) {
    hubCache = { cache: null, unavailable: error instanceof Error ? error.message : String(error) };
  }
  return hubCache;
}

/** The download under way; a new one or cancelHubLoad() aborts it. */
let hubDownload: AbortController | undefined;

/** Aborts the Hub load under way (it then fails with code 'cancelled'); false when none is. */
export function cancelHubLoad(): boolean {
  if (!hubDownload) return false;
  hubDownload.abort();
  return true;
}

/** Where a learner can look at the model: its page on the Hub (at the revision), or the folder URL. */
function modelPageUrl(location: ModelLocation): string {
  if (location.kind !== 'hub') return location.baseUrl;
  const page = `${location.endpoint}/${location.repo}`;
  return location.revision === 'main' ? page : `${page}/tree/${encodeURIComponent(location.revision!)}`;
}

/** The name the Model panel shows: the repo id (with its revision when that is not main), or the folder URL. */
function modelDisplayName(location: ModelLocation): string {
  if (location.kind !== 'hub') return location.baseUrl;
  return location.revision === 'main' ? location.repo! : `${location.repo}@${location.revision}`;
}

/** Reports each file read from the cache as progress: loading from the cache reads the files inside loadModel. */
function reportingCacheReads(hub: HubModelFiles, report: (progress: HubLoadProgress) => void): ModelSource {
  const sizes = new Map(hub.files.map((f) => [f.name, f.bytes]));
  let loaded = 0;
  return {
    description: hub.source.description,
    async read(fileName) {
      const bytes = await hub.source.read(fileName);
      loaded += bytes?.length ?? 0;
      const fileTotal = sizes.get(fileName) ?? bytes?.length ?? null;
      report({ stage: 'cache', file: fileName, fileLoaded: bytes?.length ?? 0, fileTotal, loaded, total: hub.totalBytes || null });
      return bytes;
    },
  };
}

export interface HubOpenOptions {
  /** Progress, throttled here to about ten updates a second. */
  onProgress?: (progress: HubLoadProgress) => void;
  /** Throws when the current model may not be replaced now (a training run started during the download). */
  checkReplaceable?: () => void;
}

/**
 * Loads a GPT-2-family model from the Hugging Face Hub (or a folder URL) and makes it the current one: from the
 * browser's cache when it is there (no network), else downloaded and kept there for next time. Fails with a HubError
 * a learner can act on (not found, unsupported architecture, network, CORS; 'cancelled' after cancelHubLoad). A model
 * that loaded but could not be kept (storage full) is a success with a `cacheWarning`. A failure leaves the current
 * model as it was.
 */
export async function openHubModel(request: HubModelRequest, options: HubOpenOptions = {}): Promise<HubModelLoaded> {
  const location = resolveModelRef(request.ref);
  hubDownload?.abort();
  const controller = new AbortController();
  hubDownload = controller;
  const throttle = new ProgressThrottle((progress) => options.onProgress?.(progress));
  const { cache, unavailable } = hubModelCache();
  try {
    const hub = await fetchHubModel(request.ref, {
      cache,
      refresh: request.refresh ?? false,
      signal: controller.signal,
      onProgress: (p: HubProgress) => throttle.push({ stage: 'download', ...p }),
    });
    const source = hub.fromCache ? reportingCacheReads(hub, (p) => throttle.push(p)) : hub.source;
    if (!hub.fromCache) {
      throttle.push({ stage: 'reading', file: 'model.safetensors', fileLoaded: 0, fileTotal: null, loaded: hub.totalBytes, total: hub.totalBytes });
    }
    let loaded: LoadedModel;
    try {
      loaded = await loadModel(source);
    } catch (error) {
      // Files that do not load are no use kept: drop them, so the cache lists only models that work.
      if (cache) await cache.delete(location.cacheKey).catch(() => false);
      if (hub.fromCache && error instanceof TunelabError) {
        throw new TunelabError(
          error.code,
          `${error.message}. The copy saved in this browser was damaged and has been removed; Load downloads it again`,
        );
      }
      throw error;
    }
    if (controller.signal.aborted) throw new HubError('aborted', 'the download was cancelled');
    options.checkReplaceable?.();
    const summary = makeCurrent(loaded, { name: modelDisplayName(location), origin: 'hub', source: modelPageUrl(location) });
    let cacheWarning = hub.cacheError?.message ?? null;
    if (!cache && !hub.fromCache) cacheWarning = `${unavailable ?? 'there is no cache'}. The model is loaded for this session only.`;
    return { summary, fromCache: hub.fromCache, totalBytes: hub.totalBytes, cacheWarning };
  } finally {
    throttle.stop();
    if (hubDownload === controller) hubDownload = undefined;
  }
}

/** What to type to load a cache entry again ('gpt2', 'user/repo@dev', a URL), from its key; null for another Hub. */
function refOfCacheKey(key: string): { ref: string; name: string; revision: string | null } | null {
  const hubPrefix = `hub:${DEFAULT_HUB_ENDPOINT}/`;
  if (key.startsWith(hubPrefix)) {
    const rest = key.slice(hubPrefix.length);
    const at = rest.lastIndexOf('@');
    if (at <= 0) return null;
    const repo = rest.slice(0, at);
    const revision = rest.slice(at + 1);
    return { ref: revision === 'main' ? repo : `${repo}@${revision}`, name: repo, revision };
  }
  if (key.startsWith('url:')) return { ref: key.slice(4), name: key.slice(4), revision: null };
  return null;
}

/** The models kept in the browser's cache (largest first) and the site's storage use. */
export async function listCachedHubModels(): Promise<CachedHubModels> {
  const { cache, unavailable } = hubModelCache();
  if (!cache) return { models: [], storage: null, unavailable };
  const models: CachedHubModel[] = [];
  for (const entry of await cache.list()) {
    const ref = refOfCacheKey(entry.key);
    if (ref) models.push({ key: entry.key, ...ref, bytes: entry.totalBytes, savedAt: entry.savedAt });
  }
  return { models, storage: await cache.storageEstimate(), unavailable: null };
}

/** Removes one model from the cache (the loaded model stays loaded); false when it was not there. */
export async function deleteCachedHubModel(key: string): Promise<boolean> {
  const { cache } = hubModelCache();
  return cache ? cache.delete(key) : false;
}
