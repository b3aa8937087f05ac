// `tunelab` command-line entry: dispatches to subcommands. Each subcommand lives in its own module and returns an
// exit status. Output meant for programs is JSON on stdout; progress and messages go to stderr.

import { TunelabError } from '../engine/errors.ts';

type Command = (args: string[]) => Promise<number>;

const commands: Record<string, { summary: string; load: () => Promise<Command> }> = {
  info: { summary: 'print the WebGPU adapter this machine offers', load: async () => (await import('./info.ts')).info },
  bench: { summary: 'benchmarks as JSON lines: matmul, attention, step, generate, memory, all', load: async () => (await import('./bench.ts')).bench },
  validate: { summary: 'check a data set and print what training will see', load: async () => (await import('./validate.ts')).validate },
  init: { summary: 'write a new randomly initialized GPT-2 model directory', load: async () => (await import('./init.ts')).init },
  train: { summary: 'fine-tune a model on a data file (LoRA adapter or weights)', load: async () => (await import('./train.ts')).train },
  generate: { summary: 'generate text from a model, optionally with a LoRA adapter', load: async () => (await import('./generate.ts')).generate },
  eval: { summary: 'loss, perplexity and token accuracy on a data file', load: async () => (await import('./eval.ts')).evaluate },
  tokenizer: { summary: 'tokenizer train: learn a byte-level BPE tokenizer.json from text', load: async () => (await import('./tokenizer.ts')).tokenizer },
  pretrain: { summary: 'train a fresh model on a text corpus, in chunks that resume exactly', load: async () => (await import('./pretrain.ts')).pretrain },
};

function usage(): string {
  const lines = Object.entries(commands).map(([name, c]) => `  ${name.padEnd(10)} ${c.summary}`);
  return `usage: tunelab <command> [options]\n\ncommands:\n${lines.join('\n')}\n`;
}

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(usage());
    return name ? 0 : 2;
  }
  const command = commands[name];
  if (!command) {
    process.stderr.write(`tunelab: unknown command '${name}'\n\n${usage()}`);
    return 2;
  }
  try {
    return await (await command.load())(rest);
  } catch (error) {
    if (error instanceof TunelabError) {
      process.stderr.write(`tunelab ${name}: ${error.message}\n`);
      return 1;
    }
    throw error;
  }
}
