// The Playground panel in headless Chromium: before there is an adapter the fine-tuned column says how to get one;
// with an adapter (PEFT files made in Node from a random, non-zero LoRA and imported as a learner would) the base and
// the fine-tuned answers to the same prompt appear side by side, differ, and switching the adapter off gives the base
// answer again; Stop ends a generation early; the prompt and the sampling settings survive a reload.

import { describe, expect, it } from 'vitest';
import type { Page } from 'playwright-core';
import { screenshotDir, text, withWorkspace, workspaceReady } from './app.ts';
import { importAdapterFiles, randomTinyAdapter } from './adapter-files.ts';

/** Presses Generate and waits until that generation has started. */
async function generate(page: Page): Promise<void> {
  const columns = page.getByTestId('playground-columns');
  const before = Number(await columns.getAttribute('data-generations'));
  await page.getByTestId('generate').click();
  await page.waitForFunction((n) => Number(document.querySelector('[data-testid="playground-columns"]')?.getAttribute('data-generations')) > n, before);
}

/** Waits until neither column is generating, and returns both answers. */
async function answersSettled(page: Page): Promise<{ base: string; tuned: string }> {
  await page.waitForSelector('[data-testid="playground-columns"][data-running="false"]', { timeout: 120_000 });
  const answer = async (side: string) => (await page.getByTestId(`answer-${side}`).count() ? await page.getByTestId(`answer-${side}`).textContent() : null) ?? '';
  return { base: await answer('base'), tuned: await answer('tuned') };
}

async function setSampling(page: Page, values: Record<string, number>): Promise<void> {
  for (const [key, value] of Object.entries(values)) await page.getByTestId(`sampling-${key}`).fill(String(value));
}

describe('playground', () => {
  it('shows base and fine-tuned answers to the same prompt side by side, and the adapter switch', async () => {
    const adapter = await randomTinyAdapter();
    await withWorkspace(async ({ page }) => {
      const playground = page.getByTestId('panel-playground');
      await playground.scrollIntoViewIfNeeded();

      // No adapter yet: the right column says so instead of showing a second base answer.
      expect(await page.getByTestId('playground-no-adapter').textContent()).toContain('train or import an adapter');
      expect(await page.getByTestId('adapter-switch').isDisabled()).toBe(true);

      // Greedy decoding, so that the answers are a function of the model alone.
      await setSampling(page, { temperature: 0, maxNewTokens: 24, repetitionPenalty: 1 });
      await page.getByTestId('playground-prompt').fill('The pizza was cold and soggy.');
      expect(await text(page, 'rendered-prompt')).toBe('User: The pizza was cold and soggy. Assistant:');
      await generate(page);
      const baseOnly = await answersSettled(page);
      expect(await page.getByTestId('answer-base').getAttribute('data-phase')).toBe('done');
      expect(await text(page, 'answer-base-status')).toMatch(/^\d+ tokens? · [\d.]+ tokens\/s · /);
      expect(await page.getByTestId('answer-tuned').count()).toBe(0);

      await importAdapterFiles(page, adapter);
      await page.waitForSelector('[data-testid="adapter-info"]');
      expect(await text(page, 'adapter-info')).toContain('rank 4, alpha 8, on c_attn, c_fc in 2 layers');
      expect(await page.getByTestId('adapter-switch').isChecked()).toBe(true);

      await generate(page);
      const both = await answersSettled(page);
      expect(await page.getByTestId('answer-base').getAttribute('data-phase')).toBe('done');
      expect(await page.getByTestId('answer-tuned').getAttribute('data-phase')).toBe('done');
      // The base column is unchanged by the adapter; the fine-tuned column answers differently.
      expect(both.base).toBe(baseOnly.base);
      expect(both.tuned).not.toBe(both.base);
      expect(both.base.length + both.tuned.length).toBeGreaterThan(0);
      await playground.screenshot({ path: `${screenshotDir}playground.png` });

      // Adapter off: the same generator without the adapter's kernels gives the base model's answer.
      await page.getByTestId('adapter-switch').uncheck();
      await generate(page);
      const switchedOff = await answersSettled(page);
      expect(switchedOff.tuned).toBe(both.base);
      expect(await page.getByTestId('column-tuned').textContent()).toContain('(adapter off)');
    });
  });

  it('stops a generation early, and keeps the prompt and settings across a reload', async () => {
    await withWorkspace(async ({ page }) => {
      // Sampling at a high temperature rarely draws end-of-text early; the context (128) bounds the answer.
      await setSampling(page, { temperature: 1.5, topK: 0, topP: 1, maxNewTokens: 4000, seed: 3 });
      await page.getByTestId('playground-prompt').fill('Tell me a long story.');
      await generate(page);
      await page.waitForFunction(() => Number(/(\d+) tokens?/.exec(document.querySelector('[data-testid="answer-base-status"]')?.textContent ?? '')?.[1] ?? 0) >= 2, undefined, {
        timeout: 60_000,
      });
      await page.getByTestId('stop-generation').click();
      await answersSettled(page);
      expect(await text(page, 'answer-base-status')).toMatch(/ · stopped$/);
      const stoppedAt = Number(/^(\d+) tokens?/.exec(await text(page, 'answer-base-status'))?.[1]);
      expect(stoppedAt).toBeGreaterThanOrEqual(2);
      expect(stoppedAt).toBeLessThan(100); // the prompt leaves 100+ positions of the 128-token context

      // A bad value is named, and Generate waits until it is fixed.
      await page.getByTestId('sampling-topP').fill('0');
      expect(await page.locator('#sampling-topP-help').textContent()).toContain('Must be more than 0.');
      expect(await page.getByTestId('generate').isDisabled()).toBe(true);
      await page.getByTestId('sampling-topP').fill('0.9');
      expect(await page.getByTestId('generate').isDisabled()).toBe(false);

      await page.reload();
      await workspaceReady(page);
      expect(await page.getByTestId('playground-prompt').inputValue()).toBe('Tell me a long story.');
      expect(await page.getByTestId('sampling-temperature').inputValue()).toBe('1.5');
      expect(await page.getByTestId('sampling-topP').inputValue()).toBe('0.9');
      expect(await page.getByTestId('sampling-maxNewTokens').inputValue()).toBe('4000');
    });
  });
});
