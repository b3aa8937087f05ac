// Worker-side state: the model the user is working with (config, weights on the CPU, tokenizer), kept here between
// coarse calls so that data validation, training and generation all use the same one. Only a plain `ModelSummary`
// ever leaves the worker. Loading a new model replaces the current one only when the new one loaded completely.

import { TunelabError } from '../engine/errors.ts';
import type { GpuContext } from '../engine/gpu/context.ts';
import { headSize } from '../engine/model/config.ts';
import { Gpt2Model } from '../engine/model/gpt2.ts';
import type { LoraAdapter, LoraConfig } from '../engine/model/lora.ts';
import { fetchSource, fileListSource, loadModel, type LoadedModel, type ModelSource, type TokenizerJson } from '../engine/model/load.ts';
import { Tokenizer, byteLevelTokenizer } from '../engine/tokenizer/index.ts';
import type { ModelRequest, ModelSummary } from './protocol.ts';

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
  const tokenizer = Tokenizer.fromJson(loaded.tokenizerJson, { name: `tokenizer.json of ${request.name || 'the model'}` });
  generation++;
  const summary = describeModel(loaded, tokenizer, {
    generation,
    name: request.name || (request.kind === 'files' ? 'model from files' : 'model'),
    origin: request.kind === 'url' ? 'bundled' : 'files',
    source: source.description,
  });
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
  if (uploaded && uploaded.generation === current.summary.generation && uploaded.gpu === gpu) return uploaded.model;
  if (uploaded && uploaded.gpu === gpu) uploaded.model.destroy();
  const { config, weights } = current.loaded;
  uploaded = { generation: current.summary.generation, gpu, model: Gpt2Model.create(gpu, config, weights) };
  return uploaded.model;
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
  const { adapter, spec, runId } = trained;
  return { adapter, spec, runId };
}
