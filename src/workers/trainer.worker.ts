// The engine's face towards the UI: a thin Comlink adapter that turns the engine's API into a few coarse,
// serializable calls — probe, loadModel, validateData, estimateMemory now; train, stop, generate, evaluate, export to
// come. No engine logic here: each call checks its input, calls the engine and returns an Outcome.
//
// State kept between calls lives in model-session.ts (the loaded model and its tokenizer) and here (the GPU device).

import * as Comlink from 'comlink';
import { GpuContext } from '../engine/gpu/context.ts';
import { TunelabError } from '../engine/errors.ts';
import type { AdapterSummary } from '../engine/gpu/adapter.ts';
import { prepareDataset } from '../engine/data/index.ts';
import { checkMemoryPlan, findLimitBreach, planMemory } from '../engine/model/planner.ts';
import { countingTokenizer, currentModel, openModel } from './model-session.ts';
import type {
  DataValidation,
  DataValidationRequest,
  Failure,
  MemoryEstimate,
  MemoryEstimateRequest,
  ModelRequest,
  ModelSummary,
  Outcome,
} from './protocol.ts';

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
async function settle<T>(call: () => Promise<T> | T): Promise<Outcome<T>> {
  try {
    return { ok: true, value: await call() };
  } catch (error) {
    return { ok: false, failure: toFailure(error) };
  }
}

function wholeNumber(value: number, min: number, what: string): number {
  if (!(Number.isSafeInteger(value) && value >= min)) {
    throw new TunelabError('bad-data', `${what} must be a whole number of at least ${min}, got ${value}`);
  }
  return value;
}

const api = {
  /** Finds the GPU and opens a device on it; describes the adapter or says why WebGPU is not usable. */
  probe(): Promise<Outcome<AdapterSummary>> {
    return settle(async () => (await acquireGpu()).adapter);
  },

  /**
   * Reads config.json, model.safetensors and tokenizer.json (from a URL or from picked files), checks them and makes
   * the model current. Failures are 'bad-model' with a message that names the file and what is wrong with it.
   */
  loadModel(request: ModelRequest): Promise<Outcome<ModelSummary>> {
    return settle(() => openModel(request));
  },

  /**
   * Checks data the way training will read it, with the current model's tokenizer and context (byte-level and 1024
   * before a model has loaded): errors and warnings with line numbers, and token statistics. Bad data is a report,
   * never a failure.
   */
  validateData(request: DataValidationRequest): Promise<Outcome<DataValidation>> {
    return settle(() => {
      const { tokenizer, context, modelGeneration } = countingTokenizer();
      const prepared = prepareDataset(
        { train: request.train, ...(request.validation !== undefined ? { validation: request.validation } : {}) },
        tokenizer,
        {
          format: request.format,
          context,
          batchSize: wholeNumber(request.batchSize, 1, 'batch size'),
          validationFraction: request.validationFraction,
          seed: request.seed,
        },
      );
      return { requestId: request.requestId, report: prepared.report, context, modelGeneration };
    });
  },

  /**
   * The GPU memory a LoRA run of the current model needs at this batch size, sequence length and adapter (from the
   * memory planner, before anything is allocated), and whether it fits this device.
   */
  estimateMemory(request: MemoryEstimateRequest): Promise<Outcome<MemoryEstimate>> {
    return settle(async () => {
      const model = currentModel();
      if (!model) throw new TunelabError('bad-model', 'no model is loaded yet; the estimate needs one');
      const config = model.loaded.config;
      const limits = (await acquireGpu()).device.limits;
      const batchSize = wholeNumber(request.batchSize, 1, 'batch size');
      const sequenceLength = Math.min(wholeNumber(request.sequenceLength, 1, 'sequence length'), config.nPositions);
      const plan = planMemory({
        config,
        batchSize,
        sequenceLength,
        mode: { kind: 'lora', rank: request.lora.rank, targets: request.lora.targets, layers: request.lora.layers },
        limits: { maxBufferSize: limits.maxBufferSize, maxStorageBufferBindingSize: limits.maxStorageBufferBindingSize },
      });
      let refusal: string | null = null;
      if (findLimitBreach(plan)) {
        try {
          checkMemoryPlan(plan);
        } catch (error) {
          refusal = error instanceof Error ? error.message : String(error);
        }
      }
      return {
        totalBytes: plan.totalBytes,
        bytesByPurpose: { ...plan.bytesByPurpose },
        parameterCount: plan.parameterCount,
        trainableParameterCount: plan.trainableParameterCount,
        batchSize,
        sequenceLength,
        maxBufferSize: limits.maxBufferSize,
        maxStorageBufferBindingSize: limits.maxStorageBufferBindingSize,
        refusal,
      };
    });
  },
};

export type TrainerApi = typeof api;

Comlink.expose(api);
