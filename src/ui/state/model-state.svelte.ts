// The model the app works with, as the UI sees it: a summary of the loaded model (the weights stay in the engine
// worker), whether a load is under way, and why the last load failed. A failed load keeps the previous model.

import type { Failure, ModelRequest, ModelSummary, Outcome } from '../../workers/protocol.ts';

/** The model every visit starts with, relative to the page (the app is served from any sub-path). */
export const BUNDLED_MODEL = { path: 'models/tiny/', name: 'tiny' } as const;

/** The files a model folder must hold. */
export const MODEL_FILES = ['config.json', 'model.safetensors', 'tokenizer.json'] as const;

export type ModelPhase = 'idle' | 'loading' | 'ready' | 'failed';

export class ModelState {
  phase = $state<ModelPhase>('idle');
  /** The loaded model; stays while another one loads and when that load fails. */
  summary = $state.raw<ModelSummary | undefined>(undefined);
  /** Why the last load failed. */
  failure = $state.raw<Failure | undefined>(undefined);
  /** What is loading now ("tiny", "my-gpt2"; empty for loose files), for the progress line. */
  loadingName = $state<string | undefined>(undefined);

  private readonly load: (request: ModelRequest) => Promise<Outcome<ModelSummary>>;
  /** Only the newest load may change the state: a slow earlier one that finishes later is ignored. */
  private latestLoad = 0;

  constructor(load: (request: ModelRequest) => Promise<Outcome<ModelSummary>>) {
    this.load = load;
  }

  /** Loads the model that ships with the app (public/models/tiny/). */
  loadBundled(): Promise<void> {
    const url = new URL(BUNDLED_MODEL.path, document.baseURI).href;
    return this.run({ kind: 'url', url, name: BUNDLED_MODEL.name });
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
}
