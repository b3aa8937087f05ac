// Exports of a saved run, made in the engine worker from the run's PEFT adapter files and the loaded model: the base
// model with the adapter merged in, as a Hugging Face checkpoint (.zip) or an ONNX file; the TRL + PEFT recipe (.zip);
// and the engine's own greedy answer to a prompt, which the "Try the exported model" view compares with the ONNX
// file's answer (run in onnxruntime-web in the tab).
//
// The greedy answer runs on the engine's GPU decoder (Gpt2Decoder: KV cache, the run's adapter as LoRA kernels, not
// merged) and takes the argmax of its logits at every position, so it is an independent path from the merged weights
// the ONNX file holds. Nothing here keeps state between calls: each call reads the adapter files it is given and frees
// what it put on the GPU before it returns.

import { loraConfigOf, trainConfigOf } from './training-session.ts';
import { zipSync } from 'fflate';
import {
  answerFromGenerated,
  encodeGenerationPrompt,
  prepareDataset,
  resolveTemplate,
  type ChatTemplate,
  type Example,
  type PreparedDataset,
} from '../engine/data/index.ts';
import { TunelabError } from '../engine/errors.ts';
import { Gpt2Decoder } from '../engine/generate/generator.ts';
import type { GpuContext } from '../engine/gpu/context.ts';
import { huggingFaceCheckpoint, mergeAdapter, type WeightMap } from '../engine/interop/merge.ts';
import { exportGpt2Onnx } from '../engine/interop/onnx.ts';
import { importPeftAdapter, type AdapterSpec, type AdapterTarget, type ImportedAdapter } from '../engine/interop/peft.ts';
import { exportRunRecipe, recipeTrainingConfig, zipRunRecipe } from '../engine/interop/recipe.ts';
import { LoraAdapter, loraLayers } from '../engine/model/lora.ts';
import { parameterView } from '../engine/model/weights.ts';
import { currentGpuModel, currentModel, type ModelSession } from './model-session.ts';
import type { DecodeRequest, ExportRequest, GreedyAnswer, GreedyRequest, RecipeRequest } from './protocol.ts';

/** The template the app trains and generates with (playground-session uses the same default). */
const TEMPLATE: ChatTemplate = resolveTemplate();

function loadedModel(): ModelSession {
  const session = currentModel();
  if (!session) {
    throw new TunelabError('bad-model', 'no model is loaded yet; wait until the Model panel shows one (or load one), then export again');
  }
  return session;
}

/** The run's adapter read against the loaded model; a misfit names the model to load instead. */
function runAdapter(session: ModelSession, request: Pick<ExportRequest, 'adapter' | 'modelName'>): ImportedAdapter {
  try {
    return importPeftAdapter(request.adapter.adapterConfigJson, request.adapter.adapterModel, session.loaded.config);
  } catch (error) {
    if (!(error instanceof TunelabError)) throw error;
    const loaded = session.summary.name;
    const advice =
      request.modelName && request.modelName !== loaded
        ? `load the model it was trained on ("${request.modelName}") in the Model panel, then export again`
        : 'load the model it was trained on in the Model panel, then export again';
    throw new TunelabError('bad-model', `this run's adapter does not fit the loaded model "${loaded}" (${error.message}); ${advice}`);
  }
}

/** The loaded model's weights under their Hugging Face names (views of the flat array, not copies). */
function baseWeights(session: ModelSession): WeightMap {
  const weights = session.loaded.weights;
  return new Map(weights.layout.entries.map((entry) => [entry.name, parameterView(weights, entry.name)]));
}

function mergedWeights(session: ModelSession, request: ExportRequest): WeightMap {
  const adapter = runAdapter(session, request);
  return mergeAdapter(session.loaded.config, baseWeights(session), adapter.spec, adapter.tensors);
}

/** One folder with config.json, model.safetensors and tokenizer.json: the base model with the run's adapter folded in. */
export function mergedCheckpointZip(request: ExportRequest): Uint8Array {
  const session = loadedModel();
  const files = huggingFaceCheckpoint(session.loaded.config, mergedWeights(session, request), {
    tokenizerJson: session.loaded.tokenizerJson,
    configBase: session.loaded.configJson,
  });
  const entries: Parameters<typeof zipSync>[0] = {};
  for (const [name, bytes] of files) {
    // Safetensors is mostly floats that do not compress: stored as it is, the zip is made in a fraction of the time.
    entries[`${request.folder}/${name}`] = name.endsWith('.safetensors') ? [bytes, { level: 0 }] : bytes;
  }
  return zipSync(entries, { level: 6 });
}

/** The merged model as ONNX: input_ids int64 (batch, seq) → logits float (batch, seq, V). */
export function onnxModel(request: ExportRequest): Uint8Array {
  const session = loadedModel();
  return exportGpt2Onnx(session.loaded.config, mergedWeights(session, request), {
    docString:
      `${session.summary.name} with the LoRA adapter of the Tunelab run "${request.runName}" merged in. ` +
      'input_ids int64 (batch, seq) -> logits float32 (batch, seq, vocab); causal, no attention mask.',
  });
}

// ---- the engine's greedy answer ---------------------------------------------------------------------------------------

/** The imported adapter on the GPU as the engine's LoRA module (its sites exactly as the files have them). */
function gpuAdapter(gpu: GpuContext, session: ModelSession, imported: ImportedAdapter): LoraAdapter {
  return LoraAdapter.fromPeft(gpu, session.loaded.config, imported);
}

/** Index of the largest value; the first one on a tie (the ONNX side breaks ties the same way). */
function argmax(values: Float32Array): number {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i] > values[best]) best = i;
  return best;
}

function answerText(session: ModelSession, ids: readonly number[], style: DecodeRequest['style']): string {
  const { tokenizer } = session;
  const text = tokenizer.decode(ids.filter((id) => id !== tokenizer.endOfTextId));
  return style === 'chat' ? answerFromGenerated(text, TEMPLATE, tokenizer.endOfText) : text;
}

/**
 * The run's answer to a prompt by the engine (base weights on the GPU + the adapter's LoRA kernels), greedy: the
 * argmax at every position until end-of-text, maxNewTokens, or the context (prompt + answer < n_positions).
 */
export async function greedyAnswer(gpu: GpuContext, request: GreedyRequest): Promise<GreedyAnswer> {
  const session = loadedModel();
  const { tokenizer } = session;
  const context = session.loaded.config.nPositions;
  if (!(Number.isSafeInteger(request.maxNewTokens) && request.maxNewTokens >= 1 && request.maxNewTokens <= 512)) {
    throw new TunelabError('bad-data', `new tokens must be a whole number from 1 to 512, got ${request.maxNewTokens}`);
  }
  if (!request.prompt.trim()) throw new TunelabError('bad-data', 'type a prompt to ask both models');
  const promptIds =
    request.style === 'chat'
      ? encodeGenerationPrompt({ kind: 'completion', prompt: request.prompt }, tokenizer, TEMPLATE)
      : tokenizer.encode(request.prompt);
  if (promptIds.length >= context) {
    throw new TunelabError('bad-data', `the prompt is ${promptIds.length} tokens, but the model reads at most ${context}; shorten it`);
  }
  const imported = runAdapter(session, request);
  const adapter = gpuAdapter(gpu, session, imported);
  let decoder: Gpt2Decoder | undefined;
  try {
    decoder = await Gpt2Decoder.create(gpu, currentGpuModel(gpu), { adapter });
    let logits = await decoder.prefill(promptIds, { useAdapter: true }); // (B=1, V)
    const lastLogits = logits.slice();
    const ids: number[] = [];
    for (;;) {
      const token = argmax(logits);
      ids.push(token);
      const full = promptIds.length + ids.length >= context;
      if (token === tokenizer.endOfTextId || ids.length >= request.maxNewTokens || full) break;
      logits = await decoder.step([token]);
    }
    return {
      promptIds,
      ids,
      text: answerText(session, ids, request.style),
      lastLogits,
      endOfTextId: tokenizer.endOfTextId,
      context,
    };
  } finally {
    decoder?.destroy();
    adapter.destroy();
  }
}

/** Token ids (an ONNX model's answer) as answer text, exactly as greedyAnswer makes its text. */
export function decodeAnswer(request: DecodeRequest): string {
  const session = loadedModel();
  const vocab = session.loaded.config.vocabSize;
  if (!request.ids.every((id) => Number.isSafeInteger(id) && id >= 0 && id < vocab)) {
    throw new TunelabError('bad-data', `token ids must be whole numbers below the vocabulary size (${vocab})`);
  }
  return answerText(session, request.ids, request.style);
}

// ---- the recipe -------------------------------------------------------------------------------------------------------

/** The examples of each split as the run split them (plain text: the whole text, as training data). */
function splitExamples(prepared: PreparedDataset): { train: Example[]; validation: Example[] } {
  const { files } = prepared;
  if (prepared.report.format.kind === 'text') return { train: files.train.examples.slice(0, 1), validation: [] };
  const byOrigin = new Map<string, Example>();
  for (const file of [files.train, files.validation]) {
    for (const example of file?.examples ?? []) byOrigin.set(`${example.origin.source}:${example.origin.index}`, example);
  }
  const examplesOf = (sequences: PreparedDataset['train']) =>
    sequences.map((s) => byOrigin.get(`${s.origin.source}:${s.origin.index}`)).filter((e): e is Example => e !== undefined);
  return { train: examplesOf(prepared.train), validation: examplesOf(prepared.validation) };
}

/** The TRL + PEFT recipe of a run (its data as JSONL, train.py with its settings, README) as one zipped folder. */
export function recipeZip(request: RecipeRequest): Uint8Array {
  const session = loadedModel();
  const config = session.loaded.config;
  const { settings, data } = request.request;
  const prepared = prepareDataset(
    { train: data.train, ...(data.validation !== undefined ? { validation: data.validation } : {}) },
    session.tokenizer,
    {
      format: data.format,
      context: config.nPositions,
      batchSize: settings.batchSize,
      validationFraction: settings.validationFraction,
      seed: settings.seed,
    },
  );
  if (!prepared.report.trainable) {
    throw new TunelabError('bad-data', "the run's data has errors with this model's tokenizer, so it cannot be exported; check it in the Data panel");
  }
  let adapter: AdapterSpec;
  if (request.adapter) {
    adapter = { ...runAdapter(session, { adapter: request.adapter, modelName: request.modelName }).spec };
  } else {
    const { rank, alpha, dropout, rsLora, targets, layers } = settings.lora;
    adapter = {
      rank,
      alpha,
      dropout,
      useRslora: rsLora,
      targetModules: [...targets] as AdapterTarget[],
      layers: layers === 'all' ? null : loraLayers(config, layers),
      baseModel: '',
    };
  }
  adapter.baseModel = request.modelName || adapter.baseModel;
  // Exactly the config the run trained with: the trainer's defaults fill what the settings panel does not set
  // (betas, eps, warmup ratio).
  const full = trainConfigOf(settings, loraConfigOf(settings, config.nLayer));
  const training = recipeTrainingConfig(full);
  let files;
  try {
    files = exportRunRecipe({
      modelId: request.modelName,
      adapter,
      training,
      maxSequenceLength: Math.max(2, prepared.batcher.sequenceLength),
      data: splitExamples(prepared),
      template: prepared.options.template,
      trainOn: prepared.options.trainOn,
      packing: prepared.options.packing,
      runName: request.runName,
    });
  } catch (error) {
    if (error instanceof RangeError) throw new TunelabError('bad-data', `the recipe cannot be written: ${error.message}`);
    throw error;
  }
  return zipRunRecipe(files, request.folder);
}
