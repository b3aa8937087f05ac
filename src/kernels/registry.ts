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
