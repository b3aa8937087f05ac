// Once per e2e run: build the app exactly as `npm run build` does, serve dist/ with Vite's preview server on a free
// 127.0.0.1 port, and hand its URL to the tests (`inject('appUrl')`). The server closes when the run ends.

import { fileURLToPath } from 'node:url';
import { build, preview } from 'vite';
import type { TestProject } from 'vitest/node';

declare module 'vitest' {
  export interface ProvidedContext {
    /** The built app, served by `vite preview`, e.g. "http://127.0.0.1:41234/". */
    appUrl: string;
  }
}

const root = fileURLToPath(new URL('../../', import.meta.url));
const configFile = fileURLToPath(new URL('../../vite.config.ts', import.meta.url));

/**
 * Where the app is built: dist/ (what `npm run build` makes), or TUNELAB_E2E_OUT_DIR so that two e2e runs on one
 * machine (a developer's and an editor's, say) do not overwrite each other's build.
 */
const outDir = process.env.TUNELAB_E2E_OUT_DIR || 'dist';

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  await build({ root, configFile, logLevel: 'warn', mode: 'production', build: { outDir, emptyOutDir: true } });
  // Port 0: the OS picks a free port, so parallel runs on one machine never collide.
  const server = await preview({
    root,
    configFile,
    logLevel: 'warn',
    build: { outDir },
    preview: { host: '127.0.0.1', port: 0, strictPort: true, open: false },
  });
  const address = server.httpServer.address();
  if (address === null || typeof address === 'string') throw new Error('vite preview did not report a TCP address');
  project.provide('appUrl', `http://127.0.0.1:${address.port}/`);
  return async () => {
    await server.close();
  };
}
