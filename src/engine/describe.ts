// Short, safe text for a value a user supplied, to quote in an error message. A value read from a user's JSON file
// can be nested thousands deep (JSON.stringify and String() then overflow the stack), megabytes long (a message no
// one can read) or an object (String() gives "[object Object]"). `describeValue` shows any value as compact JSON
// text, a few levels deep and at most `maxChars` characters long, and never throws; `shortText` cuts a string that
// a message shows unquoted (a file name).

/** Containers deeper than this are shown as `[…]` or `{…}`; it also bounds the recursion. */
const MAX_DEPTH = 3;

/** Stops the walk once the text is longer than the caller wants. */
class Budget {
  text = '';
  constructor(readonly limit: number) {}

  get full(): boolean {
    return this.text.length > this.limit;
  }

  add(piece: string): void {
    if (!this.full) this.text += piece;
  }
}

/**
 * `value` as compact JSON text (`"gpt2"`, `[1,2]`, `{"a":[…]}`), cut to `maxChars` characters with a trailing `…`.
 * Short JSON values read exactly as JSON.stringify writes them; non-finite numbers, undefined and non-JSON objects
 * get a readable name instead.
 */
export function describeValue(value: unknown, maxChars = 80): string {
  const limit = Math.max(1, Math.floor(maxChars));
  const budget = new Budget(limit);
  try {
    write(value, 0, budget);
  } catch {
    // A getter or proxy that throws: say what kind of thing it was rather than fail the caller's own error.
    budget.text = `(${typeof value})`;
  }
  return cut(budget.text, limit);
}

/** A string shown as it is (no quotes) but cut to `maxChars` characters: file names and the like in messages. */
export function shortText(text: string, maxChars = 80): string {
  return cut(text, Math.max(1, Math.floor(maxChars)));
}

function cut(text: string, limit: number): string {
  if (text.length <= limit) return text;
  let end = limit - 1;
  // Do not split a surrogate pair: half of one is not text.
  const last = text.charCodeAt(end - 1);
  if (last >= 0xd800 && last <= 0xdbff) end--;
  return `${text.slice(0, end)}…`;
}

function write(value: unknown, depth: number, budget: Budget): void {
  switch (typeof value) {
    case 'string':
      // Quote only what can be shown: an 8 MB string costs no more than an 80-character one.
      budget.add(JSON.stringify(value.length > budget.limit ? value.slice(0, budget.limit + 1) : value));
      return;
    case 'number':
    case 'boolean':
    case 'bigint':
    case 'undefined':
      budget.add(String(value));
      return;
    case 'symbol':
      budget.add(value.toString());
      return;
    case 'function':
      budget.add('a function');
      return;
  }
  if (value === null) {
    budget.add('null');
    return;
  }
  if (Array.isArray(value)) {
    if (value.length === 0) return budget.add('[]');
    if (depth >= MAX_DEPTH) return budget.add('[…]');
    budget.add('[');
    for (let i = 0; i < value.length && !budget.full; i++) {
      if (i > 0) budget.add(',');
      write(value[i], depth + 1, budget);
    }
    budget.add(']');
    return;
  }
  if (ArrayBuffer.isView(value)) {
    const length = (value as unknown as { length?: number }).length ?? value.byteLength;
    budget.add(`${value.constructor.name}(${length})`);
    return;
  }
  const prototype = Object.getPrototypeOf(value);
  if (prototype !== Object.prototype && prototype !== null) {
    budget.add(`a ${prototype?.constructor?.name ?? 'object'}`);
    return;
  }
  const record = value as Record<string, unknown>;
  let first = true;
  for (const key in record) {
    if (!Object.hasOwn(record, key)) continue;
    if (first) {
      if (depth >= MAX_DEPTH) return budget.add('{…}');
      budget.add('{');
    } else {
      budget.add(',');
    }
    first = false;
    if (budget.full) break;
    write(key, MAX_DEPTH, budget);
    budget.add(':');
    write(record[key], depth + 1, budget);
  }
  budget.add(first ? '{}' : '}');
}
