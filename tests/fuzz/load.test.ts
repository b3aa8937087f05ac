// Fuzz test of the whole model loader (loadModel over a memorySource): thousands of seeded model directories with
// a damaged, swapped or missing config.json, tokenizer.json or model.safetensors (bytes, header fields, tensor names,
// shapes, dtypes). Each ends in a loaded model whose weights fill its layout, or a TunelabError('bad-model') that
// names the file, quickly.

import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { TunelabError } from '../../src/engine/errors.ts';
import { parseSafetensors } from '../../src/engine/io/safetensors.ts';
import { modelConfig, TINY } from '../../src/engine/model/config.ts';
import { createModelDirectory } from '../../src/engine/model/init.ts';
import { loadModel, memorySource, type LoadedModel } from '../../src/engine/model/load.ts';
import { gpt2ParameterLayout } from '../../src/engine/model/weights.ts';
import type { Rng } from '../../src/engine/random.ts';
import { byteLevelTokenizerJson } from '../../src/engine/tokenizer/index.ts';
import { rawSafetensors } from '../io/raw.ts';
import {
  encodeUtf8,
  expectEachResultOrTunelabError,
  fuzz,
  mutateBytes,
  mutateJson,
  mutateText,
  pick,
  preview,
  randomJson,
  resultOrTunelabError,
  summary,
  withDeepValue,
} from './helpers.ts';
import { HANG_MS } from './helpers.ts';

const FILE_NAMES = ['config.json', 'tokenizer.json', 'model.safetensors'] as const;
type ModelFiles = Partial<Record<(typeof FILE_NAMES)[number] | 'extra', Uint8Array>>;

const TINY_DIR: ModelFiles = Object.fromEntries(
  FILE_NAMES.map((name) => [name, new Uint8Array(readFileSync(new URL(`../../public/models/tiny/${name}`, import.meta.url)))]),
);

/** A much smaller model (L=1, C=8, T=16), in f32 and in f16, so most cases parse a few kilobytes. */
function microDir(dtype: 'f32' | 'f16'): ModelFiles {
  const config = modelConfig({ ...TINY, nLayer: 1, nHead: 2, nEmbd: 8, nPositions: 16 });
  const dir = createModelDirectory({ config, seed: 7, dtype, tokenizerJson: byteLevelTokenizerJson() as never, tokenizerDescription: 'byte-level' });
  return { 'config.json': dir.files['config.json'], 'tokenizer.json': dir.files['tokenizer.json'], 'model.safetensors': dir.files['model.safetensors'] };
}

const BASES = [microDir('f32'), microDir('f16'), TINY_DIR];

const CONFIG_KEYS = ['model_type', 'n_layer', 'n_head', 'n_embd', 'n_positions', 'n_ctx', 'vocab_size', 'layer_norm_epsilon', 'activation_function', 'n_inner', 'bos_token_id', 'eos_token_id', 'tie_word_embeddings'];
const TOKENIZER_KEYS = ['model', 'type', 'vocab', 'merges', 'added_tokens', 'id', 'content', 'special', 'pre_tokenizer', 'decoder', '<|endoftext|>'];
const HEADER_KEYS = ['dtype', 'shape', 'data_offsets', '__metadata__', 'format'];
const HEADER_VALUES = ['F32', 'F16', 'BF16', 'I64', 'U8', 'F64', [257, 8], [8, 257], [16, 8], [8], [8, 24], [], [0, 0], 'pt'];

const decode = (bytes: Uint8Array) => new TextDecoder().decode(bytes);

/** Header-level damage to a checkpoint: a tensor renamed (prefix, alias, lm_head, another block) or an entry field changed. */
function mutateCheckpointHeader(rng: Rng, bytes: Uint8Array): Uint8Array {
  const file = parseSafetensors(bytes);
  const header = JSON.parse(decode(bytes.subarray(8, 8 + file.headerBytes))) as Record<string, unknown>;
  const names = Object.keys(header).filter((n) => n !== '__metadata__');
  const name = pick(rng, names);
  if (rng.next() < 0.5) {
    const renamed = pick(rng, [
      `transformer.${name}`,
      name.replace('wte.weight', 'wte'),
      name.replace('wte.weight', 'lm_head.weight'),
      name.replace(/^h\.\d+/, `h.${pick(rng, [1, 5, 99])}`),
      name.replace('.weight', '.bias'),
      'h.0.attn.bias',
      'lm_head.weight',
      `${name}_copy`,
    ]);
    if (rng.next() < 0.5) delete header[name];
    header[renamed] = header[name] ?? header[names[0]];
  } else {
    header[name] = mutateJson(rng, header[name], HEADER_KEYS, HEADER_VALUES);
  }
  return rawSafetensors(header, file.data);
}

function mutateJsonFile(rng: Rng, bytes: Uint8Array, keys: readonly string[]): Uint8Array {
  const text = decode(bytes);
  switch (rng.int(5)) {
    case 0:
      return encodeUtf8(mutateText(rng, text));
    case 1:
      return mutateBytes(rng, bytes);
    case 2:
      return encodeUtf8(JSON.stringify(randomJson(rng, keys)));
    default:
      return encodeUtf8(JSON.stringify(mutateJson(rng, JSON.parse(text), keys)));
  }
}

function generate(rng: Rng): ModelFiles {
  const base = pick(rng, BASES);
  const files: ModelFiles = { ...base };
  for (let r = 1 + rng.int(2); r > 0; r--) {
    const target = pick(rng, FILE_NAMES);
    const roll = rng.int(12);
    if (roll === 0) delete files[target];
    else if (roll === 1) files[target] = pick(rng, BASES)[target]; // a file of another model
    else if (roll === 2) files[target] = new Uint8Array(0);
    else if (target === 'config.json') files[target] = mutateJsonFile(rng, base[target]!, CONFIG_KEYS);
    else if (target === 'tokenizer.json') files[target] = mutateJsonFile(rng, base[target]!, TOKENIZER_KEYS);
    else files[target] = roll < 7 ? mutateCheckpointHeader(rng, base[target]!) : mutateBytes(rng, base[target]!);
  }
  if (rng.next() < 0.05) files.extra = encodeUtf8('not part of the model');
  return files;
}

function showFiles(files: ModelFiles): string {
  return FILE_NAMES.map((name) => `${name}: ${files[name] ? preview(name === 'model.safetensors' ? files[name]! : decode(files[name]!), 300) : '(missing)'}`).join('\n');
}

const CASES = 2500;

describe('fuzz: the model loader', () => {
  it('the base directories load (so the fuzzer starts from working files)', async () => {
    for (const base of BASES) expect((await loadModel(memorySource(base as Record<string, Uint8Array>))).warnings).toEqual([]);
  });

  it(`loadModel gives a complete model or a bad-model TunelabError naming the file (${CASES} seeded directories)`, async () => {
    let nonFinite = 0;
    const outcome = await fuzz<ModelFiles>({
      seed: 5505,
      cases: CASES,
      generate,
      async parse(files) {
        try {
          return await loadModel(memorySource(files as Record<string, Uint8Array>, 'the fuzzed model'));
        } catch (error) {
          // Every refusal says which file it is about (or which one is missing).
          if (error instanceof TunelabError) expect(error.message).toMatch(/config\.json|tokenizer\.json|model\.safetensors/);
          throw error;
        }
      },
      show: showFiles,
      check(result) {
        const model = result as LoadedModel;
        const layout = gpt2ParameterLayout(model.config);
        expect(model.weights.data.length).toBe(layout.totalElements);
        expect(model.weights.layout.parameterCount).toBe(layout.parameterCount);
        expect(typeof model.tokenizerJson.model).toBe('object');
        if (model.weights.data.some((v) => !Number.isFinite(v))) nonFinite++;
      },
    });
    console.log(`${summary('model loader', outcome)}; ${nonFinite} loaded models hold NaN or infinite weights`);
    expect(outcome.accepted).toBeGreaterThan(250);
    expect(outcome.refused).toBeGreaterThan(1200);
    expect(outcome.refusals.size).toBeGreaterThan(30);
    expect(outcome.slowestMs).toBeLessThan(HANG_MS);
  });

  it('a config.json with an absurd layer count is refused at once, not laid out until memory runs out', async () => {
    const config = JSON.parse(decode(TINY_DIR['config.json']!)) as Record<string, unknown>;
    for (const layers of [1001, 100_000, 2 ** 32 + 1]) {
      const started = performance.now();
      const outcome = await resultOrTunelabError(`n_layer ${layers}`, () =>
        loadModel(memorySource({ ...(TINY_DIR as Record<string, Uint8Array>), 'config.json': JSON.stringify({ ...config, n_layer: layers }) })),
      );
      expect(outcome).toBeInstanceOf(TunelabError);
      expect((outcome as TunelabError).message).toMatch(/config\.json: nLayer=\d+ is far more blocks/);
      expect(performance.now() - started).toBeLessThan(500);
    }
  });

  it('a value nested thousands deep in any of the three files ends in a model or a TunelabError, not a stack overflow', async () => {
    const base = BASES[0];
    const config = JSON.parse(decode(base['config.json']!)) as Record<string, unknown>;
    const tokenizer = JSON.parse(decode(base['tokenizer.json']!)) as Record<string, unknown>;
    const checkpoint = parseSafetensors(base['model.safetensors']!);
    const header = JSON.parse(decode(base['model.safetensors']!.subarray(8, 8 + checkpoint.headerBytes))) as Record<string, unknown>;
    const cases: { file: string; path: string; bytes: Uint8Array }[] = [];
    for (const asObject of [false, true]) {
      const kind = asObject ? ' (objects)' : ' (arrays)';
      for (const key of CONFIG_KEYS) cases.push({ file: 'config.json', path: key + kind, bytes: encodeUtf8(withDeepValue(config, [key], 10_000, asObject)) });
      for (const path of [['model'], ['model', 'vocab'], ['added_tokens']]) {
        cases.push({ file: 'tokenizer.json', path: path.join('.') + kind, bytes: encodeUtf8(withDeepValue(tokenizer, path, 10_000, asObject)) });
      }
      for (const field of ['dtype', 'shape', 'data_offsets']) {
        const headerText = withDeepValue(header, ['wte.weight', field], 10_000, asObject);
        cases.push({ file: 'model.safetensors', path: `wte.weight.${field}${kind}`, bytes: rawSafetensors(headerText, checkpoint.data) });
      }
      cases.push({ file: 'model.safetensors', path: `__metadata__${kind}`, bytes: rawSafetensors(withDeepValue(header, ['__metadata__'], 10_000, asObject), checkpoint.data) });
    }
    await expectEachResultOrTunelabError(
      cases.map(({ file, path, bytes }) => ({
        label: `${file}: ${path} nested 10000 deep`,
        call: () => loadModel(memorySource({ ...(base as Record<string, Uint8Array>), [file]: bytes })),
      })),
    );
  });
});
