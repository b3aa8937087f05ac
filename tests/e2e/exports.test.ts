// Exports of a saved run in headless Chromium: after a short training run, the Runs panel's Export… row downloads
// - the merged model (.zip of config.json, model.safetensors, tokenizer.json): its weights are exactly the engine's
//   mergeAdapter of the bundled model and the run's own PEFT adapter (downloaded too), computed here in Node;
// - the ONNX file: ModelProto bytes that onnxruntime-web (in Node) opens as input_ids → logits;
// - the TRL recipe (.zip of train.jsonl, validation.jsonl, train.py, README.md) with the run's split and learning
//   rate; also for a run whose data was not stored, from the Data panel when it holds the same data (and a clear
//   refusal when it does not);
// and "Try the exported model" runs the ONNX file in onnxruntime-web in the tab: the same greedy tokens as the engine
// and max |Δlogit| ≤ 1e-3 at the prompt's last position. That tolerance: both sides compute in f32 (the engine's
// WGSL kernels on the GPU with the adapter unmerged, onnxruntime's CPU kernels on merged weights), so they differ by
// rounding in different summation orders only — about 1e-6 relative on logits of order 1–10 for this 2-layer model;
// 1e-3 leaves room for that and still catches any real difference (a missed module, a wrong scale, a transposed
// weight all move logits by 1e-2 or more). onnxruntime-web is fetched only when asked, from the app's own origin,
// and runs under the page's CSP without a violation.

import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { unzipSync } from 'fflate';
import * as ort from 'onnxruntime-web';
import { describe, expect, it } from 'vitest';
import type { Download, Page } from 'playwright-core';
import { mergeAdapter } from '../../src/engine/interop/merge.ts';
import { importPeftAdapter } from '../../src/engine/interop/peft.ts';
import { parseSafetensors, readTensorF32 } from '../../src/engine/io/safetensors.ts';
import { parseModelConfig } from '../../src/engine/model/config.ts';
import { pasteData, screenshotDir, text, tinyModelDir, withWorkspace } from './app.ts';

/** Ten short chat examples: 8 train, 2 validate; "yes" is learned in a few steps even by the random tiny model. */
const DATA = Array.from({ length: 10 }, (_, i) =>
  JSON.stringify({ messages: [{ role: 'user', content: `hi ${i}` }, { role: 'assistant', content: 'yes' }] }),
).join('\n');
const LEARNING_RATE = '0.01';
/** See the header: f32 on both sides, different summation orders. */
const LOGIT_TOLERANCE = 1e-3;

async function download(page: Page, testId: string): Promise<{ name: string; bytes: Uint8Array }> {
  const [file] = await Promise.all([page.waitForEvent('download', { timeout: 120_000 }), page.getByTestId(testId).click()]);
  return { name: (file as Download).suggestedFilename(), bytes: new Uint8Array(await readFile((await file.path())!)) };
}

/** The zip's files by path, and the one folder they all sit in. */
function unzipFolder(bytes: Uint8Array): { folder: string; files: Map<string, Uint8Array> } {
  const entries = Object.entries(unzipSync(bytes)).filter(([path]) => !path.endsWith('/'));
  const folders = new Set(entries.map(([path]) => path.split('/')[0]));
  expect(folders.size, 'one folder in the zip').toBe(1);
  const [folder] = folders;
  return { folder, files: new Map(entries.map(([path, data]) => [path.slice(folder.length + 1), data])) };
}

const decode = (bytes: Uint8Array | undefined) => new TextDecoder().decode(bytes);

/** Deletes the request stored with a run, as for a run saved before requests were kept. */
async function forgetStoredRequest(page: Page, runId: string): Promise<void> {
  await page.evaluate(
    (id) =>
      new Promise<void>((resolve, reject) => {
        const open = indexedDB.open('tunelab-runs');
        open.onerror = () => reject(open.error);
        open.onsuccess = () => {
          const tx = open.result.transaction('requests', 'readwrite');
          tx.objectStore('requests').delete(id);
          tx.oncomplete = () => {
            open.result.close();
            resolve();
          };
          tx.onerror = () => reject(tx.error);
        };
      }),
    runId,
  );
}

describe('exports of a saved run', () => {
  it('downloads the merged model, the ONNX file and the recipe, and the ONNX model answers like the engine', async () => {
    const requests: string[] = [];
    await withWorkspace(
      async ({ page }) => {
        // ---- a short run: 8 training examples, batch 4, 2 epochs = 4 steps ------------------------------------------
        expect(await pasteData(page, DATA)).not.toBe('errors');
        await page.getByTestId('validation-fraction').fill('20');
        await page.getByLabel('Batch size', { exact: true }).fill('4');
        await page.getByLabel('Epochs').fill('2');
        await page.getByLabel('Learning rate', { exact: true }).fill(LEARNING_RATE);
        await page.waitForSelector('[data-testid="data-report"][data-checking="false"]');
        await page.waitForFunction(() => !(document.querySelector('[data-testid="train-start"]') as HTMLButtonElement).disabled);
        await page.getByTestId('train-start').click();
        const ended = '[data-testid="train-status"]:is([data-phase="finished"], [data-phase="failed"], [data-phase="cancelled"])';
        await page.waitForSelector(ended, { timeout: 240_000 });
        expect(await page.getByTestId('train-status').getAttribute('data-phase'), await text(page, 'train-status')).toBe('finished');
        await page.waitForSelector('[data-testid="run-row"][data-source="trained"] [data-testid="run-status"]:text-is("Finished")', {
          timeout: 60_000,
        });
        const row = page.locator('[data-testid="run-row"][data-source="trained"]').first();
        const runId = (await row.getAttribute('data-run-id'))!;
        expect(requests.filter((url) => /ort[.-]/.test(url)), 'onnxruntime is not fetched before it is needed').toEqual([]);

        await row.getByTestId('export-menu').click();
        const exportRow = page.locator(`[data-testid="export-row"][data-run-id="${runId}"]`);
        await exportRow.waitFor();

        // ---- the run's PEFT adapter, and the merged model: exactly base ⊕ adapter --------------------------------------
        const adapterZip = unzipFolder((await download(page, 'export-adapter')).bytes);
        const merged = await download(page, 'export-merged');
        expect(merged.name).toMatch(/-merged\.zip$/);
        const checkpoint = unzipFolder(merged.bytes);
        expect(checkpoint.folder).toMatch(/-merged$/);
        expect([...checkpoint.files.keys()].sort()).toEqual(['config.json', 'model.safetensors', 'tokenizer.json']);
        const config = parseModelConfig(JSON.parse(decode(checkpoint.files.get('config.json'))));
        const tinyConfig = parseModelConfig(JSON.parse(await readFile(join(tinyModelDir, 'config.json'), 'utf8')));
        expect(config).toEqual(tinyConfig);
        expect(JSON.parse(decode(checkpoint.files.get('tokenizer.json')))).toEqual(
          JSON.parse(await readFile(join(tinyModelDir, 'tokenizer.json'), 'utf8')),
        );
        const adapter = importPeftAdapter(
          decode(adapterZip.files.get('adapter_config.json')),
          adapterZip.files.get('adapter_model.safetensors')!,
          config,
        );
        const baseFile = parseSafetensors(new Uint8Array(await readFile(join(tinyModelDir, 'model.safetensors'))));
        const base = new Map([...baseFile.tensors.keys()].map((name) => [name, readTensorF32(baseFile, name)]));
        const expected = mergeAdapter(config, base, adapter.spec, adapter.tensors);
        const mergedFile = parseSafetensors(checkpoint.files.get('model.safetensors')!);
        expect([...mergedFile.tensors.keys()].sort()).toEqual([...expected.keys()].sort());
        let changed = 0;
        for (const [name, values] of expected) {
          const got = readTensorF32(mergedFile, name);
          expect(got, name).toEqual(values);
          if (got.some((v, i) => v !== base.get(name)?.[i] && v !== base.get(`transformer.${name}`)?.[i])) changed++;
        }
        // The trained adapter really changed the adapted weights (B is no longer zero after 4 steps at lr 0.01).
        expect(changed).toBe(adapter.tensors.size);

        // ---- the ONNX file -----------------------------------------------------------------------------------------
        const onnxFile = await download(page, 'export-onnx');
        expect(onnxFile.name).toMatch(/\.onnx$/);
        expect([...onnxFile.bytes.subarray(0, 2)]).toEqual([0x08, 0x08]); // ModelProto.ir_version = 8
        expect(onnxFile.bytes.length).toBeGreaterThan(mergedFile.tensors.size * 4);
        ort.env.wasm.numThreads = 1;
        const session = await ort.InferenceSession.create(onnxFile.bytes, { executionProviders: ['wasm'] });
        expect(session.inputNames).toEqual(['input_ids']);
        expect(session.outputNames).toEqual(['logits']);
        await session.release();

        // ---- the recipe: the stored request, then the Data panel for a run without one, then a refusal -----------------
        const recipe = await download(page, 'export-recipe');
        expect(recipe.name).toMatch(/-recipe\.zip$/);
        const recipeFiles = unzipFolder(recipe.bytes).files;
        expect([...recipeFiles.keys()].sort()).toEqual(['README.md', 'train.jsonl', 'train.py', 'validation.jsonl']);
        const trainPy = decode(recipeFiles.get('train.py'));
        expect(trainPy).toMatch(new RegExp(`^LEARNING_RATE = ${LEARNING_RATE.replace('.', '\\.')}\\s`, 'm'));
        expect(trainPy).toMatch(/^BATCH_SIZE = 4\s/m);
        expect(trainPy).toMatch(/^EPOCHS = 2\.0\s/m);
        expect(trainPy).toMatch(/^LORA_R = \d+\s/m);
        const lines = (name: string) => decode(recipeFiles.get(name)).trim().split('\n');
        expect(lines('train.jsonl')).toHaveLength(8);
        expect(lines('validation.jsonl')).toHaveLength(2);
        const original = new Set(DATA.split('\n').map((line) => JSON.stringify(JSON.parse(line))));
        for (const line of [...lines('train.jsonl'), ...lines('validation.jsonl')]) expect(original.has(line)).toBe(true);

        await forgetStoredRequest(page, runId);
        const fromPanel = unzipFolder((await download(page, 'export-recipe')).bytes).files;
        expect(decode(fromPanel.get('train.jsonl'))).toBe(decode(recipeFiles.get('train.jsonl')));
        expect(decode(fromPanel.get('train.py'))).toBe(trainPy);

        await pasteData(page, DATA.split('\n').slice(0, 9).join('\n'));
        await page.getByTestId('export-recipe').click();
        await page.waitForSelector('[data-testid="runs-problem"]');
        expect(await text(page, 'runs-problem')).toContain('Paste that data into the Data panel exactly as it was');

        // ---- "Try the exported model": onnxruntime-web in the tab against the engine -------------------------------
        await page.getByTestId('try-onnx-open').click();
        await page.getByTestId('try-prompt').fill('hi 3');
        await page.getByTestId('try-max-tokens').fill('6');
        await page.getByTestId('try-run').click();
        await page.waitForSelector('[data-testid="try-phase"][data-phase="done"], [data-testid="try-phase"][data-phase="failed"]', {
          timeout: 180_000,
        });
        expect(await page.getByTestId('try-error').count(), await text(page, 'try-phase')).toBe(0);
        const ids = async (testId: string) => JSON.parse((await page.getByTestId(testId).getAttribute('data-ids')) ?? 'null') as number[];
        const engineIds = await ids('try-engine-ids');
        const onnxIds = await ids('try-onnx-ids');
        expect(engineIds.length).toBeGreaterThan(0);
        expect(onnxIds).toEqual(engineIds);
        expect(await text(page, 'try-onnx-answer')).toBe(await text(page, 'try-engine-answer'));
        expect(await page.getByTestId('try-match').getAttribute('data-match')).toBe('true');
        const maxDelta = Number(await page.getByTestId('try-max-delta').getAttribute('data-value'));
        console.log(`exports e2e: engine vs ONNX greedy tokens ${JSON.stringify(engineIds)}, max |Δlogit| = ${maxDelta.toExponential(2)}`);
        expect(maxDelta).toBeLessThanOrEqual(LOGIT_TOLERANCE);

        await page.getByTestId('panel-runs').screenshot({ path: `${screenshotDir}exports.png` });

        // A second prompt reuses the ONNX session (no second export), and still agrees.
        await page.getByTestId('try-style').selectOption('text');
        await page.getByTestId('try-prompt').fill('The ');
        await page.getByTestId('try-run').click();
        await page.waitForSelector('[data-testid="try-phase"][data-phase="done"]', { timeout: 180_000 });
        expect(await ids('try-onnx-ids')).toEqual(await ids('try-engine-ids'));
        expect(Number(await page.getByTestId('try-max-delta').getAttribute('data-value'))).toBeLessThanOrEqual(LOGIT_TOLERANCE);

        // ---- the runtime came from the app itself, under the page's CSP ---------------------------------------------
        const origin = new URL(page.url()).origin;
        expect(requests.filter((url) => new URL(url).origin !== origin), 'requests to other hosts').toEqual([]);
        expect(requests.some((url) => /\/assets\/ort-wasm-simd-threaded-[\w-]+\.wasm$/.test(url))).toBe(true);
        expect(await page.evaluate(() => (window as unknown as { cspViolations: string[] }).cspViolations)).toEqual([]);
      },
      {
        before: async (session) => {
          session.context.on('request', (request) => {
            if (!/^(data|blob):/.test(request.url())) requests.push(request.url());
          });
          await session.context.addInitScript(() => {
            const violations: string[] = [];
            (window as unknown as { cspViolations: string[] }).cspViolations = violations;
            document.addEventListener('securitypolicyviolation', (event) => violations.push(`${event.effectiveDirective} ${event.blockedURI}`));
          });
        },
      },
    );
  });
});
