// The Model panel's Hugging Face Hub loader in headless Chromium, with huggingface.co played by a Playwright route
// that serves the built-in tiny model's files at the Hub's /<repo>/resolve/<revision>/<file> URLs. Checked: nothing is
// requested before Load; a load shows its progress (file, MB of MB, per cent), can be cancelled and retried, and makes
// the model current (name = the repo id); after a reload with every Hub request failing, the model loads again from
// the browser's cache without a request; a model that is not cached fails offline with a network message, and Retry
// loads it once the network is back; a cached model can be deleted; a repo that does not exist says "no such model";
// a llama config is refused as an unsupported architecture before its weights are downloaded; the engine worker's
// Content-Security-Policy lets it reach the CDN hosts the Hub redirects its downloads to; with a storage quota too
// small to keep it, a model still loads and the learner is told why it was not kept.
//
// The real Hub answers a weights download with a redirect to its CDN (cas-bridge.xethub.hf.co, cdn-lfs*.hf.co). A
// Playwright route cannot serve the redirected request (its handler sees only the first URL; the browser then goes
// to the real network), so the fake Hub serves the weights directly, and the CDN hosts are checked on their own.

import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { BrowserContext, Page, Route } from 'playwright-core';
import { screenshotDir, text, tinyModelDir, withWorkspace, workspaceReady } from './app.ts';

const HUB = 'https://huggingface.co';
/** Hosts the Hub's downloads redirect to: Xet storage, and the LFS CDNs (old and new names). */
const CDN_HOSTS = ['cas-bridge.xethub.hf.co', 'cdn-lfs.hf.co', 'cdn-lfs-us-1.hf.co', 'cdn-lfs.huggingface.co'];

type RepoFiles = Record<string, Buffer>;

async function tinyFiles(): Promise<RepoFiles> {
  const files: RepoFiles = {};
  for (const name of ['config.json', 'tokenizer.json', 'model.safetensors']) files[name] = await readFile(join(tinyModelDir, name));
  return files;
}

/** The tiny model's files with a config.json that says it is a Llama. */
async function llamaFiles(): Promise<RepoFiles> {
  const files = await tinyFiles();
  const config = JSON.parse(files['config.json'].toString('utf8'));
  files['config.json'] = Buffer.from(JSON.stringify({ ...config, model_type: 'llama', architectures: ['LlamaForCausalLM'] }));
  return files;
}

// What the Hub sends with every answer that matters here: readable from any origin, sizes and error codes exposed.
const CORS_HEADERS = {
  'access-control-allow-origin': '*',
  'access-control-expose-headers': 'Content-Length, Content-Range, ETag, X-Error-Code, X-Error-Message',
};

interface FakeHub {
  /** Every request to the Hub, in order. */
  requests: string[];
  /** Every request fails as if the machine were offline. */
  offline: boolean;
  /** Holds the next weights download until `release()`; resolves `reached` when the request arrives. */
  holdNextWeights(): { reached: Promise<void>; release: () => void };
}

/** Plays huggingface.co for the browser context (the page and the engine worker). */
async function fakeHub(context: BrowserContext, repos: Record<string, RepoFiles>): Promise<FakeHub> {
  let hold: { reached: () => void; released: Promise<void> } | undefined;
  const hub: FakeHub = {
    requests: [],
    offline: false,
    holdNextWeights() {
      let reached!: () => void;
      let release!: () => void;
      const reachedPromise = new Promise<void>((resolve) => (reached = resolve));
      hold = { reached, released: new Promise<void>((resolve) => (release = resolve)) };
      return { reached: reachedPromise, release };
    },
  };

  async function answer(route: Route, status: number, body: Buffer | string, headers: Record<string, string> = {}) {
    // The page may have given up on the request (a cancel) while it was held.
    await route.fulfill({ status, body, headers: { ...CORS_HEADERS, ...headers } }).catch(() => undefined);
  }

  await context.route(`${HUB}/**`, async (route) => {
    const url = route.request().url();
    hub.requests.push(url);
    if (hub.offline) return route.abort('internetdisconnected');
    const match = /^https:\/\/huggingface\.co\/(.+)\/resolve\/([^/]+)\/([^/?]+)$/.exec(url);
    const repo = match && match[2] === 'main' ? repos[match[1]] : undefined;
    if (!match || !repo) return answer(route, 404, 'Repository not found', { 'x-error-code': 'RepoNotFound' });
    const file = repo[match[3]];
    if (!file) return answer(route, 404, 'Entry not found', { 'x-error-code': 'EntryNotFound' });
    if (match[3] === 'model.safetensors' && hold) {
      const held = hold;
      hold = undefined;
      held.reached();
      await held.released;
    }
    return answer(route, 200, file, { 'content-type': 'application/octet-stream', etag: `"${match[1]}-${match[3]}"` });
  });
  return hub;
}

/** Records every text the Hub progress line shows, from the moment this is called. */
async function recordProgressTexts(page: Page): Promise<void> {
  await page.evaluate(() => {
    const seen: string[] = [];
    (window as unknown as { hubProgressTexts: string[] }).hubProgressTexts = seen;
    const observer = new MutationObserver(() => {
      const line = document.querySelector('[data-testid="hub-progress-text"]')?.textContent?.replace(/\s+/g, ' ').trim();
      if (line && seen[seen.length - 1] !== line) seen.push(line);
    });
    observer.observe(document.body, { subtree: true, childList: true, characterData: true });
  });
}

async function progressTexts(page: Page): Promise<string[]> {
  return page.evaluate(() => (window as unknown as { hubProgressTexts: string[] }).hubProgressTexts);
}

/** Types an id into the Hub field and presses Load. */
async function loadFromHub(page: Page, ref: string): Promise<void> {
  await page.getByTestId('hub-ref').fill(ref);
  await page.getByTestId('hub-load').click();
}

/** Waits for the Hub load under way to end; 'ready' or 'failed'. */
async function hubSettled(page: Page): Promise<string> {
  await page.waitForSelector('[data-testid="hub-load"]', { timeout: 60_000 });
  await page.waitForSelector('[data-testid="model-summary"]:not([data-phase="loading"])', { timeout: 60_000 });
  return (await page.getByTestId('model-summary').getAttribute('data-phase')) ?? '';
}

describe('models from the Hugging Face Hub', () => {
  it('downloads by id with progress, cancels and retries, and loads again offline from the browser cache', async () => {
    const repos = { 'tunelab/tiny-hub': await tinyFiles(), 'tunelab/second': await tinyFiles() };
    const bytes = Object.values(repos['tunelab/tiny-hub']).reduce((sum, f) => sum + f.length, 0);
    const size = `${(bytes / 1e3).toFixed(1)} kB`; // the tiny model is half a megabyte
    let hub!: FakeHub;
    await withWorkspace(
      async ({ page }) => {
        // Nothing went to the Hub before the learner asked; the note says when it will.
        expect(hub.requests).toEqual([]);
        expect(await text(page, 'hub-loader')).toContain('contacts huggingface.co only when you press Load');
        expect(await page.getByTestId('hub-cached').count()).toBe(0);

        // A load held at the weights: the bar shows the files so far; Cancel stops it and the built-in model stays.
        await recordProgressTexts(page);
        const held = hub.holdNextWeights();
        await loadFromHub(page, 'tunelab/tiny-hub');
        await Promise.race([
          held.reached,
          page.waitForSelector('[data-testid="hub-error"]', { timeout: 60_000 }).then(async () => {
            throw new Error(`the load failed before the weights: ${await text(page, 'hub-error')}`);
          }),
        ]);
        await page.waitForSelector('[data-testid="hub-progress"][data-stage="download"]');
        expect(await text(page, 'hub-progress-text')).toMatch(/^[\d.]+ kB · tokenizer\.json$/);
        // No size for the weights yet, so no per cent: the bar has no value (indeterminate).
        expect(await page.getByTestId('hub-progress-bar').getAttribute('value')).toBeNull();
        await page.getByTestId('hub-loader').screenshot({ path: `${screenshotDir}hub-loading.png` });
        await page.getByTestId('hub-cancel').click();
        expect(await hubSettled(page)).toBe('ready');
        expect(await page.getByTestId('hub-error').getAttribute('data-code')).toBe('cancelled');
        expect(await text(page, 'hub-error')).toContain('The download was cancelled; the current model is still in use');
        expect(await text(page, 'model-name')).toBe('tiny');
        held.release();

        // Retry downloads it whole: the progress went up to 100% of the model's size, file by file.
        hub.requests.length = 0;
        await page.getByTestId('hub-retry').click();
        expect(await hubSettled(page)).toBe('ready');
        expect(await text(page, 'model-name')).toBe('tunelab/tiny-hub');
        expect(await text(page, 'model-origin')).toBe('Hugging Face Hub');
        expect(await page.locator('[data-testid="model-summary"] .source').getAttribute('title')).toBe(`${HUB}/tunelab/tiny-hub`);
        expect(await text(page, 'model-parameters')).toBe('124,736');
        expect(await page.getByTestId('hub-error').count()).toBe(0);
        expect(await text(page, 'hub-result')).toBe(`Downloaded tunelab/tiny-hub (${size}) and saved it in this browser for offline use.`);
        const shown = await progressTexts(page);
        expect(shown.some((line) => /config\.json$/.test(line))).toBe(true);
        expect(shown).toContain(`100% · ${size} of ${size} · model.safetensors`);
        expect(shown.some((line) => line.startsWith('Checking the weights'))).toBe(true);
        // The three files at the Hub's resolve URLs, once each.
        expect(hub.requests).toEqual(['config.json', 'tokenizer.json', 'model.safetensors'].map((f) => `${HUB}/tunelab/tiny-hub/resolve/main/${f}`));
        // Kept in the browser, with its size.
        await page.waitForSelector('[data-testid="hub-cached-model"][data-ref="tunelab/tiny-hub"]');
        expect(await text(page, 'hub-cached-size')).toContain(size);

        // Offline: a reload, then the same id loads from the cache without a single request.
        hub.offline = true;
        hub.requests.length = 0;
        await page.reload();
        await workspaceReady(page);
        await page.waitForSelector('[data-testid="hub-cached-model"][data-ref="tunelab/tiny-hub"]');
        await recordProgressTexts(page);
        await loadFromHub(page, 'tunelab/tiny-hub');
        expect(await hubSettled(page)).toBe('ready');
        expect(await text(page, 'model-name')).toBe('tunelab/tiny-hub');
        expect(await page.getByTestId('hub-result').getAttribute('data-from-cache')).toBe('true');
        expect(await text(page, 'hub-result')).toContain("from this browser's cache");
        expect(await progressTexts(page)).toContain(`100% · ${size} of ${size} · model.safetensors · from cache`);
        expect(hub.requests).toEqual([]);

        // A model that is not cached cannot load offline: the message says so, and Retry works once online again.
        await loadFromHub(page, 'tunelab/second');
        expect(await hubSettled(page)).toBe('failed');
        const offline = await text(page, 'hub-error');
        expect(offline).toContain('tunelab/second could not be loaded; the previous model is still in use');
        expect(offline).toContain("Could not reach huggingface.co (Failed to fetch); check the internet connection, or load a model saved earlier");
        expect(await text(page, 'model-name')).toBe('tunelab/tiny-hub');
        hub.offline = false;
        await page.getByTestId('hub-retry').click();
        expect(await hubSettled(page)).toBe('ready');
        expect(await text(page, 'model-name')).toBe('tunelab/second');

        // Deleting a saved model leaves the other, and the loaded model stays.
        await page.waitForSelector('[data-testid="hub-cached-model"][data-ref="tunelab/second"]');
        await page.locator('[data-testid="hub-cached-model"][data-ref="tunelab/tiny-hub"]').getByTestId('hub-cached-delete').click();
        await page.waitForSelector('[data-testid="hub-cached-model"][data-ref="tunelab/tiny-hub"]', { state: 'detached' });
        expect(await page.getByTestId('hub-cached-model').count()).toBe(1);
        await page.getByTestId('panel-model').screenshot({ path: `${screenshotDir}hub-model-panel.png` });
        expect(await text(page, 'model-name')).toBe('tunelab/second');
      },
      {
        before: async ({ context }) => {
          hub = await fakeHub(context, repos);
        },
      },
    );
  });

  it('warns about big models; explains not found, bad id, not a GPT-2, a full quota; allows the CDN hosts', async () => {
    let hub!: FakeHub;
    const cdnRequests: string[] = [];
    const repos = { 'tunelab/tiny-llama': await llamaFiles(), 'tunelab/tiny-hub': await tinyFiles() };
    await withWorkspace(
      async ({ page }) => {
        // A well-known big model is announced before Load: its download and GPU memory. Typing requests nothing.
        await page.getByTestId('hub-ref').fill('openai-community/gpt2');
        expect(await text(page, 'hub-size-warning')).toContain('about 548.0 MB to download, 124 million parameters');
        await page.getByTestId('hub-ref').fill('tunelab/tiny-llama');
        expect(await page.getByTestId('hub-size-warning').count()).toBe(0);

        // Not an id at all: refused before any request.
        await loadFromHub(page, 'not a model');
        expect(await hubSettled(page)).toBe('failed');
        expect(await text(page, 'hub-error')).toContain('is not a Hugging Face model id');
        expect(hub.requests).toEqual([]);

        // A repo the Hub does not have.
        await loadFromHub(page, 'tunelab/missing');
        expect(await hubSettled(page)).toBe('failed');
        const missing = await text(page, 'hub-error');
        expect(missing).toContain('tunelab/missing could not be loaded; the previous model is still in use');
        expect(missing).toContain('No such model "tunelab/missing" on the Hugging Face Hub');
        expect(await page.getByTestId('hub-error').getAttribute('data-code')).toBe('bad-model');
        expect(await text(page, 'model-name')).toBe('tiny');

        // A Llama: refused from its config.json, before the weights are fetched.
        hub.requests.length = 0;
        await loadFromHub(page, 'tunelab/tiny-llama');
        expect(await hubSettled(page)).toBe('failed');
        const llama = await text(page, 'hub-error');
        expect(llama).toContain('tunelab/tiny-llama is a llama model (LlamaForCausalLM)');
        expect(llama).toContain('Tunelab runs GPT-2-family models');
        expect(hub.requests).toEqual([`${HUB}/tunelab/tiny-llama/resolve/main/config.json`]);
        expect(await text(page, 'model-name')).toBe('tiny');
        expect(await page.getByTestId('hub-cached').count()).toBe(0);

        // The engine worker's policy (its script's header) lets it reach the hosts the Hub redirects downloads to; a
        // host answered by the same route but not in the policy is refused before any request.
        const worker = page.workers().find((w) => w.url().includes('trainer.worker'));
        expect(worker, 'the engine worker').toBeDefined();
        const reached = await worker!.evaluate(async (hosts) => {
          const answers: Record<string, string> = {};
          const refused: string[] = [];
          self.addEventListener('securitypolicyviolation', (event) => refused.push(`${event.effectiveDirective} ${event.blockedURI}`));
          for (const host of hosts) {
            try {
              answers[host] = await (await fetch(`https://${host}/repos/ab/cd/model.safetensors`)).text();
            } catch (error) {
              answers[host] = String(error);
            }
          }
          await new Promise((resolve) => setTimeout(resolve, 0));
          return { answers, refused };
        }, [...CDN_HOSTS, 'cdn.example.com']);
        expect(reached).toEqual({
          answers: { ...Object.fromEntries(CDN_HOSTS.map((host) => [host, 'weights'])), 'cdn.example.com': 'TypeError: Failed to fetch' },
          refused: ['connect-src https://cdn.example.com/repos/ab/cd/model.safetensors'],
        });
        expect(cdnRequests.sort()).toEqual(CDN_HOSTS.map((host) => `https://${host}/repos/ab/cd/model.safetensors`).sort());

        // Storage too small to keep the model: it loads for this session, and the message says what to free.
        const cdp = await page.context().newCDPSession(page);
        await cdp.send('Storage.overrideQuotaForOrigin', { origin: new URL(page.url()).origin, quotaSize: 100_000 });
        await loadFromHub(page, 'tunelab/tiny-hub');
        expect(await hubSettled(page)).toBe('ready');
        expect(await text(page, 'model-name')).toBe('tunelab/tiny-hub');
        expect(await text(page, 'hub-result')).toMatch(/^Downloaded tunelab\/tiny-hub \([\d.]+ kB\)\.$/);
        const quota = await text(page, 'hub-cache-warning');
        expect(quota).toMatch(/^Not enough browser storage to keep tunelab\/tiny-hub for offline use: it needs [\d.]+ kB\./);
        expect(quota).toContain('The model is loaded for this session, but will be downloaded again next time.');
        expect(await page.getByTestId('hub-cached').count()).toBe(0);
      },
      {
        before: async ({ context }) => {
          hub = await fakeHub(context, repos);
          const cdn = async (route: Route) => {
            cdnRequests.push(route.request().url());
            await route.fulfill({ status: 200, body: 'weights', headers: CORS_HEADERS });
          };
          await context.route('https://*.hf.co/**', cdn);
          await context.route('https://cdn-lfs.huggingface.co/**', cdn);
          await context.route('https://cdn.example.com/**', cdn);
        },
      },
    );
  });
});
