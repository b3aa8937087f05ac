// The engine's face towards the UI: a thin Comlink adapter that turns the engine's API into a few coarse,
// serializable calls (probe now; load, setData, train, stop, generate, evaluate, export to come). No engine logic here.

import * as Comlink from 'comlink';
import { GpuContext } from '../engine/gpu/context.ts';
import { TunelabError } from '../engine/errors.ts';
import type { AdapterSummary } from '../engine/gpu/adapter.ts';
import type { Failure, Outcome } from './protocol.ts';

// One GPU device per worker, acquired on the first call and shared by every later call (model, training, generation).
let gpuContext: Promise<GpuContext> | undefined;

function acquireGpu(): Promise<GpuContext> {
  if (gpuContext) return gpuContext;
  const acquiring = GpuContext.acquire(navigator.gpu);
  gpuContext = acquiring;
  const forget = () => {
    if (gpuContext === acquiring) gpuContext = undefined;
  };
  // A failed acquisition is not kept, so a later call can try again; nor is a lost device, which cannot be reused.
  acquiring.then((context) => context.onLost(forget), forget);
  return acquiring;
}

function toFailure(error: unknown): Failure {
  if (error instanceof TunelabError) return { code: error.code, message: error.message };
  const message = error instanceof Error ? error.message : String(error);
  return { code: 'internal', message: `Unexpected error in the engine worker: ${message}` };
}

/** Runs one coarse call and turns whatever it throws into a typed failure. */
async function settle<T>(call: () => Promise<T>): Promise<Outcome<T>> {
  try {
    return { ok: true, value: await call() };
  } catch (error) {
    return { ok: false, failure: toFailure(error) };
  }
}

const api = {
  /** Finds the GPU and opens a device on it; describes the adapter or says why WebGPU is not usable. */
  probe(): Promise<Outcome<AdapterSummary>> {
    return settle(async () => (await acquireGpu()).adapter);
  },
};

export type TrainerApi = typeof api;

Comlink.expose(api);
