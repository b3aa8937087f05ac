// Per-kernel GPU time (`tunelab bench step|generate --profile`): while `body` runs, every dispatch that
// GpuContext.submit records gets a compute pass of its own with a timestamp pair, and the times are summed per kernel
// and grid. Separate passes add a little time between dispatches (the sum of the rows is a bit under the step's GPU
// time), so the profile says where the time goes, not what the step costs: the step's own figure does that.

import type { Dispatch, GpuContext } from '../gpu/context.ts';
import { recordBase, round, type BenchRecord } from './records.ts';
import { TimestampPairs } from './timing.ts';

export interface KernelTime {
  kernel: string;
  /** The dispatch grid, "x×y×z": one kernel at several shapes gives several rows. */
  grid: string;
  calls: number;
  ms: number;
}

/** Kernel times of everything submitted while `body` runs, largest first; undefined without timestamp-query. */
export async function profileDispatches(gpu: GpuContext, maxDispatches: number, body: () => Promise<void>): Promise<KernelTime[] | undefined> {
  const timestamps = TimestampPairs.create(gpu, maxDispatches);
  if (!timestamps) return undefined;
  const order: Dispatch[] = [];
  gpu.dispatchTimer = (dispatch) => {
    order.push(dispatch);
    return timestamps.bracket(timestamps.next());
  };
  try {
    await body();
    await gpu.sync();
    const times = await timestamps.read();
    const rows = new Map<string, KernelTime>();
    order.forEach((d, i) => {
      const grid = d.workgroups.join('×');
      const key = `${d.kernel} ${grid}`;
      const row = rows.get(key) ?? { kernel: d.kernel, grid, calls: 0, ms: 0 };
      row.calls++;
      row.ms += times[i];
      rows.set(key, row);
    });
    return [...rows.values()].sort((a, b) => b.ms - a.ms);
  } finally {
    gpu.dispatchTimer = undefined;
    timestamps.destroy();
  }
}

/** A `profile` record: what was profiled, the total, and each kernel's share. */
export function profileRecord(gpu: GpuContext, of: string, scaled: boolean, kernels: KernelTime[], extra: Record<string, unknown> = {}): BenchRecord {
  const total = kernels.reduce((sum, k) => sum + k.ms, 0);
  return {
    ...recordBase(gpu, 'profile', scaled),
    of,
    ...extra,
    total_ms: round(total),
    kernels: kernels.map((k) => ({ ...k, ms: round(k.ms), share: round(k.ms / total, 3) })),
  };
}
