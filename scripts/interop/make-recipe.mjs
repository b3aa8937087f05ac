#!/usr/bin/env node
// Runs make-recipe.ts the way bin/tunelab.mjs runs the CLI: TypeScript through tsx, WGSL through the ?raw loader.
import { register } from 'node:module';
import { register as registerTsx } from 'tsx/esm/api';

registerTsx();
register('../../bin/raw-loader.mjs', import.meta.url);
await import('./make-recipe.ts');
