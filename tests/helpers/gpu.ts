// One real WebGPU device per test file (Dawn in Node; SwiftShader when the machine has no GPU). Kernel tests call
// `testGpu()` in beforeAll; it throws when no adapter is found, so a kernel test can fail but never silently skip.

import { GpuContext } from '../../src/engine/gpu/context.ts';
import { nodeGpu } from '../../src/engine/gpu/node.ts';

let shared: Promise<GpuContext> | undefined;

export function testGpu(): Promise<GpuContext> {
  shared ??= nodeGpu().then((gpu) => GpuContext.acquire(gpu));
  return shared;
}

/** Runs dispatches (one submit) and returns the tensors read back. */
export async function runAndRead(
  gpu: GpuContext,
  dispatches: import('../../src/engine/gpu/context.ts').Dispatch[],
  ...tensors: import('../../src/engine/gpu/context.ts').GpuTensor[]
): Promise<Float32Array[]> {
  gpu.submit(dispatches);
  const out = await Promise.all(tensors.map((t) => gpu.read(t)));
  for (const d of dispatches) d.release();
  return out;
}
