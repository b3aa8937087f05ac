// Builds the browser app: Svelte 5 UI on the main thread, the engine in an ES-module Web Worker. `.wgsl?raw` imports
// are Vite's built-in raw loader. The Node test runner has its own vitest.config.ts and does not read this file.
//
// Content-Security-Policy: index.html's <meta http-equiv> holds the policy, so any static host enforces it. The dev
// and preview servers also send it as a header, which is what covers the trainer worker (a worker obeys the policy
// of its own script's response, not the page's meta tag) and what can carry frame-ancestors.

import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { defineConfig, type Plugin } from 'vite';
import { svelte } from '@sveltejs/vite-plugin-svelte';

const indexHtml = readFileSync(new URL('./index.html', import.meta.url), 'utf8');
const pagePolicy = /http-equiv="Content-Security-Policy"\s+content="([^"]+)"/.exec(indexHtml)?.[1];
if (pagePolicy === undefined) throw new Error('index.html has lost its Content-Security-Policy meta tag');

/** The headers both servers send: the page's policy plus what only a header can say. */
function securityHeaders(policy: string): Record<string, string> {
  return {
    // No one may frame the app (clickjacking a Train or Export button).
    'Content-Security-Policy': `${policy}; frame-ancestors 'none'`,
    'X-Content-Type-Options': 'nosniff',
    'Referrer-Policy': 'no-referrer',
  };
}

/**
 * The dev server injects each component's CSS as a <style> element, which `style-src 'self'` refuses; Vite stamps
 * those elements with `html.cspNonce`, so in dev the policy also allows that nonce (fresh per server start). The
 * built app has no inline styles and keeps the strict policy.
 */
function devPolicy(nonce: string): string {
  return pagePolicy!
    .split(';')
    .map((directive) => directive.trim())
    .map((directive) => (directive.startsWith('style-src ') ? `${directive} 'nonce-${nonce}'` : directive))
    .join('; ');
}

function devCspPlugin(policy: string): Plugin {
  return {
    name: 'tunelab-dev-csp',
    apply: 'serve',
    transformIndexHtml: {
      order: 'pre',
      handler: (html) => html.replace(pagePolicy!, policy),
    },
  };
}

export default defineConfig(({ command, isPreview }) => {
  const isDevServer = command === 'serve' && !isPreview;
  const nonce = isDevServer ? randomBytes(18).toString('base64') : undefined;
  const policy = nonce === undefined ? pagePolicy : devPolicy(nonce);
  return {
    plugins: [svelte(), ...(nonce === undefined ? [] : [devCspPlugin(policy)])],
    // Relative asset URLs, so the built app works from any sub-path (a workshop's static host, GitHub Pages).
    base: './',
    html: { cspNonce: nonce },
    server: { headers: securityHeaders(policy) },
    preview: { headers: securityHeaders(pagePolicy) },
    worker: {
      // The trainer worker imports the engine as ES modules; the classic format would have to inline everything.
      format: 'es',
    },
    build: {
      outDir: 'dist',
      emptyOutDir: true,
      sourcemap: true,
    },
  };
});
