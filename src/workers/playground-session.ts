// Worker-side state of the playground: the LoRA adapter the fine-tuned column uses (the last training run's, or one
// imported from PEFT files), and two KV-cache generators, one per column, so that the base and the fine-tuned answer
// stream at the same time. Generators are bound to the model's and the adapter's GPU buffers, so they are re-created
// when either changes; one that is still generating is retired and freed when it finishes.
//
// Which adapter is current: the newest of the trained one (model-session's currentTrainedAdapter, set when a run
// ends) and the last import. A trained adapter that appears after an import replaces it; an import replaces both.
// Trained adapters belong to model-session (which frees one when a newer run replaces it); imported ones to this file.

import { answerFromGenerated, encodeGenerationPrompt, resolveTemplate, type ChatTemplate } from '../engine/data/index.ts';
import { TunelabError } from '../engine/errors.ts';
import { Generator, type GenerationResult } from '../engine/generate/generator.ts';
import { samplingOptions } from '../engine/generate/sampling.ts';
import type { GpuContext } from '../engine/gpu/context.ts';
import { importPeftAdapter } from '../engine/interop/peft.ts';
import type { Gpt2Model } from '../engine/model/gpt2.ts';
import { LoraAdapter, type LoraSite } from '../engine/model/lora.ts';
import { currentGpuModel, currentModel, currentTrainedAdapter } from './model-session.ts';
import type { AdapterImportRequest, AdapterInfo, GenerateRequest, GenerationDone, GenerationUpdate } from './protocol.ts';

/** Streamed text reaches the page at most this often: each update is a message and a re-render. */
const UPDATE_INTERVAL_MS = 50;

/** The template training renders examples with (the app trains with the default one). */
const TEMPLATE: ChatTemplate = resolveTemplate();

/** A chat answer ends at end-of-text; a base model that never learned that tends to invent the next user turn. */
const CHAT_STOP_STRINGS = ['\nUser:'];

interface ActiveAdapter {
  adapter: LoraAdapter;
  info: AdapterInfo;
  /** The device its weights live on. */
  gpu: GpuContext;
}

interface Slot {
  generator: Generator;
  model: Gpt2Model;
  /** The model's ModelSummary.generation. */
  modelGeneration: number;
  adapter: LoraAdapter | undefined;
  /** Generations running on it (0 or 1: a Generator runs one at a time). */
  running: number;
}

let imported: ActiveAdapter | undefined;
/** The trained adapter seen last, so that a newer one (a run that ended after an import) can take over. */
let seenTrained: LoraAdapter | undefined;
const slots = new Map<GenerateRequest['slot'], Slot>();
/** Generators and adapters replaced while in use; freed once nothing runs on them. */
const retiredSlots = new Set<Slot>();
const retiredAdapters = new Set<LoraAdapter>();
const controllers = new Map<number, AbortController>();

function siteLayers(sites: readonly LoraSite[]): number[] {
  return [...new Set(sites.map((s) => s.layer))].sort((a, b) => a - b);
}

function adapterInfo(adapter: LoraAdapter, identity: Pick<AdapterInfo, 'source' | 'runId' | 'name' | 'warnings'>): AdapterInfo {
  const model = currentModel();
  return {
    ...identity,
    rank: adapter.config.rank,
    alpha: adapter.config.alpha,
    rsLora: adapter.config.rsLora,
    targets: [...new Set(adapter.config.targets)],
    layers: siteLayers(adapter.sites),
    parameterCount: adapter.layout.totalElements,
    modelGeneration: model?.summary.generation ?? 0,
  };
}

/** Whether an adapter was made for a model of this shape. */
function fitsCurrentModel(adapter: LoraAdapter): boolean {
  const config = currentModel()?.loaded.config;
  if (!config) return false;
  const a = adapter.model;
  return a.nLayer === config.nLayer && a.nEmbd === config.nEmbd && a.nHead === config.nHead && a.vocabSize === config.vocabSize;
}

function retireAdapter(adapter: LoraAdapter): void {
  retiredAdapters.add(adapter);
  collect();
}

/** Frees retired generators and imported adapters nothing runs on any more. */
function collect(): void {
  for (const slot of retiredSlots) {
    if (slot.running > 0) continue;
    slot.generator.destroy();
    retiredSlots.delete(slot);
  }
  const inUse = new Set([...slots.values(), ...retiredSlots].map((s) => s.adapter));
  for (const adapter of retiredAdapters) {
    if (inUse.has(adapter)) continue;
    adapter.destroy();
    retiredAdapters.delete(adapter);
  }
}

/** The adapter of the fine-tuned column, or undefined when there is none for the current model. */
function activeAdapter(): ActiveAdapter | undefined {
  const model = currentModel();
  if (imported && imported.info.modelGeneration !== model?.summary.generation) {
    // Another model loaded: an adapter of the old one does not apply (and may not even fit).
    retireAdapter(imported.adapter);
    imported = undefined;
  }
  const trained = currentTrainedAdapter();
  if (trained && trained.adapter !== seenTrained) {
    seenTrained = trained.adapter;
    if (imported) retireAdapter(imported.adapter);
    imported = undefined;
  }
  if (imported) return imported;
  if (!trained || !fitsCurrentModel(trained.adapter)) return undefined;
  return {
    adapter: trained.adapter,
    info: adapterInfo(trained.adapter, { source: 'trained', runId: trained.runId, name: '', warnings: [] }),
    gpu: trained.gpu,
  };
}

/** Retires the generators of a model that is no longer loaded, so their KV caches do not outlive it. */
function retireStaleSlots(): void {
  const generation = currentModel()?.summary.generation;
  for (const [name, slot] of slots) {
    if (slot.modelGeneration === generation) continue;
    slots.delete(name);
    retiredSlots.add(slot);
  }
  collect();
}

/** The adapter the fine-tuned column uses now, or null. (The UI asks after every model change.) */
export function adapterStatus(): AdapterInfo | null {
  retireStaleSlots();
  return activeAdapter()?.info ?? null;
}

/** Tunelab's tensor names ('h.0.attn.c_attn.lora_A') for the A and B of an imported module path ('h.0.attn.c_attn'). */

/**
 * Reads a PEFT adapter (adapter_config.json + adapter_model.safetensors), checks it against the current model,
 * puts it on the GPU and makes it the fine-tuned column's adapter. A bad file leaves the current adapter in place.
 */
export function importAdapter(gpu: GpuContext, request: AdapterImportRequest): AdapterInfo {
  const model = currentModel();
  if (!model) throw new TunelabError('bad-model', 'no model is loaded yet; an adapter is imported for a model');
  const config = model.loaded.config;
  const parsed = importPeftAdapter(request.adapterConfigJson, request.adapterModel, config);
  const adapter = LoraAdapter.fromPeft(gpu, config, parsed);
  const previous = imported;
  imported = {
    adapter,
    info: adapterInfo(adapter, { source: 'imported', runId: request.runId, name: request.name, warnings: parsed.warnings }),
    gpu,
  };
  // The trained adapter present now is older than this import.
  seenTrained = currentTrainedAdapter()?.adapter;
  if (previous) retireAdapter(previous.adapter);
  return imported.info;
}

/** The generator of a column for the current model and adapter, made (or re-made) as needed. */
async function slotFor(gpu: GpuContext, name: GenerateRequest['slot'], adapter: LoraAdapter | undefined): Promise<Slot> {
  const session = currentModel();
  if (!session) throw new TunelabError('bad-model', 'no model is loaded yet');
  const model = currentGpuModel(gpu);
  const existing = slots.get(name);
  if (existing && existing.model === model && existing.adapter === adapter) return existing;
  if (existing) {
    slots.delete(name);
    retiredSlots.add(existing);
    collect();
  }
  const generator = await Generator.create(gpu, model, { tokenizer: session.tokenizer, ...(adapter ? { adapter } : {}) });
  const slot: Slot = { generator, model, modelGeneration: session.summary.generation, adapter, running: 0 };
  slots.set(name, slot);
  return slot;
}

/** The answer inside the text streamed so far: a chat answer without the template's leading space. */
function streamedAnswer(text: string, chat: boolean): string {
  if (!chat) return text;
  const [before] = TEMPLATE.assistant.split('{content}');
  return before && text.startsWith(before) ? text.slice(before.length) : text.trimStart();
}

/**
 * Generates an answer to `request.prompt` with the base model or with the current adapter, calling `onUpdate` with
 * the answer so far (throttled). `stopGeneration(request.id)` ends it early (stop reason 'aborted').
 */
export async function generate(
  gpu: GpuContext,
  request: GenerateRequest,
  onUpdate: (update: GenerationUpdate) => void,
): Promise<GenerationDone> {
  const session = currentModel();
  if (!session) throw new TunelabError('bad-model', 'no model is loaded yet');
  const active = request.useAdapter ? activeAdapter() : undefined;
  if (request.useAdapter && !active) {
    throw new TunelabError('bad-model', 'there is no fine-tuned adapter yet: train one, or import one (PEFT files) in the Runs panel');
  }
  const chat = request.style === 'chat';
  let sampling;
  try {
    sampling = samplingOptions({ ...request.sampling, stopStrings: chat ? CHAT_STOP_STRINGS : [] });
  } catch (error) {
    if (error instanceof RangeError) throw new TunelabError('bad-data', error.message);
    throw error;
  }
  const { tokenizer } = session;
  const context = session.loaded.config.nPositions;
  const promptIds = chat
    ? encodeGenerationPrompt({ kind: 'completion', prompt: request.prompt }, tokenizer, TEMPLATE)
    : tokenizer.encode(request.prompt);
  if (promptIds.length >= context) {
    throw new TunelabError(
      'bad-data',
      `the prompt is ${promptIds.length} tokens${chat ? ' with the chat template' : ''}, but the model reads at most ${context}; shorten it`,
    );
  }

  // The fine-tuned column's generator is bound to the adapter even with the adapter switched off, so switching needs
  // no new generator: "off" runs the same generator without the adapter's kernels.
  const slotActive = request.useAdapter || request.slot === 'right' ? active ?? activeAdapter() : undefined;
  if (slotActive && slotActive.gpu.lost) {
    // Its weights went with the GPU device that was reset; the saved run still has them.
    throw new TunelabError(
      'device-lost',
      'the GPU was reset since this adapter was loaded, so its weights are no longer on the GPU; press "Use" on its run in the Runs panel to load it again',
    );
  }
  const slotAdapter = slotActive?.adapter;
  const slot = await slotFor(gpu, request.slot, slotAdapter);
  const controller = new AbortController();
  controllers.get(request.id)?.abort();
  controllers.set(request.id, controller);
  slot.running++;
  let lastSent = 0;
  let tokens = 0;
  let result: GenerationResult;
  try {
    result = await slot.generator.generate(
      promptIds,
      { ...sampling, useAdapter: active !== undefined },
      (_token, text) => {
        tokens++;
        const now = performance.now();
        if (now - lastSent < UPDATE_INTERVAL_MS) return;
        lastSent = now;
        onUpdate({ id: request.id, text: streamedAnswer(text, chat), tokens });
      },
      controller.signal,
    );
  } finally {
    slot.running--;
    controllers.delete(request.id);
    collect();
  }
  const text = chat && !TEMPLATE.rawCompletions ? answerFromGenerated(result.text, TEMPLATE, tokenizer.endOfText) : result.text;
  return {
    id: request.id,
    text,
    stopReason: result.stopReason,
    tokens,
    promptTokens: result.promptTokens,
    tokensPerSecond: result.tokensPerSecond,
    elapsedMs: result.elapsedMs,
    adapter: active?.info ?? null,
  };
}

/** Ends a running generation after its current token; a finished or unknown id is ignored. */
export function stopGeneration(id: number): void {
  controllers.get(id)?.abort();
}
