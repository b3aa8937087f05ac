// Timing for benchmarks: warm-up runs, then the median of N samples. GPU time comes from timestamp queries written
// at the beginning and end of compute passes when the device has `timestamp-query`; otherwise (and always for the
// headline figure of a whole training step, which PyTorch's peer also measures that way) from the wall clock around
// a submit and a wait for the queue to drain. Benchmarks only: nothing here runs inside the product's training loop.

import type { Dispatch, GpuContext } from '../gpu/context.ts';

export type TimingMethod = 'timestamp-query' | 'wall-clock';

export interface TimingOptions {
  /** Runs before measuring (pipelines warm, caches filled); not counted. */
  warmup: number;
  /** Measured runs; the result is their median. */
  iters: number;
}

export interface Timing {
  /** Median milliseconds per run. */
  ms: number;
  /** Every measured run, in order (milliseconds). */
  samples: number[];
  method: TimingMethod;
}

export function median(values: readonly number[]): number {
  if (!values.length) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

function checkOptions({ warmup, iters }: TimingOptions): void {
  if (!Number.isSafeInteger(warmup) || warmup < 0) throw new RangeError(`warm-up runs must be a whole number ≥ 0, got ${warmup}`);
  if (!Number.isSafeInteger(iters) || iters < 1) throw new RangeError(`measured runs must be a whole number ≥ 1, got ${iters}`);
}

/**
 * Pairs of timestamp queries (begin, end) resolved into one buffer and read back once. Each pair brackets one
 * compute pass, or a span of passes when the begin and end are written by two different (empty) passes.
 */
export class TimestampPairs {
  private readonly querySet: GPUQuerySet;
  private readonly resolve: GPUBuffer;
  private readonly readback: GPUBuffer;
  private used = 0;

  private constructor(
    private readonly gpu: GpuContext,
    readonly capacity: number,
  ) {
    const device = gpu.device;
    this.querySet = device.createQuerySet({ type: 'timestamp', count: 2 * capacity, label: 'bench.timestamps' });
    const bytes = 2 * capacity * 8;
    this.resolve = device.createBuffer({ size: bytes, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC, label: 'bench.timestamps.resolve' });
    this.readback = device.createBuffer({ size: bytes, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST, label: 'bench.timestamps.read' });
  }

  /** `capacity` pairs, or undefined when the device has no timestamp-query feature. */
  static create(gpu: GpuContext, capacity: number): TimestampPairs | undefined {
    if (!gpu.features.timestampQuery) return undefined;
    return new TimestampPairs(gpu, capacity);
  }

  /** The next pair's index; throws when all are used. */
  next(): number {
    if (this.used >= this.capacity) throw new RangeError(`only ${this.capacity} timestamp pairs were reserved`);
    return this.used++;
  }

  /** timestampWrites for a pass measured on its own (pair `pair`). */
  bracket(pair: number): GPUComputePassTimestampWrites {
    return { querySet: this.querySet, beginningOfPassWriteIndex: 2 * pair, endOfPassWriteIndex: 2 * pair + 1 };
  }

  /** An empty pass whose start is pair `pair`'s begin: everything recorded after it in the encoder is inside. */
  markBegin(encoder: GPUCommandEncoder, pair: number): void {
    encoder.beginComputePass({ label: 'bench.begin', timestampWrites: { querySet: this.querySet, beginningOfPassWriteIndex: 2 * pair } }).end();
  }

  /** An empty pass whose end is pair `pair`'s end. */
  markEnd(encoder: GPUCommandEncoder, pair: number): void {
    encoder.beginComputePass({ label: 'bench.end', timestampWrites: { querySet: this.querySet, endOfPassWriteIndex: 2 * pair + 1 } }).end();
  }

  /** Milliseconds between begin and end of every pair used so far (waits for the GPU). */
  async read(): Promise<number[]> {
    const pairs = this.used;
    if (!pairs) return [];
    const encoder = this.gpu.device.createCommandEncoder({ label: 'bench.timestamps.resolve' });
    encoder.resolveQuerySet(this.querySet, 0, 2 * pairs, this.resolve, 0);
    encoder.copyBufferToBuffer(this.resolve, 0, this.readback, 0, 2 * pairs * 8);
    this.gpu.device.queue.submit([encoder.finish()]);
    await this.readback.mapAsync(GPUMapMode.READ, 0, 2 * pairs * 8);
    const ticks = new BigUint64Array(this.readback.getMappedRange(0, 2 * pairs * 8).slice(0));
    this.readback.unmap();
    const out: number[] = [];
    // Timestamps are nanoseconds; a pair whose end is before its begin (a driver reset the counter) reads as NaN.
    for (let i = 0; i < pairs; i++) out.push(ticks[2 * i + 1] >= ticks[2 * i] ? Number(ticks[2 * i + 1] - ticks[2 * i]) / 1e6 : NaN);
    return out;
  }

  destroy(): void {
    this.querySet.destroy();
    this.resolve.destroy();
    this.readback.destroy();
  }
}

/** Minimum wall-clock warm-up before timing dispatches on a device (see timeDispatches). */
const WARM_MS = 200;

/**
 * Milliseconds per run of `dispatches` (one compute pass, one submit per run). With timestamp queries, the GPU's own
 * time for the pass; without, the wall clock around submit + wait, which adds the submit and wake-up latency.
 */
export async function timeDispatches(gpu: GpuContext, dispatches: readonly Dispatch[], options: TimingOptions): Promise<Timing> {
  checkOptions(options);
  const record = (encoder: GPUCommandEncoder, timestampWrites?: GPUComputePassTimestampWrites) => {
    const pass = encoder.beginComputePass({ label: 'bench', timestampWrites });
    for (const d of dispatches) {
      pass.setPipeline(d.pipeline);
      pass.setBindGroup(0, d.bindGroup);
      pass.dispatchWorkgroups(...d.workgroups);
    }
    pass.end();
  };
  const submitOne = (timestampWrites?: GPUComputePassTimestampWrites) => {
    const encoder = gpu.device.createCommandEncoder({ label: 'bench' });
    record(encoder, timestampWrites);
    gpu.device.queue.submit([encoder.finish()]);
  };

  // Warm-up: the runs asked for, and at least WARM_MS of work, because a GPU left idle (while pipelines compiled)
  // drops its clock and takes a while to raise it again (seen on the H100: short kernels read ~5× slow right after).
  const warmStart = performance.now();
  for (let i = 0; i < options.warmup; i++) submitOne();
  await gpu.sync();
  while (options.warmup > 0 && performance.now() - warmStart < WARM_MS) {
    submitOne();
    await gpu.sync();
  }

  const timestamps = TimestampPairs.create(gpu, options.iters);
  if (timestamps) {
    try {
      for (let i = 0; i < options.iters; i++) submitOne(timestamps.bracket(timestamps.next()));
      const samples = await timestamps.read();
      await gpu.sync();
      if (samples.every((s) => Number.isFinite(s) && s > 0)) return { ms: median(samples), samples, method: 'timestamp-query' };
      // All-zero or reset counters (some drivers): fall through to the wall clock.
    } finally {
      timestamps.destroy();
    }
  }
  const samples: number[] = [];
  for (let i = 0; i < options.iters; i++) {
    const start = performance.now();
    submitOne();
    await gpu.sync();
    samples.push(performance.now() - start);
  }
  return { ms: median(samples), samples, method: 'wall-clock' };
}

/** Median wall-clock milliseconds of `run`, which must itself wait for the GPU before it resolves. */
export async function timeWallClock(run: (index: number) => Promise<void>, options: TimingOptions): Promise<Timing> {
  checkOptions(options);
  for (let i = 0; i < options.warmup; i++) await run(i);
  const samples: number[] = [];
  for (let i = 0; i < options.iters; i++) {
    const start = performance.now();
    await run(options.warmup + i);
    samples.push(performance.now() - start);
  }
  return { ms: median(samples), samples, method: 'wall-clock' };
}

/**
 * While `body` runs, brackets every GpuContext.submit (the whole encoder: its clears, passes and copies) with a
 * timestamp pair (GpuContext.submitObserver), so code that submits on its own (Gpt2Run.step) is timed on the GPU.
 * Returns the GPU milliseconds of each submit, or undefined without timestamp-query.
 */
export async function gpuTimeOfSubmits(gpu: GpuContext, maxSubmits: number, body: () => Promise<void>): Promise<number[] | undefined> {
  const timestamps = TimestampPairs.create(gpu, maxSubmits);
  if (!timestamps) {
    await body();
    return undefined;
  }
  let pair = 0;
  gpu.submitObserver = {
    before: (encoder) => {
      pair = timestamps.next();
      timestamps.markBegin(encoder, pair);
    },
    after: (encoder) => timestamps.markEnd(encoder, pair),
  };
  try {
    await body();
    await gpu.sync();
    return await timestamps.read();
  } finally {
    gpu.submitObserver = undefined;
    timestamps.destroy();
  }
}
