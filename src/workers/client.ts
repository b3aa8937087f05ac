// Starts the trainer worker and wraps it in a typed Comlink remote. The UI talks to the engine only through this;
// it imports the worker's types, never its code (Vite bundles the worker as its own chunk).

import * as Comlink from 'comlink';
import type { TrainerApi } from './trainer.worker.ts';
import type { Failure, Outcome } from './protocol.ts';

export type TrainerRemote = Comlink.Remote<TrainerApi>;

export interface TrainerClient {
  /**
   * Runs one coarse call on the worker, e.g. `client.call((api) => api.probe())`. Never rejects and never hangs on
   * a dead worker: a worker that cannot start, a crash, or an error in the messaging itself comes back as a failure.
   */
  call<T>(invoke: (api: TrainerRemote) => Promise<Outcome<T>>): Promise<Outcome<T>>;
  terminate(): void;
}

interface RunningWorker {
  worker: Worker;
  api: TrainerRemote;
  /** Settles when the worker fails to load or dies; a Comlink call on a dead worker would otherwise wait forever. */
  crashed: Promise<Failure>;
}

function workerFailure(detail: string): Failure {
  return {
    code: 'worker-failed',
    message:
      `The engine's background worker could not start${detail ? ` (${detail})` : ''}. ` +
      'Reload the page; if this persists, use a current browser that supports module workers.',
  };
}

function startWorker(): RunningWorker {
  const worker = new Worker(new URL('./trainer.worker.ts', import.meta.url), {
    type: 'module',
    name: 'tunelab-trainer',
  });
  const crashed = new Promise<Failure>((resolve) => {
    worker.addEventListener('error', (event) => {
      resolve(workerFailure(event instanceof ErrorEvent ? event.message : ''));
    });
  });
  return { worker, api: Comlink.wrap<TrainerApi>(worker), crashed };
}

/** The worker starts on the first call, so a page that has no WebGPU never loads the engine. */
export function createTrainerClient(): TrainerClient {
  let running: RunningWorker | undefined;

  return {
    async call<T>(invoke: (api: TrainerRemote) => Promise<Outcome<T>>): Promise<Outcome<T>> {
      try {
        running ??= startWorker();
        const { api, crashed } = running;
        const failed = crashed.then((failure): Outcome<T> => ({ ok: false, failure }));
        return await Promise.race([invoke(api), failed]);
      } catch (error) {
        const message = error instanceof Error ? error.message : String(error);
        return { ok: false, failure: { code: 'internal', message: `Could not talk to the engine worker: ${message}` } };
      }
    },
    terminate() {
      if (!running) return;
      running.api[Comlink.releaseProxy]();
      running.worker.terminate();
      running = undefined;
    },
  };
}
