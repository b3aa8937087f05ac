// The harness itself: a real WebGPU adapter must be found. Every kernel test depends on this; none can skip.

import { describe, expect, it } from 'vitest';
import { testGpu } from './helpers/gpu.ts';

describe('WebGPU in Node', () => {
  it('finds an adapter and a device', async () => {
    const gpu = await testGpu();
    expect(gpu.adapter.name.length).toBeGreaterThan(0);
    expect(gpu.device.limits.maxStorageBufferBindingSize).toBeGreaterThanOrEqual(128 * 1024 * 1024);
    // Printed so the test log shows which adapter the kernel tests ran on (SwiftShader on a machine with no GPU).
    console.log(`WebGPU adapter: ${gpu.adapter.name} (${gpu.adapter.description || gpu.adapter.device})`);
    if (process.env.CI) expect(gpu.adapter.name).toMatch(/swiftshader|google/i);
  });
});
