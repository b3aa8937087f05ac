// `tunelab bench <what> [options]`: benchmarks that print one JSON line per measurement on stdout (progress and
// errors on stderr). Not tests: they assert nothing about speed. Each bench is one entry of `benches`; the helpers
// below (option parsing, device lifetime, timing) are shared so that new benches stay short.

import { GpuContext, type Dispatch, type GpuTensor } from '../engine/gpu/context.ts';
import { nodeGpu } from '../engine/gpu/node.ts';
import { matmulBackwardInput, matmulBackwardWeight, matmulForward, type MatmulShape } from '../engine/ops/matmul.ts';
import { Rng } from '../engine/random.ts';

interface BenchEntry {
  usage: string;
  run(args: string[]): Promise<number>;
}

const benches: Record<string, BenchEntry> = {
  matmul: {
    usage:
      'matmul [--m M --n N --k K] [--layout forward|backward-input|backward-weight|all] [--iters N] [--quick]\n' +
      '    f32 linear-layer matmul. Default shapes: GPT-2 small training step (M=2048) and 4096³ (not with --quick);\n' +
      '    on SwiftShader (a CPU), M=64 versions and 256³, 1 iteration. A dimension not given defaults to 2048 (M)\n' +
      '    or 768 (N, K).',
    run: benchMatmul,
  },
};

export async function bench(args: string[]): Promise<number> {
  const [what, ...rest] = args;
  const entry = what ? benches[what] : undefined;
  if (!entry) {
    const list = Object.values(benches).map((b) => `  tunelab bench ${b.usage}`);
    process.stderr.write(`${what ? `tunelab bench: unknown bench '${what}'\n` : ''}usage:\n${list.join('\n')}\n`);
    return 2;
  }
  return entry.run(rest);
}

// ---- shared helpers ----------------------------------------------------------------------------------------------

/** `--name value` options and bare `--flag`s; throws a usage error on anything else. */
export function parseOptions(args: string[], valued: readonly string[], flags: readonly string[] = []): Map<string, string> {
  const options = new Map<string, string>();
  for (let i = 0; i < args.length; i++) {
    const name = args[i].replace(/^--/, '');
    if (!args[i].startsWith('--')) throw new UsageError(`unexpected argument '${args[i]}'`);
    if (flags.includes(name)) options.set(name, 'true');
    else if (valued.includes(name)) {
      const value = args[++i];
      if (value === undefined) throw new UsageError(`--${name} needs a value`);
      options.set(name, value);
    } else throw new UsageError(`unknown option --${name}`);
  }
  return options;
}

export function positiveInt(options: Map<string, string>, name: string, fallback: number): number {
  const text = options.get(name);
  if (text === undefined) return fallback;
  const value = Number(text);
  if (!Number.isInteger(value) || value < 1) throw new UsageError(`--${name} must be a positive integer, got '${text}'`);
  return value;
}

export class UsageError extends Error {}

/** Runs `body` with a fresh device and destroys it afterwards (Dawn would otherwise keep Node alive). */
export async function withGpu<T>(body: (gpu: GpuContext) => Promise<T>): Promise<T> {
  const gpu = await GpuContext.acquire(await nodeGpu());
  try {
    return await body(gpu);
  } finally {
    gpu.destroy();
  }
}

export function isSwiftShader(gpu: GpuContext): boolean {
  return gpu.adapter.name.toLowerCase().includes('swiftshader');
}

/**
 * Milliseconds per run of `dispatches`: one warm-up submit (waited for), then `iters` submits of one pass each and a
 * single wait, so that the GPU is never idle between runs. Wall-clock, so it includes submit overhead.
 */
export async function timeDispatches(gpu: GpuContext, dispatches: readonly Dispatch[], iters: number): Promise<number> {
  gpu.submit(dispatches, 'bench warm-up');
  await gpu.sync();
  const start = performance.now();
  for (let i = 0; i < iters; i++) gpu.submit(dispatches, 'bench');
  await gpu.sync();
  return (performance.now() - start) / iters;
}

/** A tensor of uniform values in [-1, 1), generated straight into f32 (large benches would not fit Float64Arrays). */
export function randomTensor(gpu: GpuContext, rng: Rng, length: number, label: string): GpuTensor {
  const data = new Float32Array(length);
  for (let i = 0; i < length; i++) data[i] = rng.next() * 2 - 1;
  return gpu.upload(data, label);
}

function emit(record: Record<string, unknown>): void {
  process.stdout.write(JSON.stringify(record) + '\n');
}

function round(value: number, digits = 4): number {
  return Number(value.toPrecision(digits));
}

// ---- matmul ------------------------------------------------------------------------------------------------------

const MATMUL_LAYOUTS = ['forward', 'backward-input', 'backward-weight'] as const;
type MatmulLayout = (typeof MATMUL_LAYOUTS)[number];

/** The four linear layers of a GPT-2 small block (c_attn, attn.c_proj, c_fc, mlp.c_proj) at M tokens. */
function gpt2Shapes(M: number): MatmulShape[] {
  return [
    { M, K: 768, N: 2304 },
    { M, K: 768, N: 768 },
    { M, K: 768, N: 3072 },
    { M, K: 3072, N: 768 },
  ];
}

async function benchMatmul(args: string[]): Promise<number> {
  let options: Map<string, string>;
  let layouts: readonly MatmulLayout[];
  try {
    options = parseOptions(args, ['m', 'n', 'k', 'iters', 'layout'], ['quick']);
    const layout = options.get('layout') ?? 'forward';
    if (layout === 'all') layouts = MATMUL_LAYOUTS;
    else if ((MATMUL_LAYOUTS as readonly string[]).includes(layout)) layouts = [layout as MatmulLayout];
    else throw new UsageError(`--layout must be one of ${MATMUL_LAYOUTS.join(', ')}, all; got '${layout}'`);
    for (const dim of ['m', 'n', 'k', 'iters']) positiveInt(options, dim, 1);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    process.stderr.write(`tunelab bench matmul: ${error.message}\n  tunelab bench ${benches.matmul.usage}\n`);
    return 2;
  }

  return withGpu(async (gpu) => {
    const slow = isSwiftShader(gpu);
    const explicit = options.has('m') || options.has('n') || options.has('k');
    let shapes: MatmulShape[];
    if (explicit) {
      shapes = [{ M: positiveInt(options, 'm', 2048), N: positiveInt(options, 'n', 768), K: positiveInt(options, 'k', 768) }];
    } else if (slow) {
      shapes = [...gpt2Shapes(64), { M: 256, N: 256, K: 256 }];
    } else {
      shapes = [...gpt2Shapes(2048), ...(options.has('quick') ? [] : [{ M: 4096, N: 4096, K: 4096 }])];
    }
    const iters = positiveInt(options, 'iters', slow ? 1 : 20);
    const rng = new Rng(1);

    for (const shape of shapes) {
      const { M, N, K } = shape;
      const t = {
        inp: randomTensor(gpu, rng, M * K, 'bench.inp'),
        weight: randomTensor(gpu, rng, K * N, 'bench.weight'),
        bias: randomTensor(gpu, rng, N, 'bench.bias'),
        out: gpu.tensor(M * N, 'bench.out'),
      };
      for (const layout of layouts) {
        // Backward layouts reuse the same buffers: out plays dout, inp plays dinp, weight plays dweight.
        const dispatch =
          layout === 'forward'
            ? await matmulForward(gpu, t, shape)
            : layout === 'backward-input'
              ? await matmulBackwardInput(gpu, { dinp: t.inp, dout: t.out, weight: t.weight }, shape)
              : await matmulBackwardWeight(gpu, { dweight: t.weight, inp: t.inp, dout: t.out }, shape);
        const ms = await timeDispatches(gpu, [dispatch], iters);
        dispatch.release();
        emit({
          bench: 'matmul',
          adapter: gpu.adapter.name,
          shape: { M, N, K },
          layout,
          ms: round(ms),
          gflops: round((2 * M * N * K) / (ms * 1e6)),
          iters,
        });
      }
      for (const tensor of Object.values(t)) gpu.free(tensor);
    }
    return 0;
  });
}
