// Loads the PyTorch oracle fixture (tests/fixtures/gpt2-lora/, see its README.md): the tiny GPT-2's config and
// weights in the flat layout of weights.ts, the PEFT adapter, and the expected tensors. The fixture has no
// tokenizer.json, so config.json and the safetensors files are read directly (loadModel wants a tokenizer).

import { readFileSync } from 'node:fs';
import { parseSafetensors, readTensorF32, type SafetensorsFile } from '../../src/engine/io/safetensors.ts';
import { parseModelConfig, type ModelConfig } from '../../src/engine/model/config.ts';
import { mapCheckpoint, type ParameterSet } from '../../src/engine/model/weights.ts';

const DIR = new URL('../fixtures/gpt2-lora/', import.meta.url);

export interface GptLoraFixture {
  config: ModelConfig;
  weights: ParameterSet;
  adapterConfigJson: unknown;
  /** adapter_model.safetensors as stored, for interop/peft.ts's importPeftAdapter. */
  adapterModel: Uint8Array;
  /** PEFT-named adapter tensors. */
  adapterTensors: Map<string, Float32Array>;
  expected: SafetensorsFile;
  B: number;
  T: number;
  ids: number[];
  targets: number[];
  mask: number[];
  get(name: string): Float32Array;
}

export function loadFixture(): GptLoraFixture {
  const config = parseModelConfig(readFileSync(new URL('model/config.json', DIR), 'utf8'));
  const weights = mapCheckpoint(parseSafetensors(readFileSync(new URL('model/model.safetensors', DIR))), config);
  const adapterModel = new Uint8Array(readFileSync(new URL('adapter/adapter_model.safetensors', DIR)));
  const adapterFile = parseSafetensors(adapterModel);
  const adapterTensors = new Map([...adapterFile.tensors.keys()].map((name) => [name, readTensorF32(adapterFile, name)]));
  const expected = parseSafetensors(readFileSync(new URL('expected.safetensors', DIR)));
  const get = (name: string) => readTensorF32(expected, name);
  const [B, T] = expected.tensors.get('input_ids')!.shape;
  return {
    config,
    weights,
    adapterConfigJson: JSON.parse(readFileSync(new URL('adapter/adapter_config.json', DIR), 'utf8')),
    adapterModel,
    adapterTensors,
    expected,
    B,
    T,
    ids: Array.from(get('input_ids')),
    targets: Array.from(get('targets')),
    mask: Array.from(get('loss_mask')),
    get,
  };
}

/** Largest |a − b|. */
export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`lengths differ: ${a.length} vs ${b.length}`);
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
  return worst;
}
