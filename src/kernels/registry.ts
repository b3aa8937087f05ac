// Every WGSL kernel, paired with its typed spec. One entry per .wgsl file; see spec.ts for the conventions.
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
// (end of matmul)

// ---- lora --------------------------------------------------------------------------------------------------------
// (end of lora)

// ---- attention ---------------------------------------------------------------------------------------------------
import attentionForwardSource from './attention_forward.wgsl?raw';
import attentionBackwardDeltaSource from './attention_backward_delta.wgsl?raw';
import attentionBackwardSource from './attention_backward.wgsl?raw';

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
// (end of attention)

// ---- layernorm ---------------------------------------------------------------------------------------------------
// (end of layernorm)

// ---- gelu --------------------------------------------------------------------------------------------------------
// (end of gelu)

// ---- embedding ---------------------------------------------------------------------------------------------------
// (end of embedding)

// ---- crossentropy ------------------------------------------------------------------------------------------------
// (end of crossentropy)

// ---- adamw -------------------------------------------------------------------------------------------------------
// (end of adamw)

// ---- gradnorm ----------------------------------------------------------------------------------------------------
// (end of gradnorm)
