// Loads the PyTorch oracle fixture (tests/fixtures/gpt2-lora/) for the interop tests: the tiny GPT-2's config and
// f32 weights, the PEFT adapter's raw files, the expected logits, and Float64 conversions for the reference model.

import { readFileSync } from 'node:fs';
import { expect } from 'vitest';
import { TunelabError } from '../../src/engine/errors.ts';
import { parseSafetensors, readTensorF32, type SafetensorsFile } from '../../src/engine/io/safetensors.ts';
import { parseModelConfig, type ModelConfig } from '../../src/engine/model/config.ts';
import type { AdapterTensors } from '../../src/engine/interop/peft.ts';
import type { Gpt2ReferenceLora, ReferenceLoraPair } from '../../src/engine/reference/gpt2.ts';

const FIXTURE = new URL('../fixtures/gpt2-lora/', import.meta.url);

export function fixtureBytes(path: string): Uint8Array {
  return new Uint8Array(readFileSync(new URL(path, FIXTURE)));
}

export function fixtureText(path: string): string {
  return readFileSync(new URL(path, FIXTURE), 'utf8');
}

export function allTensors(file: SafetensorsFile): Map<string, Float32Array> {
  return new Map([...file.tensors.keys()].map((name) => [name, readTensorF32(file, name)]));
}

export interface Fixture {
  config: ModelConfig;
  /** Base weights as stored (HF names without `transformer.`). */
  weights: Map<string, Float32Array>;
  adapterConfigJson: string;
  adapterModel: Uint8Array;
  expected: SafetensorsFile;
  /** The fixture's (B,T) batch. */
  B: number;
  T: number;
  ids: number[];
  /** 'transformer.h.0.attn.c_attn', … from the expected file's metadata. */
  adaptedModules: string[];
}

export function loadFixture(): Fixture {
  const config = parseModelConfig(fixtureText('model/config.json'));
  const weights = allTensors(parseSafetensors(fixtureBytes('model/model.safetensors')));
  const expected = parseSafetensors(fixtureBytes('expected.safetensors'));
  const [B, T] = expected.tensors.get('input_ids')!.shape;
  return {
    config,
    weights,
    adapterConfigJson: fixtureText('adapter/adapter_config.json'),
    adapterModel: fixtureBytes('adapter/adapter_model.safetensors'),
    expected,
    B,
    T,
    ids: Array.from(readTensorF32(expected, 'input_ids')),
    adaptedModules: JSON.parse(expected.metadata.adapted_modules),
  };
}

export function toFloat64(weights: ReadonlyMap<string, Float32Array>): Map<string, Float64Array> {
  return new Map([...weights].map(([name, value]) => [name, Float64Array.from(value)]));
}

/** The reference model's LoRA from neutral adapter tensors. */
export function referenceLora(tensors: AdapterTensors, scale: number): Gpt2ReferenceLora {
  const modules = new Map<string, ReferenceLoraPair>();
  for (const [path, pair] of tensors) modules.set(path, { a: Float64Array.from(pair.a), b: Float64Array.from(pair.b) });
  return { scale, modules };
}

/** Largest |a − e|. */
export function maxAbsError(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  expect(actual.length).toBe(expected.length);
  let worst = 0;
  for (let i = 0; i < expected.length; i++) worst = Math.max(worst, Math.abs(actual[i] - expected[i]));
  return worst;
}

/** Asserts that `run` throws TunelabError('bad-model') with a message matching `pattern`. */
export function expectBadModel(run: () => unknown, pattern: RegExp): void {
  let error: unknown;
  try {
    run();
  } catch (e) {
    error = e;
  }
  expect(error, `expected a refusal matching ${pattern}`).toBeInstanceOf(TunelabError);
  expect((error as TunelabError).code).toBe('bad-model');
  expect((error as TunelabError).message).toMatch(pattern);
}
