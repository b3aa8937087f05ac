// Reference GPT-2 with LoRA, forward and backward, in double precision: the readable whole-model oracle that the GPU
// model is compared with. It is only a composition of the per-op references beside it (each already checked by
// finite differences), in the order of llm.c's gpt2_forward; the backward is the same list reversed.
//
// Dimension letters: B batch, T positions, C width, NH heads, V vocabulary, L layers, R LoRA rank, N = B·T rows.
// Pre-LN blocks (x += attn(ln_1(x)); x += mlp(ln_2(x))), then ln_f and the tied head logits = ln_f(x)·wteᵀ.
// Conv1D weights are [in, out]: y = x·W + b. An adapted module adds scale·(x·Aᵀ)·Bᵀ, A (R,in), B (out,R), with
// dropout 0 (the oracle is deterministic; lora.ts checks dropout on its own).

import { attentionBackward, attentionForward } from './attention.ts';
import { crossEntropyBackward, crossEntropyForward } from './crossentropy.ts';
import { embeddingBackward, embeddingForward } from './embedding.ts';
import { geluBackward, geluForward } from './gelu.ts';
import { layernormBackward, layernormForward } from './layernorm.ts';
import { loraBackward, loraForward, type LoraShape } from './lora.ts';
import { matmulBackward, matmulForward } from './matmul.ts';
import { residualBackward, residualForward } from './residual.ts';
import type { Rng } from '../random.ts';

/** The sizes the math needs; a ModelConfig (model/config.ts) fits this shape. */
export interface Gpt2ReferenceConfig {
  /** L */
  nLayer: number;
  /** NH; must divide nEmbd. */
  nHead: number;
  /** C */
  nEmbd: number;
  /** Rows of wpe: the longest T. */
  nPositions: number;
  /** V */
  vocabSize: number;
  layerNormEpsilon: number;
}

/** The four linear layers of a block, by their Hugging Face module path inside `h.N`. */
export const REFERENCE_LINEAR_MODULES = ['attn.c_attn', 'attn.c_proj', 'mlp.c_fc', 'mlp.c_proj'] as const;
export type ReferenceLinearModule = (typeof REFERENCE_LINEAR_MODULES)[number];

/**
 * Weights by Hugging Face GPT-2 name: 'wte.weight' (V,C), 'wpe.weight' (maxT,C), 'h.N.ln_1.weight' (C),
 * 'h.N.attn.c_attn.weight' (C,3C), …, 'ln_f.bias' (C). Also accepted: a 'transformer.' prefix, and 'wte' / 'wpe'
 * without '.weight' (model/weights.ts's names).
 */
export type Gpt2ReferenceWeights = ReadonlyMap<string, Float64Array> | Readonly<Record<string, Float64Array>>;

/** One adapted module: A (R,in) and B (out,R), row-major as PEFT stores them. R is inferred from the lengths. */
export interface ReferenceLoraPair {
  a: Float64Array;
  b: Float64Array;
}

export interface Gpt2ReferenceLora {
  /** alpha/R (or alpha/√R for rsLoRA). */
  scale: number;
  /** Adapted modules by module path, e.g. 'h.1.mlp.c_fc' (see loraModulePath): any subset of layers × modules. */
  modules: ReadonlyMap<string, ReferenceLoraPair>;
}

export interface Gpt2ReferenceBatch {
  B: number;
  T: number;
  /** (B,T) token ids. */
  ids: ArrayLike<number>;
  /** (B,T) next-token targets; without them the forward computes logits only. */
  targets?: ArrayLike<number>;
  /** (B,T) loss weights (0/1 for assistant-only training); all ones when absent. */
  mask?: ArrayLike<number>;
}

/** 'h.3.attn.c_attn' — the key of an adapted module in Gpt2ReferenceLora.modules. */
export function loraModulePath(layer: number, module: ReferenceLinearModule): string {
  return `h.${layer}.${module}`;
}

/** [in, out] of a block's linear layer. */
export function referenceLinearShape(C: number, module: ReferenceLinearModule): [number, number] {
  switch (module) {
    case 'attn.c_attn':
      return [C, 3 * C];
    case 'attn.c_proj':
      return [C, C];
    case 'mlp.c_fc':
      return [C, 4 * C];
    case 'mlp.c_proj':
      return [4 * C, C];
  }
}

/** Every base parameter's canonical name and shape, in checkpoint order. */
export function gpt2ReferenceParameterShapes(config: Gpt2ReferenceConfig): Map<string, number[]> {
  const C = config.nEmbd;
  const shapes = new Map<string, number[]>();
  shapes.set('wte.weight', [config.vocabSize, C]);
  shapes.set('wpe.weight', [config.nPositions, C]);
  for (let l = 0; l < config.nLayer; l++) {
    shapes.set(`h.${l}.ln_1.weight`, [C]);
    shapes.set(`h.${l}.ln_1.bias`, [C]);
    for (const module of REFERENCE_LINEAR_MODULES) {
      if (module === 'mlp.c_fc') {
        shapes.set(`h.${l}.ln_2.weight`, [C]);
        shapes.set(`h.${l}.ln_2.bias`, [C]);
      }
      const [inDim, outDim] = referenceLinearShape(C, module);
      shapes.set(`h.${l}.${module}.weight`, [inDim, outDim]);
      shapes.set(`h.${l}.${module}.bias`, [outDim]);
    }
  }
  shapes.set('ln_f.weight', [C]);
  shapes.set('ln_f.bias', [C]);
  return shapes;
}

/**
 * Random weights for tests on small configs: normal(0, std) everywhere except layer-norm weights 1 + normal(0, std).
 * Large enough (std 0.2 by default) that gelu, softmax and layer norm are far from linear.
 */
export function randomGpt2ReferenceWeights(
  config: Gpt2ReferenceConfig,
  rng: Rng,
  std = 0.2,
): Map<string, Float64Array> {
  const weights = new Map<string, Float64Array>();
  for (const [name, shape] of gpt2ReferenceParameterShapes(config)) {
    const values = new Float64Array(shape.reduce((a, d) => a * d, 1));
    const offset = /ln_\w+\.weight$/.test(name) ? 1 : 0;
    for (let i = 0; i < values.length; i++) values[i] = offset + std * rng.normal();
    weights.set(name, values);
  }
  return weights;
}

/** Everything the forward keeps for the backward, per layer, like llm.c's ActivationTensors. */
interface LayerActivations {
  /** (N,C) the residual stream entering the block. */
  input: Float64Array;
  ln1: Float64Array;
  ln1Mean: Float64Array;
  ln1Rstd: Float64Array;
  /** (N,3C) q|k|v. */
  qkv: Float64Array;
  /** (N,C) attention output, heads side by side. */
  atty: Float64Array;
  attproj: Float64Array;
  /** (N,C) input + attproj. */
  residual2: Float64Array;
  ln2: Float64Array;
  ln2Mean: Float64Array;
  ln2Rstd: Float64Array;
  /** (N,4C) before and after gelu. */
  fch: Float64Array;
  fchGelu: Float64Array;
  fcproj: Float64Array;
  /** (N,R) x·Aᵀ of each adapted module of this layer, by module. */
  loraU: Map<ReferenceLinearModule, Float64Array>;
}

export interface Gpt2ReferenceForward {
  /** (B,T,V) */
  logits: Float64Array;
  /** Σ mask·ce / Σ mask over all (B,T); NaN without targets. */
  loss: number;
  /** Saved activations for gpt2ReferenceBackward. */
  readonly saved: {
    layers: LayerActivations[];
    /** (N,C) the residual stream after the last block. */
    output: Float64Array;
    lnf: Float64Array;
    lnfMean: Float64Array;
    lnfRstd: Float64Array;
    /** (C,V) wteᵀ, the tied head as a Conv1D [in,out] weight. */
    wteT: Float64Array;
  };
}

export interface Gpt2ReferenceGradients {
  /** d loss / d every base parameter, by canonical name ('wte.weight' holds embedding + tied-head paths). */
  params: Map<string, Float64Array>;
  /** d loss / d A and B of every adapted module, by module path. */
  lora: Map<string, ReferenceLoraPair>;
}

/** Looks a weight up by canonical name, allowing a 'transformer.' prefix and bare 'wte' / 'wpe'. */
function weightGetter(weights: Gpt2ReferenceWeights, shapes: Map<string, number[]>) {
  const lookup = (key: string): Float64Array | undefined =>
    weights instanceof Map ? weights.get(key) : (weights as Readonly<Record<string, Float64Array>>)[key];
  return (name: string): Float64Array => {
    const bare = name.replace(/^(wte|wpe)\.weight$/, '$1');
    const value = lookup(name) ?? lookup(`transformer.${name}`) ?? lookup(bare) ?? lookup(`transformer.${bare}`);
    if (!value) throw new Error(`reference GPT-2: weight "${name}" is missing`);
    const expected = shapes.get(name)!.reduce((a, d) => a * d, 1);
    if (value.length !== expected) {
      const shape = shapes.get(name)!.join(',');
      throw new Error(`reference GPT-2: weight "${name}" has ${value.length} values, expected ${expected} (${shape})`);
    }
    return value;
  };
}

function loraShapeOf(pair: ReferenceLoraPair, path: string, M: number, K: number, N: number): LoraShape {
  const R = pair.a.length / K;
  if (!Number.isInteger(R) || R < 1 || pair.b.length !== N * R) {
    throw new Error(
      `reference GPT-2: LoRA "${path}" has A of ${pair.a.length} and B of ${pair.b.length} values; ` +
        `expected (R,${K}) and (${N},R)`,
    );
  }
  return { M, N, K, R };
}

function transpose(matrix: Float64Array, rows: number, cols: number): Float64Array {
  const out = new Float64Array(matrix.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = matrix[r * cols + c];
  return out;
}

function checkBatch(config: Gpt2ReferenceConfig, batch: Gpt2ReferenceBatch): void {
  const { B, T } = batch;
  if (T > config.nPositions) throw new Error(`reference GPT-2: T=${T} exceeds nPositions=${config.nPositions}`);
  if (config.nEmbd % config.nHead !== 0) throw new Error(`reference GPT-2: nHead must divide nEmbd`);
  for (const [what, values] of [['ids', batch.ids], ['targets', batch.targets], ['mask', batch.mask]] as const) {
    if (values && values.length !== B * T) {
      throw new Error(`reference GPT-2: ${what} has ${values.length} values, expected B·T=${B * T}`);
    }
  }
  for (const tokens of [batch.ids, batch.targets ?? []]) {
    for (let i = 0; i < tokens.length; i++) {
      if (!(Number.isInteger(tokens[i]) && tokens[i] >= 0 && tokens[i] < config.vocabSize)) {
        const vocabulary = `a vocabulary of ${config.vocabSize}`;
        throw new Error(`reference GPT-2: token ${tokens[i]} at ${i} is not an id of ${vocabulary}`);
      }
    }
  }
  if (batch.mask && Array.from(batch.mask).reduce((a, v) => a + v, 0) <= 0) {
    throw new Error('reference GPT-2: the loss mask selects no token, so the mean loss is undefined');
  }
}

/** logits (B,T,V) and, with targets, the masked mean loss. Saves what the backward needs. */
export function gpt2ReferenceForward(
  config: Gpt2ReferenceConfig,
  weights: Gpt2ReferenceWeights,
  lora: Gpt2ReferenceLora | null,
  batch: Gpt2ReferenceBatch,
): Gpt2ReferenceForward {
  checkBatch(config, batch);
  const { B, T } = batch;
  const { nLayer: L, nHead: NH, nEmbd: C, vocabSize: V, layerNormEpsilon: eps } = config;
  const N = B * T;
  const weight = weightGetter(weights, gpt2ReferenceParameterShapes(config));
  const noDropout = { p: 0, seed: 0 };

  /** out (N,out) = inp·W + b, plus the LoRA term when this module is adapted (its u saved in `loraU`). */
  const linear = (
    out: Float64Array,
    inp: Float64Array,
    layer: number,
    module: ReferenceLinearModule,
    loraU: LayerActivations['loraU'],
  ) => {
    const [K, OC] = referenceLinearShape(C, module);
    const prefix = `h.${layer}.${module}`;
    matmulForward(out, inp, weight(`${prefix}.weight`), weight(`${prefix}.bias`), N, OC, K);
    const pair = lora?.modules.get(prefix);
    if (pair) {
      const shape = loraShapeOf(pair, prefix, N, K, OC);
      const u = new Float64Array(N * shape.R);
      loraForward(out, u, inp, pair.a, pair.b, shape, lora!.scale, noDropout);
      loraU.set(module, u);
    }
  };

  let x = new Float64Array(N * C); // (N,C)
  embeddingForward(x, batch.ids, weight('wte.weight'), weight('wpe.weight'), B, T, C);
  const layers: LayerActivations[] = [];
  for (let l = 0; l < L; l++) {
    const p = `h.${l}`;
    const act: LayerActivations = {
      input: x,
      ln1: new Float64Array(N * C),
      ln1Mean: new Float64Array(N),
      ln1Rstd: new Float64Array(N),
      qkv: new Float64Array(N * 3 * C),
      atty: new Float64Array(N * C),
      attproj: new Float64Array(N * C),
      residual2: new Float64Array(N * C),
      ln2: new Float64Array(N * C),
      ln2Mean: new Float64Array(N),
      ln2Rstd: new Float64Array(N),
      fch: new Float64Array(N * 4 * C),
      fchGelu: new Float64Array(N * 4 * C),
      fcproj: new Float64Array(N * C),
      loraU: new Map(),
    };
    const [ln1w, ln1b] = [weight(`${p}.ln_1.weight`), weight(`${p}.ln_1.bias`)];
    const [ln2w, ln2b] = [weight(`${p}.ln_2.weight`), weight(`${p}.ln_2.bias`)];
    layernormForward(act.ln1, act.ln1Mean, act.ln1Rstd, x, ln1w, ln1b, N, C, eps);
    linear(act.qkv, act.ln1, l, 'attn.c_attn', act.loraU);
    attentionForward(act.atty, null, act.qkv, { B, T, C, NH });
    linear(act.attproj, act.atty, l, 'attn.c_proj', act.loraU);
    residualForward(act.residual2, x, act.attproj);
    layernormForward(act.ln2, act.ln2Mean, act.ln2Rstd, act.residual2, ln2w, ln2b, N, C, eps);
    linear(act.fch, act.ln2, l, 'mlp.c_fc', act.loraU);
    geluForward(act.fchGelu, act.fch);
    linear(act.fcproj, act.fchGelu, l, 'mlp.c_proj', act.loraU);
    const next = new Float64Array(N * C);
    residualForward(next, act.residual2, act.fcproj);
    layers.push(act);
    x = next;
  }

  const lnf = new Float64Array(N * C);
  const lnfMean = new Float64Array(N);
  const lnfRstd = new Float64Array(N);
  layernormForward(lnf, lnfMean, lnfRstd, x, weight('ln_f.weight'), weight('ln_f.bias'), N, C, eps);
  const wteT = transpose(weight('wte.weight'), V, C); // (C,V)
  const logits = new Float64Array(N * V);
  matmulForward(logits, lnf, wteT, null, N, V, C);

  let loss = NaN;
  if (batch.targets) {
    const mask = batch.mask ?? new Float64Array(N).fill(1);
    const perToken = new Float64Array(N);
    crossEntropyForward(perToken, logits, batch.targets, mask, N, V);
    loss = perToken.reduce((a, v) => a + v, 0) / Array.from(mask).reduce((a, v) => a + v, 0);
  }
  return { logits, loss, saved: { layers, output: x, lnf, lnfMean, lnfRstd, wteT } };
}

/** Gradients of the forward's masked mean loss with respect to every base parameter and every LoRA A and B. */
export function gpt2ReferenceBackward(
  config: Gpt2ReferenceConfig,
  weights: Gpt2ReferenceWeights,
  lora: Gpt2ReferenceLora | null,
  batch: Gpt2ReferenceBatch,
  forward: Gpt2ReferenceForward,
): Gpt2ReferenceGradients {
  if (!batch.targets) throw new Error('reference GPT-2: the backward needs targets');
  const { B, T } = batch;
  const { nLayer: L, nHead: NH, nEmbd: C, vocabSize: V } = config;
  const N = B * T;
  const shapes = gpt2ReferenceParameterShapes(config);
  const weight = weightGetter(weights, shapes);
  const noDropout = { p: 0, seed: 0 };
  const { layers, output, lnf, lnfMean, lnfRstd, wteT } = forward.saved;

  const params = new Map<string, Float64Array>();
  for (const [name, shape] of shapes) params.set(name, new Float64Array(shape.reduce((a, d) => a * d, 1)));
  const grad = (name: string) => params.get(name)!;
  const loraGrads = new Map<string, ReferenceLoraPair>();
  for (const [path, pair] of lora?.modules ?? []) {
    loraGrads.set(path, { a: new Float64Array(pair.a.length), b: new Float64Array(pair.b.length) });
  }

  /** dinp (N,in) += through the linear layer (and its LoRA term); parameter gradients accumulate. */
  const linearBackward = (
    dinp: Float64Array,
    dout: Float64Array,
    inp: Float64Array,
    layer: number,
    module: ReferenceLinearModule,
    loraU: LayerActivations['loraU'],
  ) => {
    const [K, OC] = referenceLinearShape(C, module);
    const prefix = `h.${layer}.${module}`;
    const [w, dw, db] = [weight(`${prefix}.weight`), grad(`${prefix}.weight`), grad(`${prefix}.bias`)];
    matmulBackward(dinp, dw, db, dout, inp, w, N, OC, K);
    const pair = lora?.modules.get(prefix);
    if (pair) {
      const d = loraGrads.get(prefix)!;
      const shape = loraShapeOf(pair, prefix, N, K, OC);
      loraBackward(dinp, d.a, d.b, dout, inp, loraU.get(module)!, pair.a, pair.b, shape, lora!.scale, noDropout);
    }
  };

  // Loss → logits → tied head → ln_f.
  const mask = batch.mask ?? new Float64Array(N).fill(1);
  const maskSum = Array.from(mask).reduce((a, v) => a + v, 0);
  const dlogits = new Float64Array(N * V); // (N,V)
  crossEntropyBackward(dlogits, forward.logits, batch.targets, mask, 1 / maskSum, N, V);
  const dlnf = new Float64Array(N * C);
  const dwteT = new Float64Array(C * V); // (C,V): the classifier path of d wte, transposed
  matmulBackward(dlnf, dwteT, null, dlogits, lnf, wteT, N, V, C);
  const dwte = grad('wte.weight');
  for (let v = 0; v < V; v++) for (let c = 0; c < C; c++) dwte[v * C + c] += dwteT[c * V + v];
  let dx = new Float64Array(N * C); // (N,C) d loss / d the residual stream
  const [lnfw, dlnfw, dlnfb] = [weight('ln_f.weight'), grad('ln_f.weight'), grad('ln_f.bias')];
  layernormBackward(dx, dlnfw, dlnfb, dlnf, output, lnfw, lnfMean, lnfRstd, N, C, false);

  for (let l = L - 1; l >= 0; l--) {
    const p = `h.${l}`;
    const act = layers[l];
    // x_out = residual2 + fcproj
    const dresidual2 = new Float64Array(N * C);
    const dfcproj = new Float64Array(N * C);
    residualBackward(dresidual2, dfcproj, dx);
    const dfchGelu = new Float64Array(N * 4 * C);
    linearBackward(dfchGelu, dfcproj, act.fchGelu, l, 'mlp.c_proj', act.loraU);
    const dfch = new Float64Array(N * 4 * C);
    geluBackward(dfch, dfchGelu, act.fch, false);
    const dln2 = new Float64Array(N * C);
    linearBackward(dln2, dfch, act.ln2, l, 'mlp.c_fc', act.loraU);
    const [ln2w, dln2w, dln2b] = [weight(`${p}.ln_2.weight`), grad(`${p}.ln_2.weight`), grad(`${p}.ln_2.bias`)];
    layernormBackward(dresidual2, dln2w, dln2b, dln2, act.residual2, ln2w, act.ln2Mean, act.ln2Rstd, N, C, true);
    // residual2 = input + attproj
    const dinput = new Float64Array(N * C);
    const dattproj = new Float64Array(N * C);
    residualBackward(dinput, dattproj, dresidual2);
    const datty = new Float64Array(N * C);
    linearBackward(datty, dattproj, act.atty, l, 'attn.c_proj', act.loraU);
    const dqkv = new Float64Array(N * 3 * C);
    attentionBackward(dqkv, datty, act.qkv, { B, T, C, NH });
    const dln1 = new Float64Array(N * C);
    linearBackward(dln1, dqkv, act.ln1, l, 'attn.c_attn', act.loraU);
    const [ln1w, dln1w, dln1b] = [weight(`${p}.ln_1.weight`), grad(`${p}.ln_1.weight`), grad(`${p}.ln_1.bias`)];
    layernormBackward(dinput, dln1w, dln1b, dln1, act.input, ln1w, act.ln1Mean, act.ln1Rstd, N, C, true);
    dx = dinput;
  }
  embeddingBackward(dwte, grad('wpe.weight'), dx, batch.ids, B, T, C);
  return { params, lora: loraGrads };
}
