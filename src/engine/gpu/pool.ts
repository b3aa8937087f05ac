// A buffer pool keyed by (size class, usage). Nothing in a training step allocates: buffers are taken from the pool
// when a run is planned and given back when it ends. `bytesInUse` is the live "GPU memory in use" figure.

const ALIGN = 256; // minStorageBufferOffsetAlignment on every adapter we know; also keeps views bindable.

export function alignTo(bytes: number, align = ALIGN): number {
  return Math.ceil(bytes / align) * align;
}

export class BufferPool {
  private readonly free = new Map<string, GPUBuffer[]>();
  private readonly live = new Set<GPUBuffer>();
  private inUse = 0;
  private allocated = 0;

  constructor(private readonly device: GPUDevice) {}

  /** Bytes in buffers handed out and not yet released. */
  get bytesInUse(): number {
    return this.inUse;
  }
  /** Bytes the pool holds from the device, in use or waiting for reuse. */
  get bytesAllocated(): number {
    return this.allocated;
  }

  acquire(byteLength: number, usage: GPUBufferUsageFlags, label: string): GPUBuffer {
    const size = alignTo(Math.max(byteLength, 4));
    const key = `${size}:${usage}`;
    const reused = this.free.get(key)?.pop();
    const buffer = reused ?? this.device.createBuffer({ size, usage, label });
    if (reused) reused.label = label;
    else this.allocated += size;
    this.live.add(buffer);
    this.inUse += size;
    return buffer;
  }

  release(buffer: GPUBuffer): void {
    if (!this.live.delete(buffer)) return;
    this.inUse -= buffer.size;
    const key = `${buffer.size}:${buffer.usage}`;
    const list = this.free.get(key) ?? [];
    list.push(buffer);
    this.free.set(key, list);
  }

  /** Returns every cached free buffer to the device. */
  trim(): void {
    for (const list of this.free.values()) for (const b of list) {
      this.allocated -= b.size;
      b.destroy();
    }
    this.free.clear();
  }

  destroy(): void {
    this.trim();
    for (const b of this.live) b.destroy();
    this.live.clear();
    this.inUse = 0;
    this.allocated = 0;
  }
}
