// `tunelab bench <what> [options]`: benchmarks that print one JSON line per measurement on stdout (a short human
// summary of each on stderr unless --json). Not tests: they assert nothing about speed. The benches themselves live
// in src/engine/bench/; this module parses options, picks shapes (the issue's GPT-2 small shapes on a real GPU, a
// scaled-down version on SwiftShader, which is a CPU), owns the device and prints. bench/peer.py prints the same
// records for PyTorch; bench/run-gpu.sh runs both on the GPU machine and bench/compare.py prints the ratios.

import { GpuContext } from '../engine/gpu/context.ts';
import { nodeGpu } from '../engine/gpu/node.ts';
import type { MatmulShape } from '../engine/ops/matmul.ts';
import { GPT2_SMALL_ATTENTION, SCALED_ATTENTION, benchAttention, type AttentionBenchShape } from '../engine/bench/attention.ts';
import { GENERATE_DEFAULTS, benchGenerate } from '../engine/bench/generate.ts';
import { MATMUL_LAYOUTS, benchMatmul, gpt2MatmulShapes, type MatmulLayout } from '../engine/bench/matmul.ts';
import { isSwiftShader, type BenchRecord, type RunCounts } from '../engine/bench/records.ts';
import { GPT2_SMALL_STEP, SCALED_STEP, benchMemory, benchStep, type StepBenchConfig } from '../engine/bench/step.ts';

export { isSwiftShader } from '../engine/bench/records.ts';

type Emit = (record: BenchRecord) => void;

/** A bench's options, checked before any device exists, and what it runs on a device. */
interface Prepared {
  run(gpu: GpuContext, emit: Emit): Promise<void>;
}

interface BenchEntry {
  usage: string;
  valued: readonly string[];
  prepare(options: Map<string, string>): Prepared;
}

const COMMON = ['iters', 'warmup'] as const;
const FLAGS = ['quick', 'json', 'f16-weights', 'profile', 'no-tensor-cores', 'per-token', 'prefetch'] as const;
const STEP_OPTIONS = ['layers', 'width', 'heads', 'vocab', 'positions', 'batch', 'seq', 'rank'] as const;

const benches: Record<string, BenchEntry> = {
  matmul: {
    usage:
      'matmul [--m M --n N --k K] [--layout forward|backward-input|backward-weight|all] [--prefetch]\n' +
      '    f32 linear-layer matmul, GFLOP/s. Default shapes: GPT-2 small training step (M=2048) and 4096³ (not with\n' +
      '    --quick); on SwiftShader (a CPU) M=64 versions and 256³. A dimension not given defaults to 2048 (M) or 768.\n' +
      '    --prefetch times each tiled kernel with the same tiles without prefetch, with PREFETCH and with\n' +
      '    PREFETCH + DOUBLE_BUFFER (field "prefetch": plain, prefetch, double-buffer).',
    valued: [...COMMON, 'm', 'n', 'k', 'layout'],
    prepare: prepareMatmul,
  },
  attention: {
    usage:
      'attention [--batch B --heads NH --seq T --head-size HS]\n' +
      '    causal attention forward and backward, ms and GFLOP/s. Default B=8 NH=12 T=256 HS=64 (GPT-2 small);\n' +
      '    on SwiftShader B=1 NH=2 T=64 HS=16.',
    valued: [...COMMON, 'batch', 'heads', 'seq', 'head-size'],
    prepare: prepareAttention,
  },
  step: {
    usage:
      'step [--layers L --width C --heads NH --vocab V --positions P --batch B --seq T --rank R] [--f16-weights]\n' +
      '    one LoRA training step (forward, backward, clip, AdamW; one submit), ms and tokens/s. Default GPT-2 small\n' +
      '    (12 layers, 768 wide, 12 heads, vocabulary 50257), batch 8 × 256, rank 8 on c_attn, random weights;\n' +
      '    on SwiftShader 2 layers, 64 wide, 4 heads, vocabulary 512, batch 2 × 32 ("scaled": true).\n' +
      '    --f16-weights stores the frozen weight matrices and wte as packed f16 (half their memory, f32 arithmetic).\n' +
      '    --profile adds a record of one step\'s GPU time per kernel (each dispatch timed in its own pass).\n' +
      '    Where the device has f16 subgroup matrices, f16 weights use the tensor cores (--no-tensor-cores: not).',
    valued: [...COMMON, ...STEP_OPTIONS],
    prepare: (options) => prepareStep(options, 'step'),
  },
  memory: {
    usage: 'memory [step options]\n    GPU memory in use (buffer pool) after building the step bench\'s model, adapter, run and optimizer.',
    valued: [...COMMON, ...STEP_OPTIONS],
    prepare: (options) => prepareStep(options, 'memory'),
  },
  generate: {
    usage:
      'generate [--prompt N --new-tokens N] [model options as for step] [--f16-weights]\n' +
      '    batch 1 greedy generation with the KV cache, tokens/s (128 new tokens after a 16-token prompt);\n' +
      '    --f16-weights as for step; --profile: GPU time per kernel of one decoded token.\n' +
      '    Tokens are chosen on the GPU in chunks (as greedy generation runs); --per-token reads the logits back and\n' +
      '    takes the argmax on the CPU for every token (the path sampling takes).',
    valued: [...COMMON, 'prompt', 'new-tokens', 'layers', 'width', 'heads', 'vocab', 'positions'],
    prepare: prepareGenerate,
  },
  all: {
    usage:
      'all\n    matmul (all three layouts on a GPU, forward only on SwiftShader), attention, step (with memory) and\n' +
      '    generate at their default shapes, on one device.',
    valued: COMMON,
    prepare: (options) => {
      const parts = [prepareMatmul(options, true), prepareAttention(options), prepareStep(options, 'step'), prepareGenerate(options)];
      return {
        async run(gpu, emit) {
          for (const part of parts) await part.run(gpu, emit);
        },
      };
    },
  },
};

export async function bench(args: string[]): Promise<number> {
  const json = args.includes('--json');
  return runBench(args, (record) => {
    process.stdout.write(JSON.stringify(record) + '\n');
    if (!json) process.stderr.write(summarize(record) + '\n');
  });
}

/** Parses `<what> [options]`, runs the bench on a fresh device and hands every record to `emit`; the exit status. */
export async function runBench(args: string[], emit: Emit): Promise<number> {
  const [what, ...rest] = args;
  const entry = what ? benches[what] : undefined;
  if (!entry) {
    process.stderr.write(`${what ? `tunelab bench: unknown bench '${what}'\n` : ''}${usage()}`);
    return 2;
  }
  let prepared: Prepared;
  let tensorCores = true;
  try {
    const options = parseOptions(rest, entry.valued, FLAGS);
    tensorCores = !options.has('no-tensor-cores');
    if (options.has('f16-weights') && !['step', 'memory', 'generate', 'all'].includes(what)) {
      throw new UsageError('--f16-weights applies to the model benches (step, memory, generate), not to single kernels');
    }
    if (options.has('profile') && !['step', 'generate', 'all'].includes(what)) {
      throw new UsageError('--profile applies to step and generate (and all)');
    }
    if (options.has('prefetch') && !['matmul', 'all'].includes(what)) {
      throw new UsageError('--prefetch applies to matmul (and all)');
    }
    prepared = entry.prepare(options);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    process.stderr.write(`tunelab bench ${what}: ${error.message}\n  tunelab bench ${entry.usage}\n`);
    return 2;
  }
  await withGpu((gpu) => {
    gpu.useTensorCores = tensorCores;
    return prepared.run(gpu, emit);
  });
  return 0;
}

function usage(): string {
  const list = Object.values(benches).map((b) => `  tunelab bench ${b.usage}`);
  return `usage (every bench also takes --iters N --warmup N --quick --json):\n${list.join('\n')}\n`;
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
  return wholeNumber(options, name, fallback, 1);
}

function wholeNumber(options: Map<string, string>, name: string, fallback: number, min: number): number {
  const text = options.get(name);
  if (text === undefined) return fallback;
  const value = Number(text);
  if (!Number.isSafeInteger(value) || value < min) throw new UsageError(`--${name} must be a whole number ≥ ${min}, got '${text}'`);
  return value;
}

export class UsageError extends Error {}

/**
 * Dawn rounds timestamp queries to 65.536 µs by default (a fingerprinting guard for the web), too coarse for a kernel
 * that runs for 20 µs: adds the toggle that turns this off to DAWN_FLAGS, unless DAWN_FLAGS already says something
 * about it. Takes effect only if called before the process's first nodeGpu().
 */
export function requestPreciseTimestamps(): void {
  const flags = process.env.DAWN_FLAGS ?? '';
  if (flags.includes('timestamp_quantization')) return;
  const parts = flags.split(/\s+/).filter(Boolean);
  const disable = parts.findIndex((p) => p.startsWith('disable-dawn-features='));
  if (disable >= 0) parts[disable] += ',timestamp_quantization';
  else parts.push('disable-dawn-features=timestamp_quantization');
  process.env.DAWN_FLAGS = parts.join(' ');
}

/** Runs `body` with a fresh device and destroys it afterwards (Dawn would otherwise keep Node alive). */
export async function withGpu<T>(body: (gpu: GpuContext) => Promise<T>): Promise<T> {
  requestPreciseTimestamps();
  const gpu = await GpuContext.acquire(await nodeGpu());
  try {
    return await body(gpu);
  } finally {
    gpu.destroy();
  }
}

/** Warm-up and measured runs: the options, else quick/software/GPU defaults. */
function runCounts(options: Map<string, string>, slow: boolean, gpuDefaults: RunCounts): RunCounts {
  const quick = options.has('quick');
  const fallback = slow ? { warmup: 1, iters: quick ? 2 : 3 } : quick ? { warmup: Math.min(2, gpuDefaults.warmup), iters: 5 } : gpuDefaults;
  return { warmup: wholeNumber(options, 'warmup', fallback.warmup, 0), iters: positiveInt(options, 'iters', fallback.iters) };
}

// ---- the benches' options ----------------------------------------------------------------------------------------

/** `everyLayoutOnGpu`: without --layout, time all three layouts on a real GPU (cheap there) and forward elsewhere. */
function prepareMatmul(options: Map<string, string>, everyLayoutOnGpu = false): Prepared {
  const layout = options.get('layout') ?? 'forward';
  let layouts: readonly MatmulLayout[];
  if (layout === 'all') layouts = MATMUL_LAYOUTS;
  else if ((MATMUL_LAYOUTS as readonly string[]).includes(layout)) layouts = [layout as MatmulLayout];
  else throw new UsageError(`--layout must be one of ${MATMUL_LAYOUTS.join(', ')}, all; got '${layout}'`);
  const explicit = options.has('m') || options.has('n') || options.has('k');
  const given: MatmulShape = { M: positiveInt(options, 'm', 2048), N: positiveInt(options, 'n', 768), K: positiveInt(options, 'k', 768) };
  runCounts(options, false, { warmup: 0, iters: 1 }); // checks --iters/--warmup before the device starts
  return {
    async run(gpu, emit) {
      const slow = isSwiftShader(gpu);
      let shapes: MatmulShape[];
      if (explicit) shapes = [given];
      else if (slow) shapes = [...gpt2MatmulShapes(64), { M: 256, N: 256, K: 256 }];
      else shapes = [...gpt2MatmulShapes(2048), ...(options.has('quick') ? [] : [{ M: 4096, N: 4096, K: 4096 }])];
      const counts = runCounts(options, slow, { warmup: 2, iters: 20 });
      const timed = everyLayoutOnGpu && !slow && !options.has('layout') ? MATMUL_LAYOUTS : layouts;
      for (const r of await benchMatmul(gpu, shapes, timed, counts, !explicit && slow, options.has('prefetch'))) emit(r);
    },
  };
}

function prepareAttention(options: Map<string, string>): Prepared {
  const shapeOf = (base: AttentionBenchShape): AttentionBenchShape => ({
    B: positiveInt(options, 'batch', base.B),
    NH: positiveInt(options, 'heads', base.NH),
    T: positiveInt(options, 'seq', base.T),
    HS: positiveInt(options, 'head-size', base.HS),
  });
  shapeOf(GPT2_SMALL_ATTENTION);
  runCounts(options, false, { warmup: 0, iters: 1 });
  return {
    async run(gpu, emit) {
      const slow = isSwiftShader(gpu);
      const shape = shapeOf(slow ? SCALED_ATTENTION : GPT2_SMALL_ATTENTION);
      const counts = runCounts(options, slow, { warmup: 3, iters: 20 });
      for (const r of await benchAttention(gpu, shape, counts, !sameShape(shape, GPT2_SMALL_ATTENTION))) emit(r);
    },
  };
}

/** The step's model and batch from the options over `base`; `tokens` is what must fit the context (default T). */
function stepConfig(options: Map<string, string>, base: StepBenchConfig, tokens?: number): StepBenchConfig {
  const c = { ...base };
  for (const key of STEP_OPTIONS) c[key] = positiveInt(options, key, base[key]);
  if (c.width % c.heads !== 0) throw new UsageError(`--width ${c.width} must be a multiple of --heads ${c.heads}`);
  const needed = tokens ?? c.seq;
  if (needed > c.positions) throw new UsageError(`${tokens === undefined ? `--seq ${c.seq}` : `prompt + new tokens (${needed})`} exceeds the model's context (--positions ${c.positions})`);
  return c;
}

function prepareStep(options: Map<string, string>, what: 'step' | 'memory'): Prepared {
  stepConfig(options, GPT2_SMALL_STEP);
  runCounts(options, false, { warmup: 0, iters: 1 });
  return {
    async run(gpu, emit) {
      const slow = isSwiftShader(gpu);
      const config = stepConfig(options, slow ? SCALED_STEP : GPT2_SMALL_STEP);
      const scaled = !sameShape(config, GPT2_SMALL_STEP);
      const records =
        what === 'step'
          ? await benchStep(gpu, config, runCounts(options, slow, { warmup: 3, iters: 10 }), scaled, frozenWeightsOf(options), options.has('profile'))
          : await benchMemory(gpu, config, scaled, frozenWeightsOf(options));
      for (const r of records) emit(r);
    },
  };
}

function prepareGenerate(options: Map<string, string>): Prepared {
  const generation = {
    prompt: positiveInt(options, 'prompt', GENERATE_DEFAULTS.prompt),
    newTokens: positiveInt(options, 'new-tokens', GENERATE_DEFAULTS.newTokens),
    perToken: options.has('per-token'),
  };
  const tokens = generation.prompt + generation.newTokens;
  stepConfig(options, GPT2_SMALL_STEP, tokens);
  runCounts(options, false, { warmup: 0, iters: 1 });
  return {
    async run(gpu, emit) {
      const slow = isSwiftShader(gpu);
      const config = stepConfig(options, slow ? SCALED_STEP : GPT2_SMALL_STEP, tokens);
      const scaled = !sameShape(config, GPT2_SMALL_STEP);
      const counts = runCounts(options, slow, { warmup: 1, iters: 5 });
      for (const r of await benchGenerate(gpu, config, generation, counts, scaled, frozenWeightsOf(options), options.has('profile'))) emit(r);
    },
  };
}

/** --f16-weights: the frozen weight matrices and wte as packed f16. */
function frozenWeightsOf(options: Map<string, string>): 'f32' | 'f16' {
  return options.has('f16-weights') ? 'f16' : 'f32';
}

function sameShape<T extends object>(a: T, b: T): boolean {
  return Object.keys(b).every((k) => a[k as keyof T] === b[k as keyof T]);
}

/** One line for people: what was measured and the headline figure. */
function summarize(r: BenchRecord): string {
  const tag = `${r.bench}${r.direction ? ` ${r.direction}` : ''}${r.layout ? ` ${r.layout}` : ''}`;
  const shape = r.shape ? ` ${Object.values(r.shape as object).join('×')}` : '';
  if (r.skipped) return `${tag}: skipped — ${r.reason}`;
  if (r.available === false) return `${tag}: unavailable — ${r.reason}`;
  const scaled = r.scaled ? ' [scaled-down shape]' : '';
  switch (r.bench) {
    case 'matmul':
    case 'attention':
      return `${tag}${shape}: ${r.ms} ms, ${r.gflops} GFLOP/s (${r.timing})${scaled}`;
    case 'step':
      return `${tag}: ${r.ms} ms, ${r.tokens_per_s} tokens/s${r.gpu_ms !== undefined ? `, GPU ${r.gpu_ms} ms` : ''}, loss ${r.loss}${scaled}`;
    case 'generate':
      return `${tag}: ${r.tokens_per_s} tokens/s${scaled}`;
    case 'memory':
      return `${tag}: ${((r.bytes_in_use as number) / 2 ** 20).toFixed(1)} MiB in use, ${((r.bytes_allocated as number) / 2 ** 20).toFixed(1)} MiB allocated${scaled}`;
    case 'profile': {
      const kernels = r.kernels as { kernel: string; grid: string; calls: number; ms: number; share: number }[];
      const top = kernels.slice(0, 12).map((k) => `\n    ${(100 * k.share).toFixed(1).padStart(5)}%  ${String(k.ms).padStart(8)} ms  ${k.calls}× ${k.kernel} [${k.grid}]`);
      return `profile of ${r.of}: ${r.total_ms} ms over ${kernels.length} kernel shapes${scaled}${top.join('')}`;
    }
    default:
      return JSON.stringify(r);
  }
}
