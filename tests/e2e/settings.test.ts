// The Training settings panel in headless Chromium: defaults with explanations, checks of every value, and the
// estimate before a run (optimizer steps from the data report, GPU memory and trainable parameters from the memory
// planner in the worker) following the settings. Also: every control of the workspace has an accessible name.

import { describe, expect, it } from 'vitest';
import type { Page } from 'playwright-core';
import { reportSettled, screenshotDir, text, withWorkspace } from './app.ts';

/** Waits until the estimate shows `expected` in the element `testId`. */
async function estimateShows(page: Page, testId: string, expected: string | RegExp): Promise<void> {
  await page.waitForFunction(
    ([id, source, flags]) => {
      const shown = document.querySelector(`[data-testid="${id}"]`)?.textContent?.replace(/\s+/g, ' ').trim() ?? '';
      return new RegExp(source, flags).test(shown);
    },
    [testId, typeof expected === 'string' ? `^${expected.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$` : expected.source, typeof expected === 'string' ? '' : expected.flags],
    { timeout: 30_000 },
  );
}

/** LoRA parameters, rank R, on GPT-2 modules of width C: A (R,in) + B (out,R) per adapted module and layer. */
function loraParameters(C: number, layers: number, rank: number, modules: readonly ('c_attn' | 'attn.c_proj' | 'c_fc' | 'mlp.c_proj')[]): number {
  const shapes = { c_attn: [C, 3 * C], 'attn.c_proj': [C, C], c_fc: [C, 4 * C], 'mlp.c_proj': [4 * C, C] } as const;
  return layers * modules.reduce((sum, m) => sum + rank * (shapes[m][0] + shapes[m][1]), 0);
}

describe('training settings panel', () => {
  it('estimates steps, memory and trainable parameters from the data and settings, and follows changes', async () => {
    await withWorkspace(async ({ page }) => {
      // First visit: the sentiment starter (64 examples, 58 for training) at batch 8 for 5 epochs.
      expect(await text(page, 'stat-split')).toBe('58 / 6');
      await estimateShows(page, 'estimate-steps', 'about 40');
      await estimateShows(page, 'estimate-trainable', loraParameters(64, 2, 8, ['c_attn', 'attn.c_proj', 'c_fc', 'mlp.c_proj']).toLocaleString('en-US'));
      await estimateShows(page, 'estimate-memory', /^\d+(\.\d)? (KiB|MiB)$/);
      expect(await page.getByTestId('estimate-fits').count()).toBe(1);
      const memoryAtBatch8 = await text(page, 'estimate-memory');

      await page.getByLabel('Gradient accumulation').fill('2');
      await estimateShows(page, 'estimate-steps', 'about 20');

      // A larger batch re-checks the data (fewer batches per epoch) and needs more memory.
      await page.getByLabel('Batch size', { exact: true }).fill('16');
      await reportSettled(page);
      expect(await text(page, 'stat-steps')).toBe('4');
      await estimateShows(page, 'estimate-steps', 'about 10');
      await page.waitForFunction(
        (before) => document.querySelector('[data-testid="estimate-memory"]')?.textContent?.trim() !== before,
        memoryAtBatch8,
      );

      // Fewer modules, fewer layers, another rank: the planner's trainable count follows.
      await page.getByTestId('target-c_fc').uncheck();
      await page.getByTestId('target-mlp.c_proj').uncheck();
      await page.getByTestId('layers-last').check();
      await page.getByLabel('LoRA rank').fill('4');
      await estimateShows(page, 'estimate-trainable', loraParameters(64, 1, 4, ['c_attn', 'attn.c_proj']).toLocaleString('en-US'));
      expect(await text(page, 'lora-scale')).toBe('4'); // alpha 16 / rank 4
      await page.getByTestId('setting-rsLora').check();
      expect(await text(page, 'lora-scale')).toBe('8'); // 16 / √4
      await page.getByTestId('panel-train-settings').screenshot({ path: `${screenshotDir}train-settings.png` });
    });
  });

  it('marks values that are not allowed, in words, and holds the estimate until they are fixed', async () => {
    await withWorkspace(async ({ page }) => {
      const batch = page.getByLabel('Batch size', { exact: true });
      await batch.fill('0');
      expect(await batch.getAttribute('aria-invalid')).toBe('true');
      expect(await text(page, 'setting-batchSize-problem')).toBe('Must be at least 1.');
      await page.waitForSelector('[data-testid="estimate-invalid"]');

      await page.getByLabel('Learning rate', { exact: true }).fill('');
      expect(await text(page, 'setting-learningRate-problem')).toBe('Enter a number.');

      await page.getByTestId('layers-last').check();
      await page.getByLabel('Last N layers').fill('3'); // the tiny model has 2
      expect(await text(page, 'setting-loraLastLayers-problem')).toBe('Must be at most 2.');

      for (const module of ['c_attn', 'attn.c_proj', 'c_fc', 'mlp.c_proj']) await page.getByTestId(`target-${module}`).uncheck();
      expect(await page.getByText('Choose at least one module.').count()).toBe(1);

      await batch.fill('4');
      await page.getByLabel('Learning rate', { exact: true }).fill('0.002');
      await page.getByLabel('Last N layers').fill('2');
      await page.getByTestId('target-c_attn').check();
      expect(await page.getByTestId('estimate-invalid').count()).toBe(0);
      expect(await batch.getAttribute('aria-invalid')).toBe('false');
      await estimateShows(page, 'estimate-trainable', loraParameters(64, 2, 8, ['c_attn']).toLocaleString('en-US'));
    });
  });

  it('gives every control of the workspace an accessible name', async () => {
    await withWorkspace(async ({ page }) => {
      const unnamed = await page.evaluate(() => {
        const controls = [...document.querySelectorAll<HTMLElement>('#workspace input, #workspace select, #workspace textarea, #workspace button')];
        return controls
          .filter((el) => el.getAttribute('aria-hidden') !== 'true')
          .filter((el) => {
            const labelled = (el as HTMLInputElement).labels?.length || el.getAttribute('aria-label') || el.getAttribute('aria-labelledby');
            const buttonText = el.tagName === 'BUTTON' && el.textContent?.trim();
            return !labelled && !buttonText;
          })
          .map((el) => el.outerHTML.slice(0, 120));
      });
      expect(unnamed).toEqual([]);
    });
  });
});
