// Entry of the self-contained benchmark bundle (bench/build.mjs → bench/dist/tunelab-bench.mjs) that travels to the
// GPU machine, where there is no node_modules: `node bench/dist/tunelab-bench.mjs bench <what> [options]`, the same
// arguments and output as `tunelab bench`. Only the bench command is bundled.

import { bench } from '../src/cli/bench.ts';
import { TunelabError } from '../src/engine/errors.ts';

const [command, ...rest] = process.argv.slice(2);
if (command !== 'bench') {
  process.stderr.write('usage: node tunelab-bench.mjs bench <matmul|attention|step|generate|memory|all> [options]\n');
  process.exitCode = 2;
} else {
  try {
    process.exitCode = await bench(rest);
  } catch (error) {
    if (!(error instanceof TunelabError)) throw error;
    process.stderr.write(`tunelab bench: ${error.message}\n`);
    process.exitCode = 1;
  }
}
