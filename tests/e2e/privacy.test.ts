// Privacy and security of the built app in headless Chromium. During a whole session (first visit, the built-in model,
// a model from picked files, a starter dataset, edits, settings, a short training run, an imported adapter, answers
// in the Playground, a reload) the page and its worker request nothing but the app's own files. The
// Content-Security-Policy is in force, as a meta tag and as a header from both Vite servers: in the page and in the
// worker, inline script, eval, inline style and other hosts are refused, while the app itself causes no violation.
// Text the user controls (data lines, file names, prompts) is shown as text, never as HTML.

import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import type { Page, Worker } from 'playwright-core';
import { createServer } from 'vite';
import { chatLines, pasteData, reportSettled, text, tinyModelDir, withWorkspace, workspaceReady } from './app.ts';
import { importAdapterFiles, randomTinyAdapter } from './adapter-files.ts';
import { openBrowser, type BrowserSession } from './browser.ts';

const root = fileURLToPath(new URL('../../', import.meta.url));
// The build global-setup.ts made: dist/, or TUNELAB_E2E_OUT_DIR (relative to the root, as Vite resolves it).
const distDir = resolve(root, process.env.TUNELAB_E2E_OUT_DIR || 'dist');
const XSS_IMG = '<img src=x onerror=alert(1)>';
const XSS_BOLD = '<b>bold</b>';

/** A CSP violation as the page's `securitypolicyviolation` event describes it. */
interface Violation {
  directive: string;
  blocked: string;
  /** The whole policy that refused it: the meta tag's or the header's (each reports its own violation). */
  policy: string;
}

declare global {
  interface Window {
    cspViolations: Violation[];
  }
}

/** Collects the page's CSP violations from before its first script runs, in `window.cspViolations`. */
async function recordViolations(session: BrowserSession): Promise<void> {
  await session.context.addInitScript(() => {
    window.cspViolations = [];
    document.addEventListener('securitypolicyviolation', (event) => {
      window.cspViolations.push({ directive: event.effectiveDirective, blocked: event.blockedURI, policy: event.originalPolicy });
    });
  });
}

async function violations(page: Page): Promise<Violation[]> {
  return page.evaluate(() => window.cspViolations);
}

/** Every file of the built app, as paths relative to its root ("assets/index-….js", "models/tiny/config.json"). */
async function builtFiles(): Promise<Set<string>> {
  const entries = await readdir(distDir, { recursive: true, withFileTypes: true });
  return new Set(entries.filter((e) => e.isFile()).map((e) => relative(distDir, join(e.parentPath, e.name)).split('\\').join('/')));
}

async function modelFile(name: string): Promise<{ name: string; mimeType: string; buffer: Buffer }> {
  return { name, mimeType: 'application/octet-stream', buffer: await readFile(join(tinyModelDir, name)) };
}

async function modelLoaded(page: Page): Promise<string> {
  await page.waitForSelector('[data-testid="model-summary"]:not([data-phase="loading"])', { timeout: 60_000 });
  return (await page.getByTestId('model-summary').getAttribute('data-phase')) ?? '';
}

/** Presses Generate in the Playground and waits until that generation has finished in both columns. */
async function generateAnswers(page: Page): Promise<void> {
  const before = Number(await page.getByTestId('playground-columns').getAttribute('data-generations'));
  await page.getByTestId('generate').click();
  await page.waitForFunction(
    (n) => Number(document.querySelector('[data-testid="playground-columns"]')?.getAttribute('data-generations')) > n,
    before,
  );
  await page.waitForSelector('[data-testid="playground-columns"][data-running="false"]', { timeout: 120_000 });
}

/** The policy's directives by name, e.g. "script-src" → ["'self'"]. */
function directives(policy: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const part of policy.split(';')) {
    const [name, ...sources] = part.trim().split(/\s+/);
    if (name) out.set(name.toLowerCase(), sources);
  }
  return out;
}

/** What the policy must say wherever it is delivered (meta, preview header, dev header). */
function expectStrictPolicy(policy: string): void {
  const d = directives(policy);
  // 'wasm-unsafe-eval' lets the page compile WebAssembly (onnxruntime-web, for "Try the exported model") and nothing
  // more; 'unsafe-eval' (eval, new Function) stays out.
  expect(policy).not.toMatch(/(?<!wasm-)unsafe-eval|unsafe-inline|unsafe-hashes|\*(?!\.)/);
  expect(d.get('default-src')).toEqual(["'self'"]);
  expect(d.get('script-src')).toEqual(["'self'", "'wasm-unsafe-eval'"]);
  expect(d.get('object-src')).toEqual(["'none'"]);
  expect(d.get('base-uri')).toEqual(["'self'"]);
  expect(d.get('form-action')).toEqual(["'none'"]);
  // Only the Hub, for the models a user asks for; its file downloads redirect to CDN hosts under these two domains.
  expect(d.get('connect-src')).toEqual(["'self'", 'https://huggingface.co', 'https://*.huggingface.co', 'https://*.hf.co']);
}

/** The worker that runs the engine (it starts once the GPU is found, so it exists by the time a model is ready). */
function engineWorker(page: Page): Worker {
  const worker = page.workers().find((w) => w.url().includes('trainer.worker'));
  if (!worker) throw new Error(`no engine worker among ${page.workers().map((w) => w.url()).join(', ') || 'none'}`);
  return worker;
}

/**
 * Tries what the policy forbids, in the page and in the engine worker, and checks each is refused. The console lines
 * Chromium prints for these refusals are taken out of `session.consoleErrors`, which must otherwise stay empty.
 */
async function expectPolicyEnforced(session: BrowserSession): Promise<void> {
  const { page } = session;
  const before = (await violations(page)).length;
  const probes = await page.evaluate(async () => {
    // Code that DevTools evaluates may use eval whatever the policy says; a task of the page's own may not.
    await new Promise((resolve) => setTimeout(resolve, 0));
    const script = document.createElement('script');
    script.textContent = 'window.inlineScriptRan = true;';
    document.head.append(script);

    const style = document.createElement('style');
    style.textContent = 'body { outline: 7px solid rgb(255, 0, 0) !important; }';
    document.head.append(style);

    let evalError = '';
    try {
      eval('1 + 1');
    } catch (error) {
      evalError = (error as Error).name;
    }
    let functionError = '';
    try {
      new Function('return 1')();
    } catch (error) {
      functionError = (error as Error).name;
    }
    let fetchRefused = false;
    try {
      await fetch('https://example.com/collect');
    } catch {
      fetchRefused = true;
    }
    return {
      inlineScriptRan: (window as unknown as { inlineScriptRan?: boolean }).inlineScriptRan === true,
      inlineStyleApplied: getComputedStyle(document.body).outlineWidth === '7px',
      evalError,
      functionError,
      fetchRefused,
    };
  });
  expect(probes).toEqual({
    inlineScriptRan: false,
    inlineStyleApplied: false,
    evalError: 'EvalError',
    functionError: 'EvalError',
    fetchRefused: true,
  });
  // Both policies are in force in the page, and each refuses each probe on its own: the meta tag's and the header's.
  const meta = (await page.locator('meta[http-equiv="Content-Security-Policy"]').getAttribute('content')) ?? '';
  const seen = (await violations(page)).slice(before);
  const probeDirectives = ['connect-src', 'script-src', 'script-src', 'script-src-elem', 'style-src-elem'];
  for (const policy of [meta, `${meta}; frame-ancestors 'none'`]) {
    const refusedBy = seen.filter((v) => v.policy === policy);
    expect(refusedBy.map((v) => v.directive).sort(), policy).toEqual(probeDirectives);
    expect(refusedBy.find((v) => v.directive === 'connect-src')?.blocked).toBe('https://example.com/collect');
  }
  expect(seen.length).toBe(2 * probeDirectives.length);

  // The worker obeys the policy of its own script's response (the header), not the page's meta tag.
  const inWorker = await engineWorker(page).evaluate(async () => {
    const refused: { directive: string; blocked: string; policy: string }[] = [];
    self.addEventListener('securitypolicyviolation', (event) => {
      refused.push({ directive: event.effectiveDirective, blocked: event.blockedURI, policy: event.originalPolicy });
    });
    await new Promise((resolve) => setTimeout(resolve, 0));
    let evalError = '';
    try {
      eval('1 + 1');
    } catch (error) {
      evalError = (error as Error).name;
    }
    let fetchRefused = false;
    try {
      await fetch('https://example.com/collect');
    } catch {
      fetchRefused = true;
    }
    await new Promise((resolve) => setTimeout(resolve, 0));
    return { evalError, fetchRefused, refused };
  });
  const workerPolicy = `${meta}; frame-ancestors 'none'`;
  expect(inWorker).toEqual({
    evalError: 'EvalError',
    fetchRefused: true,
    refused: [
      { directive: 'script-src', blocked: 'eval', policy: workerPolicy },
      { directive: 'connect-src', blocked: 'https://example.com/collect', policy: workerPolicy },
    ],
  });

  // Chromium prints the refusals as console errors; those were provoked here. Anything else stays in the list.
  const refusals = session.consoleErrors.filter((line) => /Content Security Policy/.test(line));
  expect(refusals.length).toBeGreaterThan(0);
  for (const line of refusals) session.consoleErrors.splice(session.consoleErrors.indexOf(line), 1);
}

describe('privacy', () => {
  it('requests nothing but the app’s own files during a whole session', async () => {
    const requests: string[] = [];
    const webSockets: string[] = [];
    await withWorkspace(
      async ({ page }) => {
        // The built-in model is loaded (workspaceReady waited for it). Now a model from picked files, and back.
        await page.getByTestId('model-files-input').setInputFiles([
          await modelFile('config.json'),
          await modelFile('model.safetensors'),
          await modelFile('tokenizer.json'),
        ]);
        expect(await modelLoaded(page)).toBe('ready');
        expect(await text(page, 'model-origin')).toBe('Your files');
        await page.getByTestId('load-bundled-model').click();
        expect(await modelLoaded(page)).toBe('ready');

        // A starter dataset, then edits: typed, pasted, a broken line and its fix, a setting.
        await page.getByTestId('starter-pirate').click();
        expect(await reportSettled(page)).toBe('clean');
        await page.getByTestId('data-text').focus();
        await page.keyboard.press('Control+End');
        await page.keyboard.type('\n{"messages": [');
        expect(await reportSettled(page)).toBe('errors');
        await pasteData(page, chatLines(24).join('\n'));
        expect(await reportSettled(page)).toBe('clean');
        await page.getByLabel('Learning rate', { exact: true }).fill('0.0005');
        await page.getByTestId('target-c_fc').uncheck();
        await page.getByLabel('Epochs', { exact: true }).fill('1');
        await reportSettled(page);
        await page.waitForSelector('[data-testid="estimate-memory"]');

        // A short training run: one epoch of the 22 training examples.
        await page.getByTestId('train-start').click();
        await page.waitForSelector('[data-testid="train-status"][data-phase="finished"]', { timeout: 180_000 });

        // An adapter from files (Runs panel), then answers of the base and the fine-tuned model (Playground).
        await importAdapterFiles(page, await randomTinyAdapter());
        await page.waitForSelector('[data-testid="adapter-info"]');
        await page.getByTestId('sampling-maxNewTokens').fill('8');
        await page.getByTestId('playground-prompt').fill('Say hello.');
        await generateAnswers(page);
        expect(await page.getByTestId('answer-tuned').getAttribute('data-phase')).toBe('done');
        expect(await violations(page)).toEqual([]);

        // A reload, as a learner coming back would do: the same files again, from the cache or the server.
        await page.reload();
        await workspaceReady(page);
        expect(await violations(page)).toEqual([]);

        const origin = new URL(page.url()).origin;
        const files = await builtFiles();
        const foreign = requests.filter((url) => new URL(url).origin !== origin);
        expect(foreign, 'requests to other hosts').toEqual([]);
        // Same-origin, and each one a file of the build (or the page itself): no beacons, no made-up endpoints.
        const notFiles = requests.filter((url) => {
          const path = decodeURIComponent(new URL(url).pathname).replace(/^\//, '');
          return path !== '' && !files.has(path);
        });
        expect(notFiles, 'requests for something that is not a file of the app').toEqual([]);
        expect(webSockets, 'WebSocket connections').toEqual([]);
        // The session really exercised the network path: the page, its script, the worker, the model files.
        expect(requests.some((url) => url.includes('trainer.worker'))).toBe(true);
        expect(requests.some((url) => url.endsWith('/models/tiny/model.safetensors'))).toBe(true);

        // Nothing in the document loads from elsewhere either (no preconnect, font, script or image from a CDN).
        const resources = await page.evaluate(() =>
          [...document.querySelectorAll('link[href], script[src], img, iframe, source, video, audio, object, embed')].map(
            (e) => (e as HTMLLinkElement).href || (e as HTMLImageElement).src || (e as HTMLObjectElement).data || '(none)',
          ),
        );
        expect(resources.filter((url) => !url.startsWith(`${origin}/`))).toEqual([]);
      },
      {
        before: async (session) => {
          await recordViolations(session);
          // The context sees the worker's requests as well as the page's.
          session.context.on('request', (request) => {
            if (!/^(data|blob):/.test(request.url())) requests.push(request.url());
          });
          session.page.on('websocket', (socket) => webSockets.push(socket.url()));
        },
      },
    );
  });
});

describe('content security policy', () => {
  it('is in force from the meta tag and the preview server’s header, in the page and the worker', async () => {
    const headers = new Map<string, Record<string, string>>();
    await withWorkspace(
      async (session) => {
        const { page } = session;
        // The app itself ran without a single violation.
        expect(await violations(page)).toEqual([]);

        const meta = await page.locator('meta[http-equiv="Content-Security-Policy"]').getAttribute('content');
        expectStrictPolicy(meta ?? '');
        // The built app needs no inline style and no blob: worker, so the policy allows neither.
        const d = directives(meta ?? '');
        expect(d.get('style-src')).toEqual(["'self'"]);
        expect(d.get('worker-src')).toEqual(["'self'"]);
        expect(d.get('img-src')).toEqual(["'self'", 'data:']);
        expect(await page.locator('meta[name="referrer"]').getAttribute('content')).toBe('no-referrer');
        // The meta tag comes before every script and stylesheet, or it would not cover them.
        const firstInHead = await page.evaluate(() =>
          [...document.head.children].find((e) => e.matches('script, link[rel="stylesheet"], meta[http-equiv]'))?.outerHTML,
        );
        expect(firstInHead).toContain('Content-Security-Policy');

        const pageHeaders = headers.get(page.url())!;
        const workerHeaders = headers.get(engineWorker(page).url())!;
        for (const h of [pageHeaders, workerHeaders]) {
          const policy = h['content-security-policy'];
          expectStrictPolicy(policy);
          // The header is the meta tag's policy plus what a meta tag cannot carry.
          expect(policy).toBe(`${meta}; frame-ancestors 'none'`);
          expect(h['x-content-type-options']).toBe('nosniff');
          expect(h['referrer-policy']).toBe('no-referrer');
        }

        await expectPolicyEnforced(session);
      },
      {
        before: async (session) => {
          await recordViolations(session);
          session.context.on('response', (response) => {
            headers.set(response.url(), response.headers());
          });
        },
      },
    );
  });

  it('is sent by the dev server too, with a nonce for the styles it injects, and the app runs under it', async () => {
    const cacheDir = await mkdtemp(join(tmpdir(), 'tunelab-vite-cache-'));
    // No file watcher: other work in the checkout must not reload the page mid-test. HMR's socket still connects.
    const server = await createServer({
      root,
      configFile: join(root, 'vite.config.ts'),
      cacheDir,
      logLevel: 'warn',
      server: { host: '127.0.0.1', port: 0, strictPort: false, watch: null },
    });
    await server.listen();
    const session = await openBrowser('available');
    try {
      await recordViolations(session);
      const { page } = session;
      const hmrConnected = page.waitForEvent('console', { predicate: (m) => m.text().includes('[vite] connected'), timeout: 60_000 });
      const response = await page.goto(`${server.resolvedUrls!.local[0]}?model=tiny`);
      await workspaceReady(page);
      await hmrConnected;
      expect(await violations(page)).toEqual([]);

      const policy = response!.headers()['content-security-policy'];
      expectStrictPolicy(policy);
      expect(policy).toMatch(/frame-ancestors 'none'$/);
      const styleSources = directives(policy).get('style-src')!;
      expect(styleSources[0]).toBe("'self'");
      expect(styleSources[1]).toMatch(/^'nonce-[A-Za-z0-9+/=]{16,}'$/);
      // The meta tag in the served page says the same (both policies apply; either alone would block the styles).
      expect(await page.locator('meta[http-equiv="Content-Security-Policy"]').getAttribute('content')).toBe(
        policy.replace("; frame-ancestors 'none'", ''),
      );
      // The component styles did arrive, as nonce-carrying <style> elements.
      const styles = await page.evaluate(() => [...document.querySelectorAll('style')].map((s) => s.nonce));
      expect(styles.length).toBeGreaterThan(0);
      expect(styles.every((nonce) => styleSources[1] === `'nonce-${nonce}'`)).toBe(true);

      await expectPolicyEnforced(session);
      expect(session.pageErrors, 'uncaught errors in the page').toEqual([]);
      expect(session.consoleErrors, 'console errors').toEqual([]);
    } finally {
      await session.close();
      await server.close();
      await rm(cacheDir, { recursive: true, force: true });
    }
  });
});

describe('user text', () => {
  it('is shown as text in the report, in file names and in the Playground, never turned into HTML', async () => {
    const dialogs: string[] = [];
    await withWorkspace(
      async ({ page }) => {
        // A role the checker quotes back in its message, made of markup.
        const lines = chatLines(12);
        lines[3] = JSON.stringify({
          messages: [
            { role: `${XSS_IMG}${XSS_BOLD}`, content: XSS_BOLD },
            { role: 'assistant', content: XSS_IMG },
          ],
        });
        expect(await pasteData(page, lines.join('\n'))).toBe('errors');
        const issue = page.getByTestId('data-errors').getByTestId('data-issue').first();
        expect(await issue.getAttribute('data-line')).toBe('4');
        expect(await issue.textContent()).toContain(`${XSS_IMG}${XSS_BOLD}`);

        // A validation file whose name is markup.
        const validation = ['prompt,completion', '"Say 1 twice.","1 1"', '"Say 2 twice.","2 2"'].join('\n');
        const fileName = `${XSS_IMG}.csv`;
        await page.getByTestId('validation-file-input').setInputFiles({ name: fileName, mimeType: 'text/csv', buffer: Buffer.from(validation) });
        await page.waitForSelector('[data-testid="validation-file"]');
        await reportSettled(page);
        expect(await text(page, 'validation-file')).toContain(fileName);

        // A prompt in the Playground, shown back as the model will read it.
        await page.getByTestId('playground-prompt').fill(`${XSS_IMG} ${XSS_BOLD}`);
        expect(await text(page, 'rendered-prompt')).toContain(`${XSS_IMG} ${XSS_BOLD}`);

        // None became elements: no <img> or <b> anywhere in the document.
        expect(await page.locator('img, b').count()).toBe(0);
        expect(await page.getByTestId('data-report').evaluate((report) => report.innerHTML)).toContain('&lt;img src=x onerror=alert(1)&gt;');
        expect(await violations(page)).toEqual([]);
        expect(dialogs).toEqual([]);
      },
      {
        before: async (session) => {
          await recordViolations(session);
          session.page.on('dialog', (dialog) => {
            dialogs.push(dialog.message());
            void dialog.dismiss();
          });
        },
      },
    );
  });
});
