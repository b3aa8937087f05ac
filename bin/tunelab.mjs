#!/usr/bin/env node
// The `tunelab` command. Runs the TypeScript CLI in src/cli/ directly (tsx), with WGSL sources loaded as text.
import { register } from 'node:module';
import { register as registerTsx } from 'tsx/esm/api';

registerTsx();
register('./raw-loader.mjs', import.meta.url);
const { main } = await import('../src/cli/main.ts');
process.exitCode = await main(process.argv.slice(2));
