// WebGPU for Node: Dawn from the `webgpu` package. On a machine with no GPU driver, point Vulkan at SwiftShader
// (shipped by Debian's chromium package) so tests and CLI commands still run on a real WebGPU implementation.
// (Mesa's drivers may be installed without any GPU, so we look for a device node, not for drivers.)
// On the GPU machine, `.gpu/setup.sh` exports DAWN_NODE (a carried dawn.node) and DAWN_FLAGS, which win.

import { existsSync, mkdirSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createRequire } from 'node:module';

export const SWIFTSHADER_ICD = '/usr/lib/chromium/vk_swiftshader_icd.json';

/** True when the machine has a GPU device node that a Vulkan driver could use (DRI render node or NVIDIA). */
function hasGpuDevice(): boolean {
  try {
    return readdirSync('/dev/dri').some((f) => f.startsWith('renderD')) || existsSync('/dev/nvidia0');
  } catch {
    return existsSync('/dev/nvidia0');
  }
}

interface DawnModule {
  create(flags: string[]): GPU;
  globals: Record<string, unknown>;
}

let cached: GPU | undefined;

/** Returns a `GPU` object for Node, creating Dawn once per process. */
export async function nodeGpu(): Promise<GPU> {
  if (cached) return cached;
  const env = process.env;
  const explicitDriver = env.VK_ICD_FILENAMES || env.VK_DRIVER_FILES;
  if (!explicitDriver && !hasGpuDevice() && existsSync(SWIFTSHADER_ICD)) {
    env.VK_ICD_FILENAMES = SWIFTSHADER_ICD;
  }
  if (!env.XDG_RUNTIME_DIR) {
    // Vulkan's window-system probing complains on every start when this is unset (headless machines, CI).
    const dir = join(tmpdir(), `tunelab-xdg-${process.getuid?.() ?? 0}`);
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    env.XDG_RUNTIME_DIR = dir;
  }
  const flags = (env.DAWN_FLAGS ?? '').split(/\s+/).filter(Boolean);
  let dawn: DawnModule;
  if (env.DAWN_NODE) {
    const binding = createRequire(import.meta.url)(env.DAWN_NODE) as DawnModule;
    dawn = binding;
  } else {
    dawn = (await import('webgpu')) as unknown as DawnModule;
  }
  Object.assign(globalThis, dawn.globals);
  cached = dawn.create(flags);
  return cached;
}
