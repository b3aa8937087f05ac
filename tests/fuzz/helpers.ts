// Shared machinery of the parser fuzz tests: a seeded runner that gives every case its own Rng (so one failing case
// can be replayed alone), demands that each case ends in a result or a TunelabError with a message, and times every
// case; plus mutators for JSON values, text and bytes that aim at what parsers of user files get wrong (wrong types,
// huge or fractional numbers, cut-off and corrupted bytes), and JSON nested thousands deep.
//
// Environment knobs for hunting a bug: FUZZ_ALL=1 (report every distinct failure, not the first), FUZZ_ONLY=n (replay
// case n alone), FUZZ_DUMP=file (with FUZZ_ONLY: write its whole input), FUZZ_TRACE=file (the case now running).

import { writeFileSync } from 'node:fs';
import { TunelabError } from '../../src/engine/errors.ts';
import { Rng } from '../../src/engine/random.ts';

export interface FuzzSpec<I> {
  /** Base seed; case i uses caseRng(seed, i). */
  seed: number;
  cases: number;
  generate(rng: Rng, index: number): I;
  /** The parser under test. */
  parse(input: I): unknown;
  /** The input, shortened, for a failure report. */
  show(input: I): string;
  /** Further checks on a parser's result. */
  check?(result: unknown, input: I): void;
}

export interface FuzzOutcome {
  accepted: number;
  refused: number;
  slowestMs: number;
  slowestCase: number;
  totalMs: number;
  /** How often each refusal's opening words occurred: shows which checks the fuzzer reached. */
  refusals: Map<string, number>;
  longestMessage: number;
  /** A few messages that show a value as "[object Object]": not failures, but worth a better wording. */
  clumsyMessages: string[];
}

export function caseRng(seed: number, index: number): Rng {
  return new Rng((seed ^ Math.imul(index + 1, 0x9e3779b1)) >>> 0);
}

function failure(spec: FuzzSpec<unknown>, index: number, input: unknown, why: string, error?: unknown): Error {
  const stack = error instanceof Error ? error.stack : String(error ?? '');
  return new Error(
    `case ${index} (replay: caseRng(${spec.seed}, ${index})) ${why}\ninput: ${spec.show(input)}${stack ? `\n${stack}` : ''}`,
  );
}

/** The error's name and the frame that threw it: failures with the same key are one bug. */
function failureKey(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  const frame = error.stack?.split('\n').find((line) => line.trim().startsWith('at ')) ?? '';
  return `${error.name} ${frame.trim()}`;
}

/**
 * Runs every case; throws (naming the case, its input and the stack) on anything but a result or a TunelabError.
 * With FUZZ_ALL it runs on after a failure and throws at the end with one example of every distinct failure.
 */
export async function fuzz<I>(spec: FuzzSpec<I>): Promise<FuzzOutcome> {
  const outcome: FuzzOutcome = { accepted: 0, refused: 0, slowestMs: 0, slowestCase: -1, totalMs: 0, refusals: new Map(), longestMessage: 0, clumsyMessages: [] };
  const collectAll = Boolean(process.env.FUZZ_ALL);
  const failures = new Map<string, { error: Error; count: number }>();
  const fail = (error: Error, cause: unknown) => {
    if (!collectAll) throw error;
    const key = failureKey(cause);
    const seen = failures.get(key);
    if (seen) seen.count++;
    else failures.set(key, { error, count: 1 });
  };
  // After a hang, FUZZ_TRACE's file names the case that never finished.
  const trace = process.env.FUZZ_TRACE;
  const started = performance.now();
  const only = process.env.FUZZ_ONLY === undefined ? undefined : Number(process.env.FUZZ_ONLY);
  for (let index = only ?? 0; index < (only === undefined ? spec.cases : only + 1); index++) {
    if (trace) writeFileSync(trace, `seed ${spec.seed} case ${index}\n`);
    const input = spec.generate(caseRng(spec.seed, index), index);
    if (only !== undefined && process.env.FUZZ_DUMP) writeFileSync(process.env.FUZZ_DUMP, preview(input, Infinity));
    const caseStarted = performance.now();
    let result: unknown;
    let refused = false;
    try {
      result = await spec.parse(input);
    } catch (error) {
      if (!(error instanceof TunelabError)) {
        fail(failure(spec as FuzzSpec<unknown>, index, input, `threw a non-Tunelab error`, error), error);
        continue;
      }
      if (typeof error.message !== 'string' || error.message.trim().length === 0) {
        fail(failure(spec as FuzzSpec<unknown>, index, input, `threw a TunelabError without a useful message`, error), error);
        continue;
      }
      refused = true;
      outcome.refused++;
      outcome.longestMessage = Math.max(outcome.longestMessage, error.message.length);
      if (error.message.includes('[object Object]') && outcome.clumsyMessages.length < 3) outcome.clumsyMessages.push(error.message);
      const opening = error.message.replace(/["“][^"”]*["”]/g, '"…"').replace(/\d+/g, 'N').slice(0, 60);
      outcome.refusals.set(opening, (outcome.refusals.get(opening) ?? 0) + 1);
    }
    const elapsed = performance.now() - caseStarted;
    if (elapsed > outcome.slowestMs) {
      outcome.slowestMs = elapsed;
      outcome.slowestCase = index;
    }
    if (!refused) {
      outcome.accepted++;
      try {
        spec.check?.(result, input);
      } catch (error) {
        fail(failure(spec as FuzzSpec<unknown>, index, input, `gave a result that fails its checks`, error), error);
      }
    }
  }
  outcome.totalMs = performance.now() - started;
  if (failures.size) {
    const report = [...failures.values()].map(({ error, count }) => `[${count}×] ${error.message}`).join('\n\n');
    throw new Error(`${failures.size} distinct failures (${summary('run', outcome)}):\n\n${report}`);
  }
  return outcome;
}

/**
 * Runs one parser call that must end in a result or a TunelabError with a message; returns which. Anything else is
 * rethrown with `label` and the original stack.
 */
export async function resultOrTunelabError(label: string, call: () => unknown): Promise<'result' | TunelabError> {
  try {
    await call();
    return 'result';
  } catch (error) {
    if (error instanceof TunelabError && error.message.trim().length > 0) return error;
    const stack = error instanceof Error ? error.stack : String(error);
    throw new Error(`${label}: threw a non-Tunelab error\n${stack}`);
  }
}

/** Runs every call (each must end in a result or a TunelabError) and fails once, listing every call that did not. */
export async function expectEachResultOrTunelabError(calls: readonly { label: string; call: () => unknown }[]): Promise<void> {
  const failures: string[] = [];
  for (const { label, call } of calls) {
    try {
      await resultOrTunelabError(label, call);
    } catch (error) {
      const lines = (error as Error).message.split('\n');
      const frame = lines.find((line) => line.includes('/src/'))?.trim() ?? lines[2]?.trim() ?? '';
      failures.push(`${lines[0]}: ${lines[1]} ${frame}`);
    }
  }
  if (failures.length) throw new Error(`${failures.length} of ${calls.length} inputs threw a non-Tunelab error:\n${failures.join('\n')}`);
}

export function pick<T>(rng: Rng, items: readonly T[]): T {
  return items[rng.int(items.length)];
}

/** Shortens any value for a failure report. */
export function preview(value: unknown, max = 600): string {
  let text: string;
  if (value instanceof Uint8Array) {
    const head = Array.from(value.subarray(0, 48), (b) => b.toString(16).padStart(2, '0')).join(' ');
    const printable = new TextDecoder().decode(value.subarray(0, max));
    return `${value.length} bytes: ${head}${value.length > 48 ? ' …' : ''}\n  as text: ${printable.slice(0, max)}`;
  }
  try {
    text = typeof value === 'string' ? value : JSON.stringify(value);
  } catch (error) {
    text = `(not serializable: ${(error as Error).message})`;
  }
  text ??= String(value);
  return text.length > max ? `${text.slice(0, max)}… (${text.length} characters)` : text;
}

// ---- JSON values ---------------------------------------------------------------------------------------------------

/** Values that break parsers that trust types or sizes. Numbers include JSON-legal extremes. */
export const NASTY_SCALARS: readonly unknown[] = [
  null, true, false, 0, -0, 1, -1, 2, 3, 0.5, -2.5, 1e-320, 1e300, -1e300, 2 ** 31, 2 ** 32 + 1, 2 ** 53 + 2, 1e21, 123456789,
  '', ' ', '0', '1', '-1', 'null', 'true', 'gpt2', 'LORA', 'BPE', 'WordPiece', 'h', 'c_attn', 'c_proj', 'c_fc', 'all-linear',
  '.*', '(', '[', '\\', '(?P<x>a)', '(a+)+$', 'model.safetensors', '../model.safetensors', '/etc/passwd', 'a.bin',
  '<|endoftext|>', '\u0000', '\uFEFF', '\uD800', '😀', '__proto__', 'constructor', 'toString',
];

/** A nasty scalar, or one of the values this parser gives meaning to (`values`), half and half when there are any. */
function scalar(rng: Rng, values: readonly unknown[]): unknown {
  return values.length && rng.next() < 0.5 ? pick(rng, values) : pick(rng, NASTY_SCALARS);
}

/**
 * A random JSON value; `keys` biases objects towards the field names the parser reads, `values` the scalars towards
 * the ones it recognizes (type names and the like).
 */
export function randomJson(rng: Rng, keys: readonly string[], values: readonly unknown[] = [], depth = 0): unknown {
  const roll = rng.int(depth > 3 ? 3 : 7);
  if (roll <= 1) return scalar(rng, values);
  if (roll === 2) return 'x'.repeat(rng.int(3)) + String.fromCharCode(32 + rng.int(95)).repeat(rng.int(4));
  if (roll === 3 || roll === 4) return Array.from({ length: rng.int(4) }, () => randomJson(rng, keys, values, depth + 1));
  const out: Record<string, unknown> = {};
  for (let i = rng.int(5); i >= 0; i--) {
    out[rng.next() < 0.8 ? pick(rng, keys) : pick(rng, ['', 'x', '__proto__', 'constructor'])] = randomJson(rng, keys, values, depth + 1);
  }
  return out;
}

/** `[[[…1…]]]` or `{"a":{"a":…}}` nested `depth` deep, as JSON text (built without recursion). */
export function deeplyNestedJson(depth: number, asObject: boolean): string {
  return asObject ? `${'{"a":'.repeat(depth)}1${'}'.repeat(depth)}` : `${'['.repeat(depth)}1${']'.repeat(depth)}`;
}

/**
 * JSON text of `value` with the field at `path` replaced by a value nested `depth` deep. JSON.parse reads any depth,
 * but JSON.stringify, String() and recursive readers overflow the stack at a few thousand levels, so a parser that
 * quotes such a value in its message throws a RangeError instead of its own error.
 */
export function withDeepValue(value: unknown, path: readonly (string | number)[], depth: number, asObject: boolean): string {
  const marker = '"__deep_value__"';
  const copy = JSON.parse(JSON.stringify(value)) as Record<string | number, unknown>;
  let parent = copy;
  for (const key of path.slice(0, -1)) parent = parent[key] as Record<string | number, unknown>;
  parent[path[path.length - 1]] = '__deep_value__';
  return JSON.stringify(copy).replace(marker, deeplyNestedJson(depth, asObject));
}

type Container = Record<string, unknown> | unknown[];

function isContainer(value: unknown): value is Container {
  return typeof value === 'object' && value !== null;
}

/** Every container in a value with the keys it holds (paths to mutate), up to `limit` of them. */
function containers(root: unknown, limit = 400): { parent: Container; key: string | number }[] {
  const out: { parent: Container; key: string | number }[] = [];
  const stack: unknown[] = [root];
  while (stack.length && out.length < limit) {
    const value = stack.pop();
    if (!isContainer(value)) continue;
    const keys = Array.isArray(value) ? value.map((_, i) => i) : Object.keys(value);
    for (const key of keys) {
      out.push({ parent: value, key });
      stack.push((value as Record<string | number, unknown>)[key]);
    }
  }
  return out;
}

/**
 * A structurally mutated deep copy of a JSON value: values replaced by nasty ones, numbers nudged, keys deleted,
 * added or renamed, arrays emptied or grown. `keys` are likely field names. (Deep nesting has its own tests:
 * `withDeepValue`.)
 */
export function mutateJson(rng: Rng, value: unknown, keys: readonly string[], values: readonly unknown[] = []): unknown {
  const copy = JSON.parse(JSON.stringify(value)) as unknown;
  const rounds = 1 + rng.int(3);
  let root: unknown = copy;
  for (let r = 0; r < rounds; r++) {
    const places = containers(root);
    if (places.length === 0) return randomJson(rng, keys, values);
    const { parent, key } = pick(rng, places);
    const record = parent as Record<string | number, unknown>;
    const current = record[key];
    switch (rng.int(9)) {
      case 0:
      case 1:
        record[key] = scalar(rng, values);
        break;
      case 2:
        record[key] = randomJson(rng, keys, values);
        break;
      case 3: // nudge a number (or turn it into one)
        record[key] = typeof current === 'number' ? pick(rng, [current + 1, current - 1, current * 2, -current, current / 3, current * 1e6]) : rng.int(100);
        break;
      case 4: // delete
        if (Array.isArray(parent)) parent.splice(Number(key), 1);
        else delete record[key];
        break;
      case 5: // add a likely key here or in the root
        if (isContainer(root) && !Array.isArray(root) && rng.next() < 0.5) (root as Record<string, unknown>)[pick(rng, keys)] = randomJson(rng, keys, values);
        else if (!Array.isArray(parent)) record[pick(rng, keys)] = randomJson(rng, keys, values);
        else parent.push(randomJson(rng, keys, values));
        break;
      case 6: // rename a key
        if (!Array.isArray(parent)) {
          delete record[key];
          record[`${String(key)}${pick(rng, ['_', 'X', ' ', ''])}${pick(rng, keys)}`] = current;
        }
        break;
      case 7: // empty or grow a container, or wrap a value
        if (Array.isArray(current)) record[key] = rng.next() < 0.5 ? [] : [...current, ...current];
        else if (isContainer(current)) record[key] = rng.next() < 0.5 ? {} : [current];
        else record[key] = [current];
        break;
      default: // replace the whole value with something else entirely
        if (rng.next() < 0.2) root = pick(rng, [null, [], 'config', 3, [root]]);
        else record[key] = String(current);
    }
  }
  return root;
}

// ---- text and bytes ------------------------------------------------------------------------------------------------

const NOISE = ['{', '}', '[', ']', '"', ',', ':', '\\', '\n', ' ', '0', '-', 'e', '9', 'null', '\uFEFF', '\u0000', '\uD800', 'é', '😀'];

/** Text-level damage: cut, spliced noise, duplicated or swapped spans, numbers replaced, an invalid UTF-8 byte. */
export function mutateText(rng: Rng, text: string): string {
  for (let r = 1 + rng.int(3); r > 0; r--) {
    const at = rng.int(text.length + 1);
    const span = rng.int(Math.min(40, text.length - at) + 1);
    switch (rng.int(7)) {
      case 0:
        text = text.slice(0, at);
        break;
      case 1:
        text = text.slice(0, at) + text.slice(at + span);
        break;
      case 2:
        text = text.slice(0, at) + Array.from({ length: 1 + rng.int(6) }, () => pick(rng, NOISE)).join('') + text.slice(at);
        break;
      case 3:
        text = text.slice(0, at + span) + text.slice(at, at + span) + text.slice(at + span);
        break;
      case 4: {
        const numbers = [...text.matchAll(/-?\d+(\.\d+)?(e[+-]?\d+)?/gi)];
        if (numbers.length) {
          const n = pick(rng, numbers);
          const replacement = pick(rng, ['-1', '0', '1e308', '1e400', '0.5', '9007199254740993', '"7"', 'null', '[]', '{}', '4294967297']);
          text = text.slice(0, n.index) + replacement + text.slice(n.index! + n[0].length);
        }
        break;
      }
      case 5:
        text = text.slice(at) + text.slice(0, at);
        break;
      default:
        text = text.slice(0, at) + pick(rng, NOISE).repeat(1 + rng.int(2000)) + text.slice(at);
    }
  }
  return text;
}

/** Byte-level damage: flipped bits, overwritten runs, cuts, appended or inserted junk. */
export function mutateBytes(rng: Rng, source: Uint8Array): Uint8Array {
  let bytes = source.slice();
  for (let r = 1 + rng.int(3); r > 0; r--) {
    const at = rng.int(bytes.length + 1);
    switch (rng.int(6)) {
      case 0:
        for (let k = 1 + rng.int(4); k > 0 && bytes.length; k--) bytes[rng.int(bytes.length)] ^= 1 << rng.int(8);
        break;
      case 1:
        for (let k = 0, n = rng.int(16); k < n && at + k < bytes.length; k++) bytes[at + k] = rng.int(256);
        break;
      case 2:
        bytes = bytes.slice(0, at);
        break;
      case 3: {
        const junk = Uint8Array.from({ length: 1 + rng.int(32) }, () => rng.int(256));
        const out = new Uint8Array(bytes.length + junk.length);
        out.set(bytes.subarray(0, at));
        out.set(junk, at);
        out.set(bytes.subarray(at), at + junk.length);
        bytes = out;
        break;
      }
      case 4: // an invalid UTF-8 sequence (lone continuation byte or a truncated lead)
        if (bytes.length) bytes[rng.int(bytes.length)] = pick(rng, [0x80, 0xbf, 0xc0, 0xe2, 0xf0, 0xff]);
        break;
      default:
        bytes = Uint8Array.from({ length: rng.int(64) }, () => rng.int(256));
    }
  }
  return bytes;
}

export const encodeUtf8 = (text: string): Uint8Array => new TextEncoder().encode(text);

/** One line for the test's log, so a run shows what the fuzzer reached and how long it took. */
export function summary(name: string, outcome: FuzzOutcome): string {
  return (
    `${name}: ${outcome.accepted} accepted, ${outcome.refused} refused with ${outcome.refusals.size} distinct messages, ` +
    `${Math.round(outcome.totalMs)} ms, slowest case ${outcome.slowestCase} ${outcome.slowestMs.toFixed(1)} ms, ` +
    `longest message ${outcome.longestMessage} characters` +
    outcome.clumsyMessages.map((m) => `\n  clumsy message: ${m.slice(0, 200)}`).join('')
  );
}

/**
 * A single fuzz case slower than this is a hang. Cases normally take well under a millisecond and the hangs found
 * so far took seconds to minutes; the margin keeps scheduling stalls on a loaded two-core CI machine from failing
 * a run. This guards termination, not speed.
 */
export const HANG_MS = 3000;
