// Learning-rate schedules: constant, linear decay and cosine decay, each after a linear warmup, with a floor at
// minLrRatio × the peak. A pure function of the optimizer step, so a resumed run recomputes the same rates.
//
// Steps count from 0 (the first optimizer step). With W warmup steps and S total steps (the llm.c convention):
//   warmup, step < W:   lr = peak · (step + 1) / W        (the first step already learns; step W−1 reaches the peak)
//   decay,  step ≥ W:   progress = (step − W) / (S − W) ∈ [0, 1), lr = min + (peak − min) · shape(progress)
//     constant: shape = 1;  linear: 1 − progress;  cosine: (1 + cos(π · progress)) / 2;  min = peak · minLrRatio.
// The last step (S−1) is one decay step short of the floor; steps past S stay at the floor.

export type LrScheduleKind = 'constant' | 'linear' | 'cosine';

export interface LrScheduleConfig {
  /** The peak learning rate, reached at the end of warmup. 2e-4 (a common LoRA rate). */
  learningRate: number;
  /** The shape after warmup. 'linear' (Hugging Face Trainer's default). */
  kind: LrScheduleKind;
  /** Warmup length in steps; when > 0 it wins over warmupRatio. 0. */
  warmupSteps: number;
  /** Warmup length as a fraction of the total steps, rounded up, used when warmupSteps is 0. 0. */
  warmupRatio: number;
  /** The rate decays to learningRate × minLrRatio, not to 0 (ignored by 'constant'). 0. */
  minLrRatio: number;
}

export const DEFAULT_LR_SCHEDULE: Readonly<LrScheduleConfig> = Object.freeze({
  learningRate: 2e-4,
  kind: 'linear',
  warmupSteps: 0,
  warmupRatio: 0,
  minLrRatio: 0,
});

/** The defaults with some fields overridden, checked; a bad value throws a RangeError that names the setting. */
export function lrScheduleConfig(overrides: Partial<LrScheduleConfig> = {}): LrScheduleConfig {
  const config = { ...DEFAULT_LR_SCHEDULE, ...overrides };
  const fail = (message: string) => {
    throw new RangeError(`learning-rate schedule: ${message}`);
  };
  if (!(Number.isFinite(config.learningRate) && config.learningRate >= 0)) {
    fail(`learningRate must be a non-negative number, got ${config.learningRate}`);
  }
  if (!['constant', 'linear', 'cosine'].includes(config.kind)) {
    fail(`kind must be 'constant', 'linear' or 'cosine', got ${JSON.stringify(config.kind)}`);
  }
  if (!(Number.isSafeInteger(config.warmupSteps) && config.warmupSteps >= 0)) {
    fail(`warmupSteps must be a whole number ≥ 0, got ${config.warmupSteps}`);
  }
  for (const key of ['warmupRatio', 'minLrRatio'] as const) {
    if (!(config[key] >= 0 && config[key] <= 1)) fail(`${key} must be in [0, 1], got ${config[key]}`);
  }
  return config;
}

/** W: warmupSteps if set, else ⌈warmupRatio · totalSteps⌉, never more than totalSteps. */
export function warmupStepCount(totalSteps: number, config: LrScheduleConfig): number {
  const steps = config.warmupSteps > 0 ? config.warmupSteps : Math.ceil(config.warmupRatio * totalSteps);
  return Math.min(steps, totalSteps);
}

/** The learning rate of optimizer step `step` (from 0) of a run of `totalSteps` steps. */
export function lr(step: number, totalSteps: number, config: LrScheduleConfig): number {
  if (!(Number.isSafeInteger(step) && step >= 0)) {
    throw new RangeError(`lr: step must be a whole number ≥ 0, got ${step}`);
  }
  if (!(Number.isSafeInteger(totalSteps) && totalSteps >= 1)) {
    throw new RangeError(`lr: totalSteps must be a whole number ≥ 1, got ${totalSteps}`);
  }
  const peak = config.learningRate;
  const warmup = warmupStepCount(totalSteps, config);
  if (step < warmup) return (peak * (step + 1)) / warmup;
  if (config.kind === 'constant') return peak;

  const min = peak * config.minLrRatio;
  const decaySteps = totalSteps - warmup;
  const progress = decaySteps > 0 ? Math.min(1, (step - warmup) / decaySteps) : 1;
  const shape = config.kind === 'linear' ? 1 - progress : (1 + Math.cos(Math.PI * progress)) / 2;
  return min + (peak - min) * shape;
}
