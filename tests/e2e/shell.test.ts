// The built app shell in headless Chromium: with WebGPU it shows the adapter the browser really offers (SwiftShader on
// a machine without a GPU); without WebGPU, or with no adapter, it shows the guidance instead of failing silently.

import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import type { Page } from 'playwright-core';
import { openBrowser, type BrowserSession, type WebGpuMode } from './browser.ts';
import { appUrl, screenshotDir, workspaceReady } from './app.ts';

interface AppOptions {
  /** Runs before the page loads (to set up request routes). */
  before?: (session: BrowserSession) => Promise<void>;
  /** Console errors the test provokes on purpose; any other console error fails the test. */
  expectedConsoleErrors?: RegExp;
}

/** Opens the app in a fresh browser, runs `body`, and fails on any page error or console error it produced. */
async function withApp(
  webgpu: WebGpuMode,
  body: (session: BrowserSession) => Promise<void>,
  options: AppOptions = {},
): Promise<void> {
  const session = await openBrowser(webgpu);
  try {
    await options.before?.(session);
    // With the tiny test model: where the workspace opens, the model it loads is not what these tests are about.
    await session.page.goto(appUrl());
    await body(session);
    expect(session.pageErrors, 'uncaught errors in the page').toEqual([]);
    const unexpected = session.consoleErrors.filter((line) => !options.expectedConsoleErrors?.test(line));
    expect(unexpected, 'console errors').toEqual([]);
  } finally {
    await session.close();
  }
}

/** Waits until the app has finished looking for a GPU, and returns the phase it settled on. */
async function settledGpuPhase(page: Page): Promise<string | null> {
  const status = page.getByTestId('gpu-status');
  await page.waitForSelector('[data-testid="gpu-status"]:not([data-phase="checking"])', { timeout: 60_000 });
  return status.getAttribute('data-phase');
}

async function text(page: Page, testId: string): Promise<string> {
  return ((await page.getByTestId(testId).textContent()) ?? '').trim();
}

describe('app shell with WebGPU', () => {
  it('shows the adapter, its limits and features as the browser reports them', async () => {
    await withApp('available', async ({ page }) => {
      const phase = await settledGpuPhase(page);
      if (phase !== 'ready') throw new Error(`GPU not ready: ${await text(page, 'guidance-reason')}`);

      // What navigator.gpu says in the same browser, asked directly rather than through the app.
      const expected = await page.evaluate(async () => {
        const adapter = await navigator.gpu.requestAdapter({ powerPreference: 'high-performance' });
        if (!adapter) throw new Error('no adapter in the test browser');
        return {
          name: [adapter.info.vendor, adapter.info.architecture].filter(Boolean).join(' '),
          invocations: adapter.limits.maxComputeInvocationsPerWorkgroup,
          shaderF16: adapter.features.has('shader-f16'),
          subgroups: adapter.features.has('subgroups'),
        };
      });

      const name = await text(page, 'adapter-name');
      console.log(`e2e: the app shows adapter "${name}"`);
      expect(name).toBe(expected.name);
      // A machine with no GPU device node can only be running on SwiftShader.
      if (!existsSync('/dev/dri') && !existsSync('/dev/nvidia0')) expect(name).toMatch(/swiftshader/i);
      expect(await text(page, 'gpu-status')).toContain(name);

      expect(await text(page, 'limit-invocations')).toBe(String(expected.invocations));
      for (const id of ['limit-max-buffer-size', 'limit-max-storage-binding', 'limit-workgroup-storage']) {
        expect(await text(page, id)).toMatch(/^\d+(\.\d)? (bytes|KiB|MiB|GiB|TiB)$/);
      }
      expect(await page.getByTestId('feature-shader-f16').getAttribute('data-supported')).toBe(String(expected.shaderF16));
      expect(await page.getByTestId('feature-subgroups').getAttribute('data-supported')).toBe(String(expected.subgroups));
      expect(await page.getByTestId('webgpu-guidance').count()).toBe(0);
      // The probe ran in the engine worker, not on the page.
      expect(page.workers().length).toBe(1);

      // The whole workspace as a first visit shows it, once the built-in model and the data report are in.
      await workspaceReady(page);
      await mkdir(screenshotDir, { recursive: true });
      await page.screenshot({ path: `${screenshotDir}shell.png`, fullPage: true });
    });
  });

  it('is keyboard operable: the first Tab reaches the skip link, which moves focus to the workspace', async () => {
    await withApp('available', async ({ page }) => {
      await settledGpuPhase(page);
      await page.keyboard.press('Tab');
      expect(await page.evaluate(() => document.activeElement?.textContent?.trim())).toBe('Skip to content');
      await page.keyboard.press('Enter');
      expect(await page.evaluate(() => document.activeElement?.id)).toBe('workspace');
    });
  });
});

describe('app shell without WebGPU', () => {
  it('explains which browsers work when navigator.gpu is missing, without starting the engine', async () => {
    await withApp('missing', async ({ page }) => {
      expect(await page.evaluate(() => 'gpu' in navigator)).toBe(false);
      expect(await settledGpuPhase(page)).toBe('unavailable');

      const guidance = await text(page, 'webgpu-guidance');
      for (const advice of ['Chrome or Edge 113', 'Android', 'Safari 26', 'Firefox 141', 'enable-unsafe-webgpu', 'chrome://gpu']) {
        expect(guidance).toContain(advice);
      }
      expect(await page.getByTestId('guidance-reason').getAttribute('data-code')).toBe('no-webgpu');
      expect(await text(page, 'gpu-status')).toBe('No WebGPU');
      expect(await page.getByTestId('adapter-name').count()).toBe(0);
      expect(page.workers().length).toBe(0);
      await page.screenshot({ path: `${screenshotDir}no-webgpu.png`, fullPage: true });

      // "Check again" is a real, focusable button; checking again gives the same honest answer.
      const retry = page.getByTestId('retry-gpu');
      await retry.focus();
      await page.keyboard.press('Enter');
      expect(await settledGpuPhase(page)).toBe('unavailable');
      expect(await page.getByTestId('webgpu-guidance').count()).toBe(1);
    });
  });

  it('says that no GPU was offered when navigator.gpu has no adapter', async () => {
    await withApp('no-adapter', async ({ page }) => {
      expect(await page.evaluate(async () => (await navigator.gpu.requestAdapter()) === null)).toBe(true);
      expect(await settledGpuPhase(page)).toBe('unavailable');
      const reason = page.getByTestId('guidance-reason');
      expect(await reason.getAttribute('data-code')).toBe('no-adapter');
      expect(await reason.textContent()).toContain('chrome://gpu');
      expect(await text(page, 'webgpu-guidance')).toContain('Firefox 141');
      // This answer came from the engine worker's probe.
      expect(page.workers().length).toBe(1);
    });
  });
});

describe('app shell when the engine worker cannot start', () => {
  it('says so instead of waiting forever', async () => {
    await withApp(
      'available',
      async ({ page }) => {
        expect(await settledGpuPhase(page)).toBe('unavailable');
        const reason = page.getByTestId('guidance-reason');
        expect(await reason.getAttribute('data-code')).toBe('worker-failed');
        expect(await reason.textContent()).toContain('Reload the page');
      },
      {
        before: async ({ page }) => {
          await page.route(/trainer\.worker-[^/]*\.js$/, (route) => route.fulfill({ status: 404, body: 'gone' }));
        },
        expectedConsoleErrors: /404|trainer\.worker/,
      },
    );
  });
});
