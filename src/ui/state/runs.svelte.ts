// The runs the learner keeps: every finished training run and every imported adapter, saved in the browser
// (runs-store.ts), listed newest first. Rename, delete, pick several to compare their loss curves, export an adapter
// as PEFT files, import one, or load a saved run's adapter into the playground. Storage problems are said in words:
// a full disk names the runs that take the most space, and a run that could not be saved waits here to be saved
// again; nothing saved before is lost.

import { strToU8, unzipSync, zipSync } from 'fflate';
import type {
  AdapterImportRequest,
  AdapterInfo,
  Failure,
  Outcome,
  ProbeSnapshot,
  RunMetric,
  RunRecord,
  TrainingRequest,
  TrainingUpdate,
} from '../../workers/protocol.ts';
import { formatBytes } from '../format.ts';
import { readStored, removeStored, writeStored } from './persist.ts';
import { RunsStore, RunsStoreError, type AdapterFiles, type SavedRun } from './runs-store.ts';

export type { AdapterFiles, SavedRun } from './runs-store.ts';

/** The saved run whose adapter the playground used last, so that a reload brings it back. */
const PLAYGROUND_RUN_KEY = 'runs.playground-run.v1';

export const ADAPTER_CONFIG_FILE = 'adapter_config.json';
export const ADAPTER_WEIGHTS_FILE = 'adapter_model.safetensors';

/** A run's loss history as chart series: steps and values. */
export interface LossCurves {
  train: { steps: number[]; loss: number[] };
  validation: { steps: number[]; loss: number[] };
}

/** Train loss per optimizer step ('step' events) and validation loss per evaluation ('eval' events). */
export function lossCurves(metrics: readonly unknown[]): LossCurves {
  const curves: LossCurves = { train: { steps: [], loss: [] }, validation: { steps: [], loss: [] } };
  for (const event of metrics) {
    const e = event as { type?: unknown; step?: unknown; loss?: unknown } | null;
    if (typeof e !== 'object' || e === null || typeof e.step !== 'number' || typeof e.loss !== 'number') continue;
    if (!Number.isFinite(e.loss)) continue;
    const series = e.type === 'step' ? curves.train : e.type === 'eval' ? curves.validation : undefined;
    if (!series) continue;
    series.steps.push(e.step);
    series.loss.push(e.loss);
  }
  return curves;
}

/** Roughly what a run takes in storage: its adapter and its metric history. */
export function runBytes(run: SavedRun): number {
  return (run.adapter?.bytes ?? 0) + JSON.stringify(run.metrics).length + JSON.stringify(run.config ?? null).length;
}

/** A name that is safe as a file or folder name on every system. */
export function fileSafeName(name: string): string {
  const safe = name
    .trim()
    .replace(/[^\p{L}\p{N}._-]+/gu, '-')
    .replace(/^-+|-+$/g, '');
  return safe.slice(0, 80) || 'adapter';
}

/** What the import needs from the chosen files: the two PEFT files, from loose files or from a .zip. */
export async function readAdapterFiles(files: readonly File[]): Promise<{ files: AdapterFiles; name: string }> {
  const entries = new Map<string, () => Promise<Uint8Array>>();
  let name = '';
  for (const file of files) {
    if (/\.zip$/i.test(file.name)) {
      name ||= file.name.replace(/\.zip$/i, '');
      const unzipped = unzipSync(new Uint8Array(await file.arrayBuffer()));
      for (const [path, bytes] of Object.entries(unzipped)) {
        if (!path.endsWith('/')) entries.set(path.split('/').pop()!, async () => bytes);
      }
    } else {
      name ||= file.webkitRelativePath.split('/')[0] ?? '';
      entries.set(file.name, async () => new Uint8Array(await file.arrayBuffer()));
    }
  }
  const config = entries.get(ADAPTER_CONFIG_FILE);
  const weights =
    entries.get(ADAPTER_WEIGHTS_FILE) ?? [...entries].find(([fileName]) => fileName.endsWith('.safetensors'))?.[1];
  if (!config || !weights) {
    const missing = [!config && ADAPTER_CONFIG_FILE, !weights && ADAPTER_WEIGHTS_FILE].filter(Boolean).join(' and ');
    throw new Error(
      `${missing} ${missing.includes(' and ') ? 'are' : 'is'} missing: choose both ${ADAPTER_CONFIG_FILE} and ` +
        `${ADAPTER_WEIGHTS_FILE} (select the two files together), or a .zip that holds them`,
    );
  }
  let adapterConfigJson: string;
  try {
    adapterConfigJson = new TextDecoder('utf-8', { fatal: true }).decode(await config());
  } catch {
    throw new Error(`${ADAPTER_CONFIG_FILE} is not UTF-8 text`);
  }
  return { files: { adapterConfigJson, adapterModel: await weights() }, name };
}

/** One .zip holding a folder with the adapter's two files, as PEFT's save_pretrained writes them. */
export function adapterZip(folder: string, files: AdapterFiles): Uint8Array {
  return zipSync({
    [`${folder}/${ADAPTER_CONFIG_FILE}`]: strToU8(files.adapterConfigJson),
    // Safetensors is mostly floats that do not compress: store it as it is.
    [`${folder}/${ADAPTER_WEIGHTS_FILE}`]: [files.adapterModel, { level: 0 }],
  });
}

/** Saves bytes as a download with this file name. */
export function downloadBytes(fileName: string, bytes: Uint8Array | string, type: string): void {
  const blob = new Blob([typeof bytes === 'string' ? bytes : (bytes as Uint8Array<ArrayBuffer>)], { type });
  const url = URL.createObjectURL(blob);
  const link = document.createElement('a');
  link.href = url;
  link.download = fileName;
  link.rel = 'noopener';
  link.style.display = 'none';
  document.body.append(link);
  link.click();
  link.remove();
  // The download has started from the click; the URL only has to outlive the navigation.
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

/** A storage problem to show: what happened, and what to do. */
export interface RunsProblem {
  kind: 'quota' | 'unavailable' | 'other';
  message: string;
}

export interface RunsDependencies {
  /** Reads and checks a PEFT adapter in the worker and makes it the playground's adapter. */
  importAdapter: (request: AdapterImportRequest) => Promise<Outcome<AdapterInfo>>;
  /** The loaded model's name, recorded with imported runs. */
  modelName: () => string;
  /** Told whenever the playground's adapter changed here (an import, a saved run loaded). */
  onAdapterChanged?: (adapter: AdapterInfo) => void;
  store?: RunsStore;
}

export class RunsState {
  /** Saved runs, newest first. */
  runs = $state.raw<SavedRun[]>([]);
  /** 'loading' until the first list has been read. */
  phase = $state<'loading' | 'ready' | 'unavailable'>('loading');
  /** Ids of the runs whose curves the comparison chart shows. */
  compared = $state<string[]>([]);
  /** What went wrong with the last storage operation, or null. */
  problem = $state.raw<RunsProblem | null>(null);
  /** A finished run that could not be saved (storage full): kept in memory until "Save again" works. */
  unsaved = $state.raw<{ run: SavedRun; files: AdapterFiles | null } | null>(null);
  /** A line for the status region ("Saved …", "Deleted …"). */
  notice = $state('');
  importing = $state(false);
  /** Why the last import failed (bad files, wrong model), or null. */
  importFailure = $state.raw<Failure | null>(null);
  /** Run whose adapter is being loaded into the playground. */
  loadingRunId = $state<string | null>(null);
  /** Bytes used and available for this page's storage, when the browser says. */
  storage = $state.raw<{ usage: number; quota: number } | null>(null);
  /** The run training in this tab now (its record says 'interrupted' while it goes), or null. */
  activeRunId = $state<string | null>(null);
  /** Bytes of each run's stored checkpoint, by run id (part of what a run takes in storage). */
  checkpointSizes = $state.raw<ReadonlyMap<string, number>>(new Map());

  readonly comparedRuns: SavedRun[] = $derived(this.runs.filter((run) => this.compared.includes(run.id)));

  private readonly store: RunsStore;
  private readonly deps: RunsDependencies;

  constructor(deps: RunsDependencies) {
    this.deps = deps;
    this.store = deps.store ?? new RunsStore();
  }

  /** Reads the saved runs (on start, and after another tab may have changed them). */
  async load(): Promise<void> {
    try {
      this.runs = await this.store.list();
      this.checkpointSizes = await this.store.checkpointBytes();
      this.phase = 'ready';
      // Runs compared before a reload that no longer exist drop out.
      this.compared = this.compared.filter((id) => this.runs.some((run) => run.id === id));
    } catch (error) {
      this.phase = 'unavailable';
      this.problem = this.toProblem(error);
    }
    void this.refreshStorage();
  }

  async refreshStorage(): Promise<void> {
    try {
      const estimate = await navigator.storage?.estimate?.();
      if (estimate?.quota !== undefined) this.storage = { usage: estimate.usage ?? 0, quota: estimate.quota };
    } catch {
      // Only informative: a browser that does not say leaves the line out.
    }
  }

  /** The runs that take the most storage, named with their sizes (not the run going now), or '' when there are none. */
  private largestRuns(): string {
    const size = (run: SavedRun) => runBytes(run) + (this.checkpointSizes.get(run.id) ?? 0);
    const deletable = this.runs.filter((run) => run.id !== this.activeRunId);
    const largest = deletable.sort((a, b) => size(b) - size(a)).slice(0, 3);
    return largest.map((run) => `"${run.name}" (${formatBytes(size(run))})`).join(', ');
  }

  private toProblem(error: unknown, unsavedName?: string): RunsProblem {
    if (error instanceof RunsStoreError && error.problem === 'quota') {
      const names = this.largestRuns();
      return {
        kind: 'quota',
        message:
          `The browser's storage for this page is full${unsavedName ? `, so "${unsavedName}" was not saved` : ''}. ` +
          (names
            ? `Delete runs you no longer need (the largest: ${names}), then ${unsavedName ? 'press "Save again"' : 'try again'}. `
            : "Free space for this site in the browser's settings, then try again. ") +
          'Runs saved before are untouched.',
      };
    }
    const message = error instanceof Error ? error.message : String(error);
    return { kind: error instanceof RunsStoreError ? error.problem : 'other', message: `${message[0]?.toUpperCase() ?? ''}${message.slice(1)}.` };
  }


  /**
   * Saves a run with its adapter files. On a full disk the run is kept as `unsaved` (see retrySave) and the problem
   * names what to delete. Returns whether it was saved.
   */
  async save(run: SavedRun, files: AdapterFiles | null): Promise<boolean> {
    try {
      await this.store.save(run, files);
    } catch (error) {
      this.unsaved = { run, files };
      this.problem = this.toProblem(error, run.name);
      return false;
    }
    if (this.unsaved?.run.id === run.id) this.unsaved = null;
    this.problem = null;
    this.runs = [run, ...this.runs.filter((r) => r.id !== run.id)].sort((a, b) => b.createdAt - a.createdAt);
    this.notice = `Saved "${run.name}".`;
    void this.refreshStorage();
    return true;
  }

  /**
   * Saves a training run that just ended (the worker's getRunRecord) with its adapter's PEFT files (exportAdapter),
   * once: a run already saved, and perhaps renamed since, is left as it is. `adapter` describes the trained adapter
   * (the worker's adapterStatus); files and adapter are null for a run that left none.
   */
  async saveTrainedRun(record: RunRecord, files: AdapterFiles | null, adapter: AdapterInfo | null): Promise<boolean> {
    // Saved while it went (checkpoints): replaced by the ended run, keeping a name given meanwhile.
    const inProgress = this.runs.find((run) => run.id === record.id && run.status === 'interrupted');
    if (this.runs.some((run) => run.id === record.id) && !inProgress) return true;
    // A failed run keeps its checkpoint (it can resume from it); a finished or cancelled one keeps its adapter instead.
    const keepsCheckpoint = record.status === 'failed' && inProgress?.checkpointStep !== undefined;
    const saved = await this.save(
      {
        id: record.id,
        name: inProgress?.name ?? record.name,
        source: 'trained',
        createdAt: record.startedAt,
        status: record.status,
        finalLoss: record.finalLoss,
        finalValLoss: record.finalValLoss,
        config: record.config,
        datasetFingerprint: record.datasetFingerprint,
        metrics: record.metrics,
        probes: record.probes,
        modelName: record.modelName,
        steps: record.steps,
        totalSteps: record.totalSteps,
        ...(keepsCheckpoint ? { checkpointStep: inProgress!.checkpointStep } : {}),
        adapter:
          files && adapter
            ? {
                rank: adapter.rank,
                alpha: adapter.alpha,
                targets: adapter.targets,
                layers: adapter.layers,
                parameterCount: adapter.parameterCount,
                bytes: files.adapterModel.byteLength,
              }
            : null,
      },
      files,
    );
    if (saved && files && adapter?.runId === record.id) this.rememberPlaygroundRun(record.id);
    if (saved && !keepsCheckpoint && inProgress) await this.dropCheckpoint(record.id);
    return saved;
  }

  // ---- runs in progress: requests, checkpoints, resume ----------------------------------------------------------

  /** Keeps the request a run starts with (its data and settings): what resuming it and its recipe need. */
  async keepRequest(request: TrainingRequest): Promise<void> {
    try {
      await this.store.saveRequest(request.runId, request);
    } catch (error) {
      this.problem = this.toProblem(error);
    }
  }

  /**
   * Keeps a run's checkpoint with its record so far (status 'interrupted'), replacing the previous one in the same
   * transaction. Resolves to null when kept, else to why not; a failure loses nothing saved before.
   */
  async saveCheckpoint(
    update: Extract<TrainingUpdate, { type: 'checkpoint' }>,
    request: TrainingRequest,
    run: { startedAt: number; modelName: string },
  ): Promise<string | null> {
    const existing = this.runs.find((r) => r.id === request.runId);
    const lastStep = update.metrics.findLast((m) => m.type === 'step');
    const lastEval = update.metrics.findLast((m) => m.type === 'eval');
    const saved: SavedRun = {
      id: request.runId,
      name: existing?.name ?? request.name,
      source: 'trained',
      createdAt: run.startedAt,
      status: 'interrupted',
      finalLoss: lastStep?.loss ?? null,
      finalValLoss: lastEval?.loss ?? null,
      config: request.settings,
      datasetFingerprint: existing?.datasetFingerprint ?? null,
      metrics: update.metrics,
      probes: update.probes,
      modelName: run.modelName,
      adapter: null,
      steps: update.step,
      totalSteps: update.totalSteps,
      checkpointStep: update.step,
    };
    try {
      await this.store.saveCheckpoint(saved, { runId: saved.id, step: update.step, savedAt: Date.now(), files: update.files });
    } catch (error) {
      const kept =
        existing?.checkpointStep !== undefined
          ? `Training goes on; its checkpoint at step ${existing.checkpointStep} is still saved.`
          : 'Training goes on, but until a checkpoint is saved a reload would lose this run.';
      if (error instanceof RunsStoreError && error.problem === 'quota') {
        const names = this.largestRuns();
        this.problem = {
          kind: 'quota',
          message:
            `The browser's storage for this page is full, so the checkpoint at step ${update.step} was not saved. ` +
            (names ? `Delete runs you no longer need (the largest: ${names}); ` : "Free space for this site in the browser's settings; ") +
            `the next checkpoint is saved once there is room. ${kept} Nothing saved before was lost.`,
        };
      } else {
        const problem = this.toProblem(error);
        this.problem = { ...problem, message: `${problem.message} ${kept}` };
      }
      return this.problem.message;
    }
    const bytes = Object.values(update.files).reduce((sum, file) => sum + file.byteLength, 0);
    this.checkpointSizes = new Map([...this.checkpointSizes, [saved.id, bytes]]);
    this.runs = [saved, ...this.runs.filter((r) => r.id !== saved.id)].sort((a, b) => b.createdAt - a.createdAt);
    if (this.problem?.kind === 'quota' && !this.unsaved) this.problem = null;
    return null;
  }

  private async dropCheckpoint(runId: string): Promise<void> {
    try {
      await this.store.deleteCheckpoint(runId);
      const sizes = new Map(this.checkpointSizes);
      sizes.delete(runId);
      this.checkpointSizes = sizes;
    } catch {
      // Only space: the run is saved with its adapter, and a stale checkpoint is deleted with the run.
    }
  }

  /** Whether a saved run can continue from a stored checkpoint (and is not the run going now). */
  canResume(run: SavedRun): boolean {
    return run.checkpointStep !== undefined && run.id !== this.activeRunId && (run.status === 'interrupted' || run.status === 'failed');
  }

  /**
   * The request that continues a saved run from its checkpoint: its data, settings and history up to the checkpoint.
   * Null (with the problem shown) when something it needs is no longer stored.
   */
  async resumeRequest(id: string): Promise<TrainingRequest | null> {
    const run = this.runs.find((r) => r.id === id);
    if (!run) return null;
    try {
      const [request, checkpoint] = await Promise.all([this.store.request(id), this.store.checkpoint(id)]);
      if (!request || !checkpoint) {
        this.problem = {
          kind: 'other',
          message: `"${run.name}" cannot be resumed: its ${request ? 'checkpoint' : 'data'} is no longer stored. Start it again from the Training panel.`,
        };
        return null;
      }
      this.problem = null;
      return {
        ...request,
        name: run.name,
        resume: {
          checkpoint: checkpoint.files,
          startedAt: run.createdAt,
          metrics: run.metrics as RunMetric[],
          probes: (run.probes ?? []) as ProbeSnapshot[],
        },
      };
    } catch (error) {
      this.problem = this.toProblem(error);
      return null;
    }
  }

  /** Tries again to save the run that did not fit. */
  async retrySave(): Promise<boolean> {
    if (!this.unsaved) return true;
    return this.save(this.unsaved.run, this.unsaved.files);
  }

  /** Forgets the run that could not be saved. */
  discardUnsaved(): void {
    this.unsaved = null;
    if (this.problem?.kind === 'quota') this.problem = null;
  }

  async rename(id: string, name: string): Promise<boolean> {
    const trimmed = name.trim();
    if (!trimmed) return false;
    try {
      const renamed = await this.store.rename(id, trimmed);
      this.runs = this.runs.map((run) => (run.id === id ? renamed : run));
      this.problem = null;
      this.notice = `Renamed to "${trimmed}".`;
      return true;
    } catch (error) {
      this.problem = this.toProblem(error);
      return false;
    }
  }

  async delete(id: string): Promise<boolean> {
    const run = this.runs.find((r) => r.id === id);
    try {
      await this.store.delete(id);
    } catch (error) {
      this.problem = this.toProblem(error);
      return false;
    }
    this.runs = this.runs.filter((r) => r.id !== id);
    if (readStored(PLAYGROUND_RUN_KEY) === id) this.rememberPlaygroundRun(null);
    this.compared = this.compared.filter((c) => c !== id);
    // Space was freed: a full-disk message about the past no longer holds (an unsaved run still offers "Save again").
    if (this.problem?.kind === 'quota' && !this.unsaved) this.problem = null;
    this.notice = run ? `Deleted "${run.name}".` : 'Deleted.';
    void this.refreshStorage();
    return true;
  }

  setCompared(id: string, on: boolean): void {
    const without = this.compared.filter((c) => c !== id);
    this.compared = on ? [...without, id] : without;
  }

  /** The adapter files of a saved run, or null (with a problem shown) when there are none. */
  async adapterFiles(id: string): Promise<AdapterFiles | null> {
    try {
      const files = await this.store.adapterFiles(id);
      if (!files) this.problem = { kind: 'other', message: 'This run has no saved adapter.' };
      return files;
    } catch (error) {
      this.problem = this.toProblem(error);
      return null;
    }
  }

  /** Downloads a run's adapter: one .zip with a folder of the two PEFT files, or one of the files alone. */
  async export(id: string, as: 'zip' | 'config' | 'weights' = 'zip'): Promise<void> {
    const run = this.runs.find((r) => r.id === id);
    const files = run ? await this.adapterFiles(id) : null;
    if (!run || !files) return;
    const folder = fileSafeName(run.name);
    if (as === 'zip') downloadBytes(`${folder}.zip`, adapterZip(folder, files), 'application/zip');
    else if (as === 'config') downloadBytes(ADAPTER_CONFIG_FILE, files.adapterConfigJson, 'application/json');
    else downloadBytes(ADAPTER_WEIGHTS_FILE, files.adapterModel, 'application/octet-stream');
    this.notice = `Exported "${run.name}".`;
  }

  /**
   * Imports an adapter from the two PEFT files (or a .zip of them): the worker checks it against the loaded model and
   * makes it the playground's adapter, then it is kept as an imported run.
   */
  async import(chosen: readonly File[]): Promise<void> {
    this.importing = true;
    this.importFailure = null;
    try {
      let read;
      try {
        read = await readAdapterFiles(chosen);
      } catch (error) {
        this.importFailure = { code: 'bad-model', message: error instanceof Error ? error.message : String(error) };
        return;
      }
      const id = `imported-${crypto.randomUUID()}`;
      const when = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' }).format(Date.now());
      const name = read.name || `Imported ${when}`;
      const outcome = await this.deps.importAdapter({ ...read.files, name, runId: id });
      if (!outcome.ok) {
        this.importFailure = outcome.failure;
        return;
      }
      const info = outcome.value;
      this.deps.onAdapterChanged?.(info);
      this.rememberPlaygroundRun(id);
      let config: unknown = null;
      try {
        config = JSON.parse(read.files.adapterConfigJson);
      } catch {
        // The worker parsed it already; unreachable in practice.
      }
      await this.save(
        {
          id,
          name,
          source: 'imported',
          createdAt: Date.now(),
          status: 'imported',
          finalLoss: null,
          finalValLoss: null,
          config,
          datasetFingerprint: null,
          metrics: [],
          modelName: this.deps.modelName(),
          adapter: {
            rank: info.rank,
            alpha: info.alpha,
            targets: info.targets,
            layers: info.layers,
            parameterCount: info.parameterCount,
            bytes: read.files.adapterModel.byteLength,
          },
        },
        read.files,
      );
    } finally {
      this.importing = false;
    }
  }

  /** Remembers the run the playground uses, for the next visit (see restorePlaygroundRun). */
  rememberPlaygroundRun(id: string | null): void {
    if (id === null) removeStored(PLAYGROUND_RUN_KEY);
    else writeStored(PLAYGROUND_RUN_KEY, id);
  }

  /**
   * After a reload the worker has no adapter: gives the playground back the saved run it used last, if that run is
   * still saved. Call once the runs are listed and a model is loaded; returns whether an adapter was restored.
   */
  async restorePlaygroundRun(): Promise<boolean> {
    const id = readStored(PLAYGROUND_RUN_KEY);
    if (typeof id !== 'string') return false;
    if (!this.runs.some((run) => run.id === id && run.adapter)) {
      this.rememberPlaygroundRun(null);
      return false;
    }
    return this.useInPlayground(id, { quiet: true });
  }

  /** Makes a saved run's adapter the playground's adapter. */
  async useInPlayground(id: string, options: { quiet?: boolean } = {}): Promise<boolean> {
    const run = this.runs.find((r) => r.id === id);
    if (!run) return false;
    this.loadingRunId = id;
    try {
      const files = await this.adapterFiles(id);
      if (!files) return false;
      const outcome = await this.deps.importAdapter({ ...files, name: run.name, runId: id });
      if (!outcome.ok) {
        // Restoring after a reload with another model loaded is not worth an alarm; a click is.
        if (!options.quiet) {
          this.problem = { kind: 'other', message: `"${run.name}" cannot be used with this model: ${outcome.failure.message}` };
        }
        return false;
      }
      if (!options.quiet) this.problem = null;
      this.rememberPlaygroundRun(id);
      this.deps.onAdapterChanged?.(outcome.value);
      this.notice = `The playground now uses "${run.name}".`;
      return true;
    } finally {
      this.loadingRunId = null;
    }
  }

  // ---- exports: merged model, ONNX, recipe (export-session.ts in the worker) ----------------------------------------
  // Types are written as import() so that this block is the only change to the file.

  /** The export being made now, or null. */
  exportingRun = $state.raw<{ id: string; what: 'merged' | 'onnx' | 'recipe' } | null>(null);

  /** A saved run's adapter and names for an export call; null (with a problem shown) when it has no adapter. */
  async exportRequest(id: string): Promise<import('../../workers/protocol.ts').ExportRequest | null> {
    const run = this.runs.find((r) => r.id === id);
    const adapter = run ? await this.adapterFiles(id) : null;
    if (!run || !adapter) return null;
    return { adapter, runName: run.name, folder: fileSafeName(run.name), modelName: run.modelName };
  }

  /** Runs one export in the worker and downloads its bytes; a failure becomes the panel's problem, in words. */
  private async exportFile(
    id: string,
    what: 'merged' | 'onnx' | 'recipe',
    make: (run: SavedRun) => Promise<import('../../workers/protocol.ts').Outcome<Uint8Array> | null>,
    file: (folder: string) => { name: string; type: string },
  ): Promise<void> {
    const run = this.runs.find((r) => r.id === id);
    if (!run || this.exportingRun) return;
    const label = { merged: 'merged model', onnx: 'ONNX model', recipe: 'recipe' }[what];
    this.exportingRun = { id, what };
    this.notice = `Making the ${label} of "${run.name}"…`;
    try {
      const outcome = await make(run);
      if (!outcome) return; // the reason is already the problem shown
      if (!outcome.ok) {
        this.problem = { kind: 'other', message: `The ${label} of "${run.name}" could not be made: ${outcome.failure.message}.` };
        return;
      }
      const { name, type } = file(fileSafeName(run.name));
      downloadBytes(name, outcome.value, type);
      this.problem = null;
      this.notice = `Exported the ${label} of "${run.name}".`;
    } finally {
      this.exportingRun = null;
    }
  }

  /** Downloads the base model with the run's adapter merged in: "<run>-merged.zip" (a Hugging Face checkpoint folder). */
  exportMergedModel(id: string, trainer: import('../../workers/client.ts').TrainerClient): Promise<void> {
    return this.exportFile(
      id,
      'merged',
      async () => {
        const request = await this.exportRequest(id);
        if (!request) return null;
        return trainer.call((api) => api.exportMergedModel({ ...request, folder: `${request.folder}-merged` }));
      },
      (folder) => ({ name: `${folder}-merged.zip`, type: 'application/zip' }),
    );
  }

  /** Downloads the merged model as "<run>.onnx". */
  exportOnnx(id: string, trainer: import('../../workers/client.ts').TrainerClient): Promise<void> {
    return this.exportFile(
      id,
      'onnx',
      async () => {
        const request = await this.exportRequest(id);
        return request ? trainer.call((api) => api.exportOnnxModel(request)) : null;
      },
      (folder) => ({ name: `${folder}.onnx`, type: 'application/octet-stream' }),
    );
  }

  /**
   * Downloads the run as a TRL + PEFT recipe, "<run>-recipe.zip". The data is the one stored with the run; for a run
   * saved without it, the Data panel's text (`current`) when it is the very data the run trained on (same fingerprint).
   */
  exportRecipe(
    id: string,
    trainer: import('../../workers/client.ts').TrainerClient,
    current: import('../../workers/protocol.ts').TrainingRequest['data'],
  ): Promise<void> {
    return this.exportFile(
      id,
      'recipe',
      async (run) => {
        const request = await this.recipeRequest(run, current);
        if (!request) return null;
        const adapter = run.adapter ? await this.adapterFiles(id) : null;
        if (run.adapter && !adapter) return null;
        const folder = `${fileSafeName(run.name)}-recipe`;
        return trainer.call((api) => api.exportRecipe({ adapter, request, runName: run.name, folder, modelName: run.modelName }));
      },
      (folder) => ({ name: `${folder}-recipe.zip`, type: 'application/zip' }),
    );
  }

  /** What the run was started with: stored with it, or rebuilt from the Data panel when that holds the same data. */
  private async recipeRequest(
    run: SavedRun,
    current: import('../../workers/protocol.ts').TrainingRequest['data'],
  ): Promise<import('../../workers/protocol.ts').TrainingRequest | null> {
    if (run.source !== 'trained') {
      this.problem = {
        kind: 'other',
        message: `"${run.name}" is an imported adapter: it has no data or settings here. A recipe is made from a run trained in this tab.`,
      };
      return null;
    }
    let stored;
    try {
      stored = await this.store.request(run.id);
    } catch (error) {
      this.problem = this.toProblem(error);
      return null;
    }
    if (stored) return stored;
    const settings = run.config as import('../../workers/protocol.ts').RunSettings | null;
    const digest = await crypto.subtle.digest('SHA-256', new TextEncoder().encode(`${current.format}\n${current.train}`));
    const fingerprint = [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, '0')).join('');
    if (!settings || typeof settings !== 'object' || fingerprint !== run.datasetFingerprint) {
      this.problem = {
        kind: 'other',
        message:
          `The data "${run.name}" was trained on is not stored with it (runs saved by older versions kept only a ` +
          'fingerprint of it). Paste that data into the Data panel exactly as it was, with the same format, and export ' +
          'the recipe again.',
      };
      return null;
    }
    return { runId: run.id, name: run.name, settings, data: current, probePrompts: [], probeEvery: 0 };
  }
}
