// Runs that survive (issue 9), in headless Chromium on SwiftShader: a fine-tune saves a checkpoint to IndexedDB every
// few steps; reloading the page mid-run leaves it in the Runs list as interrupted with Resume, and resuming finishes
// it with the same loss curve, step for step and bit for bit, as an uninterrupted run with the same seed. A GPU reset
// (the device destroyed, as a driver reset does) mid-run: the run says so, gets a new device, goes back to its last
// checkpoint and finishes with the same curve. A full disk when a checkpoint is written: the run goes on, the message
// says what to delete, and the checkpoint saved before stays.
//
// The page is reloaded while the run trains, as soon as its first checkpoint is saved (30 steps take several seconds
// here, a reload starts within milliseconds). The GPU reset is done while the run is paused a few steps past a
// checkpoint, so that the test, not the scheduler, decides where it happens.

import { describe, expect, it } from 'vitest';
import type { Page } from 'playwright-core';
import { pasteData, screenshotDir, text, withWorkspace, workspaceReady } from './app.ts';

/** Ten short chat examples (the answer is always "yes"). */
const DATA = Array.from({ length: 10 }, (_, i) =>
  JSON.stringify({ messages: [{ role: 'user', content: `hi ${i}` }, { role: 'assistant', content: 'yes' }] }),
).join('\n');
const TOTAL_STEPS = 30;

interface StoredRun {
  id: string;
  name: string;
  status: string;
  checkpointStep?: number;
  metrics: { type: string; step: number; loss: number; lr?: number }[];
}

/** Sets up the data and settings: 8 examples train at batch 4 (2 steps an epoch), 15 epochs = 30 steps. */
async function prepare(page: Page): Promise<void> {
  // SwiftShader on a busy machine: a reload recompiles every kernel, which can take a minute.
  page.setDefaultTimeout(120_000);
  expect(await pasteData(page, DATA)).not.toBe('errors');
  await page.getByTestId('validation-fraction').fill('20');
  await page.getByLabel('Batch size', { exact: true }).fill('4');
  await page.getByLabel('Epochs').fill('15');
  await page.getByLabel('Evaluate every N steps').fill('10');
  await page.getByLabel('Checkpoint every N steps').fill('4');
  await page.getByLabel('Learning rate', { exact: true }).fill('0.01');
  await page.getByLabel('Warmup steps').fill('1');
  await page.getByTestId('setting-seed').fill('7');
  await page.waitForSelector('[data-testid="data-report"][data-checking="false"]');
  await page.waitForFunction(() => !(document.querySelector('[data-testid="train-start"]') as HTMLButtonElement).disabled);
}

async function phaseIs(page: Page, phase: string, timeout = 180_000): Promise<void> {
  await page.waitForSelector(`[data-testid="train-phase"]:text-is("${phase}")`, { timeout });
}

/** Waits until the Training panel says a checkpoint at `step` or later is saved; returns its step. */
async function checkpointAtLeast(page: Page, step: number): Promise<number> {
  await page.waitForFunction(
    (least) => Number(document.querySelector('[data-testid="train-checkpoint"]')?.getAttribute('data-step') ?? -1) >= least,
    step,
    { timeout: 120_000 },
  );
  return Number(await page.getByTestId('train-checkpoint').getAttribute('data-step'));
}

/** Waits for the first checkpoint, pauses the run, and returns the step of the checkpoint saved when it stopped. */
async function pauseAfterCheckpoint(page: Page): Promise<number> {
  await checkpointAtLeast(page, 4);
  await page.getByTestId('train-pause').click();
  await phaseIs(page, 'paused');
  const step = Number(await page.getByTestId('train-progress').getAttribute('data-step'));
  expect(step).toBeLessThan(TOTAL_STEPS);
  expect(await page.getByTestId('train-checkpoint-problem').count(), await page.getByTestId('panel-training').innerText()).toBe(0);
  return Number(await page.getByTestId('train-checkpoint').getAttribute('data-step'));
}

/** The runs and checkpoints the app keeps in IndexedDB, read the way any page script could. */
async function stored(page: Page): Promise<{ runs: StoredRun[]; checkpoints: { runId: string; step: number }[] }> {
  return page.evaluate(async () => {
    const db = await new Promise<IDBDatabase>((resolve, reject) => {
      const request = indexedDB.open('tunelab-runs');
      request.onsuccess = () => resolve(request.result);
      request.onerror = () => reject(request.error);
    });
    const all = <T,>(store: string) =>
      new Promise<T[]>((resolve, reject) => {
        const request = db.transaction(store).objectStore(store).getAll();
        request.onsuccess = () => resolve(request.result as T[]);
        request.onerror = () => reject(request.error);
      });
    const runs = await all<StoredRun>('runs');
    const checkpoints = (await all<{ runId: string; step: number }>('checkpoints')).map(({ runId, step }) => ({ runId, step }));
    db.close();
    return { runs, checkpoints };
  });
}

function losses(run: StoredRun): number[] {
  return run.metrics.filter((m) => m.type === 'step').map((m) => m.loss);
}
function evalLosses(run: StoredRun): number[] {
  return run.metrics.filter((m) => m.type === 'eval').map((m) => m.loss);
}

/** The run the Training panel shows now: the newest stored run. */
async function newestRun(page: Page): Promise<StoredRun> {
  const id = await page.getByTestId('run-row').first().getAttribute('data-run-id');
  const run = (await stored(page)).runs.find((r) => r.id === id);
  if (!run) throw new Error(`run ${id} is not stored`);
  return run;
}

/** The uninterrupted run's step losses and evaluation losses, set by the first test. */
let reference: { steps: number[]; evals: number[] } | undefined;

async function uninterruptedRun(page: Page): Promise<{ steps: number[]; evals: number[] }> {
  await page.getByTestId('train-start').click();
  await phaseIs(page, 'finished');
  await page.waitForSelector('[data-testid="run-row"] [data-testid="run-status"]:text-is("Finished")');
  const run = await newestRun(page);
  expect(run.status).toBe('finished');
  expect(losses(run)).toHaveLength(TOTAL_STEPS);
  // A finished run keeps its adapter, not its checkpoint.
  expect((await stored(page)).checkpoints.filter((c) => c.runId === run.id)).toEqual([]);
  return { steps: losses(run), evals: evalLosses(run) };
}

describe('runs that survive reloads and lost GPUs', () => {
  it('reloaded mid-run, the run shows as interrupted, resumes, and ends with the uninterrupted loss curve', async () => {
    await withWorkspace(async ({ page }) => {
      await prepare(page);
      reference = await uninterruptedRun(page);

      // The same run again, reloaded while it trains, once a checkpoint is saved.
      await page.getByTestId('train-start').click();
      const saved = await checkpointAtLeast(page, 4);
      await page.reload();
      await workspaceReady(page);

      // After the reload: the run is listed as interrupted at its last checkpoint, with Resume.
      const row = page.getByTestId('run-row').first();
      await row.getByTestId('run-status').filter({ hasText: 'Interrupted' }).waitFor();
      const interrupted = await newestRun(page);
      expect(interrupted.status).toBe('interrupted');
      const checkpointStep = interrupted.checkpointStep!;
      expect(checkpointStep).toBeGreaterThanOrEqual(saved);
      expect(checkpointStep).toBeLessThan(TOTAL_STEPS);
      expect(await row.getByTestId('run-checkpoint').textContent()).toContain(`saved at step ${checkpointStep} of ${TOTAL_STEPS}`);
      // What it had measured up to the checkpoint is kept with it.
      expect(losses(interrupted)).toEqual(reference!.steps.slice(0, checkpointStep));
      await page.getByTestId('panel-runs').screenshot({ path: `${screenshotDir}runs-interrupted.png` });

      const resume = row.getByTestId('resume-run');
      await page.waitForFunction(() => !(document.querySelector('[data-testid="resume-run"]') as HTMLButtonElement | null)?.disabled);
      await resume.click();
      await page.waitForSelector('[data-testid="train-notice"]');
      expect(await text(page, 'train-notice')).toBe(`Resumed from the checkpoint at step ${checkpointStep}.`);
      // The chart starts with the history up to the checkpoint, not from nothing.
      expect(Number(await page.getByTestId('loss-chart').getAttribute('data-train-points'))).toBeGreaterThanOrEqual(checkpointStep);
      await phaseIs(page, 'finished');
      await page.waitForSelector('[data-testid="run-row"] [data-testid="run-status"]:text-is("Finished")');

      const resumed = await newestRun(page);
      expect(resumed.id).toBe(interrupted.id);
      expect(resumed.status).toBe('finished');
      expect(resumed.metrics.filter((m) => m.type === 'step').map((m) => m.step)).toEqual(
        Array.from({ length: TOTAL_STEPS }, (_, i) => i + 1),
      );
      // The same loss curve as the uninterrupted run: every step and every evaluation, exactly.
      expect(losses(resumed)).toEqual(reference!.steps);
      expect(evalLosses(resumed)).toEqual(reference!.evals);
      expect((await stored(page)).checkpoints).toEqual([]);
      expect(await page.getByTestId('resume-run').count()).toBe(0);
    });
  });

  it('after a GPU reset mid-run, continues from its checkpoint on a new device with the same results', async () => {
    await withWorkspace(async ({ page }) => {
      await prepare(page);
      reference ??= await uninterruptedRun(page);
      await page.getByTestId('train-start').click();
      const saved = await pauseAfterCheckpoint(page);
      expect(await text(page, 'train-checkpoint')).toContain(`Saved in this browser at step ${saved}`);
      await page.getByText('Workshop tools').click();
      await page.getByTestId('simulate-device-loss').click();
      await page.getByTestId('train-resume').click();

      // The panel says what happened, then that training goes on, and the run finishes.
      await page.waitForFunction(() => /GPU device was lost at step \d+/.test(document.querySelector('[data-testid="train-notice"]')?.textContent ?? ''));
      const lostNotice = await text(page, 'train-notice');
      const resumeStep = Number(/continuing from the checkpoint at step (\d+)/.exec(lostNotice)?.[1]);
      expect(resumeStep).toBeGreaterThanOrEqual(saved);
      await page.waitForFunction(() => /continues on a new GPU device/.test(document.querySelector('[data-testid="train-notice"]')?.textContent ?? ''), undefined, {
        timeout: 120_000,
      });
      expect(await text(page, 'train-notice')).toContain(`from step ${resumeStep}`);
      await phaseIs(page, 'finished');
      await page.waitForSelector('[data-testid="run-row"] [data-testid="run-status"]:text-is("Finished")');

      const run = await newestRun(page);
      expect(losses(run)).toEqual(reference!.steps);
      expect(evalLosses(run)).toEqual(reference!.evals);
      expect(await page.getByTestId('train-failure').count()).toBe(0);
      // The playground works on the new device, with the adapter the run made there.
      await page.waitForSelector('[data-testid="adapter-info"]');
      await page.getByTestId('playground-prompt').fill('hi 3');
      await page.getByTestId('generate').click();
      await page.waitForSelector('[data-testid="playground-columns"][data-running="false"]');
      expect(await page.getByTestId('answer-base').getAttribute('data-phase')).toBe('done');
      expect(await page.getByTestId('answer-tuned').getAttribute('data-phase')).toBe('done');
    });
  });

  it('when the disk is full at a checkpoint, says what to delete, keeps training and keeps the checkpoint before', async () => {
    await withWorkspace(
      async ({ page }) => {
        await prepare(page);
        await page.getByTestId('train-start').click();
        const saved = await checkpointAtLeast(page, 4);
        await page.evaluate(() => ((window as unknown as { __tunelabDiskFull: boolean }).__tunelabDiskFull = true));

        await page.waitForSelector('[data-testid="train-checkpoint-problem"]', { timeout: 120_000 });
        const problem = await text(page, 'train-checkpoint-problem');
        expect(problem).toMatch(/^The browser's storage for this page is full, so the checkpoint at step \d+ was not saved\./);
        expect(problem).toContain('Training goes on; its checkpoint at step');
        expect(problem).toContain('Nothing saved before was lost.');
        expect(await text(page, 'runs-problem')).toBe(problem);
        // The checkpoint saved before the disk filled is still there, and the record still points at it.
        const { runs, checkpoints } = await stored(page);
        expect(checkpoints).toHaveLength(1);
        expect(checkpoints[0].step).toBeGreaterThanOrEqual(saved);
        expect(runs.find((r) => r.id === checkpoints[0].runId)?.checkpointStep).toBe(checkpoints[0].step);
        expect(problem).toContain(`its checkpoint at step ${checkpoints[0].step} is still saved`);

        // Space again: the next checkpoint is saved, and the run finishes.
        await page.evaluate(() => ((window as unknown as { __tunelabDiskFull: boolean }).__tunelabDiskFull = false));
        await phaseIs(page, 'finished');
        await page.waitForSelector('[data-testid="run-row"] [data-testid="run-status"]:text-is("Finished")');
      },
      {
        // A full disk, on demand: writes to the checkpoints store fail as the browser fails them (QuotaExceededError).
        before: async ({ page }) => {
          await page.addInitScript(() => {
            const put = IDBObjectStore.prototype.put;
            IDBObjectStore.prototype.put = function (this: IDBObjectStore, ...args: Parameters<IDBObjectStore['put']>) {
              if ((window as unknown as { __tunelabDiskFull?: boolean }).__tunelabDiskFull && this.name === 'checkpoints') {
                throw new DOMException('The quota has been exceeded.', 'QuotaExceededError');
              }
              return put.apply(this, args);
            };
          });
        },
      },
    );
  });
});
