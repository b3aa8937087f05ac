// What the app knows about the GPU: still looking, ready (with the adapter's description), or unavailable (with a
// typed reason). The probe itself runs in the engine worker; this class only holds the answer for the components.

import type { AdapterSummary } from '../../engine/gpu/adapter.ts';
import type { Failure, Outcome } from '../../workers/protocol.ts';

export type GpuPhase = 'checking' | 'ready' | 'unavailable';

export class GpuStatus {
  phase = $state<GpuPhase>('checking');
  adapter = $state.raw<AdapterSummary | undefined>(undefined);
  failure = $state.raw<Failure | undefined>(undefined);

  /** True for software adapters (SwiftShader, WARP, ...): everything works, only slowly. */
  readonly isSoftware = $derived(
    this.adapter !== undefined &&
      (this.adapter.isFallbackAdapter || /swiftshader|llvmpipe|warp|software/i.test(this.adapter.name)),
  );

  private readonly probe: () => Promise<Outcome<AdapterSummary>>;

  /** `probe` asks the engine for the adapter (in the app: the worker's `probe`; in tests it can be anything). */
  constructor(probe: () => Promise<Outcome<AdapterSummary>>) {
    this.probe = probe;
  }

  async check(): Promise<void> {
    this.phase = 'checking';
    this.adapter = undefined;
    this.failure = undefined;
    // No navigator.gpu on the page: say so at once, without starting the engine worker.
    if (!('gpu' in navigator) || !navigator.gpu) {
      this.fail({
        code: 'no-webgpu',
        message: 'navigator.gpu is missing: WebGPU is not supported here, or it is turned off.',
      });
      return;
    }
    const outcome = await this.probe();
    if (outcome.ok) {
      this.adapter = outcome.value;
      this.phase = 'ready';
    } else {
      this.fail(outcome.failure);
    }
  }

  private fail(failure: Failure): void {
    this.failure = failure;
    this.phase = 'unavailable';
  }
}
