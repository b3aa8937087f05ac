// A LoRA adapter for the built-in tiny model, made in Node with the engine's PEFT writer, for the playground and runs
// e2e tests: random, non-zero A and B (B ≠ 0, so the fine-tuned model really differs from the base model), on two
// modules of every layer. The tests upload its two files as a learner would.

import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Page } from 'playwright-core';
import { exportPeftAdapter, type AdapterSpec, type AdapterTensors } from '../../src/engine/interop/peft.ts';
import { Rng } from '../../src/engine/random.ts';
import { tinyModelDir } from './app.ts';

export interface TinyAdapter {
  spec: AdapterSpec;
  tensors: AdapterTensors;
  adapterConfigJson: string;
  adapterModel: Uint8Array;
}

/** The tiny model's shape, read from its config.json. */
export async function tinyModelShape(): Promise<{ nLayer: number; nEmbd: number }> {
  const config = JSON.parse(await readFile(join(tinyModelDir, 'config.json'), 'utf8')) as { n_layer: number; n_embd: number };
  return { nLayer: config.n_layer, nEmbd: config.n_embd };
}

/** Rank 4 (or `rank`), alpha 8 on c_attn and c_fc of every layer, A and B uniform in ±0.5 from `seed`. */
export async function randomTinyAdapter(seed = 7, rank = 4): Promise<TinyAdapter> {
  const model = await tinyModelShape();
  const C = model.nEmbd;
  const rng = new Rng(seed);
  const values = (n: number) => Float32Array.from({ length: n }, () => rng.uniform(-0.5, 0.5));
  const tensors: AdapterTensors = new Map();
  for (let layer = 0; layer < model.nLayer; layer++) {
    tensors.set(`h.${layer}.attn.c_attn`, { a: values(rank * C), b: values(3 * C * rank) });
    tensors.set(`h.${layer}.mlp.c_fc`, { a: values(rank * C), b: values(4 * C * rank) });
  }
  const spec: AdapterSpec = {
    rank,
    alpha: 8,
    dropout: 0,
    useRslora: false,
    targetModules: ['c_attn', 'c_fc'],
    layers: null,
    baseModel: 'tiny',
  };
  const files = exportPeftAdapter(spec, tensors, model);
  return { spec, tensors, ...files };
}

/** Chooses the adapter's two files in the Runs panel's import and waits until the import has finished. */
export async function importAdapterFiles(page: Page, adapter: TinyAdapter): Promise<void> {
  const before = await page.getByTestId('run-row').count();
  await page.getByTestId('import-adapter-input').setInputFiles([
    { name: 'adapter_config.json', mimeType: 'application/json', buffer: Buffer.from(adapter.adapterConfigJson) },
    { name: 'adapter_model.safetensors', mimeType: 'application/octet-stream', buffer: Buffer.from(adapter.adapterModel) },
  ]);
  await page.waitForFunction(
    (count) =>
      document.querySelectorAll('[data-testid="run-row"]').length > count ||
      document.querySelector('[data-testid="import-error"], [data-testid="runs-problem"]') !== null,
    before,
    { timeout: 60_000 },
  );
}
