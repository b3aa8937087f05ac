// The engine's logits for a token sequence, with a PEFT adapter applied as LoRA kernels, as JSON on stdout: what
// scripts/interop/peft_check.py compares with PyTorch + PEFT (`PeftModel.from_pretrained`) on the same base model.
// Logits at every position come from the KV-cache decoder (prefill of the first token, then one step per token),
// the path the playground generates with.
//
//   node scripts/interop/engine-logits.mjs --model public/models/tiny --adapter runs/x --ids 72,105,33 > engine.json

import { parseArgs } from 'node:util';
import { loadCliAdapter, loadCliModel, withCliGpu } from '../../src/cli/common.ts';
import { Gpt2Decoder } from '../../src/engine/generate/generator.ts';

const { values } = parseArgs({
  options: { model: { type: 'string' }, adapter: { type: 'string' }, ids: { type: 'string' } },
});
if (!values.model || !values.adapter || !values.ids) {
  console.error('usage: engine-logits.ts --model DIR --adapter DIR --ids 1,2,3');
  process.exit(2);
}
const ids = values.ids.split(',').map(Number);

await withCliGpu(async (gpu) => {
  const { model, loaded } = await loadCliModel(gpu, values.model!);
  const adapter = await loadCliAdapter(gpu, loaded.config, values.adapter!, (message) => console.error(`warning: ${message}`));
  const decoder = await Gpt2Decoder.create(gpu, model, { adapter });
  try {
    const rows: number[][] = [Array.from(await decoder.prefill([ids[0]]))];
    for (const id of ids.slice(1)) rows.push(Array.from(await decoder.step([id])));
    process.stdout.write(JSON.stringify({ adapter: gpu.adapter.name, ids, logits: rows }) + '\n');
  } finally {
    decoder.destroy();
    adapter.destroy();
    model.destroy();
  }
});
