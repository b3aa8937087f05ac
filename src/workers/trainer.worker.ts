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
import { countingTokenizer, currentModel, frozenWeightStorage, openModel, setFrozenWeightStorage } from './model-session.ts';
import { cancelHubLoad, deleteCachedHubModel, listCachedHubModels, openHubModel } from './model-session.ts';
import type { CachedHubModels, HubLoadProgress, HubModelLoaded, HubModelRequest } from './protocol.ts';
import * as playground from './playground-session.ts';
import * as training from './training-session.ts';
import * as exports from './export-session.ts';
import type { DecodeRequest, ExportRequest, GreedyAnswer, GreedyRequest, RecipeRequest } from './protocol.ts';
import type { AdapterFiles, RunRecord, TrainingRequest, TrainingResult, TrainingUpdate } from './protocol.ts';
import type { AdapterImportRequest, AdapterInfo, GenerateRequest, GenerationDone, GenerationUpdate } from './protocol.ts';
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

/** A usable device: the shared one, or a new one when it was lost (it is forgotten once its loss is reported). */
async function freshGpu(): Promise<GpuContext> {
  const context = await acquireGpu();
  if (!context.lost) return context;
  if (gpuContext !== undefined && (await gpuContext.catch(() => undefined)) === context) gpuContext = undefined;
  return acquireGpu();
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
    return settle(() => {
      // The run binds the current model's weights on the GPU; a new model would free them under it.
      if (training.isTraining()) throw new TunelabError('bad-model', 'a training run is going; cancel it (or let it finish) before loading another model');
      return openModel(request);
    });
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
        frozenWeights: request.frozenWeights ?? frozenWeightStorage(),
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

  /**
   * Keeps the weights LoRA does not train as f32 or as packed f16 on the GPU (half their memory; the model then
   * computes with f16-rounded weights). Takes effect the next time the model runs; refused while a run trains.
   */
  setFrozenWeights(storage: 'f32' | 'f16'): Promise<Outcome<'f32' | 'f16'>> {
    return settle(() => {
      if (training.isTraining()) {
        throw new TunelabError('bad-model', 'a training run is going; change how the weights are kept once it has ended');
      }
      setFrozenWeightStorage(storage);
      return storage;
    });
  },

  // ---- playground ----------------------------------------------------------------------------------------------

  /**
   * Answers a prompt with the base model or with the current LoRA adapter (a KV-cache generator per playground
   * column), streaming the answer so far through `onUpdate` (a Comlink proxy; throttled in the worker).
   */
  generate(request: GenerateRequest, onUpdate: (update: GenerationUpdate) => void): Promise<Outcome<GenerationDone>> {
    const send = (update: GenerationUpdate) => {
      // A page that went away cannot take the update; that must not become an unhandled rejection here.
      void Promise.resolve(onUpdate(update)).catch(() => undefined);
    };
    return settle(async () => {
      try {
        return await playground.generate(await acquireGpu(), request, send);
      } finally {
        (onUpdate as Partial<Comlink.Remote<unknown>>)[Comlink.releaseProxy]?.();
      }
    });
  },

  /** Ends the generation `id` after its current token (it then resolves with stop reason 'aborted'). */
  stopGeneration(id: number): Promise<Outcome<void>> {
    return settle(() => playground.stopGeneration(id));
  },

  /** The adapter the playground's fine-tuned column uses (the last run's or an imported one), or null. */
  adapterStatus(): Promise<Outcome<AdapterInfo | null>> {
    return settle(() => playground.adapterStatus());
  },

  /**
   * Reads a PEFT adapter (adapter_config.json + adapter_model.safetensors), checks that it fits the current model and
   * makes it the playground's adapter. Failures are 'bad-model' with the reason (wrong model, rank, file).
   */
  importAdapter(request: AdapterImportRequest): Promise<Outcome<AdapterInfo>> {
    return settle(async () => playground.importAdapter(await acquireGpu(), request));
  },

  // ---- training ------------------------------------------------------------------------------------------------

  /**
   * Fine-tunes a LoRA adapter on the current model with the Data panel's text and the settings, streaming metrics,
   * pauses and probe answers through `onUpdate` (a Comlink proxy; batched in the worker). Resolves when the run ends:
   * finished or cancelled (with its record), or a failure a learner can act on — bad settings or data, a config the
   * memory planner refuses (before anything is allocated), a diverged loss, a lost GPU.
   */
  startTraining(request: TrainingRequest, onUpdate: (update: TrainingUpdate) => void | Promise<void>): Promise<Outcome<TrainingResult>> {
    const send = (update: TrainingUpdate): Promise<void> | undefined => {
      // A page that went away cannot take the update; that must not become an unhandled rejection here.
      const delivered = Promise.resolve(onUpdate(update)).catch(() => undefined);
      // A checkpoint is kept by the page (IndexedDB): the run waits until it is written, so that "saved at step N"
      // is true when the next steps run. Every other update is fire-and-forget.
      return update.type === 'checkpoint' ? delivered : undefined;
    };
    return settle(async () => {
      try {
        return await training.runTraining(freshGpu, request, send);
      } finally {
        (onUpdate as Partial<Comlink.Remote<unknown>>)[Comlink.releaseProxy]?.();
      }
    });
  },

  /**
   * Destroys the GPU device, as a driver reset or a GPU process crash would, so that a workshop can watch a run
   * recover (a new device, the last checkpoint, the same results). False when there is no device.
   */
  simulateDeviceLoss(): Promise<Outcome<boolean>> {
    return settle(async () => {
      const context = gpuContext && (await gpuContext.catch(() => undefined));
      if (!context || context.lost) return false;
      context.device.destroy();
      return true;
    });
  },

  /** Pauses the run after its current step (an update 'paused' follows); false when no run is going. */
  pauseTraining(): Promise<Outcome<boolean>> {
    return settle(() => training.pauseTraining());
  },

  resumeTraining(): Promise<Outcome<boolean>> {
    return settle(() => training.resumeTraining());
  },

  /** Ends the run after its current step; startTraining then resolves with status 'cancelled'. */
  cancelTraining(): Promise<Outcome<boolean>> {
    return settle(() => training.cancelTraining());
  },

  /** The record of the last run that ended (config, data fingerprint, metrics, probes, status), or null. */
  getRunRecord(): Promise<Outcome<RunRecord | null>> {
    return settle(() => training.lastRunRecord());
  },

  /** The last run's adapter as PEFT files (adapter_config.json text, adapter_model.safetensors bytes, transferred). */
  exportAdapter(): Promise<Outcome<AdapterFiles>> {
    return settle(async () => {
      const files = await training.exportTrainedAdapter();
      return Comlink.transfer(files, [files.adapterModel.buffer as ArrayBuffer]);
    });
  },

  // ---- hub models --------------------------------------------------------------------------------------------------

  /**
   * Loads a GPT-2-family model from the Hugging Face Hub by id or URL and makes it current: from the browser's cache
   * when it is there (no network), else downloaded (progress through `onProgress`, a Comlink proxy, about ten a second)
   * and kept there for offline use. Refused while a training run is going. Failures say what to do: not found,
   * unsupported architecture, network or CORS failure; 'cancelled' after cancelHubLoad. A model that could not be kept
   * (storage full) loads anyway, with a `cacheWarning`.
   */
  loadHubModel(request: HubModelRequest, onProgress: (progress: HubLoadProgress) => void): Promise<Outcome<HubModelLoaded>> {
    // Progress travels over the proxy's own channel, the answer over the worker's: without waiting, the answer could
    // overtake the last progress. Settles when the page has taken the last update (or gave up on it).
    let delivered: Promise<unknown> = Promise.resolve();
    const send = (progress: HubLoadProgress) => {
      // A page that went away cannot take the update; that must not become an unhandled rejection here.
      delivered = Promise.resolve(onProgress(progress)).catch(() => undefined);
    };
    const refuseDuringTraining = () => {
      // The run binds the current model's weights on the GPU; a new model would free them under it.
      if (training.isTraining()) throw new TunelabError('bad-model', 'a training run is going; cancel it (or let it finish) before loading another model');
    };
    return settle(async () => {
      try {
        refuseDuringTraining();
        return await openHubModel(request, { onProgress: send, checkReplaceable: refuseDuringTraining });
      } finally {
        await Promise.race([delivered, new Promise((resolve) => setTimeout(resolve, 1000))]);
        (onProgress as Partial<Comlink.Remote<unknown>>)[Comlink.releaseProxy]?.();
      }
    });
  },

  /** Stops the Hub load under way (loadHubModel then fails with code 'cancelled'); false when none is going. */
  cancelHubLoad(): Promise<Outcome<boolean>> {
    return settle(() => cancelHubLoad());
  },

  /** The models kept in this browser for offline use, with sizes, and the site's storage use. */
  listCachedHubModels(): Promise<Outcome<CachedHubModels>> {
    return settle(() => listCachedHubModels());
  },

  /** Removes a model from the browser's cache (`key` from listCachedHubModels); a loaded model stays loaded. */
  deleteCachedHubModel(key: string): Promise<Outcome<boolean>> {
    return settle(() => deleteCachedHubModel(key));
  },
  // (end of hub models)

  // ---- exports -----------------------------------------------------------------------------------------------------
  // A saved run's adapter (its PEFT files) made into files to download, against the loaded model (export-session.ts).
  // Failures: 'bad-model' when no model is loaded or the adapter does not fit it; 'bad-data' for data or settings.

  /** The base model with the run's adapter merged in: a .zip of one folder (config.json, model.safetensors, tokenizer.json). */
  exportMergedModel(request: ExportRequest): Promise<Outcome<Uint8Array>> {
    return settle(() => {
      const zip = exports.mergedCheckpointZip(request);
      return Comlink.transfer(zip, [zip.buffer as ArrayBuffer]);
    });
  },

  /** The merged model as an .onnx file (input_ids int64 (batch, seq) → logits float (batch, seq, V)). */
  exportOnnxModel(request: ExportRequest): Promise<Outcome<Uint8Array>> {
    return settle(() => {
      const onnx = exports.onnxModel(request);
      return Comlink.transfer(onnx, [onnx.buffer as ArrayBuffer]);
    });
  },

  /** The run as a TRL + PEFT recipe: a .zip of one folder (train.jsonl, validation.jsonl, train.py, README.md). */
  exportRecipe(request: RecipeRequest): Promise<Outcome<Uint8Array>> {
    return settle(() => {
      const zip = exports.recipeZip(request);
      return Comlink.transfer(zip, [zip.buffer as ArrayBuffer]);
    });
  },

  /** The engine's greedy answer with the run's adapter (GPU decoder, LoRA unmerged) and the prompt's last logits. */
  greedyAnswer(request: GreedyRequest): Promise<Outcome<GreedyAnswer>> {
    return settle(async () => {
      const answer = await exports.greedyAnswer(await acquireGpu(), request);
      return Comlink.transfer(answer, [answer.lastLogits.buffer as ArrayBuffer]);
    });
  },

  /** Token ids as answer text, made as greedyAnswer makes its text (for the ONNX model's answer). */
  decodeAnswer(request: DecodeRequest): Promise<Outcome<string>> {
    return settle(() => exports.decodeAnswer(request));
  },
  // (end of exports)
};

export type TrainerApi = typeof api;

Comlink.expose(api);
