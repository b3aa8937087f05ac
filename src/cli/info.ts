// `tunelab info`: the adapter, its features and limits, as JSON.
import { GpuContext } from '../engine/gpu/context.ts';
import { nodeGpu } from '../engine/gpu/node.ts';

export async function info(): Promise<number> {
  const gpu = await GpuContext.acquire(await nodeGpu());
  process.stdout.write(JSON.stringify({ adapter: gpu.adapter }, null, 2) + '\n');
  gpu.destroy();
  return 0;
}
