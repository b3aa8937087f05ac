// Turns a GPUAdapter into a plain, serializable description the UI, the CLI and the benchmarks all print.

export interface AdapterSummary {
  vendor: string;
  architecture: string;
  device: string;
  description: string;
  /** A short human name: "swiftshader", "nvidia ampere", ... */
  name: string;
  isFallbackAdapter: boolean;
  features: { shaderF16: boolean; subgroups: boolean; timestampQuery: boolean; subgroupMatrix: boolean };
  /**
   * The adapter offers f16×f16→f32 16×16×16 subgroup matrices (tensor cores) with 32-wide subgroups: what
   * matmul_sgmat_f16w.wgsl is written for.
   */
  tensorCoresF16: boolean;
  limits: {
    maxBufferSize: number;
    maxStorageBufferBindingSize: number;
    maxComputeWorkgroupStorageSize: number;
    maxComputeInvocationsPerWorkgroup: number;
    maxStorageBuffersPerShaderStage: number;
    maxComputeWorkgroupsPerDimension: number;
  };
}

export function summarizeAdapter(adapter: GPUAdapter): AdapterSummary {
  const info = adapter.info;
  const vendor = info?.vendor ?? '';
  const architecture = info?.architecture ?? '';
  const device = info?.device ?? '';
  const description = info?.description ?? '';
  const name = [vendor, architecture].filter(Boolean).join(' ') || description || device || 'unknown adapter';
  const l = adapter.limits;
  return {
    vendor,
    architecture,
    device,
    description,
    name,
    isFallbackAdapter: Boolean((info as { isFallbackAdapter?: boolean } | undefined)?.isFallbackAdapter),
    features: {
      shaderF16: adapter.features.has('shader-f16'),
      subgroups: adapter.features.has('subgroups'),
      timestampQuery: adapter.features.has('timestamp-query'),
      subgroupMatrix: adapter.features.has('chromium-experimental-subgroup-matrix'),
    },
    tensorCoresF16: hasF16TensorCores(adapter),
    limits: {
      maxBufferSize: l.maxBufferSize,
      maxStorageBufferBindingSize: l.maxStorageBufferBindingSize,
      maxComputeWorkgroupStorageSize: l.maxComputeWorkgroupStorageSize,
      maxComputeInvocationsPerWorkgroup: l.maxComputeInvocationsPerWorkgroup,
      maxStorageBuffersPerShaderStage: l.maxStorageBuffersPerShaderStage,
      maxComputeWorkgroupsPerDimension: l.maxComputeWorkgroupsPerDimension,
    },
  };
}

interface SubgroupMatrixConfig {
  componentType: string;
  resultComponentType: string;
  M: number;
  N: number;
  K: number;
}

function hasF16TensorCores(adapter: GPUAdapter): boolean {
  if (!adapter.features.has('chromium-experimental-subgroup-matrix' as GPUFeatureName) || !adapter.features.has('shader-f16')) return false;
  const info = adapter.info as (GPUAdapterInfo & { subgroupMatrixConfigs?: readonly SubgroupMatrixConfig[]; subgroupMinSize?: number; subgroupMaxSize?: number }) | undefined;
  if (info?.subgroupMinSize !== 32 || info.subgroupMaxSize !== 32) return false;
  return [...(info.subgroupMatrixConfigs ?? [])].some(
    (c) => c.componentType === 'f16' && c.resultComponentType === 'f32' && c.M === 16 && c.N === 16 && c.K === 16,
  );
}
