// ONNX export, run in onnxruntime-web (wasm backend, one thread) and compared with the Float64 reference model:
// the fixture model merged with its PEFT adapter (and PyTorch's logits for it), batch 1 and 2, several sequence
// lengths up to the full context, a shortened context, and an awkward random config. Plus the protobuf encoder
// against hand-computed wire bytes (the examples of the protobuf encoding guide).
//
// Tolerance ONNX_F32: onnxruntime computes in f32 (MatMul accumulation over ≤ 4C terms, LayerNormalization,
// Softmax, Tanh) while the reference is float64; through two blocks and the head that is ~1e-6 on logits of size
// ≤ 4, so atol 1e-4 + rtol 1e-4 is the f32 budget the fixture's README gives for logits. Measured figures are logged.

import * as ort from 'onnxruntime-web';
import { beforeAll, describe, expect, it } from 'vitest';
import { readTensorF32 } from '../../src/engine/io/safetensors.ts';
import { modelConfig, type ModelConfig } from '../../src/engine/model/config.ts';
import { mergeAdapter } from '../../src/engine/interop/merge.ts';
import { exportGpt2Onnx, ONNX_IR_VERSION, ONNX_OPSET } from '../../src/engine/interop/onnx.ts';
import { adapterScale, importPeftAdapter } from '../../src/engine/interop/peft.ts';
import { encodeVarint, ProtoMessage } from '../../src/engine/interop/protobuf.ts';
import { Rng } from '../../src/engine/random.ts';
import { gpt2ReferenceForward, randomGpt2ReferenceWeights } from '../../src/engine/reference/gpt2.ts';
import { expectClose, type Tolerance } from '../helpers/check.ts';
import { expectBadModel, loadFixture, maxAbsError, referenceLora, toFloat64 } from './fixture.ts';

const ONNX_F32: Tolerance = { atol: 1e-4, rtol: 1e-4 };

const hex = (bytes: ArrayLike<number>) => Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join(' ');

describe('protobuf encoder', () => {
  it('varints, including 64-bit and negative values', () => {
    expect(encodeVarint(0)).toEqual([0]);
    expect(encodeVarint(1)).toEqual([1]);
    expect(encodeVarint(127)).toEqual([0x7f]);
    expect(encodeVarint(150)).toEqual([0x96, 0x01]);
    expect(encodeVarint(300)).toEqual([0xac, 0x02]);
    expect(encodeVarint(2 ** 35)).toEqual([0x80, 0x80, 0x80, 0x80, 0x80, 0x01]);
    expect(encodeVarint(-1)).toEqual([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
    expect(encodeVarint(-2n)).toEqual([0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
    expect(encodeVarint((1n << 64n) - 1n)).toEqual(encodeVarint(-1));
    expect(() => encodeVarint(1n << 64n)).toThrow(RangeError);
    expect(() => encodeVarint(0.5)).toThrow(RangeError);
  });

  it('fields of every wire type, nested and packed, as the encoding guide spells them', () => {
    expect(hex(new ProtoMessage().varint(1, 150).finish())).toBe('08 96 01');
    expect(hex(new ProtoMessage().string(2, 'testing').finish())).toBe('12 07 74 65 73 74 69 6e 67');
    const inner = new ProtoMessage().varint(1, 150);
    expect(hex(new ProtoMessage().message(3, inner).finish())).toBe('1a 03 08 96 01');
    expect(hex(new ProtoMessage().packedVarints(4, [3, 270, 86942]).finish())).toBe('22 06 03 8e 02 9e a7 05');
    expect(hex(new ProtoMessage().float(5, 1).finish())).toBe('2d 00 00 80 3f');
    expect(hex(new ProtoMessage().varint(20, 7).finish())).toBe('a0 01 07');
    const payload = Uint8Array.of(9, 8, 7);
    const outer = new ProtoMessage().varint(1, 1).message(2, new ProtoMessage().bytes(9, payload).string(8, 'w')).varint(3, true);
    expect(outer.byteLength).toBe(outer.finish().length);
    expect(hex(outer.finish())).toBe('08 01 12 08 4a 03 09 08 07 42 01 77 18 01');
  });
});

/** Runs an exported model on (B,T) ids; returns logits (B,T,V) and their dims. */
async function runOnnx(session: ort.InferenceSession, ids: number[], B: number, T: number) {
  const input = new ort.Tensor('int64', BigInt64Array.from(ids, (v) => BigInt(v)), [B, T]);
  const output = await session.run({ input_ids: input });
  const logits = output.logits;
  return { data: logits.data as Float32Array, dims: [...logits.dims] };
}

function randomIds(rng: Rng, n: number, V: number): number[] {
  return Array.from({ length: n }, () => rng.int(V));
}

async function createSession(bytes: Uint8Array): Promise<ort.InferenceSession> {
  return ort.InferenceSession.create(bytes, { executionProviders: ['wasm'] });
}

describe('ONNX export in onnxruntime-web', () => {
  const fixture = loadFixture();
  const { config } = fixture;
  const adapter = importPeftAdapter(fixture.adapterConfigJson, fixture.adapterModel, config);
  const merged = mergeAdapter(config, fixture.weights, adapter.spec, adapter.tensors);
  const base64 = toFloat64(fixture.weights);
  const lora = referenceLora(adapter.tensors, adapterScale(adapter.spec));
  /** The reference: base weights + adapter, float64. */
  const reference = (ids: number[], B: number, T: number) => gpt2ReferenceForward(config, base64, lora, { B, T, ids }).logits;
  let bytes: Uint8Array;
  let session: ort.InferenceSession;

  beforeAll(async () => {
    ort.env.wasm.numThreads = 1;
    bytes = exportGpt2Onnx(config, merged);
    session = await createSession(bytes);
  });

  it('declares input_ids → logits', () => {
    expect(session.inputNames).toEqual(['input_ids']);
    expect(session.outputNames).toEqual(['logits']);
    // ModelProto starts with ir_version (field 1) and names its producer.
    expect(hex(bytes.subarray(0, 2))).toBe(`08 0${ONNX_IR_VERSION}`);
    expect(new TextDecoder().decode(bytes.subarray(2, 11))).toContain('tunelab');
    expect(ONNX_OPSET).toBe(17);
  });

  it("fixture merged with its adapter, batch 2, T=7: the reference's and PyTorch's logits", async () => {
    const { B, T, ids } = fixture;
    const out = await runOnnx(session, ids, B, T);
    expect(out.dims).toEqual([B, T, config.vocabSize]);
    const expected = reference(ids, B, T);
    expectClose(out.data, expected, ONNX_F32, 'onnx vs reference');
    expectClose(out.data, readTensorF32(fixture.expected, 'logits_lora'), ONNX_F32, 'onnx vs PyTorch logits_lora');
    expect(maxAbsError(out.data, readTensorF32(fixture.expected, 'logits_base'))).toBeGreaterThan(0.1);
    console.log(`onnx (B=2, T=7): max |onnx − reference| = ${maxAbsError(out.data, expected).toExponential(2)}`);
  });

  it('batch 1 and 2 at T = 1, 3 and 16 (the full context)', async () => {
    const rng = new Rng(11);
    const errors: string[] = [];
    for (const [B, T] of [[1, 1], [2, 3], [1, 16], [2, 16]]) {
      const ids = randomIds(rng, B * T, config.vocabSize);
      const out = await runOnnx(session, ids, B, T);
      expect(out.dims).toEqual([B, T, config.vocabSize]);
      const expected = reference(ids, B, T);
      expectClose(out.data, expected, ONNX_F32, `onnx B=${B} T=${T}`);
      errors.push(`B=${B} T=${T}: ${maxAbsError(out.data, expected).toExponential(2)}`);
    }
    console.log(`onnx: max |onnx − reference| ${errors.join(', ')}`);
  });

  it('rows of a batch are independent and positions are causal', async () => {
    const rng = new Rng(12);
    const T = 6;
    const rowA = randomIds(rng, T, config.vocabSize);
    const rowB = randomIds(rng, T, config.vocabSize);
    const pair = await runOnnx(session, [...rowA, ...rowB], 2, T);
    const alone = await runOnnx(session, rowA, 1, T);
    expectClose(pair.data.subarray(0, T * config.vocabSize), alone.data, ONNX_F32, 'row 0 with and without row 1');
    // Changing the last token must not change the logits of earlier positions.
    const changed = await runOnnx(session, [...rowA.slice(0, T - 1), (rowA[T - 1] + 1) % config.vocabSize], 1, T);
    const prefix = (T - 1) * config.vocabSize;
    expectClose(changed.data.subarray(0, prefix), alone.data.subarray(0, prefix), ONNX_F32, 'earlier positions');
    expect(maxAbsError(changed.data.subarray(prefix), alone.data.subarray(prefix))).toBeGreaterThan(1e-3);
  });

  it('a shortened context: a smaller file that still matches, and refuses longer inputs', async () => {
    const short = exportGpt2Onnx(config, merged, { maxPositions: 8 });
    expect(short.length).toBeLessThan(bytes.length);
    const shortSession = await createSession(short);
    const rng = new Rng(13);
    const ids = randomIds(rng, 2 * 8, config.vocabSize);
    const out = await runOnnx(shortSession, ids, 2, 8);
    expectClose(out.data, reference(ids, 2, 8), ONNX_F32, 'maxPositions 8, T=8');
    await expect(runOnnx(shortSession, randomIds(rng, 9, config.vocabSize), 1, 9)).rejects.toThrow();
  });

  it('refuses weights that do not fit the config, and a bad maxPositions', () => {
    const missing = new Map(merged);
    missing.delete('h.1.attn.c_proj.bias');
    expectBadModel(() => exportGpt2Onnx(config, missing), /no h\.1\.attn\.c_proj\.bias/);
    const misshapen = new Map(merged).set('wpe.weight', new Float32Array(5));
    expectBadModel(() => exportGpt2Onnx(config, misshapen), /wpe\.weight has 5 values/);
    expectBadModel(() => exportGpt2Onnx(config, merged, { maxPositions: 17 }), /maxPositions/);
  });
});

describe('ONNX export of an awkward random config', () => {
  it('C=12, NH=3 (HS=4), V=11, L=3, maxT=9, T=5 and 9, batch 3', async () => {
    ort.env.wasm.numThreads = 1;
    const config: ModelConfig = modelConfig({ nLayer: 3, nHead: 3, nEmbd: 12, nPositions: 9, vocabSize: 11, bosTokenId: 10, eosTokenId: 10 });
    const rng = new Rng(21);
    const weights64 = randomGpt2ReferenceWeights(config, rng, 0.3);
    // Round to f32 first so the reference sees exactly the exported weights.
    const weights32 = new Map([...weights64].map(([n, v]) => [n, Float32Array.from(v)]));
    const session = await createSession(exportGpt2Onnx(config, weights32));
    for (const T of [5, 9]) {
      const ids = randomIds(rng, 3 * T, config.vocabSize);
      const out = await runOnnx(session, ids, 3, T);
      const expected = gpt2ReferenceForward(config, toFloat64(weights32), null, { B: 3, T, ids }).logits;
      expectClose(out.data, expected, ONNX_F32, `awkward config T=${T}`);
      console.log(`onnx awkward config T=${T}: max |onnx − reference| = ${maxAbsError(out.data, expected).toExponential(2)}`);
    }
  });
});
