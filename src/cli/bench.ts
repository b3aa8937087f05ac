// `tunelab bench <what>`: benchmarks that print JSON figures. Not tests: they assert nothing about speed.
export async function bench(args: string[]): Promise<number> {
  process.stderr.write(`tunelab bench: nothing to run for '${args.join(' ')}' yet\n`);
  return 2;
}
