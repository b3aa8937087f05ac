// Helpers shared by the workspace e2e tests (model, data, settings): open the built app in a fresh browser, wait until
// the built-in model has loaded and the data report has settled, and read what the page shows.
//
// The tests open the app as `?model=tiny`: the small random model (public/models/tiny/, 125k parameters) loads and
// trains in seconds on SwiftShader, where the default base model (10M parameters) would make every test much slower.
// model.test.ts opens the plain page once (the default model loads and writes English) and once with a bad ?model=.

import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect, inject } from 'vitest';
import type { Page } from 'playwright-core';
import { openBrowser, type BrowserSession } from './browser.ts';

/**
 * Where the tests save their screenshots: the README's docs/screenshots/ only when TUNELAB_SCREENSHOTS=1 (so a plain
 * `npm test` leaves the working tree clean), otherwise a temporary folder; the pages are rendered either way.
 */
export const screenshotDir =
  process.env.TUNELAB_SCREENSHOTS === '1'
    ? fileURLToPath(new URL('../../docs/screenshots/', import.meta.url))
    : join(tmpdir(), 'tunelab-screenshots') + '/';
export const tinyModelDir = fileURLToPath(new URL('../../public/models/tiny/', import.meta.url));
export const baseModelDir = fileURLToPath(new URL('../../public/models/tunelab-base/', import.meta.url));

/** The bundled model the e2e tests start with (see above). */
export const TEST_MODEL = 'tiny';

/** The built app's address, starting with the bundled model `model` (`?model=NAME`), or the default one for null. */
export function appUrl(model: string | null = TEST_MODEL): string {
  const url = new URL(inject('appUrl'));
  if (model !== null) url.searchParams.set('model', model);
  return url.href;
}

export interface WorkspaceOptions {
  /** Runs before the page first loads (init scripts, request routes). */
  before?: (session: BrowserSession) => Promise<void>;
  /** The bundled model to start with (default TEST_MODEL); null opens the plain page, with the default model. */
  model?: string | null;
}

/**
 * Opens the app with WebGPU in a fresh browser profile (so localStorage starts empty), waits for the workspace, runs
 * `body`, and fails on any uncaught error or console error the page or its worker produced.
 */
export async function withWorkspace(body: (session: BrowserSession) => Promise<void>, options: WorkspaceOptions = {}): Promise<void> {
  const session = await openBrowser('available');
  try {
    await options.before?.(session);
    await session.page.goto(appUrl(options.model === undefined ? TEST_MODEL : options.model));
    await workspaceReady(session.page);
    await body(session);
    expect(session.pageErrors, 'uncaught errors in the page').toEqual([]);
    expect(session.consoleErrors, 'console errors').toEqual([]);
  } finally {
    await session.close();
  }
}

/** Waits until a model is loaded and the data report describes the editor's current text. */
export async function workspaceReady(page: Page): Promise<void> {
  await page.waitForSelector('[data-testid="model-summary"][data-phase="ready"]', { timeout: 60_000 });
  await reportSettled(page);
}

/** Waits until no data check is scheduled or running, and returns the report's state (clean, warnings, errors). */
export async function reportSettled(page: Page): Promise<string> {
  const settled = '[data-testid="data-report"][data-checking="false"]:not([data-state="checking"])';
  await page.waitForSelector(settled, { timeout: 30_000 });
  return (await page.getByTestId('data-report').getAttribute('data-state')) ?? '';
}

export async function text(page: Page, testId: string): Promise<string> {
  return ((await page.getByTestId(testId).first().textContent()) ?? '').replace(/\s+/g, ' ').trim();
}

/** The 1-based line of the editor's cursor, and whether the editor has keyboard focus. */
export async function editorCursor(page: Page): Promise<{ line: number; focused: boolean }> {
  return page.getByTestId('data-text').evaluate((element) => {
    const textarea = element as HTMLTextAreaElement;
    return {
      line: textarea.value.slice(0, textarea.selectionStart).split('\n').length,
      focused: document.activeElement === textarea,
    };
  });
}

/** Replaces the editor's text the way pasting does (one input event) and waits for the report on it. */
export async function pasteData(page: Page, data: string): Promise<string> {
  await page.getByTestId('data-text').fill(data);
  return reportSettled(page);
}

/**
 * Sets the editor's text in one step and fires one input event, as a paste does. For large texts: Playwright's fill
 * inserts text through the editing machinery, which takes seconds per thousand lines of a textarea.
 */
export async function setEditorText(page: Page, data: string): Promise<void> {
  await page.getByTestId('data-text').evaluate((element, value) => {
    const textarea = element as HTMLTextAreaElement;
    textarea.value = value;
    textarea.dispatchEvent(new Event('input', { bubbles: true }));
  }, data);
}

/** `n` distinct, valid chat examples, one per line. */
export function chatLines(n: number): string[] {
  return Array.from({ length: n }, (_, i) =>
    JSON.stringify({
      messages: [
        { role: 'user', content: `What is ${i + 2} plus ${i + 3}?` },
        { role: 'assistant', content: `${2 * i + 5}.` },
      ],
    }),
  );
}
