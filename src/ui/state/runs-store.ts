// Runs kept in the browser, in IndexedDB (through `idb`, a thin promise wrapper): each run's settings, dataset
// fingerprint, metric history and final losses in one store, its adapter's PEFT files in another, so that listing runs
// never reads adapter bytes. Two more stores serve runs in progress: the request a run was started with (its data text
// and settings, for resuming it and for the scale-out recipe), and the run's latest training checkpoint (LoRA weights,
// AdamW moments, position), rewritten every few steps so that a reload, a crash or a closed tab loses at most those
// steps. A run and what belongs to it are written in one transaction: a full disk aborts all of it, and nothing saved
// before is touched.

import { openDB, type DBSchema, type IDBPDatabase, type IDBPTransaction } from 'idb';
import type { AdapterFiles, TrainingRequest } from '../../workers/protocol.ts';

/** One adapter summary, as the runs list shows it. */
export interface SavedAdapterSummary {
  rank: number;
  alpha: number;
  targets: string[];
  layers: number[];
  parameterCount: number;
  /** Bytes of adapter_model.safetensors. */
  bytes: number;
}

export interface SavedRun {
  id: string;
  name: string;
  /** Trained in this tab, or imported from PEFT files. */
  source: 'trained' | 'imported';
  /** When the run started (or the adapter was imported), ms since the epoch. */
  createdAt: number;
  /**
   * How it ended: 'finished', 'cancelled', 'failed' (RunRecord's status), or 'imported'; 'interrupted' while a run
   * is going (or after the tab that ran it went away): it has a checkpoint to resume from.
   */
  status: string;
  finalLoss: number | null;
  finalValLoss: number | null;
  /** The run's training settings as plain JSON; for an import, its adapter_config.json. */
  config: unknown;
  /** Identifies the data it was trained on (same data, same fingerprint); null for imports. */
  datasetFingerprint: string | null;
  /** The trainer's step and evaluation events, in order. */
  metrics: unknown[];
  /** The probe answers over training (ProbeSnapshot[]); empty for imports. */
  probes?: unknown[];
  /** The model it belongs to ("tunelab-base", a folder name, a Hub id). */
  modelName: string;
  /** Null when the run left no adapter (a failed run). */
  adapter: SavedAdapterSummary | null;
  /** Optimizer steps done and planned (trained runs). */
  steps?: number;
  totalSteps?: number;
  /** The step of the run's stored checkpoint, when it has one (an interrupted or failed run can resume from it). */
  checkpointStep?: number;
}

/** The latest checkpoint of a run (engine/train/checkpoint.ts's two files) and the step it was taken at. */
export interface StoredCheckpoint {
  runId: string;
  step: number;
  /** Date.now() when it was written. */
  savedAt: number;
  /** checkpoint.safetensors and trainer_state.json, by file name. */
  files: Record<string, Uint8Array>;
}

export type { AdapterFiles };

interface RunsSchema extends DBSchema {
  runs: { key: string; value: SavedRun };
  adapters: { key: string; value: AdapterFiles & { runId: string } };
  requests: { key: string; value: { runId: string; request: TrainingRequest } };
  checkpoints: { key: string; value: StoredCheckpoint };
}

const DB_NAME = 'tunelab-runs';
/** 1: runs, adapters. 2: + requests, checkpoints. */
const DB_VERSION = 2;

export type RunsStoreProblem = 'quota' | 'unavailable' | 'other';

/** A store operation that failed; `problem` says whether the disk is full, storage is blocked, or something else. */
export class RunsStoreError extends Error {
  constructor(
    readonly problem: RunsStoreProblem,
    message: string,
  ) {
    super(message);
    this.name = 'RunsStoreError';
  }
}

function isQuotaError(error: unknown): boolean {
  const name = (error as { name?: unknown } | null)?.name;
  return name === 'QuotaExceededError' || (error instanceof DOMException && error.code === 22);
}

function storeError(error: unknown, doing: string): RunsStoreError {
  if (error instanceof RunsStoreError) return error;
  if (isQuotaError(error)) return new RunsStoreError('quota', `the browser's storage for this page is full (${doing})`);
  const message = error instanceof Error ? error.message : String(error);
  return new RunsStoreError('other', `${doing} failed: ${message}`);
}

export class RunsStore {
  private db: Promise<IDBPDatabase<RunsSchema>> | undefined;

  private open(): Promise<IDBPDatabase<RunsSchema>> {
    if (!('indexedDB' in globalThis) || !globalThis.indexedDB) {
      return Promise.reject(new RunsStoreError('unavailable', 'this browser does not let the page store data (no IndexedDB)'));
    }
    this.db ??= openDB<RunsSchema>(DB_NAME, DB_VERSION, {
      upgrade(db) {
        if (!db.objectStoreNames.contains('runs')) db.createObjectStore('runs', { keyPath: 'id' });
        if (!db.objectStoreNames.contains('adapters')) db.createObjectStore('adapters', { keyPath: 'runId' });
        if (!db.objectStoreNames.contains('requests')) db.createObjectStore('requests', { keyPath: 'runId' });
        if (!db.objectStoreNames.contains('checkpoints')) db.createObjectStore('checkpoints', { keyPath: 'runId' });
      },
      blocking: () => {
        // Another tab upgrades the database: let it, and open again on the next call.
        void this.db?.then((db) => db.close());
        this.db = undefined;
      },
    }).catch((error: unknown) => {
      this.db = undefined;
      throw new RunsStoreError('unavailable', `the runs store could not be opened (site data may be blocked): ${String(error)}`);
    });
    return this.db;
  }

  /** Every saved run, newest first. */
  async list(): Promise<SavedRun[]> {
    try {
      const runs = await (await this.open()).getAll('runs');
      return runs.sort((a, b) => b.createdAt - a.createdAt);
    } catch (error) {
      throw storeError(error, 'reading the saved runs');
    }
  }

  /** Saves (or replaces) a run and its adapter files together: both are written or neither. */
  async save(run: SavedRun, files: AdapterFiles | null): Promise<void> {
    try {
      const db = await this.open();
      const tx = db.transaction(['runs', 'adapters'], 'readwrite');
      const writes: Promise<unknown>[] = [tx.objectStore('runs').put(run)];
      if (files) writes.push(tx.objectStore('adapters').put({ runId: run.id, ...files }));
      await Promise.all([...writes, tx.done]);
    } catch (error) {
      throw storeError(error, `saving "${run.name}"`);
    }
  }

  async rename(id: string, name: string): Promise<SavedRun> {
    try {
      const db = await this.open();
      const tx = db.transaction('runs', 'readwrite');
      const run = await tx.store.get(id);
      if (!run) throw new RunsStoreError('other', 'that run is no longer saved (deleted in another tab?)');
      const renamed = { ...run, name };
      await Promise.all([tx.store.put(renamed), tx.done]);
      return renamed;
    } catch (error) {
      throw storeError(error, 'renaming the run');
    }
  }

  /** Deletes a run and everything kept with it (adapter files, request, checkpoint). */
  async delete(id: string): Promise<void> {
    try {
      const db = await this.open();
      const tx = db.transaction(['runs', 'adapters', 'requests', 'checkpoints'], 'readwrite');
      await Promise.all([
        tx.objectStore('runs').delete(id),
        tx.objectStore('adapters').delete(id),
        tx.objectStore('requests').delete(id),
        tx.objectStore('checkpoints').delete(id),
        tx.done,
      ]);
    } catch (error) {
      throw storeError(error, 'deleting the run');
    }
  }

  /** A run's adapter files, or null when it has none. */
  async adapterFiles(id: string): Promise<AdapterFiles | null> {
    try {
      const stored = await (await this.open()).get('adapters', id);
      return stored ? { adapterConfigJson: stored.adapterConfigJson, adapterModel: stored.adapterModel } : null;
    } catch (error) {
      throw storeError(error, "reading the run's adapter");
    }
  }

  /** Keeps what a run was started with (its data and settings), before its first checkpoint. */
  async saveRequest(runId: string, request: TrainingRequest): Promise<void> {
    try {
      await (await this.open()).put('requests', { runId, request });
    } catch (error) {
      throw storeError(error, `keeping the data of "${request.name}"`);
    }
  }

  /** The request a trained run was started with, or null (imported runs, runs saved before version 2). */
  async request(runId: string): Promise<TrainingRequest | null> {
    try {
      return (await (await this.open()).get('requests', runId))?.request ?? null;
    } catch (error) {
      throw storeError(error, "reading the run's data");
    }
  }

  /**
   * Replaces a run's checkpoint and its record (status 'interrupted', metrics so far) together: after a full disk
   * the previous checkpoint and record are still there, whole.
   */
  async saveCheckpoint(run: SavedRun, checkpoint: StoredCheckpoint): Promise<void> {
    let tx: IDBPTransaction<RunsSchema, ('runs' | 'checkpoints')[], 'readwrite'> | undefined;
    try {
      const db = await this.open();
      tx = db.transaction(['runs', 'checkpoints'], 'readwrite');
      // Every request is settled (and its rejection handled) even when a later one throws at once, so that an
      // aborted transaction leaves no unhandled rejection behind.
      const pending: Promise<unknown>[] = [];
      const track = (promise: Promise<unknown>) => {
        promise.catch(() => undefined);
        pending.push(promise);
      };
      track(tx.done);
      track(tx.objectStore('checkpoints').put(checkpoint));
      track(tx.objectStore('runs').put(run));
      await Promise.all(pending);
    } catch (error) {
      // Neither write may land alone: a record that names a checkpoint step the store does not hold would mislead.
      try {
        tx?.abort();
      } catch {
        // Already finished or aborted.
      }
      throw storeError(error, `saving a checkpoint of "${run.name}" (step ${checkpoint.step})`);
    }
  }

  /** A run's latest checkpoint, or null. */
  async checkpoint(runId: string): Promise<StoredCheckpoint | null> {
    try {
      return (await (await this.open()).get('checkpoints', runId)) ?? null;
    } catch (error) {
      throw storeError(error, "reading the run's checkpoint");
    }
  }

  /** Drops a run's checkpoint (the run ended; its adapter is what is kept). */
  async deleteCheckpoint(runId: string): Promise<void> {
    try {
      await (await this.open()).delete('checkpoints', runId);
    } catch (error) {
      throw storeError(error, "deleting the run's checkpoint");
    }
  }

  /** Bytes each run's checkpoint takes, by run id (for "what to delete" when storage is full). */
  async checkpointBytes(): Promise<Map<string, number>> {
    try {
      const sizes = new Map<string, number>();
      let cursor = await (await this.open()).transaction('checkpoints').store.openCursor();
      while (cursor) {
        const bytes = Object.values(cursor.value.files).reduce((sum, file) => sum + file.byteLength, 0);
        sizes.set(cursor.value.runId, bytes);
        cursor = await cursor.continue();
      }
      return sizes;
    } catch (error) {
      throw storeError(error, 'measuring the saved checkpoints');
    }
  }
}
