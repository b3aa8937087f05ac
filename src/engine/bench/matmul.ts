// Matmul benchmark: the f32 linear-layer kernels (ops/matmul.ts) in the three training layouts, at the shapes of a
// GPT-2 small training step (M = B·T = 2048 tokens) and at 4096³, in GFLOP/s (2·M·N·K per product). The two layouts
// that read a frozen weight (forward, backward-input) are also timed with the weight stored as packed f16
// (ops/matmul-f16.ts; precision "f16-weights", f32 arithmetic) and, where the device has f16 subgroup matrices, on the
// tensor cores (precision "f16-tensor-cores": the activation rounded to f16 too). Each record names the kernel that ran.
// With `prefetch`, every tiled variant (f32, f16-weights) is timed three times with the same tiles: without prefetch,
// with PREFETCH and with PREFETCH + DOUBLE_BUFFER (lib/matmul_tiles.wgsl), the record's `prefetch` field saying which.

import type { Dispatch, GpuContext } from '../gpu/context.ts';
import {
  deviceTiles,
  matmulBackwardInput,
  matmulBackwardWeight,
  matmulForward,
  planMatmul,
  prefetchFits,
  type MatmulPlan,
  type MatmulShape,
  type MatmulTiles,
} from '../ops/matmul.ts';
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

/** "tiled vec4 128×128×8, 8×8 per thread[, prefetch[, double-buffered]]" or "rows 4": what a record's kernel was. */
export function describeMatmulPlan(plan: MatmulPlan): string {
  if (plan.kernel === 'rows') return `rows ${plan.rows}`;
  const t = plan.tiles;
  const tiles = `${t.TILE_ROWS}×${t.TILE_COLS}×${t.TILE_DEPTH}, ${t.THREAD_ROWS}×${t.THREAD_COLS} per thread`;
  return `tiled${plan.vec4 ? ' vec4' : ''} ${tiles}${prefetchSuffix(t)}`;
}

function prefetchSuffix(t: Required<MatmulTiles>): string {
  return t.PREFETCH ? `, prefetch${t.DOUBLE_BUFFER ? ', double-buffered' : ''}` : '';
}

/** How a tiled variant runs its depth loop (lib/matmul_tiles.wgsl), in a record's `prefetch` field. */
export type PrefetchVariant = 'plain' | 'prefetch' | 'double-buffer';
const PREFETCH_TILES: Record<PrefetchVariant, Partial<MatmulTiles>> = {
  plain: { PREFETCH: false, DOUBLE_BUFFER: false },
  prefetch: { PREFETCH: true, DOUBLE_BUFFER: false },
  'double-buffer': { PREFETCH: true, DOUBLE_BUFFER: true },
};

/**
 * The depth-loop variants to time for a tiled plan: only the automatic one (tiles undefined) unless `compare`, then
 * all three where the tiles allow them (prefetchFits; two tile copies in the device's workgroup memory).
 */
function prefetchVariants(gpu: GpuContext, plan: MatmulPlan, compare: boolean): { prefetch: PrefetchVariant; tiles?: Partial<MatmulTiles> }[] {
  if (plan.kernel !== 'tiled') return [{ prefetch: 'plain' }];
  if (!compare) return [{ prefetch: plan.tiles.PREFETCH ? (plan.tiles.DOUBLE_BUFFER ? 'double-buffer' : 'prefetch') : 'plain' }];
  const variants: { prefetch: PrefetchVariant; tiles?: Partial<MatmulTiles> }[] = [{ prefetch: 'plain', tiles: PREFETCH_TILES.plain }];
  if (!prefetchFits(plan.tiles)) return variants;
  variants.push({ prefetch: 'prefetch', tiles: PREFETCH_TILES.prefetch });
  const doubled = deviceTiles(gpu, 'bench', { ...plan.tiles, PREFETCH: true, DOUBLE_BUFFER: true });
  if (doubled.DOUBLE_BUFFER) variants.push({ prefetch: 'double-buffer', tiles: PREFETCH_TILES['double-buffer'] });
  return variants;
}

/**
 * Times every (shape, layout) and returns one record each (two for the layouts that read a frozen weight; with
 * `prefetch`, each tiled one in up to three depth-loop variants). `scaled` marks shapes shrunk for a software adapter.
 */
export async function benchMatmul(
  gpu: GpuContext,
  shapes: readonly MatmulShape[],
  layouts: readonly MatmulLayout[],
  counts: RunCounts,
  scaled: boolean,
  prefetch = false,
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
        // Given tiles (a prefetch variant) pin the tiled f16-weights kernel, as the tensor cores need none.
        const f16 =
          layout === 'forward'
            ? (tiles?: Partial<MatmulTiles>) => matmulForwardF16W(gpu, { ...t, weight: packed }, shape, tiles)
            : layout === 'backward-input'
              ? (tiles?: Partial<MatmulTiles>) => matmulBackwardInputF16W(gpu, { dinp: t.inp, dout: t.out, weight: packed }, shape, { tiles })
              : undefined;
        const f32 =
          layout === 'forward'
            ? (tiles?: Partial<MatmulTiles>) => matmulForward(gpu, t, shape, tiles)
            : layout === 'backward-input'
              ? (tiles?: Partial<MatmulTiles>) => matmulBackwardInput(gpu, { dinp: t.inp, dout: t.out, weight: t.weight }, shape, { tiles })
              : (tiles?: Partial<MatmulTiles>) => matmulBackwardWeight(gpu, { dweight: t.weight, inp: t.inp, dout: t.out }, shape, tiles);
        type Variant = { precision: string; tensorCores: boolean; make: () => Promise<Dispatch>; kernel: string; prefetch?: PrefetchVariant };
        const variants: Variant[] = [];
        // The f16-weights kernels take the f32 tiles of the same output (ops/matmul-f16.ts planTiles).
        const plan = planMatmul(layout, shape);
        for (const v of prefetchVariants(gpu, plan, prefetch)) {
          const ran = planMatmul(layout, shape, v.tiles);
          const ranTiles = ran.kernel === 'tiled' ? { ...ran, tiles: deviceTiles(gpu, 'bench', ran.tiles) } : ran;
          variants.push({ precision: 'f32', tensorCores: false, make: () => f32(v.tiles), kernel: describeMatmulPlan(ranTiles), prefetch: v.prefetch });
          if (f16) {
            const suffix = ranTiles.kernel === 'tiled' ? prefetchSuffix(ranTiles.tiles) : '';
            const kernel = `tiled, f16 weights unpacked into f32 tiles${suffix}`;
            variants.push({ precision: 'f16-weights', tensorCores: false, make: () => f16(v.tiles), kernel, prefetch: v.prefetch });
          }
        }
        // Tensor cores where matmul-f16.ts would use them for this shape.
        if (f16 && tensorCoresFor(gpu, M, layout === 'forward' ? N : K)) {
          const tiles = planSgmat();
          const kernel = `tensor cores (subgroup matrix f16×f16→f32 16×16×16), ${32 * tiles.WG_SM}×${32 * tiles.WG_SN}×${tiles.BK}`;
          variants.push({ precision: 'f16-tensor-cores', tensorCores: true, make: () => f16(), kernel });
        }
        for (const { precision, tensorCores, make, kernel, prefetch: loop } of variants) {
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
              ...(loop ? { prefetch: loop } : {}),
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
