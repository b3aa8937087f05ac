// The GPU runtime every part of the engine shares: one device, its features and limits, a buffer pool, a pipeline
// cache, tensors (views into GPU buffers), prepared dispatches and readback. Device-lost and uncaptured errors are
// handled here and nowhere else. It receives a `GPU` (navigator.gpu in the browser, the `webgpu` package in Node).

import { TunelabError } from '../errors.ts';
import { summarizeAdapter, type AdapterSummary } from './adapter.ts';
import { BufferPool, alignTo } from './pool.ts';
import type { KernelSpec } from '../../kernels/spec.ts';

export interface GpuTensor {
  readonly buffer: GPUBuffer;
  /** Byte offset of the view; a multiple of 256 so the view can be bound on its own. */
  readonly offset: number;
  /** Number of f32 elements. */
  readonly length: number;
  readonly label: string;
}

export interface AcquireOptions {
  powerPreference?: GPUPowerPreference;
  /** Ask for shader-f16 / subgroups / timestamp-query when the adapter has them (default true). */
  optionalFeatures?: boolean;
}

export type Workgroups = readonly [number, number?, number?];

/** A kernel bound to its buffers, with its own uniform buffer; created once per run, recorded every step. */
export interface Dispatch {
  readonly kernel: string;
  readonly pipeline: GPUComputePipeline;
  readonly bindGroup: GPUBindGroup;
  workgroups: [number, number, number];
  /** Rewrites some uniforms (queued; takes effect at the next submit). */
  setUniforms(values: Record<string, number>): void;
  /** Gives its uniform buffer back to the pool. */
  release(): void;
}

/** Encoder commands added around a submit's compute pass. */
export interface SubmitHooks {
  before?: (encoder: GPUCommandEncoder) => void;
  after?: (encoder: GPUCommandEncoder) => void;
}

type LostListener = (reason: string, message: string) => void;
type ErrorListener = (error: GPUError) => void;

const SUBGROUP_MATRIX = 'chromium-experimental-subgroup-matrix' as GPUFeatureName;
const WANTED_FEATURES: GPUFeatureName[] = ['shader-f16', 'subgroups', 'timestamp-query', SUBGROUP_MATRIX];

export class GpuContext {
  readonly pool: BufferPool;
  /** tensorCoresF16: matmul_sgmat_f16w.wgsl can run (AdapterSummary.tensorCoresF16, and the device has the features). */
  readonly features: { shaderF16: boolean; subgroups: boolean; timestampQuery: boolean; tensorCoresF16: boolean };
  /**
   * Hooks wrapped around every submit's own hooks, outermost (benchmarks bracket whole submits with timestamp
   * queries this way, including the submits that a training step makes internally).
   */
  submitObserver: SubmitHooks | undefined;
  /**
   * Benchmarks only (`tunelab bench … --profile`): when set, submit records every dispatch in a compute pass of its
   * own with the timestamp writes this returns, so each kernel's GPU time can be read. Slower than one pass.
   */
  dispatchTimer: ((dispatch: Dispatch) => GPUComputePassTimestampWrites) | undefined;
  /** Matmuls on f16 weights use the tensor cores where features.tensorCoresF16 (benchmarks turn it off to compare). */
  useTensorCores = true;
  private readonly modules = new Map<string, GPUShaderModule>();
  private readonly pipelines = new Map<string, Map<string, Promise<GPUComputePipeline>>>();
  private readonly layouts = new Map<string, GPUBindGroupLayout>();
  private readonly lostListeners = new Set<LostListener>();
  private readonly errorListeners = new Set<ErrorListener>();
  private readonly pendingErrors: string[] = [];
  private isLost = false;
  private lostMessage = '';

  private constructor(
    readonly device: GPUDevice,
    readonly adapter: AdapterSummary,
  ) {
    this.pool = new BufferPool(device);
    this.features = {
      shaderF16: device.features.has('shader-f16'),
      subgroups: device.features.has('subgroups'),
      timestampQuery: device.features.has('timestamp-query'),
      tensorCoresF16: adapter.tensorCoresF16 && device.features.has(SUBGROUP_MATRIX) && device.features.has('shader-f16'),
    };
    device.addEventListener('uncapturederror', (event) => {
      const error = (event as GPUUncapturedErrorEvent).error;
      this.pendingErrors.push(error.message);
      for (const listener of this.errorListeners) listener(error);
    });
    void device.lost.then((info) => {
      this.isLost = true;
      this.lostMessage = info.message;
      for (const listener of this.lostListeners) listener(info.reason ?? 'unknown', info.message);
    });
  }

  /** Finds an adapter, asks for all of its limits and the optional features we use, and wraps the device. */
  static async acquire(gpu: GPU | undefined, options: AcquireOptions = {}): Promise<GpuContext> {
    if (!gpu) {
      throw new TunelabError(
        'no-webgpu',
        'WebGPU is not available. Use a recent Chrome or Edge (113+), or Safari 26+, or Firefox 141+ on Windows; ' +
          'on Linux start Chrome with --enable-unsafe-webgpu (and --enable-features=Vulkan).',
      );
    }
    const adapter = await gpu.requestAdapter({ powerPreference: options.powerPreference ?? 'high-performance' });
    if (!adapter) {
      throw new TunelabError(
        'no-adapter',
        'WebGPU is present but no GPU adapter was offered. Check that hardware acceleration is on (chrome://gpu) ' +
          'and that your GPU driver is not blocklisted.',
      );
    }
    const requiredFeatures =
      options.optionalFeatures === false ? [] : WANTED_FEATURES.filter((f) => adapter.features.has(f));
    const requiredLimits: Record<string, number> = {};
    for (const key of [
      'maxBufferSize',
      'maxStorageBufferBindingSize',
      'maxComputeWorkgroupStorageSize',
      'maxComputeInvocationsPerWorkgroup',
      'maxComputeWorkgroupSizeX',
      'maxComputeWorkgroupSizeY',
      'maxComputeWorkgroupsPerDimension',
      'maxStorageBuffersPerShaderStage',
    ] as const) {
      requiredLimits[key] = adapter.limits[key];
    }
    const device = await adapter.requestDevice({ requiredFeatures, requiredLimits, label: 'tunelab' });
    return new GpuContext(device, summarizeAdapter(adapter));
  }

  get lost(): boolean {
    return this.isLost;
  }
  onLost(listener: LostListener): () => void {
    this.lostListeners.add(listener);
    return () => this.lostListeners.delete(listener);
  }
  onError(listener: ErrorListener): () => void {
    this.errorListeners.add(listener);
    return () => this.errorListeners.delete(listener);
  }

  private assertUsable(): void {
    if (this.isLost) throw new TunelabError('device-lost', `The GPU device was lost: ${this.lostMessage || 'no reason given'}`);
    if (this.pendingErrors.length) {
      const messages = this.pendingErrors.splice(0);
      throw new TunelabError('gpu-validation', `WebGPU reported an error: ${messages.join('\n')}`);
    }
  }

  // ---- tensors -------------------------------------------------------------------------------------------------

  /** A zero-filled f32 tensor of `length` elements, from the pool. */
  tensor(length: number, label: string): GpuTensor {
    const usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;
    const buffer = this.pool.acquire(length * 4, usage, label);
    const tensor = { buffer, offset: 0, length, label };
    this.zero(tensor);
    return tensor;
  }

  /** A tensor holding `data` (converted to f32). */
  upload(data: ArrayLike<number>, label: string): GpuTensor {
    const tensor = this.tensor(data.length, label);
    this.write(tensor, data);
    return tensor;
  }

  /** A tensor holding u32 data (token ids, targets, segment offsets); same 4-byte elements as f32 tensors. */
  uploadU32(data: ArrayLike<number>, label: string): GpuTensor {
    const tensor = this.tensor(data.length, label);
    this.writeU32(tensor, data);
    return tensor;
  }

  writeU32(tensor: GpuTensor, data: ArrayLike<number>, elementOffset = 0): void {
    const u32 = data instanceof Uint32Array ? data : Uint32Array.from(data);
    if (elementOffset + u32.length > tensor.length) {
      throw new RangeError(`write of ${u32.length} elements at ${elementOffset} overflows ${tensor.label} (${tensor.length})`);
    }
    this.device.queue.writeBuffer(tensor.buffer, tensor.offset + elementOffset * 4, u32.buffer, u32.byteOffset, u32.byteLength);
  }

  async readU32(tensor: GpuTensor): Promise<Uint32Array> {
    const f = await this.read(tensor);
    return new Uint32Array(f.buffer, f.byteOffset, f.length);
  }

  write(tensor: GpuTensor, data: ArrayLike<number>, elementOffset = 0): void {
    const f32 = data instanceof Float32Array ? data : Float32Array.from(data);
    if (elementOffset + f32.length > tensor.length) {
      throw new RangeError(`write of ${f32.length} elements at ${elementOffset} overflows ${tensor.label} (${tensor.length})`);
    }
    this.device.queue.writeBuffer(tensor.buffer, tensor.offset + elementOffset * 4, f32.buffer, f32.byteOffset, f32.byteLength);
  }

  zero(tensor: GpuTensor): void {
    const encoder = this.device.createCommandEncoder();
    encoder.clearBuffer(tensor.buffer, tensor.offset, alignTo(tensor.length * 4, 4));
    this.device.queue.submit([encoder.finish()]);
  }

  /** A view of `length` elements starting `elementOffset` elements into `parent` (offset must land on 256 bytes). */
  view(parent: GpuTensor, elementOffset: number, length: number, label: string): GpuTensor {
    const offset = parent.offset + elementOffset * 4;
    if (offset % 256 !== 0) throw new RangeError(`view ${label}: byte offset ${offset} is not a multiple of 256`);
    if (elementOffset + length > parent.length) throw new RangeError(`view ${label} runs past ${parent.label}`);
    return { buffer: parent.buffer, offset, length, label };
  }

  /** Gives a tensor's whole buffer back to the pool (not for views). */
  free(tensor: GpuTensor): void {
    this.pool.release(tensor.buffer);
  }

  /** Copies a tensor back to the CPU. Never call inside a training step. */
  async read(tensor: GpuTensor): Promise<Float32Array> {
    this.assertUsable();
    const bytes = alignTo(tensor.length * 4, 4);
    const staging = this.device.createBuffer({
      size: bytes,
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
      label: `readback:${tensor.label}`,
    });
    const encoder = this.device.createCommandEncoder();
    encoder.copyBufferToBuffer(tensor.buffer, tensor.offset, staging, 0, bytes);
    this.device.queue.submit([encoder.finish()]);
    try {
      await staging.mapAsync(GPUMapMode.READ);
    } catch (cause) {
      this.assertUsable();
      throw cause;
    }
    const out = new Float32Array(staging.getMappedRange().slice(0, tensor.length * 4));
    staging.unmap();
    staging.destroy();
    this.assertUsable();
    return out;
  }

  // ---- kernels -------------------------------------------------------------------------------------------------

  private module(spec: KernelSpec): GPUShaderModule {
    let module = this.modules.get(spec.name);
    if (!module) {
      module = this.device.createShaderModule({ code: spec.source, label: spec.name });
      this.modules.set(spec.name, module);
    }
    return module;
  }

  private layout(spec: KernelSpec): GPUBindGroupLayout {
    let layout = this.layouts.get(spec.name);
    if (!layout) {
      const entries: GPUBindGroupLayoutEntry[] = [];
      if (spec.uniforms.length) entries.push({ binding: 0, visibility: GPUShaderStage.COMPUTE, buffer: { type: 'uniform' } });
      spec.bindings.forEach((b, i) =>
        entries.push({
          binding: i + 1,
          visibility: GPUShaderStage.COMPUTE,
          buffer: { type: b.access === 'read' ? 'read-only-storage' : 'storage' },
        }),
      );
      layout = this.device.createBindGroupLayout({ entries, label: spec.name });
      this.layouts.set(spec.name, layout);
    }
    return layout;
  }

  /** The compute pipeline for (kernel, override constants), compiled once and reused. */
  pipeline(spec: KernelSpec, overrides: Record<string, number> = {}): Promise<GPUComputePipeline> {
    const constants: Record<string, number> = { ...spec.overrides, ...overrides };
    const key = JSON.stringify(Object.keys(constants).sort().map((k) => [k, constants[k]]));
    let byConstants = this.pipelines.get(spec.name);
    if (!byConstants) this.pipelines.set(spec.name, (byConstants = new Map()));
    let pipeline = byConstants.get(key);
    if (!pipeline) {
      pipeline = this.compile(spec, constants);
      byConstants.set(key, pipeline);
    }
    return pipeline;
  }

  private async compile(spec: KernelSpec, constants: Record<string, number>): Promise<GPUComputePipeline> {
    const module = this.module(spec);
    this.device.pushErrorScope('validation');
    let pipeline: GPUComputePipeline | undefined;
    let failure: unknown;
    try {
      pipeline = await this.device.createComputePipelineAsync({
        label: spec.name,
        layout: this.device.createPipelineLayout({ bindGroupLayouts: [this.layout(spec)], label: spec.name }),
        compute: { module, entryPoint: 'main', constants },
      });
    } catch (e) {
      failure = e;
    }
    const scopeError = await this.device.popErrorScope();
    if (failure || scopeError || !pipeline) {
      const info = await module.getCompilationInfo();
      const lines = info.messages.map((m) => `${spec.name}.wgsl:${m.lineNum}:${m.linePos} ${m.type}: ${m.message}`);
      const why = lines.join('\n') || scopeError?.message || String(failure);
      this.pipelines.get(spec.name)?.clear();
      throw new TunelabError('kernel-compile', `kernel ${spec.name} failed to compile:\n${why}`);
    }
    return pipeline;
  }

  /**
   * Binds a kernel to tensors and uniforms. Done once per run (bind group, uniform buffer and pipeline are kept);
   * recording the returned Dispatch into a step costs nothing more.
   */
  async prepare<B extends string, U extends string>(
    spec: KernelSpec<B, U>,
    args: {
      bindings: Record<B, GpuTensor>;
      uniforms?: Record<U, number>;
      overrides?: Record<string, number>;
      workgroups: Workgroups;
    },
  ): Promise<Dispatch> {
    const pipeline = await this.pipeline(spec, args.overrides);
    const entries: GPUBindGroupEntry[] = [];
    let uniformBuffer: GPUBuffer | undefined;
    const uniformData = new ArrayBuffer(alignTo(Math.max(spec.uniforms.length, 1) * 4, 16));
    const writeUniforms = (values: Record<string, number>) => {
      const view = new DataView(uniformData);
      spec.uniforms.forEach((u, i) => {
        const v = values[u.name];
        if (v === undefined) return;
        if (u.type === 'f32') view.setFloat32(i * 4, v, true);
        else if (u.type === 'i32') view.setInt32(i * 4, v, true);
        else {
          if (!Number.isInteger(v) || v < 0) throw new RangeError(`${spec.name}: uniform ${u.name} must be a u32, got ${v}`);
          view.setUint32(i * 4, v, true);
        }
      });
      if (uniformBuffer) this.device.queue.writeBuffer(uniformBuffer, 0, uniformData);
    };
    if (spec.uniforms.length) {
      const given = args.uniforms ?? ({} as Record<U, number>);
      for (const u of spec.uniforms) {
        if (given[u.name] === undefined) throw new Error(`${spec.name}: uniform ${u.name} not given`);
      }
      uniformBuffer = this.pool.acquire(uniformData.byteLength, GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST, `${spec.name}.params`);
      writeUniforms(given);
      entries.push({ binding: 0, resource: { buffer: uniformBuffer } });
    }
    spec.bindings.forEach((b, i) => {
      const t = args.bindings[b.name];
      if (!t) throw new Error(`${spec.name}: binding ${b.name} not given`);
      entries.push({ binding: i + 1, resource: { buffer: t.buffer, offset: t.offset, size: alignTo(t.length * 4, 4) } });
    });
    const bindGroup = this.device.createBindGroup({ layout: this.layout(spec), entries, label: spec.name });
    const [x, y = 1, z = 1] = args.workgroups;
    const max = this.device.limits.maxComputeWorkgroupsPerDimension;
    if (x > max || y > max || z > max) {
      throw new RangeError(`${spec.name}: dispatch ${x}x${y}x${z} exceeds ${max} per dimension; fold the grid`);
    }
    const pool = this.pool;
    return {
      kernel: spec.name,
      pipeline,
      bindGroup,
      workgroups: [x, y, z],
      setUniforms: writeUniforms,
      release() {
        if (uniformBuffer) pool.release(uniformBuffer);
        uniformBuffer = undefined;
      },
    };
  }

  /**
   * Records dispatches into one compute pass of one command encoder and submits once. `before` and `after` add
   * encoder commands around the pass (clearing gradient buffers, copying metrics into a readback ring), so a whole
   * training step stays a single submit.
   */
  submit(
    dispatches: readonly (readonly Dispatch[])[] | readonly Dispatch[],
    label = 'step',
    hooks: SubmitHooks = {},
  ): void {
    this.assertUsable();
    const encoder = this.device.createCommandEncoder({ label });
    this.submitObserver?.before?.(encoder);
    hooks.before?.(encoder);
    const lists = (dispatches.length && Array.isArray(dispatches[0]) ? dispatches : [dispatches]) as readonly (readonly Dispatch[])[];
    const timer = this.dispatchTimer;
    let pass = timer ? undefined : encoder.beginComputePass({ label });
    for (const list of lists) {
      for (const d of list) {
        if (timer) pass = encoder.beginComputePass({ label: d.kernel, timestampWrites: timer(d) });
        pass!.setPipeline(d.pipeline);
        pass!.setBindGroup(0, d.bindGroup);
        pass!.dispatchWorkgroups(d.workgroups[0], d.workgroups[1], d.workgroups[2]);
        if (timer) pass!.end();
      }
    }
    if (!timer) pass!.end();
    hooks.after?.(encoder);
    this.submitObserver?.after?.(encoder);
    this.device.queue.submit([encoder.finish()]);
  }

  /** Resolves when all submitted work has finished. */
  async sync(): Promise<void> {
    await this.device.queue.onSubmittedWorkDone();
    this.assertUsable();
  }

  destroy(): void {
    this.pool.destroy();
    this.device.destroy();
  }
}

/** Workgroup counts for `n` items at `perGroup` items each, folded into 2D when x would exceed the limit. */
export function grid1d(n: number, perGroup: number, maxPerDim = 65535): [number, number] {
  const groups = Math.max(1, Math.ceil(n / perGroup));
  if (groups <= maxPerDim) return [groups, 1];
  const y = Math.ceil(groups / maxPerDim);
  return [Math.ceil(groups / y), y];
}
