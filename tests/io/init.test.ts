import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { directorySource, init } from '../../src/cli/init.ts';
import { main } from '../../src/cli/main.ts';
import { floatToHalfBits, halfBitsToFloat, parseSafetensors } from '../../src/engine/io/safetensors.ts';
import { TINY, modelConfig } from '../../src/engine/model/config.ts';
import { INIT_STD, createModelDirectory, initGpt2Parameters } from '../../src/engine/model/init.ts';
import { checkTokenizerJson, loadModel } from '../../src/engine/model/load.ts';
import { parameterView } from '../../src/engine/model/weights.ts';
import { byteLevelTokenizerJson } from '../../src/engine/tokenizer/byte-level.ts';

function stats(values: Float32Array): { mean: number; std: number } {
  let sum = 0;
  for (const v of values) sum += v;
  const mean = sum / values.length;
  let sq = 0;
  for (const v of values) sq += (v - mean) ** 2;
  return { mean, std: Math.sqrt(sq / values.length) };
}

describe("GPT-2's initialization", () => {
  const config = modelConfig({ nLayer: 4, nHead: 4, nEmbd: 64, nPositions: 32, vocabSize: 300, bosTokenId: 0, eosTokenId: 0 });
  const params = initGpt2Parameters(config, 7);

  it('is deterministic in the seed', () => {
    expect(initGpt2Parameters(config, 7).data).toEqual(params.data);
    expect(initGpt2Parameters(config, 8).data).not.toEqual(params.data);
  });

  it('draws weights with std 0.02, residual projections with 0.02/sqrt(2L), biases 0, LayerNorm weights 1', () => {
    // wte has 19200 values: the sample std is within about 1% of the true one; 4% leaves room.
    for (const name of ['wte.weight', 'h.0.attn.c_attn.weight', 'h.3.mlp.c_fc.weight']) {
      const { mean, std } = stats(parameterView(params, name));
      expect(Math.abs(mean)).toBeLessThan(0.002);
      expect(std / INIT_STD).toBeGreaterThan(0.96);
      expect(std / INIT_STD).toBeLessThan(1.04);
    }
    const residualStd = INIT_STD / Math.sqrt(2 * config.nLayer);
    for (const name of ['h.1.attn.c_proj.weight', 'h.2.mlp.c_proj.weight']) {
      const { std } = stats(parameterView(params, name));
      expect(std / residualStd).toBeGreaterThan(0.94);
      expect(std / residualStd).toBeLessThan(1.06);
    }
    for (const e of params.layout.entries) {
      const view = parameterView(params, e.name);
      if (e.kind === 'linear-bias' || e.kind === 'layernorm-bias') expect(view.every((v) => v === 0)).toBe(true);
      if (e.kind === 'layernorm-weight') expect(view.every((v) => v === 1)).toBe(true);
    }
    // Padding between tensors stays zero.
    let padding = 0;
    let end = 0;
    for (const e of params.layout.entries) {
      for (let i = end; i < e.offset; i++) padding += Math.abs(params.data[i]);
      end = e.offset + e.elementCount;
    }
    expect(padding).toBe(0);
  });

  it('writes an f16 checkpoint whose values are the f16-rounded weights', async () => {
    const dir = createModelDirectory({
      config: TINY,
      seed: 1,
      dtype: 'f16',
      tokenizerJson: checkTokenizerJson(byteLevelTokenizerJson()),
      tokenizerDescription: 'bytes',
    });
    const file = parseSafetensors(dir.files['model.safetensors']);
    expect(file.tensors.get('wte.weight')!.dtype).toBe('F16');
    expect(JSON.parse(new TextDecoder().decode(dir.files['config.json'])).torch_dtype).toBe('float16');
    const loaded = await loadModel({ description: 'mem', read: async (n) => (dir.files as Record<string, Uint8Array>)[n] ?? null });
    const expected = Array.from(dir.parameters.data, (v) => halfBitsToFloat(floatToHalfBits(v)));
    expect(Array.from(loaded.weights.data)).toEqual(expected);
    expect(new TextDecoder().decode(dir.files['MODEL_CARD.md'])).toMatch(/random weights[\s\S]*Parameters: [\d,]+[\s\S]*seed 1/);
  });
});

describe('tunelab init (CLI)', () => {
  let root: string;
  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'tunelab-init-'));
    vi.spyOn(process.stdout, 'write').mockImplementation(() => true);
    vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
  });
  afterAll(async () => {
    vi.restoreAllMocks();
    await rm(root, { recursive: true, force: true });
  });

  it('writes a tiny byte-level model by default that loads back', async () => {
    const out = join(root, 'tiny');
    expect(await init(['--out', out, '--seed', '5'])).toBe(0);
    const model = await loadModel(directorySource(out));
    expect(model.config).toEqual(TINY);
    expect(model.weights.data).toEqual(initGpt2Parameters(TINY, 5).data);
    expect(model.tokenizerJson).toEqual(byteLevelTokenizerJson());
    expect(await readFile(join(out, 'MODEL_CARD.md'), 'utf8')).toMatch(/tunelab init --out .* --seed 5/);
  });

  it('takes sizes, dtype and a tokenizer copied from another model directory', async () => {
    const first = join(root, 'first');
    expect(await init(['--out', first, '--vocab', '300'])).toBe(0);
    const tokenizer = JSON.parse(await readFile(join(first, 'tokenizer.json'), 'utf8'));
    tokenizer.added_tokens.push({ id: 257, content: '<|pad|>', special: true });
    await writeFile(join(first, 'tokenizer.json'), JSON.stringify(tokenizer));

    const second = join(root, 'second');
    const args = ['--out', second, '--layers', '3', '--dim', '48', '--heads', '6', '--context', '20'];
    expect(await init([...args, '--tokenizer', first, '--dtype', 'f16', '--seed', '2'])).toBe(0);
    const model = await loadModel(directorySource(second));
    expect(model.config).toEqual({ ...TINY, nLayer: 3, nEmbd: 48, nHead: 6, nPositions: 20, vocabSize: 258 });
    expect(model.tokenizerJson).toEqual(tokenizer);
    const file = parseSafetensors(await readFile(join(second, 'model.safetensors')));
    expect(file.tensors.get('h.2.mlp.c_fc.weight')).toMatchObject({ dtype: 'F16', shape: [48, 192] });
  });

  it('refuses bad flags with usage (exit 2) and existing files without --force (exit 1 via main)', async () => {
    expect(await init([])).toBe(2); // no --out
    expect(await init(['--out', join(root, 'x'), '--dim', '30', '--heads', '4'])).toBe(2);
    expect(await init(['--out', join(root, 'x'), '--layers', 'two'])).toBe(2);
    expect(await init(['--out', join(root, 'x'), '--dtype', 'bf16'])).toBe(2);
    expect(await init(['--out', join(root, 'x'), '--vocab', '100'])).toBe(2); // below the tokenizer's 257
    expect(await init(['--out', join(root, 'x'), '--bogus'])).toBe(2);
    expect(await main(['init', '--out', join(root, 'y'), '--tokenizer', join(root, 'missing')])).toBe(1);

    const out = join(root, 'again');
    expect(await main(['init', '--out', out])).toBe(0);
    expect(await main(['init', '--out', out])).toBe(1);
    expect(await main(['init', '--out', out, '--force', '--seed', '3'])).toBe(0);
    const model = await loadModel(directorySource(out));
    expect(model.weights.data).toEqual(initGpt2Parameters(TINY, 3).data);
  });
});
