// The model the app works with, as the UI sees it: a summary of the loaded model (the weights stay in the engine
// worker), whether a load is under way, and why the last load failed. A failed load keeps the previous model.
// Models from the Hugging Face Hub load through the same state, with their own progress, failure (shown beside the
// Hub field, with Retry) and the list of models the browser keeps for offline use.

import type {
  CachedHubModels,
  Failure,
  HubLoadProgress,
  HubModelLoaded,
  HubModelRequest,
  ModelRequest,
  ModelSummary,
  Outcome,
} from '../../workers/protocol.ts';
import { bundledModel, DEFAULT_BUNDLED_MODEL, type BundledModelChoice } from './bundled-models.ts';
import { readStored, writeStored } from './persist.ts';

/** The files a model folder must hold. */
export const MODEL_FILES = ['config.json', 'model.safetensors', 'tokenizer.json'] as const;

export type ModelPhase = 'idle' | 'loading' | 'ready' | 'failed';

/** How the GPU keeps the weights LoRA does not train: f32, or packed f16 (half the memory). */
export type FrozenWeights = 'f32' | 'f16';
const FROZEN_WEIGHTS_KEY = 'model.frozen-weights.v1';

/** The worker calls behind Hub loading (in the app: the trainer worker's "hub models" calls). */
export interface HubModelCalls {
  load(request: HubModelRequest, onProgress: (progress: HubLoadProgress) => void): Promise<Outcome<HubModelLoaded>>;
  cancel(): Promise<Outcome<boolean>>;
  list(): Promise<Outcome<CachedHubModels>>;
  remove(key: string): Promise<Outcome<boolean>>;
}

/** How the last Hub load ended when it worked. */
export interface HubLoadResult {
  name: string;
  fromCache: boolean;
  totalBytes: number;
  /** The model loaded but could not be kept for offline use (storage full): what to do about it. */
  cacheWarning: string | null;
}

export class ModelState {
  phase = $state<ModelPhase>('idle');
  /** The loaded model; stays while another one loads and when that load fails. */
  summary = $state.raw<ModelSummary | undefined>(undefined);
  /** Why the last load from a folder, files or the built-in model failed (Hub failures are `hubFailure`). */
  failure = $state.raw<Failure | undefined>(undefined);
  /** What is loading now ("tunelab-base", "my-gpt2", a Hub id; empty for loose files), for the progress line. */
  loadingName = $state<string | undefined>(undefined);

  /** The Hub model being loaded (what the learner typed), while it loads. */
  hubLoading = $state<string | undefined>(undefined);
  /** The Hub load's progress; kept after it ends so the bar can show where it stopped. */
  hubProgress = $state.raw<HubLoadProgress | undefined>(undefined);
  /** Why the last Hub load failed ('cancelled' when the learner stopped it). */
  hubFailure = $state.raw<Failure | undefined>(undefined);
  hubResult = $state.raw<HubLoadResult | undefined>(undefined);
  /** What the last Hub load asked for, so Retry can ask again. */
  lastHubRequest = $state.raw<HubModelRequest | undefined>(undefined);
  /** The models this browser keeps for offline use; undefined until listed. */
  cachedHubModels = $state.raw<CachedHubModels | undefined>(undefined);
  /** Why listing or deleting cached models failed. */
  cacheFailure = $state.raw<Failure | undefined>(undefined);
  /** How the frozen weights are kept on the GPU (remembered across visits). */
  frozenWeights = $state<FrozenWeights>(readStored(FROZEN_WEIGHTS_KEY) === 'f16' ? 'f16' : 'f32');
  /** Why the last change of `frozenWeights` was refused (a run is training …). */
  frozenWeightsFailure = $state.raw<Failure | undefined>(undefined);
  private readonly storeWeights: ((storage: FrozenWeights) => Promise<Outcome<FrozenWeights>>) | undefined;

  /** The built-in model of this visit (the default, or the one the page's ?model= names) and why, if not the asked one. */
  readonly bundled: BundledModelChoice;

  private readonly load: (request: ModelRequest) => Promise<Outcome<ModelSummary>>;
  private readonly hub: HubModelCalls | undefined;
  /** Only the newest load may change the state: a slow earlier one that finishes later is ignored. */
  private latestLoad = 0;

  constructor(
    load: (request: ModelRequest) => Promise<Outcome<ModelSummary>>,
    hub?: HubModelCalls,
    storeWeights?: (storage: FrozenWeights) => Promise<Outcome<FrozenWeights>>,
    bundled: BundledModelChoice = bundledModel(DEFAULT_BUNDLED_MODEL),
  ) {
    this.bundled = bundled;
    this.load = load;
    this.hub = hub;
    this.storeWeights = storeWeights;
  }

  /**
   * Keeps the frozen weights as f32 or f16 on the GPU from now on (the worker uploads the model again when it next
   * runs). Called with the current value, it tells a fresh worker the remembered choice.
   */
  async setFrozenWeights(storage: FrozenWeights): Promise<void> {
    if (!this.storeWeights) return;
    const before = this.frozenWeights;
    this.frozenWeights = storage;
    const outcome = await this.storeWeights(storage);
    if (outcome.ok) {
      this.frozenWeightsFailure = undefined;
      writeStored(FROZEN_WEIGHTS_KEY, storage);
    } else {
      this.frozenWeights = before;
      this.frozenWeightsFailure = outcome.failure;
    }
  }

  /** Loads the model that ships with the app (public/models/tunelab-base/, or the one ?model= picked). */
  loadBundled(): Promise<void> {
    const url = new URL(this.bundled.path, document.baseURI).href;
    return this.run({ kind: 'url', url, name: this.bundled.name });
  }

  /**
   * Loads a model from files the user picked: a folder (each File's webkitRelativePath names it) or the files
   * themselves. Only the three model files are sent to the worker; a folder may hold much else.
   */
  loadFiles(files: readonly File[]): Promise<void> {
    const wanted = files.filter((f) => (MODEL_FILES as readonly string[]).includes(f.name));
    // The folder's name when a folder was picked; empty for loose files (the worker then says "the selected files").
    const name = files.find((f) => f.webkitRelativePath)?.webkitRelativePath.split('/')[0] ?? '';
    // With none of the three files there is nothing to send, but the loader still says which file is missing first.
    return this.run({ kind: 'files', files: wanted.length ? wanted : [...files], name });
  }

  private async run(request: ModelRequest): Promise<void> {
    // A download still going would replace this model when it ends: stop it.
    if (this.hubLoading !== undefined) {
      void this.hub?.cancel();
      this.hubLoading = undefined;
    }
    const id = ++this.latestLoad;
    this.phase = 'loading';
    this.loadingName = request.name;
    this.failure = undefined;
    const outcome = await this.load(request);
    if (id !== this.latestLoad) return;
    this.loadingName = undefined;
    if (outcome.ok) {
      this.summary = outcome.value;
      this.phase = 'ready';
    } else {
      this.failure = outcome.failure;
      this.phase = 'failed';
    }
  }

  // ---- the Hugging Face Hub ----------------------------------------------------------------------------------------

  /**
   * Loads a model by Hub id or URL: from the browser's cache when it is there, else downloaded (only now does the app
   * contact the Hub). `refresh` downloads again even when cached.
   */
  async loadFromHub(ref: string, options: { refresh?: boolean } = {}): Promise<void> {
    if (!this.hub) return;
    const request: HubModelRequest = { ref: ref.trim(), ...(options.refresh ? { refresh: true } : {}) };
    const id = ++this.latestLoad;
    this.lastHubRequest = request;
    this.phase = 'loading';
    this.loadingName = request.ref;
    this.hubLoading = request.ref;
    this.hubProgress = undefined;
    this.hubFailure = undefined;
    this.hubResult = undefined;
    this.failure = undefined;
    const outcome = await this.hub.load(request, (progress) => {
      if (id === this.latestLoad && this.hubLoading !== undefined) this.hubProgress = progress;
    });
    if (id !== this.latestLoad) return;
    this.loadingName = undefined;
    this.hubLoading = undefined;
    if (outcome.ok) {
      const { summary, fromCache, totalBytes, cacheWarning } = outcome.value;
      this.summary = summary;
      this.phase = 'ready';
      this.hubResult = { name: summary.name, fromCache, totalBytes, cacheWarning };
    } else {
      this.hubFailure = outcome.failure;
      // A cancelled download is not a broken model: the previous one is simply still in use.
      this.phase = outcome.failure.code === 'cancelled' && this.summary ? 'ready' : 'failed';
    }
    await this.refreshCachedHubModels();
  }

  /** Asks for the last Hub model again (after a network failure, or a cancel). */
  retryHubLoad(): Promise<void> {
    return this.lastHubRequest ? this.loadFromHub(this.lastHubRequest.ref, { refresh: this.lastHubRequest.refresh }) : Promise.resolve();
  }

  /** Stops the Hub download under way; its load then ends with a 'cancelled' failure. */
  async cancelHubLoad(): Promise<void> {
    if (!this.hub || this.hubLoading === undefined) return;
    await this.hub.cancel();
  }

  async refreshCachedHubModels(): Promise<void> {
    if (!this.hub) return;
    const outcome = await this.hub.list();
    if (outcome.ok) {
      this.cachedHubModels = outcome.value;
      this.cacheFailure = undefined;
    } else {
      this.cacheFailure = outcome.failure;
    }
  }

  /** Removes a model from the browser's cache; the loaded model stays loaded. */
  async deleteCachedHubModel(key: string): Promise<void> {
    if (!this.hub) return;
    const outcome = await this.hub.remove(key);
    if (!outcome.ok) {
      this.cacheFailure = outcome.failure;
      return;
    }
    await this.refreshCachedHubModels();
  }
}
