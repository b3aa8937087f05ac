// Launches Debian's Chromium through playwright-core for the e2e tests, with a fresh profile each time, and records
// what the page reports so that a test can fail on any uncaught error or console error.
//
// WebGPU: on Chromium 156 in this setup `--enable-unsafe-webgpu` alone gives navigator.gpu the SwiftShader adapter
// (vendor "google", architecture "swiftshader"), in the page and in workers; `--enable-features=Vulkan` and
// `--use-vulkan=swiftshader` change nothing, so they are left out. Without that flag and with `--disable-gpu`,
// navigator.gpu exists but requestAdapter() resolves to null: the "no adapter" case a Linux user meets.
// No launch flag removes navigator.gpu itself (--disable-blink-features=WebGPU and --disable-features=WebGPU were
// tried); `withoutNavigatorGpu` deletes it with an init script instead.

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type BrowserContext, type ConsoleMessage, type Page } from 'playwright-core';

export const CHROMIUM_PATH = '/usr/bin/chromium';

const QUIET_FLAGS = [
  '--no-sandbox',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

export type WebGpuMode =
  /** SwiftShader (or a real GPU) through --enable-unsafe-webgpu. */
  | 'available'
  /** navigator.gpu is present but offers no adapter. */
  | 'no-adapter'
  /** navigator.gpu is deleted before any page script runs. */
  | 'missing';

export interface BrowserSession {
  context: BrowserContext;
  page: Page;
  /** Uncaught exceptions and unhandled rejections in the page and its workers (Chromium reports both to the page). */
  pageErrors: string[];
  /** console.error output of the page and its workers, and failed resource loads (404s and the like). */
  consoleErrors: string[];
  close(): Promise<void>;
}

export async function openBrowser(webgpu: WebGpuMode = 'available'): Promise<BrowserSession> {
  const userDataDir = await mkdtemp(join(tmpdir(), 'tunelab-chromium-'));
  const gpuFlags = webgpu === 'no-adapter' ? ['--disable-gpu'] : ['--enable-unsafe-webgpu'];
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM_PATH,
    headless: true,
    args: [...QUIET_FLAGS, ...gpuFlags],
    viewport: { width: 1280, height: 800 },
    deviceScaleFactor: 1,
    colorScheme: 'light',
    reducedMotion: 'reduce',
  });
  if (webgpu === 'missing') {
    await context.addInitScript(() => {
      delete (Navigator.prototype as { gpu?: unknown }).gpu;
    });
  }

  const page = context.pages()[0] ?? (await context.newPage());
  const pageErrors: string[] = [];
  const consoleErrors: string[] = [];
  page.on('pageerror', (error) => pageErrors.push(error.stack ?? error.message));
  page.on('console', (message: ConsoleMessage) => {
    if (message.type() !== 'error') return;
    const where = message.worker()?.url() ?? message.location().url;
    consoleErrors.push(`${message.text()} (${where})`);
  });

  return {
    context,
    page,
    pageErrors,
    consoleErrors,
    async close() {
      await context.close();
      await rm(userDataDir, { recursive: true, force: true });
    },
  };
}
