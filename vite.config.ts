// Builds the browser app: Svelte 5 UI on the main thread, the engine in an ES-module Web Worker. `.wgsl?raw` imports
// are Vite's built-in raw loader. The Node test runner has its own vitest.config.ts and does not read this file.

import { defineConfig } from 'vite';
import { svelte } from '@sveltejs/vite-plugin-svelte';

export default defineConfig({
  plugins: [svelte()],
  // Relative asset URLs, so the built app works from any sub-path (a workshop's static host, GitHub Pages).
  base: './',
  worker: {
    // The trainer worker imports the engine as ES modules; the classic format would have to inline everything.
    format: 'es',
  },
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    sourcemap: true,
  },
});
