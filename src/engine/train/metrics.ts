// The trainer's event stream: what a training run reports, step by step, to the UI, the CLI (progress bar or JSON
// lines) and tests. Every event is plain JSON. Step metrics arrive a step or two after the step was submitted (the
// model's readback ring), so `step` events trail the GPU slightly; their numbers belong to the step they name.

/** Sent once when train() starts (or continues after a restore). */
export interface StartEvent {
  type: 'start';
  /** Optimizer steps already done (0 unless restored). */
  step: number;
  totalSteps: number;
  /** Micro-batches in one pass over the training rows. */
  microStepsPerEpoch: number;
  /** Micro-batches per optimizer step. */
  gradientAccumulationSteps: number;
  /** B, T of a micro-batch. */
  batchSize: number;
  sequenceLength: number;
  trainableParameters: number;
  validationBatches: number;
}

/** One optimizer step's training metrics. */
export interface StepEvent {
  type: 'step';
  /** 1-based: the number of optimizer updates done including this one. */
  step: number;
  totalSteps: number;
  /** Passes over the training data so far, fractional (1.5 = half way through the second epoch), as HF logs it. */
  epoch: number;
  /** Learning rate this step used. */
  lr: number;
  /** Mean loss over the counted tokens of the step's micro-batches (before this step's update). */
  loss: number;
  /** Fraction of counted tokens predicted right (argmax), same tokens as the loss. */
  accuracy: number;
  /** Global gradient norm before clipping. */
  gradNorm: number;
  /** Tokens (B·T per micro-batch, padding included) processed so far in the run. */
  tokens: number;
  tokensPerSecond: number;
  /** Training time so far, pauses excluded. */
  elapsedMs: number;
  /** Estimated time to the last step at the average pace of this session. */
  etaMs: number;
}

/** Validation on the fixed validation batches. */
export interface EvalEvent {
  type: 'eval';
  /** Optimizer steps done when evaluated (0 = before training). */
  step: number;
  epoch: number;
  loss: number;
  /** exp(loss). */
  perplexity: number;
  accuracy: number;
  /** Tokens that count (Σ mask) over the validation batches. */
  tokens: number;
  elapsedMs: number;
}

export interface PauseEvent {
  type: 'paused' | 'resumed';
  step: number;
}

export type EndReason =
  /** Reached totalSteps. */
  | 'completed'
  /** cancel() was called. */
  | 'cancelled'
  /** train({ untilStep }) reached its step; train() may be called again to go on. */
  | 'stopped';

export interface EndEvent {
  type: 'end';
  reason: EndReason;
  step: number;
  totalSteps: number;
  elapsedMs: number;
}

export type TrainEvent = StartEvent | StepEvent | EvalEvent | PauseEvent | EndEvent;
export type TrainEventListener = (event: TrainEvent) => void;

/** Perplexity of a mean cross-entropy loss (nats). */
export function perplexity(loss: number): number {
  return Math.exp(loss);
}

/** "1m 05s", "2h 03m", "12s": a short duration for progress lines. */
export function formatDuration(ms: number): string {
  if (!Number.isFinite(ms) || ms < 0) return '?';
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(m / 60)}h ${String(m % 60).padStart(2, '0')}m`;
}

/** A one-line summary of an event for humans (the CLI's log lines). */
export function describeEvent(event: TrainEvent): string {
  switch (event.type) {
    case 'start':
      return (
        `training ${event.totalSteps} steps from step ${event.step} (batch ${event.batchSize}×${event.sequenceLength}` +
        `${event.gradientAccumulationSteps > 1 ? ` × ${event.gradientAccumulationSteps} accumulated` : ''}, ` +
        `${event.trainableParameters.toLocaleString('en-US')} trainable parameters)`
      );
    case 'step':
      return (
        `step ${event.step}/${event.totalSteps}  epoch ${event.epoch.toFixed(2)}  loss ${event.loss.toFixed(4)}  ` +
        `lr ${event.lr.toExponential(2)}  grad norm ${event.gradNorm.toFixed(3)}  ${Math.round(event.tokensPerSecond)} tok/s  ` +
        `ETA ${formatDuration(event.etaMs)}`
      );
    case 'eval':
      return (
        `eval at step ${event.step}: validation loss ${event.loss.toFixed(4)}  perplexity ${event.perplexity.toFixed(2)}  ` +
        `token accuracy ${(100 * event.accuracy).toFixed(1)}%`
      );
    case 'paused':
    case 'resumed':
      return `${event.type} at step ${event.step}`;
    case 'end':
      return `${event.reason} at step ${event.step}/${event.totalSteps} after ${formatDuration(event.elapsedMs)}`;
  }
}
