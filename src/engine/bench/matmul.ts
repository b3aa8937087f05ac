// Matmul benchmark: the f32 linear-layer kernels (ops/matmul.ts) in the three training layouts, at the shapes of a
// GPT-2 small training step (M = B·T = 2048 tokens) and at 4096³, in GFLOP/s (2·M·N·K per product).

import type { GpuContext } from '../gpu/context.ts';
import { matmulBackwardInput, matmulBackwardWeight, matmulForward, type MatmulShape } from '../ops/matmul.ts';
import { Rng } from '../random.ts';
import { randomValues } from './attention.ts';
import { recordBase, round, timingFields, type BenchRecord, type RunCounts } from './records.ts';
import { timeDispatches } from './timing.ts';

export const MATMUL_LAYOUTS = ['forward', 'backward-input', 'backward-weight'] as const;
export type MatmulLayout = (typeof MATMUL_LAYOUTS)[number];

/** The four linear layers of a GPT-2 small block (c_attn, attn.c_proj, c_fc, mlp.c_proj) at M tokens. */
export function gpt2MatmulShapes(M: number): MatmulShape[] {
  return [
    { M, K: 768, N: 2304 },
    { M, K: 768, N: 768 },
    { M, K: 768, N: 3072 },
    { M, K: 3072, N: 768 },
  ];
}

/** Times every (shape, layout) and returns one record each. `scaled` marks shapes shrunk for a software adapter. */
export async function benchMatmul(
  gpu: GpuContext,
  shapes: readonly MatmulShape[],
  layouts: readonly MatmulLayout[],
  counts: RunCounts,
  scaled: boolean,
): Promise<BenchRecord[]> {
  const rng = new Rng(1);
  const records: BenchRecord[] = [];
  for (const shape of shapes) {
    const { M, N, K } = shape;
    const t = {
      inp: gpu.upload(randomValues(rng, M * K), 'bench.inp'),
      weight: gpu.upload(randomValues(rng, K * N), 'bench.weight'),
      bias: gpu.upload(randomValues(rng, N), 'bench.bias'),
      out: gpu.tensor(M * N, 'bench.out'),
    };
    try {
      for (const layout of layouts) {
        // Backward layouts reuse the same buffers: out plays dout, inp plays dinp, weight plays dweight.
        const dispatch =
          layout === 'forward'
            ? await matmulForward(gpu, t, shape)
            : layout === 'backward-input'
              ? await matmulBackwardInput(gpu, { dinp: t.inp, dout: t.out, weight: t.weight }, shape)
              : await matmulBackwardWeight(gpu, { dweight: t.weight, inp: t.inp, dout: t.out }, shape);
        try {
          const timing = await timeDispatches(gpu, [dispatch], counts);
          records.push({
            ...recordBase(gpu, 'matmul', scaled),
            precision: 'f32',
            layout,
            shape: { M, N, K },
            ...timingFields(timing, counts),
            gflops: round((2 * M * N * K) / (timing.ms * 1e6)),
          });
        } finally {
          dispatch.release();
        }
      }
    } finally {
      for (const tensor of Object.values(t)) gpu.free(tensor);
    }
  }
  return records;
}
