// The Data panel in headless Chromium: the validation report follows the editor live; an error names its line and
// takes the cursor there; fixing it cleans the report; the starter datasets are clean and show token statistics;
// the editor's text, the format and the settings survive a reload; a full storage is reported, not fatal.

import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { chatLines, editorCursor, pasteData, reportSettled, screenshotDir, setEditorText, text, withWorkspace } from './app.ts';

const STARTERS = ['sentiment', 'pirate', 'capitals'] as const;

async function starterText(id: string): Promise<string> {
  return readFile(fileURLToPath(new URL(`../../src/ui/datasets/${id}.jsonl`, import.meta.url)), 'utf8');
}

describe('data panel', () => {
  it('shows a broken line live, takes the cursor to it, and is clean once it is fixed', async () => {
    await withWorkspace(async ({ page }) => {
      const lines = chatLines(12);
      lines[4] = lines[4].slice(0, -1); // line 5 loses its closing brace
      expect(await pasteData(page, lines.join('\n'))).toBe('errors');

      const issue = page.getByTestId('data-errors').getByTestId('data-issue');
      expect(await issue.count()).toBe(1);
      expect(await issue.getAttribute('data-line')).toBe('5');
      expect(await issue.getAttribute('data-code')).toBe('json-syntax');
      expect(await issue.textContent()).toMatch(/Line 5, column \d+/);
      expect(await text(page, 'data-status')).toContain('1 error to fix before training');
      expect(await page.getByTestId('gutter-error').getAttribute('data-line')).toBe('5');
      expect(await page.getByTestId('data-text').getAttribute('aria-invalid')).toBe('true');

      // The error is a button: from the keyboard it puts the cursor on line 5, in the editor, and highlights it.
      await issue.focus();
      await page.keyboard.press('Enter');
      expect(await editorCursor(page)).toEqual({ line: 5, focused: true });
      expect(await page.getByTestId('highlighted-line').getAttribute('data-line')).toBe('5');
      await page.getByTestId('panel-data').screenshot({ path: `${screenshotDir}data-error.png` });

      // Typing the missing brace at the end of that line fixes it.
      await page.keyboard.press('End');
      await page.keyboard.type('}');
      expect(await reportSettled(page)).toBe('clean');
      expect(await text(page, 'data-status')).toBe('Ready to train: 12 examples, no problems found');
      expect(await page.getByTestId('data-errors').count()).toBe(0);
      expect(await page.getByTestId('gutter-error').count()).toBe(0);
      expect(await page.getByTestId('highlighted-line').count()).toBe(0);
    });
  });

  it('drops the answer to a check that a newer edit overtook while it was running', async () => {
    await withWorkspace(async ({ page }) => {
      // Record every example count the report ever shows.
      await page.evaluate(() => {
        const shown = () => document.querySelector('[data-testid="stat-examples"]')?.textContent?.trim();
        const seen: string[] = [shown() ?? ''];
        (window as unknown as { seenCounts: string[] }).seenCounts = seen;
        const report = document.querySelector('[data-testid="data-report"]')!;
        new MutationObserver(() => {
          const count = shown();
          if (count && seen[seen.length - 1] !== count) seen.push(count);
        }).observe(report, { subtree: true, childList: true, characterData: true });
      });
      // A large text takes the worker seconds to check; the edit after it is sent while that check still runs.
      await setEditorText(page, chatLines(20_000).join('\n'));
      await page.waitForTimeout(300); // past the 200 ms debounce: the large check is in flight
      const broken = chatLines(11);
      broken[2] = '{"messages": [}';
      await setEditorText(page, broken.join('\n'));
      expect(await reportSettled(page)).toBe('errors');
      expect(await page.getByTestId('data-errors').getByTestId('data-issue').first().getAttribute('data-line')).toBe('3');
      const seen = await page.evaluate(() => (window as unknown as { seenCounts: string[] }).seenCounts);
      // From the first visit's starter (64 examples) straight to the newest text's report: the large text's 20,000
      // examples were never shown.
      expect(seen).toEqual(['64', '10']);
    });
  });

  it('offers three starter datasets whose reports are clean, with token statistics', async () => {
    await withWorkspace(async ({ page }) => {
      for (const id of STARTERS) {
        const data = await starterText(id);
        const examples = data.trim().split('\n').length;
        const validation = Math.max(1, Math.round(examples * 0.1));
        expect(examples).toBeGreaterThanOrEqual(30);
        expect(examples).toBeLessThanOrEqual(80);

        await page.getByTestId(`starter-${id}`).click();
        expect(await reportSettled(page), `report of starter ${id}`).toBe('clean');
        expect(await page.getByTestId(`starter-${id}`).getAttribute('aria-pressed')).toBe('true');
        expect(await page.getByTestId('data-text').inputValue()).toBe(data);
        expect(await text(page, 'stat-examples')).toBe(String(examples));
        expect(await text(page, 'stat-split')).toBe(`${examples - validation} / ${validation}`);
        expect(await text(page, 'stat-format')).toBe('JSON Lines, chat messages (detected)');
        // Byte-level tokenizer: every example fits the 128-token context, none is cut.
        const perExample = await text(page, 'stat-tokens-per-example');
        const [min, mean, max] = [...perExample.matchAll(/[\d.]+/g)].map((m) => Number(m[0]));
        expect(min).toBeGreaterThan(0);
        expect(mean).toBeGreaterThanOrEqual(min);
        expect(max).toBeLessThan(128);
        expect(Number((await text(page, 'stat-tokens')).replace(/,/g, ''))).toBeGreaterThan(examples * min - 1);
        expect(await page.getByTestId('stat-truncated').count()).toBe(0);
        expect(Number(await text(page, 'stat-steps'))).toBe(Math.ceil((examples - validation) / 8));
      }
      await page.getByTestId('panel-data').screenshot({ path: `${screenshotDir}data-starter.png` });

      // Replacing the text can be undone.
      const mine = chatLines(10).join('\n');
      await pasteData(page, mine);
      await page.getByTestId('starter-sentiment').click();
      await page.getByTestId('undo-replace').click();
      expect(await page.getByTestId('data-text').inputValue()).toBe(mine);
    });
  });

  it('opens a data file and a separate validation file, whose problems are reported by file and line', async () => {
    await withWorkspace(async ({ page }) => {
      const rows = Array.from({ length: 12 }, (_, i) => `"Say ${i} twice.","${i} ${i}"`);
      const csv = ['prompt,completion', ...rows].join('\n');
      // UTF-16 with a byte-order mark, as spreadsheets save "Unicode text".
      const utf16 = Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from(csv, 'utf16le')]);
      await page.getByTestId('data-file-input').setInputFiles({ name: 'pairs.csv', mimeType: 'text/csv', buffer: utf16 });
      // The file is read asynchronously; once its text is in the editor, a check of it is under way.
      await expect.poll(() => page.getByTestId('data-text').inputValue()).toBe(csv);
      expect(await reportSettled(page)).toBe('clean');
      expect(await page.getByTestId('data-format').inputValue()).toBe('csv');
      expect(await text(page, 'stat-format')).toBe('CSV, prompt/completion');
      expect(await text(page, 'stat-split')).toBe('11 / 1');

      // A validation file replaces the held-out share; its second example is broken.
      const validation = ['prompt,completion', '"Say 20 twice.","20 20"', '"Say 21 twice.,"21 21"'].join('\n');
      await page.getByTestId('validation-file-input').setInputFiles({ name: 'check.csv', mimeType: 'text/csv', buffer: Buffer.from(validation) });
      await page.waitForSelector('[data-testid="validation-file"]');
      expect(await reportSettled(page)).toBe('errors');
      expect(await page.getByTestId('validation-fraction').isDisabled()).toBe(true);
      expect(await text(page, 'validation-file')).toContain('check.csv');
      const issues = page.getByTestId('data-errors').getByTestId('data-issue');
      expect(await issues.count()).toBeGreaterThan(0);
      for (const issue of await issues.all()) {
        expect(await issue.textContent()).toMatch(/^Validation file, line 3\b/);
        // Not in the editor, so not a link into it.
        expect(await issue.evaluate((element) => element.tagName)).not.toBe('BUTTON');
      }

      await page.getByTestId('remove-validation-file').click();
      expect(await reportSettled(page)).toBe('clean');
      expect(await text(page, 'stat-split')).toBe('11 / 1');
    });
  });

  it('keeps the editor text, the format and the settings across a reload', async () => {
    await withWorkspace(async ({ page }) => {
      const data = chatLines(14).join('\n');
      await pasteData(page, data);
      await page.getByTestId('data-format').selectOption('jsonl');
      await page.getByLabel('Learning rate', { exact: true }).fill('0.0005');
      await page.getByLabel('Epochs', { exact: true }).fill('7');
      await page.getByLabel('Schedule', { exact: true }).selectOption('cosine');
      await page.getByTestId('target-c_fc').uncheck();
      await page.getByTestId('layers-last').check();
      await page.getByLabel('Hold out for validation').fill('20');
      await reportSettled(page);
      expect(await text(page, 'stat-split')).toBe('11 / 3');

      await page.reload();
      await reportSettled(page);
      await page.waitForSelector('[data-testid="model-summary"][data-phase="ready"]');
      expect(await page.getByTestId('data-text').inputValue()).toBe(data);
      expect(await page.getByTestId('data-format').inputValue()).toBe('jsonl');
      expect(await page.getByLabel('Learning rate', { exact: true }).inputValue()).toBe('0.0005');
      expect(await page.getByLabel('Epochs', { exact: true }).inputValue()).toBe('7');
      expect(await page.getByLabel('Schedule', { exact: true }).inputValue()).toBe('cosine');
      expect(await page.getByTestId('target-c_fc').isChecked()).toBe(false);
      expect(await page.getByTestId('target-c_attn').isChecked()).toBe(true);
      expect(await page.getByTestId('layers-last').isChecked()).toBe(true);
      expect(await page.getByLabel('Hold out for validation').inputValue()).toBe('20');
      // The report after the reload is about the restored text and split.
      expect(await text(page, 'stat-split')).toBe('11 / 3');

      // Reset brings the defaults back (and they are what the next visit sees).
      await page.getByTestId('reset-settings').click();
      expect(await page.getByLabel('Learning rate', { exact: true }).inputValue()).toBe('0.01');
      expect(await page.getByTestId('target-c_fc').isChecked()).toBe(true);
    });
  });

  it('says so when the browser storage is full, and keeps working', async () => {
    await withWorkspace(
      async ({ page }) => {
        await pasteData(page, chatLines(10).join('\n'));
        await page.waitForSelector('[data-testid="data-save-problem"]');
        expect(await text(page, 'data-save-problem')).toContain('storage for this page is full');
        expect(await reportSettled(page)).toBe('clean');
      },
      {
        before: async ({ context }) => {
          await context.addInitScript(() => {
            Storage.prototype.setItem = function () {
              throw new DOMException('The quota has been exceeded.', 'QuotaExceededError');
            };
          });
        },
      },
    );
  });
});
