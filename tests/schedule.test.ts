// Learning-rate schedules (src/engine/train/schedule.ts): values at the key steps, computed by hand from the
// documented formulas; agreement to 1e-14 relative (double roundings, and 1 − 89/90 at the last linear step loses
// about two digits to cancellation).

import { describe, expect, it } from 'vitest';
import {
  DEFAULT_LR_SCHEDULE,
  lr,
  lrScheduleConfig,
  warmupStepCount,
  type LrScheduleKind,
} from '../src/engine/train/schedule.ts';

function expectRate(actual: number, expected: number): void {
  expect(Math.abs(actual - expected), `lr ${actual}, expected ${expected}`).toBeLessThanOrEqual(1e-14 * Math.abs(expected));
}

const PEAK = 1e-3;
const TOTAL = 100;
const WARMUP = 10;

describe('warmup', () => {
  for (const kind of ['constant', 'linear', 'cosine'] as LrScheduleKind[]) {
    it(`${kind}: rises linearly from peak/W at step 0 to the peak at step W−1, and holds it at step W`, () => {
      const config = lrScheduleConfig({ learningRate: PEAK, kind, warmupSteps: WARMUP, minLrRatio: 0.1 });
      expectRate(lr(0, TOTAL, config), PEAK / 10);
      expectRate(lr(4, TOTAL, config), PEAK / 2);
      expectRate(lr(WARMUP - 1, TOTAL, config), PEAK);
      expectRate(lr(WARMUP, TOTAL, config), PEAK);
    });
  }

  it('warmupSteps wins over warmupRatio; the ratio rounds up; warmup never exceeds the run', () => {
    expect(warmupStepCount(30, lrScheduleConfig({ warmupRatio: 0.05 }))).toBe(2);
    expect(warmupStepCount(30, lrScheduleConfig({ warmupRatio: 0.05, warmupSteps: 7 }))).toBe(7);
    expect(warmupStepCount(5, lrScheduleConfig({ warmupSteps: 7 }))).toBe(5);
    expect(warmupStepCount(30, lrScheduleConfig())).toBe(0);
    const config = lrScheduleConfig({ learningRate: PEAK, warmupRatio: 0.05 });
    expectRate(lr(0, 30, config), PEAK / 2);
    expectRate(lr(1, 30, config), PEAK);
  });

  it('no warmup: step 0 is at the peak', () => {
    expectRate(lr(0, TOTAL, lrScheduleConfig({ learningRate: PEAK, kind: 'cosine' })), PEAK);
  });
});

describe('decay after warmup (W = 10, S = 100: progress = (step − 10) / 90)', () => {
  it('constant stays at the peak to the last step', () => {
    const config = lrScheduleConfig({ learningRate: PEAK, kind: 'constant', warmupSteps: WARMUP, minLrRatio: 0.5 });
    expectRate(lr(55, TOTAL, config), PEAK);
    expectRate(lr(TOTAL - 1, TOTAL, config), PEAK);
  });

  it('linear: half way at the middle, one decay step above the floor at the last step, the floor after', () => {
    const config = lrScheduleConfig({ learningRate: PEAK, kind: 'linear', warmupSteps: WARMUP });
    expectRate(lr(55, TOTAL, config), PEAK / 2);
    expectRate(lr(TOTAL - 1, TOTAL, config), PEAK / 90);
    expect(lr(TOTAL, TOTAL, config)).toBe(0);
    expect(lr(TOTAL + 20, TOTAL, config)).toBe(0);
  });

  it('cosine: half way at the middle, (1 + cos(89π/90))/2 of the peak at the last step', () => {
    const config = lrScheduleConfig({ learningRate: PEAK, kind: 'cosine', warmupSteps: WARMUP });
    expectRate(lr(55, TOTAL, config), PEAK / 2);
    // A quarter of the way (step 32.5 is not a step, so W = 20, S = 100, step 40): (1 + cos(π/4))/2.
    const quarter = lrScheduleConfig({ learningRate: PEAK, kind: 'cosine', warmupSteps: 20 });
    expectRate(lr(40, TOTAL, quarter), (PEAK * (1 + Math.SQRT1_2)) / 2);
    expectRate(lr(TOTAL - 1, TOTAL, config), (PEAK * (1 + Math.cos((89 * Math.PI) / 90))) / 2);
    expect(lr(TOTAL, TOTAL, config)).toBe(0);
  });

  it('minLrRatio sets the floor the decay approaches', () => {
    const linear = lrScheduleConfig({ learningRate: PEAK, kind: 'linear', warmupSteps: WARMUP, minLrRatio: 0.1 });
    const cosine = { ...linear, kind: 'cosine' as const };
    const min = PEAK * 0.1;
    expectRate(lr(55, TOTAL, linear), min + (PEAK - min) / 2);
    expectRate(lr(55, TOTAL, cosine), min + (PEAK - min) / 2);
    expectRate(lr(TOTAL - 1, TOTAL, linear), min + (PEAK - min) / 90);
    expectRate(lr(TOTAL, TOTAL, linear), min);
    expectRate(lr(TOTAL + 5, TOTAL, cosine), min);
  });

  it('rises through warmup, never rises after it, and never leaves [min, peak]', () => {
    for (const kind of ['linear', 'cosine'] as LrScheduleKind[]) {
      const config = lrScheduleConfig({ learningRate: PEAK, kind, warmupSteps: 7, minLrRatio: 0.2 });
      const rates = Array.from({ length: 60 }, (_, step) => lr(step, 50, config));
      for (let step = 1; step < rates.length; step++) {
        if (step < 7) expect(rates[step]).toBeGreaterThan(rates[step - 1]);
        else expect(rates[step]).toBeLessThanOrEqual(rates[step - 1]);
      }
      for (const rate of rates.slice(6)) {
        expect(rate).toBeLessThanOrEqual(PEAK);
        expect(rate).toBeGreaterThanOrEqual(PEAK * 0.2 * (1 - 1e-15));
      }
    }
  });

  it('warmup as long as the run leaves no decay', () => {
    const config = lrScheduleConfig({ learningRate: PEAK, kind: 'cosine', warmupSteps: 4 });
    expectRate(lr(3, 4, config), PEAK);
    expect(lr(4, 4, config)).toBe(0);
  });
});

describe('config', () => {
  it('defaults as documented, and bad values are refused with the setting named', () => {
    expect(lrScheduleConfig()).toEqual(DEFAULT_LR_SCHEDULE);
    expect(() => lrScheduleConfig({ learningRate: -1 })).toThrow(/learningRate/);
    expect(() => lrScheduleConfig({ kind: 'step' as LrScheduleKind })).toThrow(/kind/);
    expect(() => lrScheduleConfig({ warmupSteps: 1.5 })).toThrow(/warmupSteps/);
    expect(() => lrScheduleConfig({ warmupRatio: 2 })).toThrow(/warmupRatio/);
    expect(() => lrScheduleConfig({ minLrRatio: -0.1 })).toThrow(/minLrRatio/);
    expect(() => lr(-1, 10, lrScheduleConfig())).toThrow(/step/);
    expect(() => lr(0, 0, lrScheduleConfig())).toThrow(/totalSteps/);
  });
});
