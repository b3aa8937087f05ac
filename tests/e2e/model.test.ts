// The Model panel in headless Chromium: the plain page loads the default model, the pretrained tunelab-base, which
// continues a prompt in English; a page address naming no bundled model says so and loads the default. The other
// tests start with `?model=tiny` (app.ts): the built-in tiny model loads (fetched relative to the page) and its
// shape is shown; a model can be loaded from picked files or a folder; missing or broken files are explained by the
// loader, naming the file, and leave the previous model in use.

import { mkdtemp, readFile, rm, writeFile, copyFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { Page } from 'playwright-core';
import { baseModelDir, screenshotDir, text, tinyModelDir, withWorkspace } from './app.ts';

/** GPT-2's parameter count from config.json alone: wte, wpe, L blocks of 12C² + 13C, ln_f. */
function gpt2Parameters(config: { vocab_size: number; n_positions: number; n_embd: number; n_layer: number }): number {
  const C = config.n_embd;
  return config.vocab_size * C + config.n_positions * C + config.n_layer * (12 * C * C + 13 * C) + 2 * C;
}

async function modelFile(name: string): Promise<{ name: string; mimeType: string; buffer: Buffer }> {
  return { name, mimeType: 'application/octet-stream', buffer: await readFile(join(tinyModelDir, name)) };
}

/** Waits for the load that the last action started to finish, and returns the phase it ended in. */
async function loadSettled(page: Page): Promise<string> {
  await page.waitForSelector('[data-testid="model-summary"]:not([data-phase="loading"])', { timeout: 60_000 });
  return (await page.getByTestId('model-summary').getAttribute('data-phase')) ?? '';
}

/** Words of everyday English prose; a continuation in English is full of them, random tokens are not. */
const COMMON_WORDS = new Set(
  ('the of and to a in that is be it for as with by on not this are which have from or at but his an all will has ' +
    'was been our their we they he its so no may would more any such these those other there than upon shall i my you')
    .split(' '),
);

describe('the default model', () => {
  it('loads tunelab-base on the plain page, shows its name and shape, and continues a prompt in English', async () => {
    const config = JSON.parse(await readFile(join(baseModelDir, 'config.json'), 'utf8'));
    await withWorkspace(
      async ({ page }) => {
        page.setDefaultTimeout(120_000); // a 10M-parameter model on SwiftShader
        expect(await text(page, 'model-name')).toBe('tunelab-base');
        expect(await text(page, 'model-origin')).toBe('Built in');
        expect(await text(page, 'model-parameters')).toBe('10,101,760');
        expect(gpt2Parameters(config)).toBe(10_101_760);
        expect(await text(page, 'model-context')).toBe('256');
        expect(await text(page, 'model-vocab')).toBe('8,192');
        expect(await text(page, 'model-tokenizer')).toMatch(/^byte-level BPE \([\d,]+ merges\)$/);
        expect(await page.getByTestId('bundled-model-notice').count()).toBe(0);

        // A few greedy tokens of plain-text continuation: English words, mostly common ones.
        await page.getByTestId('style-text').check();
        await page.getByTestId('sampling-temperature').fill('0');
        await page.getByTestId('sampling-maxNewTokens').fill('12');
        await page.getByTestId('playground-prompt').fill('It is my duty to');
        await page.getByTestId('generate').click();
        await page.waitForSelector('[data-testid="answer-base"][data-phase="done"]');
        const answer = await text(page, 'answer-base');
        const words = answer.toLowerCase().match(/[a-z]+/g) ?? [];
        expect(words.length, answer).toBeGreaterThanOrEqual(6);
        expect(words.filter((w) => COMMON_WORDS.has(w)).length, answer).toBeGreaterThanOrEqual(3);
        expect(answer, 'letters, spaces and punctuation only').toMatch(/^[A-Za-z ,.;:'’-]+$/);
      },
      { model: null },
    );
  });

  it('says so when the page address names no bundled model, and loads the default instead', async () => {
    const modelRequests: string[] = [];
    await withWorkspace(
      async ({ page }) => {
        page.setDefaultTimeout(120_000);
        expect(await text(page, 'bundled-model-notice')).toBe(
          'The page address asks for a built-in model named “../tiny”, and there is none. ?model= takes one of: ' +
            'tunelab-base, tiny. The default model, tunelab-base, is loaded instead.',
        );
        expect(await text(page, 'model-name')).toBe('tunelab-base');
        // Not a name from the list, so nothing it points at is fetched: only the default model's files.
        const origin = new URL(page.url()).origin;
        expect(modelRequests.sort()).toEqual(
          ['config.json', 'model.safetensors', 'tokenizer.json'].map((file) => `${origin}/models/tunelab-base/${file}`),
        );
      },
      {
        model: '../tiny',
        before: async ({ context }) => {
          context.on('request', (request) => {
            if (request.url().includes('/models/')) modelRequests.push(request.url());
          });
        },
      },
    );
  });
});

describe('model panel', () => {
  it('loads the built-in tiny model on the first visit and shows its shape, tokenizer, GPU and run memory', async () => {
    const config = JSON.parse(await readFile(join(tinyModelDir, 'config.json'), 'utf8'));
    const modelRequests: string[] = [];
    await withWorkspace(
      async ({ page }) => {
        expect(await text(page, 'model-name')).toBe('tiny');
        expect(await text(page, 'model-origin')).toBe('Built in');
        expect(await text(page, 'model-parameters')).toBe(gpt2Parameters(config).toLocaleString('en-US'));
        expect(await text(page, 'model-layers')).toBe(String(config.n_layer));
        expect(await text(page, 'model-width')).toBe(String(config.n_embd));
        expect(await text(page, 'model-heads')).toBe(String(config.n_head));
        expect(await text(page, 'model-context')).toBe(String(config.n_positions));
        expect(await text(page, 'model-vocab')).toBe(String(config.vocab_size));
        expect(await text(page, 'model-tokenizer')).toBe('byte-level (one token per byte)');
        expect(await text(page, 'model-gpu')).toContain(await text(page, 'adapter-name'));
        // The memory a run needs comes from the planner in the worker once the model is there.
        await page.waitForFunction(() => document.querySelector('[data-testid="model-run-bytes"]')?.textContent?.trim() !== '–');
        expect(await text(page, 'model-run-bytes')).toMatch(/^\d+(\.\d)? (KiB|MiB|GiB)$/);
        await page.getByTestId('panel-model').screenshot({ path: `${screenshotDir}model-panel.png` });

        // Fetched relative to the page (the app is built with base './'), so it works from any sub-path.
        const origin = new URL(page.url()).origin;
        expect(modelRequests.sort()).toEqual(
          ['config.json', 'model.safetensors', 'tokenizer.json'].map((file) => `${origin}/models/tiny/${file}`),
        );
      },
      {
        before: async ({ context }) => {
          // The worker fetches the files, so listen on the whole context, not only the page.
          context.on('request', (request) => {
            if (request.url().includes('/models/')) modelRequests.push(request.url());
          });
        },
      },
    );
  });

  it('loads a model from picked files, and names the missing or broken file when it cannot', async () => {
    await withWorkspace(async ({ page }) => {
      const filesInput = page.getByTestId('model-files-input');

      // A folder without tokenizer.json: the loader says which file is missing; the built-in model stays.
      await filesInput.setInputFiles([await modelFile('config.json'), await modelFile('model.safetensors')]);
      expect(await loadSettled(page)).toBe('failed');
      const missing = await text(page, 'model-error');
      expect(missing).toContain('has no tokenizer.json');
      expect(missing).toContain('the previous one is still in use');
      expect(await page.getByTestId('model-error').getAttribute('data-code')).toBe('bad-model');
      expect(await text(page, 'model-name')).toBe('tiny');

      // A config.json that is not JSON.
      await filesInput.setInputFiles([
        { name: 'config.json', mimeType: 'application/json', buffer: Buffer.from('{"model_type": "gpt2", ') },
        await modelFile('model.safetensors'),
        await modelFile('tokenizer.json'),
      ]);
      expect(await loadSettled(page)).toBe('failed');
      expect(await text(page, 'model-error')).toMatch(/config\.json .*is not valid JSON/);

      // A checkpoint cut short.
      const checkpoint = await modelFile('model.safetensors');
      await filesInput.setInputFiles([
        await modelFile('config.json'),
        { ...checkpoint, buffer: checkpoint.buffer.subarray(0, 1000) },
        await modelFile('tokenizer.json'),
      ]);
      expect(await loadSettled(page)).toBe('failed');
      expect(await text(page, 'model-error')).toContain('model.safetensors');

      // The three good files load; the summary says where the model came from.
      await filesInput.setInputFiles([await modelFile('config.json'), await modelFile('model.safetensors'), await modelFile('tokenizer.json')]);
      expect(await loadSettled(page)).toBe('ready');
      expect(await page.getByTestId('model-error').count()).toBe(0);
      expect(await text(page, 'model-origin')).toBe('Your files');
      expect(await text(page, 'model-parameters')).toBe('124,736');

      // And back to the built-in one.
      await page.getByTestId('load-bundled-model').click();
      expect(await loadSettled(page)).toBe('ready');
      expect(await text(page, 'model-origin')).toBe('Built in');
    });
  });

  it('loads a model from a picked folder, named after the folder, ignoring other files in it', async () => {
    const parent = await mkdtemp(join(tmpdir(), 'tunelab-model-'));
    const folder = join(parent, 'my-gpt');
    await mkdir(folder);
    try {
      for (const name of ['config.json', 'model.safetensors', 'tokenizer.json', 'MODEL_CARD.md']) {
        await copyFile(join(tinyModelDir, name), join(folder, name));
      }
      await writeFile(join(folder, 'notes.txt'), 'not part of the model');
      await withWorkspace(async ({ page }) => {
        await page.getByTestId('model-folder-input').setInputFiles(folder);
        expect(await loadSettled(page)).toBe('ready');
        expect(await text(page, 'model-name')).toBe('my-gpt');
        expect(await text(page, 'model-origin')).toBe('Your files');
      });
    } finally {
      await rm(parent, { recursive: true, force: true });
    }
  });

  it('keeps the frozen weights in f16 on request: a run needs less memory, the model still answers, the choice is kept', async () => {
    await withWorkspace(async ({ page }) => {
      page.setDefaultTimeout(120_000); // estimates and a reload on a busy SwiftShader machine
      /** The run-memory figure once it has settled (the estimate follows the data report and the setting). */
      const settledBytes = async (): Promise<string> => {
        let last = '';
        for (;;) {
          const now = await text(page, 'model-run-bytes');
          if (now === last && now !== '–') return now;
          last = now;
          await new Promise((resolve) => setTimeout(resolve, 1000));
        }
      };
      const toBytes = (s: string) => Number.parseFloat(s) * { KiB: 1024, MiB: 1024 ** 2, GiB: 1024 ** 3 }[s.split(' ')[1] as 'KiB'];
      const f32 = await settledBytes();
      const toggle = page.getByTestId('frozen-weights-f16');
      expect(await toggle.isChecked()).toBe(false);
      await toggle.check();
      await page.waitForFunction((before) => document.querySelector('[data-testid="model-run-bytes"]')?.textContent?.trim() !== before, f32);
      // The estimate is asked again for f16: the Conv1D matrices and wte take half the bytes.
      const f16 = await settledBytes();
      expect(toBytes(f16)).toBeLessThan(toBytes(f32));

      // The playground's base model runs on the packed weights.
      await page.getByTestId('playground-prompt').fill('Hello');
      await page.getByTestId('generate').click();
      await page.waitForSelector('[data-testid="playground-columns"][data-running="false"]');
      expect(await page.getByTestId('answer-base').getAttribute('data-phase')).toBe('done');

      // Remembered across a reload; turned off, the figure is the f32 one again.
      await page.reload();
      await page.waitForSelector('[data-testid="model-summary"][data-phase="ready"]');
      expect(await page.getByTestId('frozen-weights-f16').isChecked()).toBe(true);
      expect(await settledBytes()).toBe(f16);
      await page.getByTestId('frozen-weights-f16').uncheck();
      await page.waitForFunction((before) => document.querySelector('[data-testid="model-run-bytes"]')?.textContent?.trim() === before, f32);
    });
  });
});
