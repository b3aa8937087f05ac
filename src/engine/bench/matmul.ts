// Matmul benchmark: the f32 linear-layer kernels (ops/matmul.ts) in the three training layouts, at the shapes of a
// GPT-2 small training step (M = B·T = 2048 tokens) and at 4096³, in GFLOP/s (2·M·N·K per product). The two layouts
// that read a frozen weight (forward, backward-input) are also timed with the weight stored as packed f16
// (ops/matmul-f16.ts; precision "f16-weights", f32 arithmetic) and, where the device has f16 subgroup matrices, on the
// tensor cores (precision "f16-tensor-cores": the activation rounded to f16 too). Each record names the kernel that ran.

import type { GpuContext } from '../gpu/context.ts';
import { matmulBackwardInput, matmulBackwardWeight, matmulForward, planMatmul, type MatmulPlan, type MatmulShape } from '../ops/matmul.ts';
import { matmulBackwardInputF16W, matmulForwardF16W, planSgmat, tensorCoresFor, uploadF16Weights } from '../ops/matmul-f16.ts';
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

/** "tiled vec4 128×128×8, 8×8 per thread" or "rows 4": what a record's kernel was. */
export function describeMatmulPlan(plan: MatmulPlan): string {
  if (plan.kernel === 'rows') return `rows ${plan.rows}`;
  const t = plan.tiles;
  return `tiled${plan.vec4 ? ' vec4' : ''} ${t.TILE_ROWS}×${t.TILE_COLS}×${t.TILE_DEPTH}, ${t.THREAD_ROWS}×${t.THREAD_COLS} per thread`;
}

/** Times every (shape, layout) and returns one record each (two for the layouts that read a frozen weight). `scaled` marks shapes shrunk for a software adapter. */
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
    const weightValues = randomValues(rng, K * N);
    const t = {
      inp: gpu.upload(randomValues(rng, M * K), 'bench.inp'),
      weight: gpu.upload(weightValues, 'bench.weight'),
      bias: gpu.upload(randomValues(rng, N), 'bench.bias'),
      out: gpu.tensor(M * N, 'bench.out'),
    };
    const packed = uploadF16Weights(gpu, Float32Array.from(weightValues), K, N, 'bench.weight.f16');
    try {
      for (const layout of layouts) {
        // Backward layouts reuse the same buffers: out plays dout, inp plays dinp, weight plays dweight.
        const f16 =
          layout === 'forward'
            ? () => matmulForwardF16W(gpu, { ...t, weight: packed }, shape)
            : layout === 'backward-input'
              ? () => matmulBackwardInputF16W(gpu, { dinp: t.inp, dout: t.out, weight: packed }, shape)
              : undefined;
        const f32 =
          layout === 'forward'
            ? () => matmulForward(gpu, t, shape)
            : layout === 'backward-input'
              ? () => matmulBackwardInput(gpu, { dinp: t.inp, dout: t.out, weight: t.weight }, shape)
              : () => matmulBackwardWeight(gpu, { dweight: t.weight, inp: t.inp, dout: t.out }, shape);
        const variants = [{ precision: 'f32', tensorCores: false, make: f32, kernel: describeMatmulPlan(planMatmul(layout, shape)) }];
        if (f16) {
          variants.push({ precision: 'f16-weights', tensorCores: false, make: f16, kernel: 'tiled, f16 weights unpacked into f32 tiles' });
          // Tensor cores where matmul-f16.ts would use them for this shape.
          if (tensorCoresFor(gpu, M, layout === 'forward' ? N : K)) {
            const tiles = planSgmat();
            const kernel = `tensor cores (subgroup matrix f16×f16→f32 16×16×16), ${32 * tiles.WG_SM}×${32 * tiles.WG_SN}×${tiles.BK}`;
            variants.push({ precision: 'f16-tensor-cores', tensorCores: true, make: f16, kernel });
          }
        }
        for (const { precision, tensorCores, make, kernel } of variants) {
          gpu.useTensorCores = tensorCores;
          let dispatch;
          try {
            dispatch = await make();
          } finally {
            gpu.useTensorCores = true;
          }
          try {
            const timing = await timeDispatches(gpu, [dispatch], counts);
            records.push({
              ...recordBase(gpu, 'matmul', scaled),
              precision,
              layout,
              shape: { M, N, K },
              kernel,
              ...timingFields(timing, counts),
              gflops: round((2 * M * N * K) / (timing.ms * 1e6)),
            });
          } finally {
            dispatch.release();
          }
        }
      }
    } finally {
      for (const tensor of Object.values(t)) gpu.free(tensor);
      gpu.free(packed.packed);
    }
  }
  return records;
}
