// The Runs panel in headless Chromium: an imported adapter is kept as a run (IndexedDB) and is still there, and still
// in the playground, after a reload; exporting it gives a valid PEFT adapter (the .zip's safetensors parses and holds
// exactly the tensors that were imported, adapter_config.json reads back through the engine's PEFT importer); rename
// and delete (with a confirmation) stick; a bad adapter is refused with the reason; several runs' loss curves share
// one chart; a full disk names what to delete and loses nothing.

import { readFile } from 'node:fs/promises';
import { strToU8, unzipSync, zipSync } from 'fflate';
import { describe, expect, inject, it } from 'vitest';
import type { Download, Page } from 'playwright-core';
import { importPeftAdapter } from '../../src/engine/interop/peft.ts';
import { parseSafetensors, readTensorF32 } from '../../src/engine/io/safetensors.ts';
import { screenshotDir, text, withWorkspace, workspaceReady } from './app.ts';
import { importAdapterFiles, randomTinyAdapter, tinyModelShape, type TinyAdapter } from './adapter-files.ts';

async function download(page: Page, testId: string, runIndex = 0): Promise<{ name: string; bytes: Uint8Array }> {
  const [file] = await Promise.all([page.waitForEvent('download'), page.getByTestId(testId).nth(runIndex).click()]);
  return { name: (file as Download).suggestedFilename(), bytes: new Uint8Array(await readFile((await file.path())!)) };
}

/** The saved runs' names, as listed. */
async function runNames(page: Page): Promise<string[]> {
  return page.getByTestId('run-name').allTextContents();
}

async function reloadWorkspace(page: Page): Promise<void> {
  await page.reload();
  await workspaceReady(page);
  await page.waitForSelector('[data-testid="runs-table"], [data-testid="runs-empty"]');
}

/** The adapter files hold exactly `adapter`'s tensors, under PEFT's names, and a config the engine reads back. */
async function expectSameAdapter(configJson: string, weights: Uint8Array, adapter: TinyAdapter): Promise<void> {
  const file = parseSafetensors(weights);
  const expectedNames = [...adapter.tensors.keys()].flatMap((path) => [
    `base_model.model.transformer.${path}.lora_A.weight`,
    `base_model.model.transformer.${path}.lora_B.weight`,
  ]);
  expect([...file.tensors.keys()].sort()).toEqual(expectedNames.sort());
  for (const [path, pair] of adapter.tensors) {
    expect(readTensorF32(file, `base_model.model.transformer.${path}.lora_A.weight`)).toEqual(pair.a);
    expect(readTensorF32(file, `base_model.model.transformer.${path}.lora_B.weight`)).toEqual(pair.b);
  }
  const config = JSON.parse(configJson);
  expect(config).toMatchObject({ peft_type: 'LORA', r: adapter.spec.rank, lora_alpha: adapter.spec.alpha });
  const reread = importPeftAdapter(configJson, weights, await tinyModelShape());
  expect(reread.spec).toMatchObject({ rank: 4, alpha: 8, targetModules: ['c_attn', 'c_fc'], layers: null });
}

/** A trained-looking run record for the comparison chart: step losses falling from `start`, evaluations every 5 steps. */
function syntheticRun(id: string, name: string, start: number, steps: number, createdAt: number) {
  const metrics: unknown[] = [];
  for (let step = 1; step <= steps; step++) {
    metrics.push({ type: 'step', step, totalSteps: steps, loss: start * Math.exp(-step / 12) + 0.4 });
    if (step % 5 === 0) metrics.push({ type: 'eval', step, loss: start * Math.exp(-step / 15) + 0.6, perplexity: 0 });
  }
  const last = (type: string) => (metrics.filter((m) => (m as { type: string }).type === type).pop() as { loss: number }).loss;
  return {
    id,
    name,
    source: 'trained',
    createdAt,
    status: 'finished',
    finalLoss: last('step'),
    finalValLoss: last('eval'),
    config: { learningRate: 0.001 },
    datasetFingerprint: 'f00dfeedcafe',
    metrics,
    modelName: 'tiny',
    adapter: null,
  };
}

describe('runs panel', () => {
  it('keeps an imported adapter across a reload, exports it as valid PEFT files, renames and deletes it', async () => {
    const adapter = await randomTinyAdapter(11);
    await withWorkspace(async ({ page }) => {
      await page.getByTestId('panel-runs').scrollIntoViewIfNeeded();
      await page.waitForSelector('[data-testid="runs-empty"]');

      await importAdapterFiles(page, adapter);
      expect(await page.getByTestId('run-row').count()).toBe(1);
      expect(await page.getByTestId('run-row').getAttribute('data-source')).toBe('imported');
      expect(await text(page, 'run-status')).toBe('Imported');
      expect(await text(page, 'run-final-loss')).toBe('–');
      const [name] = await runNames(page);
      expect(name).toMatch(/^Imported /);
      // The import became the playground's adapter.
      await page.waitForSelector('[data-testid="adapter-info"]');

      // Reload: the run is still listed, and the playground has its adapter again.
      await reloadWorkspace(page);
      expect(await runNames(page)).toEqual([name]);
      await page.waitForSelector('[data-testid="adapter-info"]');
      expect(await text(page, 'adapter-info')).toContain(`“${name}”`);

      // Export as a .zip: a folder with the two PEFT files.
      const zip = await download(page, 'export-run');
      expect(zip.name).toMatch(/\.zip$/);
      const entries = unzipSync(zip.bytes);
      const folder = zip.name.replace(/\.zip$/, '');
      expect(Object.keys(entries).sort()).toEqual([`${folder}/adapter_config.json`, `${folder}/adapter_model.safetensors`]);
      await expectSameAdapter(
        new TextDecoder().decode(entries[`${folder}/adapter_config.json`]),
        entries[`${folder}/adapter_model.safetensors`],
        adapter,
      );
      // And each file on its own.
      const config = await download(page, 'export-run-config');
      const weights = await download(page, 'export-run-weights');
      expect([config.name, weights.name]).toEqual(['adapter_config.json', 'adapter_model.safetensors']);
      await expectSameAdapter(new TextDecoder().decode(config.bytes), weights.bytes, adapter);

      // Rename (Enter saves), and it sticks across a reload.
      await page.getByTestId('rename-run').click();
      await page.getByTestId('rename-input').fill('Random LoRA for tests');
      await page.getByTestId('rename-input').press('Enter');
      // The row shows its name again once the rename is stored (an IndexedDB write), so wait for it.
      await expect.poll(() => runNames(page), { timeout: 10_000 }).toEqual(['Random LoRA for tests']);
      await reloadWorkspace(page);
      expect(await runNames(page)).toEqual(['Random LoRA for tests']);

      // Delete asks first; "Keep" keeps it.
      await page.getByTestId('delete-run').click();
      expect(await page.getByRole('group', { name: 'Confirm deleting Random LoRA for tests' }).textContent()).toContain('cannot be undone');
      await page.getByRole('button', { name: 'Keep' }).click();
      expect(await page.getByTestId('run-row').count()).toBe(1);
      await page.getByTestId('delete-run').click();
      await page.getByTestId('confirm-delete').click();
      await page.waitForSelector('[data-testid="runs-empty"]');
      await reloadWorkspace(page);
      expect(await page.getByTestId('run-row').count()).toBe(0);
    });
  });

  it('saves a finished training run with its adapter: kept across a reload, used by the playground, exported as PEFT', async () => {
    await withWorkspace(async ({ page }) => {
      // A quarter epoch of the sentiment starter: 2 steps at batch 8, evaluated before and after (SwiftShader is slow).
      await page.getByLabel('Epochs').fill('0.25');
      await page.getByLabel('Evaluate every N steps').fill('0');
      await page.getByTestId('train-start').click();
      await page.waitForSelector('[data-testid="train-status"][data-phase="finished"]', { timeout: 240_000 });

      // Saved on its own when it ended, with its final losses, and the playground switched to its adapter.
      await page.waitForSelector('[data-testid="run-row"][data-source="trained"]', { timeout: 30_000 });
      const [name] = await runNames(page);
      expect(await text(page, 'run-status')).toBe('Finished');
      // The saved final loss is the training panel's last loss (4 decimals there, 3 here).
      expect(Math.abs(Number(await text(page, 'run-final-loss')) - Number(await text(page, 'stat-train-loss')))).toBeLessThanOrEqual(0.00051);
      expect(Number(await text(page, 'run-final-loss'))).toBeGreaterThan(0);
      expect(Number(await text(page, 'run-final-val-loss'))).toBeGreaterThan(0);
      await page.waitForSelector('[data-testid="adapter-info"]');
      expect(await text(page, 'adapter-info')).toContain(`Adapter of run “${name}”`);
      expect(await text(page, 'adapter-info')).toContain('rank 8, alpha 16, on c_attn, attn.c_proj, c_fc, mlp.c_proj in 2 layers');

      // The playground answers with the base model and with the trained adapter.
      await page.getByTestId('sampling-temperature').fill('0');
      await page.getByTestId('sampling-maxNewTokens').fill('16');
      await page.getByTestId('generate').click();
      await page.waitForSelector('[data-testid="answer-tuned"][data-phase="done"]', { timeout: 120_000 });
      await page.waitForSelector('[data-testid="answer-base"][data-phase="done"]', { timeout: 120_000 });

      // Its loss curve can be compared.
      await page.getByTestId('compare-run').check();
      expect(await page.getByTestId('compare-chart').getAttribute('data-series')).toBe('1');

      // After a reload the run is still there, and the playground uses its adapter again.
      await reloadWorkspace(page);
      expect(await runNames(page)).toEqual([name]);
      expect(await text(page, 'run-status')).toBe('Finished');
      await page.waitForSelector('[data-testid="adapter-info"]');
      expect(await text(page, 'adapter-info')).toContain(`“${name}”`);

      // Exported: valid safetensors with every trained A and B (B no longer zero), and a config PEFT and the engine read.
      const zip = await download(page, 'export-run');
      const folder = zip.name.replace(/\.zip$/, '');
      const entries = unzipSync(zip.bytes);
      const configJson = new TextDecoder().decode(entries[`${folder}/adapter_config.json`]);
      const weights = entries[`${folder}/adapter_model.safetensors`];
      const file = parseSafetensors(weights);
      expect(file.tensors.size).toBe(2 * 4 * 2); // 2 layers × 4 modules × (A, B)
      const lastB = readTensorF32(file, 'base_model.model.transformer.h.1.mlp.c_proj.lora_B.weight');
      expect(lastB.some((v) => v !== 0)).toBe(true);
      const reread = importPeftAdapter(configJson, weights, await tinyModelShape());
      expect(reread.spec).toMatchObject({ rank: 8, alpha: 16, targetModules: ['c_attn', 'attn.c_proj', 'c_fc', 'mlp.c_proj'], layers: null });
    });
  });

  it('refuses an adapter that does not fit the model, or an incomplete pair of files, with the reason; takes a .zip', async () => {
    await withWorkspace(async ({ page }) => {
      const adapter = await randomTinyAdapter();
      // A rank-4 config over rank-2 tensors: the shapes do not match what the config says.
      const wrongRank = adapter.adapterConfigJson.replace('"r": 4', '"r": 2');
      await page.getByTestId('import-adapter-input').setInputFiles([
        { name: 'adapter_config.json', mimeType: 'application/json', buffer: Buffer.from(wrongRank) },
        { name: 'adapter_model.safetensors', mimeType: 'application/octet-stream', buffer: Buffer.from(adapter.adapterModel) },
      ]);
      await page.waitForSelector('[data-testid="import-error"]');
      expect(await page.getByTestId('import-error').getAttribute('data-code')).toBe('bad-model');
      expect(await text(page, 'import-error')).toMatch(/has shape \[4, 64\] but r=2/);

      await page.getByTestId('import-adapter-input').setInputFiles([
        { name: 'adapter_config.json', mimeType: 'application/json', buffer: Buffer.from(adapter.adapterConfigJson) },
      ]);
      await page.waitForFunction(() => document.querySelector('[data-testid="import-error"]')?.textContent?.includes('adapter_model.safetensors is missing'));
      expect(await page.getByTestId('run-row').count()).toBe(0);
      expect(await page.getByTestId('playground-no-adapter').count()).toBe(1);

      // A .zip of a PEFT folder imports too, named after the zip.
      const zip = zipSync({
        'my-adapter/adapter_config.json': strToU8(adapter.adapterConfigJson),
        'my-adapter/adapter_model.safetensors': adapter.adapterModel,
      });
      await page.getByTestId('import-adapter-input').setInputFiles([{ name: 'my-adapter.zip', mimeType: 'application/zip', buffer: Buffer.from(zip) }]);
      await page.waitForSelector('[data-testid="run-row"]');
      expect(await runNames(page)).toEqual(['my-adapter']);
      expect(await page.getByTestId('import-error').count()).toBe(0);
      expect(await text(page, 'adapter-info')).toContain('“my-adapter”');
    });
  });

  it('compares the loss curves of several runs on one chart', async () => {
    await withWorkspace(async ({ page }) => {
      // Two finished runs, written the way the app stores them.
      const now = Date.now();
      const seeded = [syntheticRun('run-a', 'rank 8, lr 1e-3', 3.2, 40, now - 60_000), syntheticRun('run-b', 'rank 4, lr 3e-4', 3.4, 30, now)];
      await page.evaluate(async (records) => {
        const db = await new Promise<IDBDatabase>((resolve, reject) => {
          const request = indexedDB.open('tunelab-runs'); // the version the app opened it at
          request.onsuccess = () => resolve(request.result);
          request.onerror = () => reject(request.error);
        });
        const tx = db.transaction('runs', 'readwrite');
        for (const record of records) tx.objectStore('runs').put(record);
        await new Promise((resolve) => (tx.oncomplete = resolve));
        db.close();
      }, seeded);
      await reloadWorkspace(page);
      expect(await runNames(page)).toEqual(['rank 4, lr 3e-4', 'rank 8, lr 1e-3']); // newest first
      expect(await page.getByTestId('run-final-loss').allTextContents()).toEqual(seeded.map((r) => r.finalLoss.toFixed(4)).reverse());
      expect(await page.getByTestId('run-final-val-loss').first().textContent()).toBe(seeded[1].finalValLoss.toFixed(4));

      const compare = page.getByTestId('compare-run');
      await compare.nth(0).check();
      await compare.nth(1).check();
      const chart = page.getByTestId('compare-chart');
      await chart.waitFor();
      expect(await chart.getAttribute('data-series')).toBe('2');
      expect(await chart.locator('canvas').count()).toBe(1);
      // uPlot's legend lists a train and a validation series per run.
      const legend = (await chart.locator('.u-legend').textContent()) ?? '';
      for (const name of ['rank 4, lr 3e-4 · train', 'rank 4, lr 3e-4 · validation', 'rank 8, lr 1e-3 · train', 'rank 8, lr 1e-3 · validation']) {
        expect(legend).toContain(name);
      }
      await page.getByTestId('panel-runs').screenshot({ path: `${screenshotDir}runs.png` });

      await compare.nth(0).uncheck();
      expect(await chart.getAttribute('data-series')).toBe('1');
    });
  });

  it('says what to delete when storage is full, keeps the unsaved run to save again, and loses nothing saved', async () => {
    const small = await randomTinyAdapter(1); // about 20 KiB
    const large = await randomTinyAdapter(2, 32); // about 150 KiB
    await withWorkspace(
      async ({ page }) => {
        await importAdapterFiles(page, small);
        await page.getByTestId('rename-run').click();
        await page.getByTestId('rename-input').fill('kept run');
        await page.getByTestId('rename-input').press('Enter');
        await page.waitForFunction(() => document.querySelector('[data-testid="run-name"]')?.textContent === 'kept run');

        await importAdapterFiles(page, large);
        await page.waitForSelector('[data-testid="runs-problem"][data-kind="quota"]');
        const problem = await text(page, 'runs-problem');
        expect(problem).toMatch(/^The browser's storage for this page is full, so "Imported [^"]+" was not saved\./);
        expect(problem).toMatch(/Delete runs you no longer need \(the largest: "kept run" \(\d+(\.\d)? KiB\)\), then press "Save again"\./);
        expect(problem).toContain('Runs saved before are untouched.');
        expect(await runNames(page)).toEqual(['kept run']);
        // The run that did not fit waits in memory; it can be saved again or discarded.
        expect(await page.getByTestId('retry-save').count()).toBe(1);
        await page.getByTestId('retry-save').click();
        await page.waitForFunction(() => document.querySelector('[data-testid="runs-problem"]')?.getAttribute('data-kind') === 'quota');
        await page.getByRole('button', { name: 'Discard this run' }).click();
        expect(await page.getByTestId('runs-problem').count()).toBe(0);

        await reloadWorkspace(page);
        expect(await runNames(page)).toEqual(['kept run']);
      },
      {
        // Chromium's DevTools protocol sets this origin's quota; IndexedDB reads it when the page opens its database,
        // so it is set before the first load: room for the small adapter, not for the large one.
        before: async ({ context, page }) => {
          const cdp = await context.newCDPSession(page);
          await cdp.send('Storage.overrideQuotaForOrigin', { origin: new URL(inject('appUrl')).origin, quotaSize: 100_000 });
        },
      },
    );
  });
});
