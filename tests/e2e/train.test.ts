// The Training panel in headless Chromium on SwiftShader: a short run on a tiny pasted dataset (short answers, small
// batch, a dozen steps, so it takes seconds, not minutes) moves the progress bar, feeds the chart, shows validation
// perplexity and probe answers; Pause stops the steps, Resume goes on, the run finishes and is kept in the Runs list;
// a second run is cancelled after its first step.
//
// No refusal test: the memory planner refuses only runs whose buffers break the device's limits, and with the tiny
// model (2 layers, width 64, context 128) even the settings' largest batch (512) stays far below SwiftShader's limits;
// the refusal path is the engine planner's, tested in tests/io/planner.test.ts.

import { describe, expect, it } from 'vitest';
import type { Page } from 'playwright-core';
import { pasteData, screenshotDir, text, withWorkspace } from './app.ts';

/** Ten short chat examples: the answer is always "yes", which even a random tiny model picks up in a few steps. */
const DATA = Array.from({ length: 10 }, (_, i) =>
  JSON.stringify({ messages: [{ role: 'user', content: `hi ${i}` }, { role: 'assistant', content: 'yes' }] }),
).join('\n');

async function attribute(page: Page, testId: string, name: string): Promise<string> {
  return (await page.getByTestId(testId).getAttribute(name)) ?? '';
}

async function stepShown(page: Page): Promise<number> {
  return Number(await attribute(page, 'train-progress', 'data-step'));
}

/** Waits until the progress bar shows a step above `step`. */
async function stepPasses(page: Page, step: number, timeout = 120_000): Promise<void> {
  await page.waitForFunction(
    (after) => Number(document.querySelector('[data-testid="train-progress"]')?.getAttribute('data-step')) > after,
    step,
    { timeout },
  );
}

async function phaseIs(page: Page, phase: string, timeout = 120_000): Promise<void> {
  await page.waitForSelector(`[data-testid="train-phase"]:text-is("${phase}")`, { timeout });
}

describe('training panel', () => {
  it('trains with live progress, chart, perplexity and probes; pauses, resumes, finishes; a second run cancels', async () => {
    await withWorkspace(async ({ page }) => {
      expect(await pasteData(page, DATA)).not.toBe('errors');
      await page.getByTestId('validation-fraction').fill('20'); // 8 examples train, 2 validate (and are probed)
      await page.getByLabel('Batch size', { exact: true }).fill('4');
      await page.getByLabel('Epochs').fill('6'); // 2 steps per epoch: 12 steps
      await page.getByLabel('Evaluate every N steps').fill('3');
      await page.getByLabel('Learning rate', { exact: true }).fill('0.01');
      await page.getByLabel('Warmup steps').fill('1');
      await page.waitForSelector('[data-testid="data-report"][data-checking="false"]');

      const start = page.getByTestId('train-start');
      await page.waitForFunction(() => !(document.querySelector('[data-testid="train-start"]') as HTMLButtonElement).disabled);
      expect(await page.getByTestId('train-pause').isDisabled()).toBe(true);
      expect(await page.getByTestId('train-resume').isDisabled()).toBe(true);
      expect(await page.getByTestId('train-cancel').isDisabled()).toBe(true);
      // Keyboard operable: Start is a button that Enter presses.
      await start.focus();
      await page.keyboard.press('Enter');

      // Before the first step: the base model's answers (step 0) and the validation perplexity of the base model.
      await page.waitForSelector('[data-testid="probe-snapshot"][data-step="0"]', { timeout: 120_000 });
      expect(await page.getByTestId('probe-prompt').allTextContents()).toHaveLength(2);
      await page.waitForFunction(() => document.querySelector('[data-testid="stat-val-perplexity"]')?.textContent?.trim() !== '–');
      const basePerplexity = Number(await text(page, 'stat-val-perplexity'));
      expect(basePerplexity).toBeGreaterThan(1);

      // The progress bar moves and the chart gains points.
      await stepPasses(page, 0);
      expect(await attribute(page, 'train-progress', 'data-total')).toBe('12');
      expect(Number(await attribute(page, 'loss-chart', 'data-train-points'))).toBeGreaterThan(0);
      expect(await text(page, 'train-progress-detail')).toMatch(/Epoch \d+\.\d\d of 6 · [\d,]+ tokens\/s · (about .+ left|done)/);
      expect(Number(await text(page, 'stat-train-loss'))).toBeGreaterThan(0);
      expect(await text(page, 'stat-lr')).toMatch(/^\d\.\d\de-\d$/);

      // Pause: the steps stop advancing.
      await page.getByTestId('train-pause').click();
      await phaseIs(page, 'paused');
      expect(await page.getByTestId('train-resume').isEnabled()).toBe(true);
      // Focus moved from the (now disabled) Pause button to a control that works.
      expect(await page.evaluate(() => (document.activeElement as HTMLButtonElement | null)?.disabled)).toBe(false);
      const pausedAt = await stepShown(page);
      expect(pausedAt).toBeLessThan(12);
      await page.waitForTimeout(3_000);
      expect(await stepShown(page)).toBe(pausedAt);
      expect(Number(await attribute(page, 'loss-chart', 'data-train-points'))).toBe(pausedAt);

      // Resume: they advance again, and the run finishes.
      await page.getByTestId('train-resume').click();
      await stepPasses(page, pausedAt);
      await phaseIs(page, 'finished', 240_000);
      expect(await stepShown(page)).toBe(12);
      expect(Number(await attribute(page, 'loss-chart', 'data-train-points'))).toBe(12);
      expect(Number(await attribute(page, 'loss-chart', 'data-eval-points'))).toBe(5); // steps 0, 3, 6, 9, 12
      const snapshots = await page.getByTestId('probe-snapshot').evaluateAll((rows) => rows.map((r) => Number(r.getAttribute('data-step'))));
      expect(snapshots).toEqual([12, 9, 6, 3, 0]); // newest first
      expect(Number(await text(page, 'stat-val-perplexity'))).toBeLessThan(basePerplexity);
      expect(await text(page, 'train-status')).toContain('Finished');
      expect(await start.isEnabled()).toBe(true);
      expect(await page.getByTestId('train-failure').count()).toBe(0);

      await page.getByTestId('panel-training').screenshot({ path: `${screenshotDir}training.png` });

      // The run is kept in the Runs list (the worker's getRunRecord, with its adapter from exportAdapter).
      await page.waitForSelector('[data-testid="run-name"]', { timeout: 30_000 });
      expect(await text(page, 'run-name')).toMatch(/^Custom data, /);

      // Train again, and cancel after the first step: the run ends at once, keeping the adapter as it is.
      await start.click();
      await phaseIs(page, 'running');
      await stepPasses(page, 0);
      await page.getByTestId('train-cancel').click();
      await phaseIs(page, 'cancelled');
      const cancelledAt = await stepShown(page);
      expect(cancelledAt).toBeLessThan(12);
      expect(await text(page, 'train-status')).toBe(
        `Cancelled at step ${cancelledAt}; the adapter as trained so far is in the playground.`,
      );
      await page.waitForFunction(() => document.querySelectorAll('[data-testid="run-name"]').length === 2, undefined, { timeout: 30_000 });
    });
  });
});
