// A random LoRA adapter for model tests: its tensors for the GPU (Tunelab names) and the same values as the Float64
// reference model takes them. A is drawn with std 0.3 and B with std 0.2 (non-zero B, so dA is really tested).

import type { ModelConfig } from '../../src/engine/model/config.ts';
import { loraScale, loraSites, type LoraConfig } from '../../src/engine/model/lora.ts';
import { linearShape } from '../../src/engine/model/weights.ts';
import type { Rng } from '../../src/engine/random.ts';
import type { Gpt2ReferenceLora } from '../../src/engine/reference/gpt2.ts';

export function randomLora(config: ModelConfig, lora: LoraConfig, rng: Rng): { tensors: Map<string, Float32Array>; reference: Gpt2ReferenceLora } {
  const tensors = new Map<string, Float32Array>();
  const modules = new Map<string, { a: Float64Array; b: Float64Array }>();
  const r = lora.rank;
  for (const site of loraSites(config, lora)) {
    const [inDim, outDim] = linearShape(config, site.module);
    const a = Float32Array.from({ length: r * inDim }, () => 0.3 * rng.normal());
    const b = Float32Array.from({ length: outDim * r }, () => 0.2 * rng.normal());
    tensors.set(`h.${site.layer}.${site.module}.lora_A`, a).set(`h.${site.layer}.${site.module}.lora_B`, b);
    modules.set(`h.${site.layer}.${site.module}`, { a: Float64Array.from(a), b: Float64Array.from(b) });
  }
  return { tensors, reference: { scale: loraScale(lora), modules } };
}
