// Export of a GPT-2 (typically with a LoRA adapter merged in, see merge.ts) as an ONNX model that onnxruntime-web,
// onnxruntime and other ONNX runtimes run: input `input_ids` int64 (batch, seq) → output `logits` float
// (batch, seq, V). Written with our own protobuf encoder (protobuf.ts) following onnx.proto; opset 17 (for
// LayerNormalization), IR version 8.
//
// The graph is GPT-2's forward as plain ONNX ops, one block after another:
//   x = Gather(wte, ids) + wpe[:T]                                    (B,T,C)
//   per block: x += c_proj(attention(c_attn(LN1(x)))); x += mlp_c_proj(gelu(c_fc(LN2(x))))
//   logits = LN_f(x)·wteᵀ                                             (B,T,V)
// Attention splits q|k|v, reshapes to heads (B,NH,T,HS), scores q·kᵀ/√HS plus a causal mask constant
// (maxT,maxT) sliced to (T,T), Softmax, ·v. gelu_new is decomposed into Pow/Mul/Add/Tanh. The tied head is a
// MatMul with wteᵀ, transposed here at export.

import { TunelabError } from '../errors.ts';
import type { ModelConfig } from '../model/config.ts';
import { gpt2ParameterSpecs } from '../model/weights.ts';
import { canonicalWeights, type WeightMap } from './merge.ts';
import { ProtoMessage } from './protobuf.ts';

export const ONNX_OPSET = 17;
/** IR version 8 is the one that goes with opset 17 (ONNX 1.12). */
export const ONNX_IR_VERSION = 8;

/** TensorProto.DataType values. */
const FLOAT = 1;
const INT64 = 7;

/** AttributeProto.AttributeType values. */
const ATTRIBUTE_FLOAT = 1;
const ATTRIBUTE_INT = 2;
const ATTRIBUTE_INTS = 7;

/** The most negative f32: added to masked scores, it makes their softmax weight exactly 0 without an infinity. */
const MASKED_SCORE = -3.4028234663852886e38;

/** Protobuf messages, hence single-file ONNX models, must stay below 2 GiB. */
const PROTOBUF_LIMIT_BYTES = 2 ** 31 - 1;

const HOST_LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

type Attribute =
  | { name: string; int: number }
  | { name: string; ints: readonly number[] }
  | { name: string; float: number };

function attributeProto(attribute: Attribute): ProtoMessage {
  // AttributeProto: name 1, f 2, i 3, ints 8, type 20.
  const m = new ProtoMessage().string(1, attribute.name);
  if ('float' in attribute) m.float(2, attribute.float).varint(20, ATTRIBUTE_FLOAT);
  else if ('int' in attribute) m.varint(3, attribute.int).varint(20, ATTRIBUTE_INT);
  else m.packedVarints(8, attribute.ints).varint(20, ATTRIBUTE_INTS);
  return m;
}

function littleEndianBytes(data: Float32Array | BigInt64Array): Uint8Array {
  if (HOST_LITTLE_ENDIAN) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  const out = new Uint8Array(data.byteLength);
  const view = new DataView(out.buffer);
  for (let i = 0; i < data.length; i++) {
    if (data instanceof Float32Array) view.setFloat32(i * 4, data[i], true);
    else view.setBigInt64(i * 8, data[i], true);
  }
  return out;
}

/** TensorProto: dims 1, data_type 2, name 8, raw_data 9 (little-endian). */
function tensorProto(name: string, dims: readonly number[], data: Float32Array | BigInt64Array): ProtoMessage {
  const count = dims.reduce((a, d) => a * d, 1);
  if (count !== data.length) throw new Error(`onnx: initializer ${name} has ${data.length} values for [${dims.join(', ')}]`);
  const m = new ProtoMessage();
  if (dims.length) m.packedVarints(1, dims);
  return m
    .varint(2, data instanceof Float32Array ? FLOAT : INT64)
    .string(8, name)
    .bytes(9, littleEndianBytes(data));
}

/** ValueInfoProto of a tensor: name 1, type 2 → TypeProto.tensor_type 1 → elem_type 1, shape 2 → dim 1 →
 * dim_value 1 | dim_param 2. */
function valueInfo(name: string, elementType: number, dims: readonly (number | string)[]): ProtoMessage {
  const shape = new ProtoMessage();
  for (const d of dims) {
    const dim = new ProtoMessage();
    if (typeof d === 'number') dim.varint(1, d);
    else dim.string(2, d);
    shape.message(1, dim);
  }
  const tensorType = new ProtoMessage().varint(1, elementType).message(2, shape);
  const type = new ProtoMessage().message(1, tensorType);
  return new ProtoMessage().string(1, name).message(2, type);
}

/** Collects nodes and initializers with unique names. */
class GraphBuilder {
  readonly nodes: ProtoMessage[] = [];
  readonly initializers: ProtoMessage[] = [];
  private readonly names = new Set<string>();
  private nodeCount = 0;

  private claim(name: string): string {
    if (this.names.has(name)) throw new Error(`onnx: the name ${name} is used twice`);
    this.names.add(name);
    return name;
  }

  floats(name: string, dims: readonly number[], data: Float32Array): string {
    this.initializers.push(tensorProto(this.claim(name), dims, data));
    return name;
  }

  scalar(name: string, value: number): string {
    return this.floats(name, [], Float32Array.of(value));
  }

  int64s(name: string, values: readonly number[]): string {
    const data = BigInt64Array.from(values.map((v) => BigInt(v)));
    this.initializers.push(tensorProto(this.claim(name), [values.length], data));
    return name;
  }

  /** Adds a node; its outputs are named `${output}` (or `${output}:i` for several). Returns the output names. */
  node(opType: string, inputs: readonly string[], output: string, attributes: Attribute[] = [], outputCount = 1): string[] {
    const outputs =
      outputCount === 1 ? [this.claim(output)] : Array.from({ length: outputCount }, (_, i) => this.claim(`${output}:${i}`));
    // NodeProto: input 1, output 2, name 3, op_type 4, attribute 5.
    const m = new ProtoMessage();
    for (const i of inputs) m.string(1, i);
    for (const o of outputs) m.string(2, o);
    m.string(3, `${opType}_${this.nodeCount++}`).string(4, opType);
    for (const a of attributes) m.message(5, attributeProto(a));
    this.nodes.push(m);
    return outputs;
  }

  /** Single-output convenience. */
  op(opType: string, inputs: readonly string[], output: string, attributes: Attribute[] = []): string {
    return this.node(opType, inputs, output, attributes)[0];
  }
}

export interface OnnxExportOptions {
  /**
   * Longest sequence the exported model accepts (default: the config's nPositions). wpe is cut to this many rows
   * and the causal mask constant is (maxT,maxT) f32, so a smaller value makes a smaller file.
   */
  maxPositions?: number;
  /** ModelProto.producer_version (default '0.1.0'). */
  producerVersion?: string;
  /** GraphProto.name (default 'gpt2'). */
  graphName?: string;
  /** Shown by model viewers such as Netron. */
  docString?: string;
}

function bad(message: string): TunelabError {
  return new TunelabError('bad-model', `ONNX export: ${message}`);
}

/**
 * Encodes a GPT-2 as an ONNX model (bytes of a .onnx file). `weights` are Hugging Face names (merge an adapter
 * first with mergeAdapter). Input `input_ids` int64 (batch, seq) with seq ≤ maxPositions; output `logits` f32
 * (batch, seq, V). Every position attends causally to the ones before it, so there is no attention mask input:
 * batches must hold sequences of equal length (or be right-padded, whose padded positions then do not matter).
 */
export function exportGpt2Onnx(config: ModelConfig, weights: WeightMap, options: OnnxExportOptions = {}): Uint8Array {
  const { nLayer: L, nHead: NH, nEmbd: C, vocabSize: V } = config;
  const HS = C / NH;
  const maxT = options.maxPositions ?? config.nPositions;
  if (!(Number.isSafeInteger(maxT) && maxT >= 1 && maxT <= config.nPositions)) {
    throw bad(`maxPositions must be an integer from 1 to ${config.nPositions}, got ${maxT}`);
  }
  const named = canonicalWeights(weights);
  const weight = (name: string): Float32Array => {
    const value = named.get(name);
    if (!value) throw bad(`the weights have no ${name}`);
    return value;
  };
  for (const spec of gpt2ParameterSpecs(config)) {
    if (weight(spec.name).length !== spec.elementCount) {
      throw bad(`${spec.name} has ${weight(spec.name).length} values, but the config implies [${spec.shape.join(', ')}]`);
    }
  }

  const g = new GraphBuilder();
  const eps = config.layerNormEpsilon;
  // Constants shared by every block.
  const zero1 = g.int64s('const.zero1', [0]);
  const zero2 = g.int64s('const.zero2', [0, 0]);
  const axis0 = g.int64s('const.axes0', [0]);
  const axes01 = g.int64s('const.axes01', [0, 1]);
  const qkvSplit = g.int64s('const.qkv_split', [C, C, C]);
  const headsShape = g.int64s('const.heads_shape', [0, 0, NH, HS]); // 0 keeps B and T
  const mergedShape = g.int64s('const.merged_shape', [0, 0, C]);
  const attentionScale = g.scalar('const.attention_scale', 1 / Math.sqrt(HS));
  const half = g.scalar('const.half', 0.5);
  const one = g.scalar('const.one', 1);
  const three = g.scalar('const.three', 3);
  const cubic = g.scalar('const.gelu_cubic', 0.044715);
  const sqrtTwoOverPi = g.scalar('const.sqrt_2_over_pi', Math.sqrt(2 / Math.PI));
  const causal = new Float32Array(maxT * maxT); // (maxT,maxT): 0 where key ≤ query, MASKED_SCORE above
  for (let q = 0; q < maxT; q++) for (let k = q + 1; k < maxT; k++) causal[q * maxT + k] = MASKED_SCORE;
  const causalMask = g.floats('const.causal_mask', [maxT, maxT], causal);

  const wte = g.floats('wte.weight', [V, C], weight('wte.weight'));
  const wpe = g.floats('wpe.weight', [maxT, C], weight('wpe.weight').subarray(0, maxT * C));
  const param = (name: string, dims: number[]) => g.floats(name, dims, weight(name));

  // Embedding: (B,T,C) = wte[ids] + wpe[:T].
  const ids = 'input_ids';
  const seqLength = g.op('Shape', [ids], 'seq_length', [{ name: 'start', int: 1 }, { name: 'end', int: 2 }]); // [T]
  const tokens = g.op('Gather', [wte, ids], 'embedding/tokens', [{ name: 'axis', int: 0 }]);
  const positions = g.op('Slice', [wpe, zero1, seqLength, axis0], 'embedding/positions'); // (T,C)
  let x = g.op('Add', [tokens, positions], 'embedding/sum');
  const maskEnds = g.op('Concat', [seqLength, seqLength], 'mask_ends', [{ name: 'axis', int: 0 }]);
  const mask = g.op('Slice', [causalMask, zero2, maskEnds, axes01], 'mask'); // (T,T)

  const layerNorm = (input: string, prefix: string) =>
    g.op('LayerNormalization', [input, param(`${prefix}.weight`, [C]), param(`${prefix}.bias`, [C])], `${prefix}/out`, [
      { name: 'axis', int: -1 },
      { name: 'epsilon', float: eps },
    ]);
  const linear = (input: string, prefix: string, inDim: number, outDim: number) => {
    const product = g.op('MatMul', [input, param(`${prefix}.weight`, [inDim, outDim])], `${prefix}/matmul`);
    return g.op('Add', [product, param(`${prefix}.bias`, [outDim])], `${prefix}/out`);
  };

  for (let l = 0; l < L; l++) {
    const p = `h.${l}`;
    const ln1 = layerNorm(x, `${p}.ln_1`);
    const qkv = linear(ln1, `${p}.attn.c_attn`, C, 3 * C); // (B,T,3C)
    const [q, k, v] = g.node('Split', [qkv, qkvSplit], `${p}.attn/qkv`, [{ name: 'axis', int: 2 }], 3);
    const heads = (input: string, name: string, perm: number[]) =>
      g.op('Transpose', [g.op('Reshape', [input, headsShape], `${p}.attn/${name}_heads`)], `${p}.attn/${name}_t`, [
        { name: 'perm', ints: perm },
      ]);
    const qh = heads(q, 'q', [0, 2, 1, 3]); // (B,NH,T,HS)
    const kt = heads(k, 'k', [0, 2, 3, 1]); // (B,NH,HS,T)
    const vh = heads(v, 'v', [0, 2, 1, 3]); // (B,NH,T,HS)
    const scores = g.op('MatMul', [qh, kt], `${p}.attn/scores`); // (B,NH,T,T)
    const scaled = g.op('Mul', [scores, attentionScale], `${p}.attn/scaled`);
    const masked = g.op('Add', [scaled, mask], `${p}.attn/masked`);
    const probs = g.op('Softmax', [masked], `${p}.attn/probs`, [{ name: 'axis', int: -1 }]);
    const context = g.op('MatMul', [probs, vh], `${p}.attn/context`); // (B,NH,T,HS)
    const contextT = g.op('Transpose', [context], `${p}.attn/context_t`, [{ name: 'perm', ints: [0, 2, 1, 3] }]);
    const y = g.op('Reshape', [contextT, mergedShape], `${p}.attn/y`); // (B,T,C)
    const attn = linear(y, `${p}.attn.c_proj`, C, C);
    const residual = g.op('Add', [x, attn], `${p}/residual`);

    const ln2 = layerNorm(residual, `${p}.ln_2`);
    const fc = linear(ln2, `${p}.mlp.c_fc`, C, 4 * C); // (B,T,4C)
    // gelu_new(h) = 0.5·h·(1 + tanh(√(2/π)·(h + 0.044715·h³)))
    const cube = g.op('Pow', [fc, three], `${p}.mlp/gelu_cube`);
    const inner = g.op('Add', [fc, g.op('Mul', [cube, cubic], `${p}.mlp/gelu_cubic`)], `${p}.mlp/gelu_inner`);
    const tanh = g.op('Tanh', [g.op('Mul', [inner, sqrtTwoOverPi], `${p}.mlp/gelu_scaled`)], `${p}.mlp/gelu_tanh`);
    const halfInput = g.op('Mul', [fc, half], `${p}.mlp/gelu_half`);
    const gelu = g.op('Mul', [halfInput, g.op('Add', [tanh, one], `${p}.mlp/gelu_one_plus`)], `${p}.mlp/gelu`);
    const mlp = linear(gelu, `${p}.mlp.c_proj`, 4 * C, C);
    x = g.op('Add', [residual, mlp], `${p}/out`);
  }

  const lnf = layerNorm(x, 'ln_f');
  const wteT = new Float32Array(C * V); // (C,V), the tied head as a [in, out] weight
  const wteValues = weight('wte.weight');
  for (let v = 0; v < V; v++) for (let c = 0; c < C; c++) wteT[c * V + v] = wteValues[v * C + c];
  const head = g.floats('lm_head.weight_t', [C, V], wteT);
  g.op('MatMul', [lnf, head], 'logits');

  // GraphProto: node 1, name 2, initializer 5, doc_string 10, input 11, output 12.
  const graph = new ProtoMessage();
  for (const n of g.nodes) graph.message(1, n);
  graph.string(2, options.graphName ?? 'gpt2');
  for (const t of g.initializers) graph.message(5, t);
  graph.message(11, valueInfo(ids, INT64, ['batch', 'seq']));
  graph.message(12, valueInfo('logits', FLOAT, ['batch', 'seq', V]));

  // ModelProto: ir_version 1, producer_name 2, producer_version 3, model_version 5, doc_string 6, graph 7,
  // opset_import 8 (OperatorSetIdProto: domain 1, version 2; the default domain is '').
  const model = new ProtoMessage()
    .varint(1, ONNX_IR_VERSION)
    .string(2, 'tunelab')
    .string(3, options.producerVersion ?? '0.1.0')
    .varint(5, 1);
  model.string(
    6,
    options.docString ??
      `GPT-2 (${L} layers, ${NH} heads, width ${C}, vocabulary ${V}) exported by Tunelab. ` +
        `input_ids int64 [batch, seq ≤ ${maxT}] → logits float [batch, seq, ${V}].`,
  );
  model.message(7, graph);
  model.message(8, new ProtoMessage().string(1, '').varint(2, ONNX_OPSET));
  if (model.byteLength > PROTOBUF_LIMIT_BYTES) {
    throw new TunelabError(
      'too-large',
      `ONNX export: the model needs ${(model.byteLength / 2 ** 30).toFixed(2)} GiB, above protobuf's 2 GiB limit for ` +
        'a single .onnx file; export a smaller model (GPT-2 small and medium fit)',
    );
  }
  return model.finish();
}
