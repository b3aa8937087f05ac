// Every WGSL kernel, paired with its typed spec. One entry per .wgsl file; see spec.ts for the conventions. WGSL has
// no includes: the tiled matmul kernels are each joined with the shared lib/matmul_tiles.wgsl here (withMatmulTiles).
// Wrappers in src/engine/ops/ choose workgroups and bind tensors; tests compare each kernel with src/engine/reference/.

import { defineKernel } from './spec.ts';
import residualForwardSource from './residual_forward.wgsl?raw';
import residualBackwardSource from './residual_backward.wgsl?raw';

// ---- residual --------------------------------------------------------------------------------------------------
export const residualForward = defineKernel({
  name: 'residual_forward',
  source: residualForwardSource,
  bindings: [
    { name: 'a', access: 'read' },
    { name: 'b', access: 'read' },
    { name: 'out', access: 'read_write' },
  ],
  uniforms: [{ name: 'n', type: 'u32' }],
  overrides: { WG: 256 },
});

export const residualBackward = defineKernel({
  name: 'residual_backward',
  source: residualBackwardSource,
  bindings: [
    { name: 'dout', access: 'read' },
    { name: 'da', access: 'read_write' },
    { name: 'db', access: 'read_write' },
  ],
  uniforms: [{ name: 'n', type: 'u32' }],
  overrides: { WG: 256 },
});

// ---- matmul ------------------------------------------------------------------------------------------------------
import matmulForwardSource from './matmul_forward.wgsl?raw';
import matmulForwardVec4Source from './matmul_forward_vec4.wgsl?raw';
import matmulForwardRowsSource from './matmul_forward_rows.wgsl?raw';
import matmulBackwardInputSource from './matmul_backward_input.wgsl?raw';
import matmulBackwardInputVec4Source from './matmul_backward_input_vec4.wgsl?raw';
import matmulBackwardWeightSource from './matmul_backward_weight.wgsl?raw';
import matmulBackwardWeightVec4Source from './matmul_backward_weight_vec4.wgsl?raw';
import matmulBackwardBiasSource from './matmul_backward_bias.wgsl?raw';
import matmulTilesSource from './lib/matmul_tiles.wgsl?raw';

/**
 * `source` with its `// @<part> … // @end-<part>` section replaced by `replacement`: an f16 weight's reader, or a
 * fused epilogue's store (the replacement is inserted as it is, `$` included).
 */
function swapPart(source: string, part: string, replacement: string): string {
  const marked = new RegExp(`// @${part}[\\s\\S]*?// @end-${part}\\n`);
  if (!marked.test(source)) throw new Error(`kernel source has no @${part} section`);
  return source.replace(marked, () => replacement);
}

/**
 * WGSL has no #include, so the eight register-tiled matmul kernels (the six below and the two f16-weight ones in
 * "matmul f16 weights") are each composed here: the kernel's own file (header, Params, bindings, tile strides,
 * `reduction_length`, the operands' load jobs `fetch_a`/`stash_a`/`fetch_b`/`stash_b`, `store_chunk`) followed by
 * lib/matmul_tiles.wgsl (tile overrides, workgroup tiles, accumulators, `outer`, `multiply_tiles`, the plain and the
 * PREFETCH reduction loops, `main`). The kernel part comes first so that its compile errors keep the
 * line numbers of its own file; lines past it belong to the snippet. WGSL module-scope declarations may come in any
 * order, so the snippet can use what the kernel part declares and the other way round.
 */
function withMatmulTiles(kernelPart: string): string {
  return `${kernelPart}\n${matmulTilesSource}`;
}

/**
 * Tile overrides of the six register-tiled kernels (scalar and vec4 loads × three layouts): a 128×128 output block
 * per workgroup, 8 deep, 8×8 outputs per thread → 256 threads, no prefetch (0/1 are the bool overrides' false/true).
 * ops/matmul.ts picks smaller tiles by shape and sets PREFETCH and DOUBLE_BUFFER.
 */
const MATMUL_TILE_DEFAULTS = {
  TILE_ROWS: 128,
  TILE_COLS: 128,
  TILE_DEPTH: 8,
  THREAD_ROWS: 8,
  THREAD_COLS: 8,
  SPLIT_K: 1,
  PREFETCH: 0,
  DOUBLE_BUFFER: 0,
};

const matmulForwardBindings = [
  { name: 'inp', access: 'read' },
  { name: 'weight', access: 'read' },
  { name: 'bias', access: 'read' },
  { name: 'out', access: 'read_write' },
] as const;
const matmulShapeUniforms = [
  { name: 'M', type: 'u32' },
  { name: 'N', type: 'u32' },
  { name: 'K', type: 'u32' },
] as const;

export const matmulForward = defineKernel({
  name: 'matmul_forward',
  source: withMatmulTiles(matmulForwardSource),
  bindings: matmulForwardBindings,
  uniforms: matmulShapeUniforms,
  overrides: { ...MATMUL_TILE_DEFAULTS, HAS_BIAS: 0 },
});

/** K and N multiples of 4. */
export const matmulForwardVec4 = defineKernel({
  name: 'matmul_forward_vec4',
  source: withMatmulTiles(matmulForwardVec4Source),
  bindings: matmulForwardBindings,
  uniforms: matmulShapeUniforms,
  overrides: { ...MATMUL_TILE_DEFAULTS, HAS_BIAS: 0 },
});

/** Decoding steps (M ≤ 8, N a multiple of 4): all rows per workgroup, K split over DEPTH_SLICES threads per quad. */
export const matmulForwardRows = defineKernel({
  name: 'matmul_forward_rows',
  source: matmulForwardRowsSource,
  bindings: matmulForwardBindings,
  uniforms: matmulShapeUniforms,
  overrides: { ROWS: 1, COL_THREADS: 8, DEPTH_SLICES: 32, HAS_BIAS: 0 },
});

const matmulBackwardInputBindings = [
  { name: 'dout', access: 'read' },
  { name: 'weight', access: 'read' },
  { name: 'dinp', access: 'read_write' },
] as const;
const matmulBackwardInputUniforms = [...matmulShapeUniforms, { name: 'accumulate', type: 'u32' }] as const;

export const matmulBackwardInput = defineKernel({
  name: 'matmul_backward_input',
  source: withMatmulTiles(matmulBackwardInputSource),
  bindings: matmulBackwardInputBindings,
  uniforms: matmulBackwardInputUniforms,
  overrides: MATMUL_TILE_DEFAULTS,
});

/** N a multiple of 4 (K free: the tied LM head has K = V). */
export const matmulBackwardInputVec4 = defineKernel({
  name: 'matmul_backward_input_vec4',
  source: withMatmulTiles(matmulBackwardInputVec4Source),
  bindings: matmulBackwardInputBindings,
  uniforms: matmulBackwardInputUniforms,
  overrides: MATMUL_TILE_DEFAULTS,
});

const matmulBackwardWeightBindings = [
  { name: 'inp', access: 'read' },
  { name: 'dout', access: 'read' },
  { name: 'dweight', access: 'read_write' },
] as const;

export const matmulBackwardWeight = defineKernel({
  name: 'matmul_backward_weight',
  source: withMatmulTiles(matmulBackwardWeightSource),
  bindings: matmulBackwardWeightBindings,
  uniforms: matmulShapeUniforms,
  overrides: MATMUL_TILE_DEFAULTS,
});

/** K and N multiples of 4. */
export const matmulBackwardWeightVec4 = defineKernel({
  name: 'matmul_backward_weight_vec4',
  source: withMatmulTiles(matmulBackwardWeightVec4Source),
  bindings: matmulBackwardWeightBindings,
  uniforms: matmulShapeUniforms,
  overrides: MATMUL_TILE_DEFAULTS,
});

export const matmulBackwardBias = defineKernel({
  name: 'matmul_backward_bias',
  source: matmulBackwardBiasSource,
  bindings: [
    { name: 'dout', access: 'read' },
    { name: 'dbias', access: 'read_write' },
  ],
  uniforms: [
    { name: 'M', type: 'u32' },
    { name: 'N', type: 'u32' },
  ],
  overrides: { COLS: 64, LANES: 4 },
});
import matmulSplitReduceSource from './matmul_split_reduce.wgsl?raw';

/** Sums a split-K matmul's partial products: out (n) = or += Σ_z partial (z, n). */
export const matmulSplitReduce = defineKernel({
  name: 'matmul_split_reduce',
  source: matmulSplitReduceSource,
  bindings: [
    { name: 'partial', access: 'read' },
    { name: 'out', access: 'read_write' },
  ],
  uniforms: [
    { name: 'n', type: 'u32' },
    { name: 'splits', type: 'u32' },
    { name: 'accumulate', type: 'u32' },
  ],
  overrides: { WG: 256 },
});
// (end of matmul)

// ---- lora --------------------------------------------------------------------------------------------------------
import loraForwardDownSource from './lora_forward_down.wgsl?raw';
import loraForwardUpSource from './lora_forward_up.wgsl?raw';
import loraBackwardBSource from './lora_backward_b.wgsl?raw';
import loraBackwardUSource from './lora_backward_u.wgsl?raw';
import loraBackwardASource from './lora_backward_a.wgsl?raw';
import loraBackwardXSource from './lora_backward_x.wgsl?raw';

/** Uniforms of the kernels that draw (or redraw) the dropout mask from (seed, element index). */
const LORA_DROPOUT_UNIFORMS = [
  { name: 'seed', type: 'u32' },
  { name: 'drop_threshold', type: 'u32' },
  { name: 'keep_scale', type: 'f32' },
] as const;

export const loraForwardDown = defineKernel({
  name: 'lora_forward_down',
  source: loraForwardDownSource,
  bindings: [
    { name: 'inp', access: 'read' },
    { name: 'a', access: 'read' },
    { name: 'u', access: 'read_write' },
  ],
  uniforms: [{ name: 'M', type: 'u32' }, { name: 'K', type: 'u32' }, { name: 'R', type: 'u32' }, ...LORA_DROPOUT_UNIFORMS],
  overrides: { ROWS: 32, TILE_DEPTH: 32, WG: 256 },
});

export const loraForwardUp = defineKernel({
  name: 'lora_forward_up',
  source: loraForwardUpSource,
  bindings: [
    { name: 'u', access: 'read' },
    { name: 'b', access: 'read' },
    { name: 'out', access: 'read_write' },
  ],
  uniforms: [
    { name: 'M', type: 'u32' },
    { name: 'N', type: 'u32' },
    { name: 'R', type: 'u32' },
    { name: 'scale', type: 'f32' },
  ],
  overrides: { TILE_COLS: 64, WG_ROWS: 4, R_CHUNK: 16 },
});

export const loraBackwardB = defineKernel({
  name: 'lora_backward_b',
  source: loraBackwardBSource,
  bindings: [
    { name: 'dout', access: 'read' },
    { name: 'u', access: 'read' },
    { name: 'db', access: 'read_write' },
  ],
  uniforms: [
    { name: 'M', type: 'u32' },
    { name: 'N', type: 'u32' },
    { name: 'R', type: 'u32' },
    { name: 'scale', type: 'f32' },
  ],
  overrides: { COLS: 64, M_CHUNK: 16, WG: 256 },
});

export const loraBackwardU = defineKernel({
  name: 'lora_backward_u',
  source: loraBackwardUSource,
  bindings: [
    { name: 'dout', access: 'read' },
    { name: 'b', access: 'read' },
    { name: 'du', access: 'read_write' },
  ],
  uniforms: [
    { name: 'M', type: 'u32' },
    { name: 'N', type: 'u32' },
    { name: 'R', type: 'u32' },
    { name: 'scale', type: 'f32' },
  ],
  overrides: { ROWS: 32, TILE_DEPTH: 32, WG: 256 },
});

export const loraBackwardA = defineKernel({
  name: 'lora_backward_a',
  source: loraBackwardASource,
  bindings: [
    { name: 'du', access: 'read' },
    { name: 'inp', access: 'read' },
    { name: 'da', access: 'read_write' },
  ],
  uniforms: [{ name: 'M', type: 'u32' }, { name: 'K', type: 'u32' }, { name: 'R', type: 'u32' }, ...LORA_DROPOUT_UNIFORMS],
  overrides: { COLS: 64, M_CHUNK: 16, WG: 256 },
});

export const loraBackwardX = defineKernel({
  name: 'lora_backward_x',
  source: loraBackwardXSource,
  bindings: [
    { name: 'du', access: 'read' },
    { name: 'a', access: 'read' },
    { name: 'dinp', access: 'read_write' },
  ],
  uniforms: [{ name: 'M', type: 'u32' }, { name: 'K', type: 'u32' }, { name: 'R', type: 'u32' }, ...LORA_DROPOUT_UNIFORMS],
  overrides: { TILE_COLS: 64, WG_ROWS: 4, R_CHUNK: 16 },
});
// (end of lora)

// ---- attention ---------------------------------------------------------------------------------------------------
import attentionForwardSource from './attention_forward.wgsl?raw';
import attentionBackwardDeltaSource from './attention_backward_delta.wgsl?raw';
import attentionBackwardSource from './attention_backward.wgsl?raw';
import attentionForwardRowsSource from './attention_forward_rows.wgsl?raw';
import attentionBackwardRowsDqSource from './attention_backward_rows_dq.wgsl?raw';
import attentionBackwardRowsDkdvSource from './attention_backward_rows_dkdv.wgsl?raw';

export const attentionForward = defineKernel({
  name: 'attention_forward',
  source: attentionForwardSource,
  bindings: [
    { name: 'qkv', access: 'read' },
    { name: 'out', access: 'read_write' },
    { name: 'lse', access: 'read_write' },
  ],
  uniforms: [
    { name: 'T', type: 'u32' },
    { name: 'C', type: 'u32' },
    { name: 'NH', type: 'u32' },
    { name: 'HS', type: 'u32' },
  ],
  overrides: { BQ: 16, BK: 16, HS_MAX: 64 },
});

export const attentionBackwardDelta = defineKernel({
  name: 'attention_backward_delta',
  source: attentionBackwardDeltaSource,
  bindings: [
    { name: 'dout', access: 'read' },
    { name: 'out', access: 'read' },
    { name: 'delta', access: 'read_write' },
  ],
  uniforms: [
    { name: 'rows', type: 'u32' },
    { name: 'T', type: 'u32' },
    { name: 'C', type: 'u32' },
    { name: 'NH', type: 'u32' },
    { name: 'HS', type: 'u32' },
  ],
  overrides: { WG: 64 },
});

export const attentionBackward = defineKernel({
  name: 'attention_backward',
  source: attentionBackwardSource,
  bindings: [
    { name: 'qkv', access: 'read' },
    { name: 'dout', access: 'read' },
    { name: 'lse', access: 'read' },
    { name: 'delta', access: 'read' },
    { name: 'dqkv', access: 'read_write' },
  ],
  uniforms: [
    { name: 'T', type: 'u32' },
    { name: 'C', type: 'u32' },
    { name: 'NH', type: 'u32' },
    { name: 'HS', type: 'u32' },
  ],
  overrides: { BQ: 16, BK: 16, HS_MAX: 64 },
});
/** Shapes of the register-blocked kernels; the head size is the override HS4 (it sizes their register arrays). */
const ATTENTION_ROWS_UNIFORMS = [
  { name: 'T', type: 'u32' },
  { name: 'C', type: 'u32' },
  { name: 'NH', type: 'u32' },
] as const;

export const attentionForwardRows = defineKernel({
  name: 'attention_forward_rows',
  source: attentionForwardRowsSource,
  bindings: [
    { name: 'qkv', access: 'read' },
    { name: 'out', access: 'read_write' },
    { name: 'lse', access: 'read_write' },
  ],
  uniforms: ATTENTION_ROWS_UNIFORMS,
  overrides: { ROWS: 32, LANES: 4, KEYS_PER_LANE: 4, HS4: 16 },
});

export const attentionBackwardRowsDq = defineKernel({
  name: 'attention_backward_rows_dq',
  source: attentionBackwardRowsDqSource,
  bindings: [
    { name: 'qkv', access: 'read' },
    { name: 'dout', access: 'read' },
    { name: 'out', access: 'read' },
    { name: 'lse', access: 'read' },
    { name: 'delta', access: 'read_write' },
    { name: 'dqkv', access: 'read_write' },
  ],
  uniforms: ATTENTION_ROWS_UNIFORMS,
  overrides: { ROWS: 32, SPLIT: 4, TILE_KEYS: 8, HS4: 16 },
});

export const attentionBackwardRowsDkdv = defineKernel({
  name: 'attention_backward_rows_dkdv',
  source: attentionBackwardRowsDkdvSource,
  bindings: [
    { name: 'qkv', access: 'read' },
    { name: 'dout', access: 'read' },
    { name: 'lse', access: 'read' },
    { name: 'delta', access: 'read' },
    { name: 'dqkv', access: 'read_write' },
  ],
  uniforms: ATTENTION_ROWS_UNIFORMS,
  overrides: { KEY_ROWS: 32, SPLIT: 4, TILE_QUERIES: 8, HS4: 16 },
});
// (end of attention)

// ---- layernorm ---------------------------------------------------------------------------------------------------
import layernormForwardSource from './layernorm_forward.wgsl?raw';
import layernormBackwardSource from './layernorm_backward.wgsl?raw';
import layernormBackwardParamsSource from './layernorm_backward_params.wgsl?raw';
import layernormBackwardParamsReduceSource from './layernorm_backward_params_reduce.wgsl?raw';

export const layernormForward = defineKernel({
  name: 'layernorm_forward',
  source: withWorkgroupSum(layernormForwardSource),
  bindings: [
    { name: 'inp', access: 'read' },
    { name: 'weight', access: 'read' },
    { name: 'bias', access: 'read' },
    { name: 'out', access: 'read_write' },
    { name: 'mean', access: 'read_write' },
    { name: 'rstd', access: 'read_write' },
  ],
  uniforms: [
    { name: 'N', type: 'u32' },
    { name: 'C', type: 'u32' },
    { name: 'eps', type: 'f32' },
  ],
  overrides: { WG: 256 },
});

export const layernormBackward = defineKernel({
  name: 'layernorm_backward',
  source: layernormBackwardSource,
  bindings: [
    { name: 'dout', access: 'read' },
    { name: 'inp', access: 'read' },
    { name: 'weight', access: 'read' },
    { name: 'mean', access: 'read' },
    { name: 'rstd', access: 'read' },
    { name: 'dinp', access: 'read_write' },
  ],
  uniforms: [
    { name: 'N', type: 'u32' },
    { name: 'C', type: 'u32' },
    { name: 'accumulate', type: 'u32' },
  ],
  overrides: { WG: 256 },
});

export const layernormBackwardParams = defineKernel({
  name: 'layernorm_backward_params',
  source: layernormBackwardParamsSource,
  bindings: [
    { name: 'dout', access: 'read' },
    { name: 'inp', access: 'read' },
    { name: 'mean', access: 'read' },
    { name: 'rstd', access: 'read' },
    { name: 'scratch', access: 'read_write' },
  ],
  uniforms: [
    { name: 'N', type: 'u32' },
    { name: 'C', type: 'u32' },
  ],
  overrides: { WG: 256, ROWS: 32 },
});

export const layernormBackwardParamsReduce = defineKernel({
  name: 'layernorm_backward_params_reduce',
  source: layernormBackwardParamsReduceSource,
  bindings: [
    { name: 'scratch', access: 'read' },
    { name: 'dweight', access: 'read_write' },
    { name: 'dbias', access: 'read_write' },
  ],
  uniforms: [
    { name: 'C', type: 'u32' },
    { name: 'blocks', type: 'u32' },
  ],
  overrides: { WG: 256 },
});
// (end of layernorm)

// ---- gelu --------------------------------------------------------------------------------------------------------
import geluForwardSource from './gelu_forward.wgsl?raw';
import geluBackwardSource from './gelu_backward.wgsl?raw';

export const geluForward = defineKernel({
  name: 'gelu_forward',
  source: geluForwardSource,
  bindings: [
    { name: 'inp', access: 'read' },
    { name: 'out', access: 'read_write' },
  ],
  uniforms: [{ name: 'n', type: 'u32' }],
  overrides: { WG: 256 },
});

export const geluBackward = defineKernel({
  name: 'gelu_backward',
  source: geluBackwardSource,
  bindings: [
    { name: 'dout', access: 'read' },
    { name: 'inp', access: 'read' },
    { name: 'dinp', access: 'read_write' },
  ],
  uniforms: [
    { name: 'n', type: 'u32' },
    { name: 'accumulate', type: 'u32' },
  ],
  overrides: { WG: 256 },
});
// (end of gelu)

// ---- embedding ---------------------------------------------------------------------------------------------------
import embeddingForwardSource from './embedding_forward.wgsl?raw';
import embeddingBackwardWteSource from './embedding_backward_wte.wgsl?raw';
import embeddingBackwardWpeSource from './embedding_backward_wpe.wgsl?raw';

export const embeddingForward = defineKernel({
  name: 'embedding_forward',
  source: embeddingForwardSource,
  bindings: [
    { name: 'ids', access: 'read' },
    { name: 'wte', access: 'read' },
    { name: 'wpe', access: 'read' },
    { name: 'out', access: 'read_write' },
  ],
  uniforms: [
    { name: 'n', type: 'u32' },
    { name: 'T', type: 'u32' },
    { name: 'C', type: 'u32' },
    { name: 'V', type: 'u32' },
  ],
  overrides: { WG: 256 },
});

export const embeddingBackwardWte = defineKernel({
  name: 'embedding_backward_wte',
  source: embeddingBackwardWteSource,
  bindings: [
    { name: 'dout', access: 'read' },
    { name: 'tokens', access: 'read' },
    { name: 'offsets', access: 'read' },
    { name: 'positions', access: 'read' },
    { name: 'dwte', access: 'read_write' },
  ],
  uniforms: [
    { name: 'segments', type: 'u32' },
    { name: 'C', type: 'u32' },
    { name: 'V', type: 'u32' },
  ],
  overrides: { WG: 256 },
});

export const embeddingBackwardWpe = defineKernel({
  name: 'embedding_backward_wpe',
  source: embeddingBackwardWpeSource,
  bindings: [
    { name: 'dout', access: 'read' },
    { name: 'dwpe', access: 'read_write' },
  ],
  uniforms: [
    { name: 'B', type: 'u32' },
    { name: 'T', type: 'u32' },
    { name: 'C', type: 'u32' },
  ],
  overrides: { WG: 256 },
});
// (end of embedding)

// ---- crossentropy ------------------------------------------------------------------------------------------------
import crossentropyForwardBackwardSource from './crossentropy_forward_backward.wgsl?raw';
import crossentropyMetricsSource from './crossentropy_metrics.wgsl?raw';

export const crossentropyForwardBackward = defineKernel({
  name: 'crossentropy_forward_backward',
  source: crossentropyForwardBackwardSource,
  bindings: [
    { name: 'logits', access: 'read_write' },
    { name: 'targets', access: 'read' },
    { name: 'mask', access: 'read' },
    { name: 'loss', access: 'read_write' },
    { name: 'correct', access: 'read_write' },
  ],
  uniforms: [
    { name: 'rows', type: 'u32' },
    { name: 'vocab', type: 'u32' },
    { name: 'rowStride', type: 'u32' },
    { name: 'rowOffset', type: 'u32' },
    { name: 'dlossScale', type: 'f32' },
    { name: 'writeGradient', type: 'u32' },
  ],
  overrides: { WG: 256 },
});

export const crossentropyMetrics = defineKernel({
  name: 'crossentropy_metrics',
  source: crossentropyMetricsSource,
  bindings: [
    { name: 'loss', access: 'read' },
    { name: 'correct', access: 'read' },
    { name: 'mask', access: 'read' },
    { name: 'result', access: 'read_write' },
  ],
  uniforms: [
    { name: 'count', type: 'u32' },
    { name: 'dlossScale', type: 'f32' },
    { name: 'accumulate', type: 'u32' },
  ],
  overrides: { WG: 256 },
});
// (end of crossentropy)

// ---- adamw -------------------------------------------------------------------------------------------------------
import adamwUpdateSource from './adamw_update.wgsl?raw';
import adamwCountSource from './adamw_count.wgsl?raw';

export const adamwUpdate = defineKernel({
  name: 'adamw_update',
  source: adamwUpdateSource,
  bindings: [
    { name: 'param', access: 'read_write' },
    { name: 'grad', access: 'read_write' },
    { name: 'm', access: 'read_write' },
    { name: 'v', access: 'read_write' },
    { name: 'clipScale', access: 'read' },
    { name: 'stepCount', access: 'read' },
  ],
  uniforms: [
    { name: 'n', type: 'u32' },
    { name: 'lr', type: 'f32' },
    { name: 'beta1', type: 'f32' },
    { name: 'beta2', type: 'f32' },
    { name: 'eps', type: 'f32' },
    { name: 'weightDecay', type: 'f32' },
    { name: 'logBeta1', type: 'f32' },
    { name: 'logBeta2', type: 'f32' },
    { name: 'zeroGrad', type: 'u32' },
  ],
  overrides: { WG: 256 },
});

export const adamwCount = defineKernel({
  name: 'adamw_count',
  source: adamwCountSource,
  bindings: [
    { name: 'clipScale', access: 'read' },
    { name: 'stepCount', access: 'read_write' },
  ],
  uniforms: [],
});
// (end of adamw)

// ---- gradnorm ----------------------------------------------------------------------------------------------------
import gradnormPartialSource from './gradnorm_partial.wgsl?raw';
import gradnormFinalizeSource from './gradnorm_finalize.wgsl?raw';

export const gradnormPartial = defineKernel({
  name: 'gradnorm_partial',
  source: gradnormPartialSource,
  bindings: [
    { name: 'grad', access: 'read' },
    { name: 'partials', access: 'read_write' },
  ],
  uniforms: [
    { name: 'n', type: 'u32' },
    { name: 'slot', type: 'u32' },
  ],
  overrides: { WG: 256 },
});

export const gradnormFinalize = defineKernel({
  name: 'gradnorm_finalize',
  source: gradnormFinalizeSource,
  bindings: [
    { name: 'partials', access: 'read' },
    { name: 'result', access: 'read_write' },
  ],
  uniforms: [
    { name: 'count', type: 'u32' },
    { name: 'maxNorm', type: 'f32' },
  ],
  overrides: { WG: 256 },
});
// (end of gradnorm)

// ---- decode ------------------------------------------------------------------------------------------------------
import kvCacheWriteSource from './kv_cache_write.wgsl?raw';
import attentionDecodeSource from './attention_decode.wgsl?raw';

/** Shapes of a generation pass: Tq query rows per sequence (count real) at positions offset.., a cache of maxT. */
const DECODE_UNIFORMS = [
  { name: 'B', type: 'u32' },
  { name: 'Tq', type: 'u32' },
  { name: 'count', type: 'u32' },
  { name: 'offset', type: 'u32' },
  { name: 'C', type: 'u32' },
  { name: 'NH', type: 'u32' },
  { name: 'HS', type: 'u32' },
  { name: 'maxT', type: 'u32' },
] as const;

export const kvCacheWrite = defineKernel({
  name: 'kv_cache_write',
  source: kvCacheWriteSource,
  bindings: [
    { name: 'qkv', access: 'read' },
    { name: 'cache', access: 'read_write' },
  ],
  uniforms: DECODE_UNIFORMS,
  overrides: { WG: 256 },
});

export const attentionDecode = defineKernel({
  name: 'attention_decode',
  source: attentionDecodeSource,
  bindings: [
    { name: 'qkv', access: 'read' },
    { name: 'cache', access: 'read' },
    { name: 'out', access: 'read_write' },
  ],
  uniforms: DECODE_UNIFORMS,
  overrides: { WG: 64, HS_MAX: 64 },
});
// (end of decode)

// ---- matmul f16 weights ------------------------------------------------------------------------------------------
import matmulForwardF16WSource from './matmul_forward_f16w.wgsl?raw';
import matmulBackwardInputF16WSource from './matmul_backward_input_f16w.wgsl?raw';

// The f32 tiled kernels' tiles, bindings and uniforms (the matmul section above); only the weight's storage differs.

/** weight: (K, ceil(N/2)) u32, f16 pairs along N (ops/matmul-f16.ts `packF16`). */
export const matmulForwardF16W = defineKernel({
  name: 'matmul_forward_f16w',
  source: withMatmulTiles(matmulForwardF16WSource),
  bindings: matmulForwardBindings,
  uniforms: matmulShapeUniforms,
  overrides: { ...MATMUL_TILE_DEFAULTS, HAS_BIAS: 0 },
});

/** weight: (K, ceil(N/2)) u32, f16 pairs along N; also the tied LM head (K = V). */
export const matmulBackwardInputF16W = defineKernel({
  name: 'matmul_backward_input_f16w',
  source: withMatmulTiles(matmulBackwardInputF16WSource),
  bindings: matmulBackwardInputBindings,
  uniforms: matmulBackwardInputUniforms,
  overrides: MATMUL_TILE_DEFAULTS,
});

import matmulForwardRowsF16WPart from './matmul_forward_rows_f16w.wgsl?raw';
import matmulSgmatF16WSource from './matmul_sgmat_f16w.wgsl?raw';

/** The few-rows (decoding) forward kernel reading an f16 weight: matmul_forward_rows.wgsl with its weight part swapped. */
export const matmulForwardRowsF16W = defineKernel({
  name: 'matmul_forward_rows_f16w',
  source: swapPart(matmulForwardRowsSource, 'weight', matmulForwardRowsF16WPart),
  bindings: matmulForwardBindings,
  uniforms: matmulShapeUniforms,
  overrides: { ROWS: 1, COL_THREADS: 8, DEPTH_SLICES: 32, HAS_BIAS: 0 },
});

const SGMAT_BINDINGS = [
  { name: 'act', access: 'read' },
  { name: 'weight', access: 'read' },
  { name: 'bias', access: 'read' },
  { name: 'out', access: 'read_write' },
] as const;
const SGMAT_UNIFORMS = [
  { name: 'R', type: 'u32' },
  { name: 'Cc', type: 'u32' },
  { name: 'D', type: 'u32' },
  { name: 'accumulate', type: 'u32' },
] as const;
const sgmatKernels = new Map<string, ReturnType<typeof defineSgmat>>();

function defineSgmat(WG_SM: number, WG_SN: number, BK: number) {
  const tiles = `const WG_SM = ${WG_SM}u;\nconst WG_SN = ${WG_SN}u;\nconst BK = ${BK}u;`;
  return defineKernel({
    name: `matmul_sgmat_f16w_${WG_SM}x${WG_SN}x${BK}`,
    source: matmulSgmatF16WSource.replace('// @tiles', tiles),
    bindings: SGMAT_BINDINGS,
    uniforms: SGMAT_UNIFORMS,
    overrides: { HAS_BIAS: 0, TRANSPOSED: 0, SPLIT_K: 1 },
  });
}

/**
 * Tensor cores (chromium-experimental-subgroup-matrix, f16×f16→f32 16×16×16, 32-wide subgroups): out (R,Cc) = or +=
 * act (R,D) · B [+ bias], B = weight (D,Cc) or, TRANSPOSED, weightᵀ with weight (Cc,D); packed f16 pairs along rows.
 * One kernel per tile shape (the tiles are WGSL constants there: WG_SM × WG_SN subgroups, BK deep slices).
 */
export function matmulSgmatF16W(tiles: { WG_SM: number; WG_SN: number; BK: number }) {
  const key = `${tiles.WG_SM}x${tiles.WG_SN}x${tiles.BK}`;
  let kernel = sgmatKernels.get(key);
  if (!kernel) {
    kernel = defineSgmat(tiles.WG_SM, tiles.WG_SN, tiles.BK);
    sgmatKernels.set(key, kernel);
  }
  return kernel;
}
// (end of matmul f16 weights)

// ---- embedding f16 weights ---------------------------------------------------------------------------------------
import embeddingForwardF16WSource from './embedding_forward_f16w.wgsl?raw';

/** wte: (V, ceil(C/2)) u32, f16 pairs along C (ops/matmul-f16.ts `packF16`); otherwise as embeddingForward. */
export const embeddingForwardF16W = defineKernel({
  name: 'embedding_forward_f16w',
  source: embeddingForwardF16WSource,
  bindings: [
    { name: 'ids', access: 'read' },
    { name: 'wte', access: 'read' },
    { name: 'wpe', access: 'read' },
    { name: 'out', access: 'read_write' },
  ],
  uniforms: [
    { name: 'n', type: 'u32' },
    { name: 'T', type: 'u32' },
    { name: 'C', type: 'u32' },
    { name: 'V', type: 'u32' },
  ],
  overrides: { WG: 256 },
});
// (end of embedding f16 weights)

// ---- fused epilogues ---------------------------------------------------------------------------------------------
import type { KernelSpec } from './spec.ts';
import geluEpilogueSource from './lib/gelu_epilogue.wgsl?raw';
import residualLayernormForwardSource from './residual_layernorm_forward.wgsl?raw';

/** A forward kernel's spec with the GELU epilogue's extra binding. */
type WithActivated<S> = S extends KernelSpec<infer B, infer U> ? KernelSpec<B | 'activated', U> : never;

/** The text between `// @<name>` and `// @end-<name>` in lib/gelu_epilogue.wgsl. */
function geluEpiloguePart(name: string): string {
  const match = new RegExp(`// @${name}\\n([\\s\\S]*?)// @end-${name}\\n`).exec(geluEpilogueSource);
  if (!match) throw new Error(`lib/gelu_epilogue.wgsl has no @${name} part`);
  return match[1];
}

/**
 * A forward kernel's `_gelu` variant: its `// @epilogue … // @end-epilogue` store (f32 `store_out` or vec4f
 * `store_out4`) becomes lib/gelu_epilogue.wgsl's, which also stores gelu(out) into a fifth storage binding `activated`
 * (out's shape), with the gelu function appended. A variant of its own rather than an override on the kernel: the
 * binding would otherwise be declared by every forward dispatch and, when unused, need a writable stand-in buffer.
 */
function geluVariant<B extends string, U extends string>(spec: KernelSpec<B, U>, element: 'f32' | 'vec4'): WithActivated<KernelSpec<B, U>> {
  if (spec.bindings.length !== 4) throw new Error(`${spec.name} has no GELU epilogue slot (it must have 4 bindings)`);
  const source = swapPart(spec.source, 'epilogue', geluEpiloguePart(`store-${element}`));
  return defineKernel<B | 'activated', U>({
    name: `${spec.name}_gelu`,
    source: `${source}\n${geluEpiloguePart('gelu')}`,
    bindings: [...spec.bindings, { name: 'activated', access: 'read_write' }],
    uniforms: spec.uniforms,
    overrides: spec.overrides,
  });
}

/** matmul_forward with the GELU epilogue: out (M,N) = inp·weight [+ bias], activated (M,N) = gelu(out). */
export const matmulForwardGelu = geluVariant(matmulForward, 'f32');
/** matmul_forward_vec4 with the GELU epilogue (K and N multiples of 4). */
export const matmulForwardVec4Gelu = geluVariant(matmulForwardVec4, 'vec4');
/** matmul_forward_rows with the GELU epilogue (M ≤ 8, N a multiple of 4). */
export const matmulForwardRowsGelu = geluVariant(matmulForwardRows, 'vec4');
/** matmul_forward_f16w with the GELU epilogue. */
export const matmulForwardF16WGelu = geluVariant(matmulForwardF16W, 'f32');
/** matmul_forward_rows_f16w with the GELU epilogue. */
export const matmulForwardRowsF16WGelu = geluVariant(matmulForwardRowsF16W, 'vec4');

const sgmatGeluKernels = new Map<string, WithActivated<ReturnType<typeof matmulSgmatF16W>>>();

/** matmul_sgmat_f16w (one kernel per tile shape) with the GELU epilogue; not for split-K partial products. */
export function matmulSgmatF16WGelu(tiles: { WG_SM: number; WG_SN: number; BK: number }) {
  const key = `${tiles.WG_SM}x${tiles.WG_SN}x${tiles.BK}`;
  let kernel = sgmatGeluKernels.get(key);
  if (!kernel) {
    kernel = geluVariant(matmulSgmatF16W(tiles), 'f32');
    sgmatGeluKernels.set(key, kernel);
  }
  return kernel;
}

/** residual (N,C) = a + b, then out (N,C) = layernorm(residual) with mean (N) and rstd (N), in one dispatch. */
export const residualLayernormForward = defineKernel({
  name: 'residual_layernorm_forward',
  source: withWorkgroupSum(residualLayernormForwardSource),
  bindings: [
    { name: 'a', access: 'read' },
    { name: 'b', access: 'read' },
    { name: 'weight', access: 'read' },
    { name: 'bias', access: 'read' },
    { name: 'residual', access: 'read_write' },
    { name: 'out', access: 'read_write' },
    { name: 'mean', access: 'read_write' },
    { name: 'rstd', access: 'read_write' },
  ],
  uniforms: [
    { name: 'N', type: 'u32' },
    { name: 'C', type: 'u32' },
    { name: 'eps', type: 'f32' },
  ],
  overrides: { WG: 256 },
});
// (end of fused epilogues)

// ---- fast decode -------------------------------------------------------------------------------------------------
// The single-sequence decoding step (ops/decode-step.ts): fused linear layers, KV append + attention, the ln_f +
// classifier with per-workgroup bests, the greedy choice on the GPU, and the embedding of a GPU-held token.
import decodeLinearSource from './decode_linear.wgsl?raw';
import decodeLinearF16WPart from './matmul_forward_rows_f16w.wgsl?raw';
import decodeHeadSource from './decode_head.wgsl?raw';
import decodeHeadF16WPart from './decode_head_f16w.wgsl?raw';
import decodeSelectSource from './decode_select.wgsl?raw';
import decodeEmbedSource from './decode_embed.wgsl?raw';
import decodeEmbedF16WPart from './decode_embed_f16w.wgsl?raw';
import decodeAttentionSource from './decode_attention.wgsl?raw';

import workgroupSumLib from './lib/workgroup_sum.wgsl?raw';

/** A kernel that declares `override SUM_THREADS`, with lib/workgroup_sum.wgsl's tree sum appended (WGSL has no #include). */
function withWorkgroupSum(kernel: string): string {
  return `${kernel}\n${workgroupSumLib}`;
}


/** decode_linear with the shared tree sum and GELU (lib/gelu_epilogue.wgsl's, as the training forward uses). */
function withDecodeLinearLibs(kernel: string): string {
  return `${withWorkgroupSum(kernel)}\n${geluEpiloguePart('gelu')}`;
}

const DECODE_LINEAR_BINDINGS = [
  { name: 'x', access: 'read' },
  { name: 'weight', access: 'read' },
  { name: 'bias', access: 'read' },
  { name: 'out', access: 'read_write' },
  { name: 'lnWeight', access: 'read' },
  { name: 'lnBias', access: 'read' },
  { name: 'loraA', access: 'read' },
  { name: 'loraB', access: 'read' },
] as const;
const DECODE_LINEAR_UNIFORMS = [
  { name: 'K', type: 'u32' },
  { name: 'N', type: 'u32' },
  { name: 'R', type: 'u32' },
  { name: 'eps', type: 'f32' },
  { name: 'loraScale', type: 'f32' },
] as const;
const DECODE_LINEAR_OVERRIDES = { COL_QUADS: 2, SLICES: 128, LN: 0, EPILOGUE: 0, HAS_LORA: 0, LORA_GROUP: 32, XS_LEN: 4 };

export const decodeLinear = defineKernel({
  name: 'decode_linear',
  source: withDecodeLinearLibs(decodeLinearSource),
  bindings: DECODE_LINEAR_BINDINGS,
  uniforms: DECODE_LINEAR_UNIFORMS,
  overrides: DECODE_LINEAR_OVERRIDES,
});

/** weight: (K, N/2) u32, f16 pairs along N (ops/matmul-f16.ts `packF16`). */
export const decodeLinearF16W = defineKernel({
  name: 'decode_linear_f16w',
  source: withDecodeLinearLibs(swapPart(decodeLinearSource, 'weight', decodeLinearF16WPart)),
  bindings: DECODE_LINEAR_BINDINGS,
  uniforms: DECODE_LINEAR_UNIFORMS,
  overrides: DECODE_LINEAR_OVERRIDES,
});

const DECODE_HEAD_BINDINGS = [
  { name: 'x', access: 'read' },
  { name: 'wte', access: 'read' },
  { name: 'lnWeight', access: 'read' },
  { name: 'lnBias', access: 'read' },
  { name: 'logits', access: 'read_write' },
  { name: 'best', access: 'read_write' },
] as const;
const DECODE_HEAD_UNIFORMS = [
  { name: 'V', type: 'u32' },
  { name: 'C', type: 'u32' },
  { name: 'eps', type: 'f32' },
] as const;

export const decodeHead = defineKernel({
  name: 'decode_head',
  source: withWorkgroupSum(decodeHeadSource),
  bindings: DECODE_HEAD_BINDINGS,
  uniforms: DECODE_HEAD_UNIFORMS,
  overrides: { ROWS: 16, LANES: 16, XS4: 192 },
});

/** wte: (V, C/2) u32, f16 pairs along C. */
export const decodeHeadF16W = defineKernel({
  name: 'decode_head_f16w',
  source: withWorkgroupSum(swapPart(decodeHeadSource, 'wte', decodeHeadF16WPart)),
  bindings: DECODE_HEAD_BINDINGS,
  uniforms: DECODE_HEAD_UNIFORMS,
  overrides: { ROWS: 16, LANES: 16, XS4: 192 },
});

export const decodeSelect = defineKernel({
  name: 'decode_select',
  source: decodeSelectSource,
  bindings: [
    { name: 'best', access: 'read' },
    { name: 'state', access: 'read_write' },
    { name: 'tokens', access: 'read_write' },
  ],
  uniforms: [{ name: 'groups', type: 'u32' }],
  overrides: { WG: 256 },
});

const DECODE_EMBED_BINDINGS = [
  { name: 'state', access: 'read' },
  { name: 'wte', access: 'read' },
  { name: 'wpe', access: 'read' },
  { name: 'out', access: 'read_write' },
] as const;
const DECODE_EMBED_UNIFORMS = [
  { name: 'C', type: 'u32' },
  { name: 'V', type: 'u32' },
  { name: 'maxT', type: 'u32' },
] as const;

export const decodeEmbed = defineKernel({
  name: 'decode_embed',
  source: decodeEmbedSource,
  bindings: DECODE_EMBED_BINDINGS,
  uniforms: DECODE_EMBED_UNIFORMS,
  overrides: { WG: 256 },
});

/** wte: (V, ceil(C/2)) u32, f16 pairs along C. */
export const decodeEmbedF16W = defineKernel({
  name: 'decode_embed_f16w',
  source: swapPart(decodeEmbedSource, 'wte', decodeEmbedF16WPart),
  bindings: DECODE_EMBED_BINDINGS,
  uniforms: DECODE_EMBED_UNIFORMS,
  overrides: { WG: 256 },
});

export const decodeAttention = defineKernel({
  name: 'decode_attention',
  source: decodeAttentionSource,
  bindings: [
    { name: 'state', access: 'read' },
    { name: 'qkv', access: 'read' },
    { name: 'cache', access: 'read_write' },
    { name: 'out', access: 'read_write' },
  ],
  uniforms: [
    { name: 'C', type: 'u32' },
    { name: 'NH', type: 'u32' },
    { name: 'HS', type: 'u32' },
    { name: 'maxT', type: 'u32' },
  ],
  overrides: { WG: 256, MAX_T: 1024, HS4_MAX: 16 },
});
// (end of fast decode)

// ---- fast decode sampling ----------------------------------------------------------------------------------------
import decodeSampleSource from './decode_sample.wgsl?raw';

/** A token drawn on the GPU: repetition penalty, temperature, top-k (radix select), top-p (bitonic sort), Gumbel-max. */
export const decodeSample = defineKernel({
  name: 'decode_sample',
  source: decodeSampleSource,
  bindings: [
    { name: 'logits', access: 'read' },
    { name: 'state', access: 'read_write' },
    { name: 'tokens', access: 'read_write' },
    { name: 'presence', access: 'read_write' },
  ],
  uniforms: [
    { name: 'V', type: 'u32' },
    { name: 'topK', type: 'u32' },
    { name: 'invTemperature', type: 'f32' },
    { name: 'seed', type: 'u32' },
    { name: 'topP', type: 'f32' },
    { name: 'penalty', type: 'f32' },
  ],
  overrides: { WG: 256 },
});
// (end of fast decode sampling)
