// TimeBudget, which decides when a `tunelab pretrain --time-limit` run must stop: it keeps room for three of the
// longest pauses between trainer events (the step under way, an evaluation falling due, the steps in flight) plus
// the save, and a slow save measured once widens the room.

import { describe, expect, it } from 'vitest';
import { TimeBudget } from '../../src/engine/train/pretrain.ts';

describe('TimeBudget', () => {
  it('stops when the time left no longer covers three of the longest gaps, the save and a margin', () => {
    const budget = new TimeBudget(60_000, 2_000, 0);
    budget.event(1_000); // first step after 1 s
    for (let t = 1_100; t <= 53_000; t += 100) budget.event(t); // steps every 100 ms
    expect(budget.reserveMs(53_000)).toBe(2_000 + 3 * 1_000 + 1_500);
    expect(budget.mustStop(53_000)).toBe(false);
    expect(budget.mustStop(60_000 - 6_500 - 1)).toBe(false);
    expect(budget.mustStop(60_000 - 6_500)).toBe(true);
  });

  it('counts a long evaluation, and the gap still open, once they are seen', () => {
    const budget = new TimeBudget(60_000, 1_000, 0);
    budget.event(100);
    budget.event(5_100); // an evaluation took 5 s
    expect(budget.reserveMs(5_100)).toBe(1_000 + 15_000 + 1_500);
    // Nothing for 10 s (a stalled step): the open gap counts too.
    expect(budget.reserveMs(15_100)).toBe(1_000 + 30_000 + 1_500);
    expect(budget.mustStop(15_100)).toBe(false);
    expect(budget.mustStop(20_000)).toBe(true);
  });

  it('allows twice a measured save', () => {
    const budget = new TimeBudget(100_000, 1_000, 0);
    budget.event(10);
    budget.saved(4_000);
    expect(budget.reserveMs(10)).toBe(8_000 + 30 + 1_500);
    budget.saved(100); // a faster save does not shrink the room
    expect(budget.reserveMs(10)).toBe(8_000 + 30 + 1_500);
  });
});
