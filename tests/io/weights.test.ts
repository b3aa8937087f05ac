import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { TunelabError } from '../../src/engine/errors.ts';
import { floatToHalfBits, halfBitsToFloat, parseSafetensors, readTensorF32, writeSafetensors } from '../../src/engine/io/safetensors.ts';
import { GPT2_SMALL, TINY, modelConfig, parseModelConfig } from '../../src/engine/model/config.ts';
import {
  PARAMETER_ALIGN_ELEMENTS,
  gpt2ParameterLayout,
  gpt2ParameterSpecs,
  mapCheckpoint,
  parameterCount,
  parameterTensors,
  parameterView,
  partitionLayout,
  type ParameterSet,
} from '../../src/engine/model/weights.ts';
import { Rng } from '../../src/engine/random.ts';

/** A small config with every dimension different, so a swapped dimension shows up as a wrong shape. */
const SMALL = modelConfig({ nLayer: 2, nHead: 2, nEmbd: 12, nPositions: 9, vocabSize: 23, bosTokenId: 22, eosTokenId: 22 });

function randomParameters(seed: number): ParameterSet {
  const layout = gpt2ParameterLayout(SMALL);
  const data = new Float32Array(layout.totalElements);
  const rng = new Rng(seed);
  for (const e of layout.entries) for (let i = 0; i < e.elementCount; i++) data[e.offset + i] = rng.normal();
  return { layout, data };
}

type Tensor = { name: string; shape: readonly number[]; data: ArrayLike<number> };

function checkpoint(tensors: Tensor[], dtype: 'F32' | 'F16' = 'F32') {
  return parseSafetensors(writeSafetensors(tensors, { dtype }));
}

function expectBadModel(action: () => unknown, pattern: RegExp): void {
  try {
    action();
  } catch (error) {
    expect(error).toBeInstanceOf(TunelabError);
    expect((error as TunelabError).code).toBe('bad-model');
    expect((error as TunelabError).message).toMatch(pattern);
    return;
  }
  throw new Error(`expected a refusal matching ${pattern}`);
}

describe('GPT-2 parameter list', () => {
  it('counts the parameters of GPT-2 small and distilgpt2', () => {
    expect(parameterCount(GPT2_SMALL)).toBe(124_439_808);
    expect(parameterCount({ ...GPT2_SMALL, nLayer: 6 })).toBe(81_912_576);
  });

  it('lists tensors in the fixed order with [in, out] Conv1D shapes', () => {
    const specs = gpt2ParameterSpecs(SMALL);
    const C = 12;
    expect(specs.length).toBe(2 + 12 * 2 + 2);
    expect(specs.slice(0, 14).map((s) => [s.name, s.shape])).toEqual([
      ['wte.weight', [23, C]],
      ['wpe.weight', [9, C]],
      ['h.0.ln_1.weight', [C]],
      ['h.0.ln_1.bias', [C]],
      ['h.0.attn.c_attn.weight', [C, 3 * C]],
      ['h.0.attn.c_attn.bias', [3 * C]],
      ['h.0.attn.c_proj.weight', [C, C]],
      ['h.0.attn.c_proj.bias', [C]],
      ['h.0.ln_2.weight', [C]],
      ['h.0.ln_2.bias', [C]],
      ['h.0.mlp.c_fc.weight', [C, 4 * C]],
      ['h.0.mlp.c_fc.bias', [4 * C]],
      ['h.0.mlp.c_proj.weight', [4 * C, C]],
      ['h.0.mlp.c_proj.bias', [C]],
    ]);
    expect(specs.slice(-2).map((s) => s.name)).toEqual(['ln_f.weight', 'ln_f.bias']);
    expect(specs.filter((s) => s.layer === 1).length).toBe(12);
  });

  it('lays tensors out on 64-element boundaries without overlap', () => {
    const layout = gpt2ParameterLayout(SMALL);
    let end = 0;
    for (const e of layout.entries) {
      expect(e.offset % PARAMETER_ALIGN_ELEMENTS).toBe(0);
      expect(e.offset).toBeGreaterThanOrEqual(end);
      end = e.offset + e.elementCount;
    }
    expect(layout.totalElements % PARAMETER_ALIGN_ELEMENTS).toBe(0);
    expect(layout.totalElements).toBeGreaterThanOrEqual(end);
    expect(layout.parameterCount).toBe(parameterCount(SMALL));
  });

  it('partitions a layout into segments below a buffer limit, starting at tensors', () => {
    const layout = gpt2ParameterLayout(SMALL);
    const maxBytes = 4096; // wte padded is 320 elements = 1280 bytes, c_fc weight 576 → 2304 bytes
    const segments = partitionLayout(layout, maxBytes);
    expect(segments.length).toBeGreaterThan(1);
    expect(segments.flatMap((s) => s.entries.map((e) => e.name))).toEqual(layout.entries.map((e) => e.name));
    let next = 0;
    for (const s of segments) {
      expect(s.firstElement).toBe(next);
      expect(s.firstElement).toBe(s.entries[0].offset);
      expect(s.elementCount * 4).toBeLessThanOrEqual(maxBytes);
      next = s.firstElement + s.elementCount;
    }
    expect(next).toBe(layout.totalElements);
    expect(partitionLayout(layout, 1 << 30).length).toBe(1);
    expect(() => partitionLayout(layout, 2048)).toThrow(/parameter h\.0\.mlp\.c_fc\.weight needs 2304 bytes/);
  });
});

describe('mapping a checkpoint onto the layout', () => {
  it('maps names with the transformer. prefix, ignores HF buffers and a tied lm_head, warns about extras', () => {
    const params = randomParameters(1);
    const tensors: Tensor[] = parameterTensors(params).map((t) => ({ ...t, name: `transformer.${t.name}` }));
    tensors.push({ name: 'transformer.h.0.attn.bias', shape: [1, 1, 9, 9], data: new Float32Array(81) });
    tensors.push({ name: 'transformer.h.1.attn.masked_bias', shape: [], data: [-1e4] });
    tensors.push({ name: 'lm_head.weight', shape: [23, 12], data: parameterView(params, 'wte.weight') });
    tensors.push({ name: 'score.weight', shape: [2], data: [1, 2] });
    const mapped = mapCheckpoint(checkpoint(tensors), SMALL);
    expect(Array.from(mapped.data)).toEqual(Array.from(params.data));
    expect(mapped.warnings).toEqual(['ignoring tensor score.weight, which GPT-2 does not use']);
  });

  it('maps names without prefix, from F16 and from BF16', () => {
    const params = randomParameters(2);
    expect(Array.from(mapCheckpoint(checkpoint(parameterTensors(params)), SMALL).data)).toEqual(Array.from(params.data));

    const half = mapCheckpoint(checkpoint(parameterTensors(params), 'F16'), SMALL);
    for (const e of params.layout.entries) {
      const expected = Array.from(parameterView(params, e.name), (v) => halfBitsToFloat(floatToHalfBits(v)));
      expect(Array.from(parameterView(half, e.name))).toEqual(expected);
    }
  });

  it('decodes BF16 checkpoints (top 16 bits of each f32)', () => {
    const params = randomParameters(3);
    // Build a BF16 file by hand: the writer only makes F32/F16.
    const entries = parameterTensors(params);
    let offset = 0;
    const header: Record<string, unknown> = {};
    for (const t of entries) {
      header[t.name] = { dtype: 'BF16', shape: t.shape, data_offsets: [offset, offset + t.data.length * 2] };
      offset += t.data.length * 2;
    }
    const headerBytes = new TextEncoder().encode(JSON.stringify(header));
    const bytes = new Uint8Array(8 + headerBytes.length + offset);
    const view = new DataView(bytes.buffer);
    view.setUint32(0, headerBytes.length, true);
    bytes.set(headerBytes, 8);
    let at = 8 + headerBytes.length;
    const bits = new Uint32Array(1);
    const f = new Float32Array(bits.buffer);
    for (const t of entries) {
      for (const v of t.data) {
        f[0] = v;
        view.setUint16(at, bits[0] >>> 16, true);
        at += 2;
      }
    }
    const mapped = mapCheckpoint(parseSafetensors(bytes), SMALL);
    const wte = parameterView(mapped, 'wte.weight');
    parameterView(params, 'wte.weight').forEach((v, i) => {
      f[0] = v;
      bits[0] &= 0xffff0000;
      expect(wte[i]).toBe(f[0]);
    });
  });

  it('accepts bare wte / wpe names', () => {
    const params = randomParameters(8);
    const tensors = parameterTensors(params).map((t) => ({ ...t, name: t.name.replace(/^(wte|wpe)\.weight$/, '$1') }));
    expect(tensors.map((t) => t.name)).toContain('wte');
    expect(Array.from(mapCheckpoint(checkpoint(tensors), SMALL).data)).toEqual(Array.from(params.data));
  });

  it("maps the PyTorch-made checkpoint of the oracle fixture (HF state-dict names, its own safetensors writer)", () => {
    const dir = new URL('../fixtures/gpt2-lora/model/', import.meta.url);
    const config = parseModelConfig(readFileSync(new URL('config.json', dir), 'utf8'));
    const file = parseSafetensors(readFileSync(new URL('model.safetensors', dir)));
    const mapped = mapCheckpoint(file, config);
    expect(mapped.warnings).toEqual([]);
    for (const e of mapped.layout.entries) {
      expect(Array.from(parameterView(mapped, e.name))).toEqual(Array.from(readTensorF32(file, e.name)));
    }
  });

  it('names a missing tensor', () => {
    const tensors = parameterTensors(randomParameters(4)).filter((t) => t.name !== 'h.1.mlp.c_fc.bias');
    expectBadModel(() => mapCheckpoint(checkpoint(tensors), SMALL), /no tensor h\.1\.mlp\.c_fc\.bias; it does not match config\.json \(2 layers, width 12\)/);
  });

  it('names a misshapen tensor with both shapes (a transposed Conv1D weight)', () => {
    const tensors = parameterTensors(randomParameters(5)).map((t) =>
      t.name === 'h.0.attn.c_attn.weight' ? { ...t, shape: [36, 12] } : t,
    );
    expectBadModel(
      () => mapCheckpoint(checkpoint(tensors), SMALL),
      /tensor h\.0\.attn\.c_attn\.weight has shape \[36, 12\] but config\.json implies \[12, 36\]/,
    );
  });

  it('refuses an untied output head and a name given twice', () => {
    const params = randomParameters(6);
    const untied = [...parameterTensors(params), { name: 'lm_head.weight', shape: [23, 12], data: new Float32Array(276).fill(0.5) }];
    expectBadModel(() => mapCheckpoint(checkpoint(untied), SMALL), /lm_head\.weight differs from wte\.weight/);
    const twice = [...parameterTensors(params), { name: 'transformer.h.0.ln_1.bias', shape: [12], data: parameterView(params, 'h.0.ln_1.bias') }];
    expectBadModel(() => mapCheckpoint(checkpoint(twice), SMALL), /both "h\.0\.ln_1\.bias" and "transformer\.h\.0\.ln_1\.bias"/);
    // A bare 'wpe' next to 'wpe.weight' is the same tensor twice too.
    const bare = [...parameterTensors(params), { name: 'wpe', shape: [9, 12], data: parameterView(params, 'wpe.weight') }];
    expectBadModel(() => mapCheckpoint(checkpoint(bare), SMALL), /both "wpe" and "wpe\.weight"/);
  });

  it('refuses a checkpoint whose tensors are ints', () => {
    const tensors = parameterTensors(randomParameters(7));
    const file = checkpoint(tensors);
    // Relabel ln_f.bias as I32 (same byte size) in a hand-edited header.
    const headerLength = new DataView(file.data.buffer).getUint32(0, true);
    const raw = new Uint8Array(file.data.buffer);
    const text = new TextDecoder().decode(raw.subarray(8, 8 + headerLength));
    const edited = text.replace(/"ln_f\.bias":\{"dtype":"F32"/, '"ln_f.bias":{"dtype":"I32"');
    expect(edited).not.toBe(text);
    raw.set(new TextEncoder().encode(edited), 8);
    expectBadModel(() => mapCheckpoint(parseSafetensors(raw), SMALL), /"ln_f\.bias" has dtype I32/);
  });

  it('works on the tiny default config too', () => {
    const layout = gpt2ParameterLayout(TINY);
    expect(layout.parameterCount).toBe(parameterCount(TINY));
  });
});
