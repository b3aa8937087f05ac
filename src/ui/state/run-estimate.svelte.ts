// What a run with the current model, data and settings will take, before it starts: the GPU memory from the
// engine's memory planner (asked in the worker, which knows the device's limits) and a rough count of optimizer steps
// from the data report. Re-estimated whenever an input changes; stale answers are dropped.

import type { DataReport } from '../../engine/data/index.ts';
import type { Failure, MemoryEstimate, MemoryEstimateRequest, ModelSummary, Outcome } from '../../workers/protocol.ts';
import { debounce } from './persist.ts';
import type { TrainSettings } from './train-settings.svelte.ts';

export interface RunEstimateInputs {
  model: ModelSummary | undefined;
  report: DataReport | undefined;
  settings: TrainSettings;
  /** How the frozen weights are kept (the Model panel's setting). */
  frozenWeights?: 'f32' | 'f16';
}

export interface StepEstimate {
  /** Micro-batches in one pass over the training examples (the data report's steps per epoch). */
  batchesPerEpoch: number;
  /** Optimizer steps: ⌈epochs × batches per epoch ÷ gradient accumulation⌉, as the trainer counts them. */
  totalSteps: number;
  /** Tokens that count for the loss in the whole run. */
  lossTokens: number;
}

const ESTIMATE_DELAY_MS = 150;

export class RunEstimate {
  memory = $state.raw<MemoryEstimate | undefined>(undefined);
  failure = $state.raw<Failure | undefined>(undefined);

  /** Null until the data has been checked and has training examples. */
  readonly steps: StepEstimate | null = $derived.by(() => {
    const { report, settings } = this.inputs();
    const stats = report?.stats;
    if (!stats || stats.stepsPerEpoch === 0) return null;
    const { epochs, gradientAccumulationSteps } = settings.values;
    return {
      batchesPerEpoch: stats.stepsPerEpoch,
      totalSteps: Math.max(1, Math.ceil((epochs * stats.stepsPerEpoch) / gradientAccumulationSteps)),
      lossTokens: Math.round(stats.lossTokens * epochs),
    };
  });

  /** B, T and the adapter the memory estimate is for; T is the data's (the longest example), else the context. */
  readonly request: MemoryEstimateRequest | null = $derived.by(() => {
    const { model, report, settings, frozenWeights } = this.inputs();
    if (!model || !settings.valid) return null;
    const { batchSize, lora } = settings.values;
    const sequenceLength = Math.min(model.context, report?.stats.sequenceLength || model.context);
    return {
      batchSize,
      sequenceLength,
      lora: { rank: lora.rank, targets: [...lora.targets], layers: lora.layers },
      ...(frozenWeights ? { frozenWeights } : {}),
    };
  });

  private readonly inputs: () => RunEstimateInputs;
  private readonly estimate: (request: MemoryEstimateRequest) => Promise<Outcome<MemoryEstimate>>;
  private latestRequest = 0;

  constructor(
    estimate: (request: MemoryEstimateRequest) => Promise<Outcome<MemoryEstimate>>,
    inputs: () => RunEstimateInputs,
  ) {
    this.estimate = estimate;
    this.inputs = inputs;
  }

  /** Re-estimates memory whenever the request changes; returns the function that stops it. */
  start(): () => void {
    const soon = debounce(() => void this.refresh(), ESTIMATE_DELAY_MS);
    const stop = $effect.root(() => {
      $effect(() => {
        // JSON.stringify reads every field, so any change to the request schedules an estimate.
        void JSON.stringify(this.request);
        void this.inputs().model?.generation;
        soon.schedule();
      });
    });
    return () => {
      stop();
      soon.cancel();
    };
  }

  async refresh(): Promise<void> {
    const id = ++this.latestRequest;
    const request = this.request;
    if (!request) {
      this.memory = undefined;
      this.failure = undefined;
      return;
    }
    const outcome = await this.estimate($state.snapshot(request) as MemoryEstimateRequest);
    if (id !== this.latestRequest) return;
    if (outcome.ok) {
      this.memory = outcome.value;
      this.failure = undefined;
    } else {
      this.memory = undefined;
      this.failure = outcome.failure;
    }
  }
}
