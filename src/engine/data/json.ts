// A JSON parser that remembers where every value starts, so validation can point at the exact line and column of a
// bad key or value in the user's text, and that explains syntax errors in words a learner can act on (single quotes,
// trailing commas, a line cut off). It never throws; it parses one value within [from, to) of a larger text.

interface Span {
  /** Offset of the value's first character in the whole text. */
  start: number;
  /** Offset just past its last character. */
  end: number;
}
export interface JsonObject extends Span {
  type: 'object';
  members: JsonMember[];
}
export interface JsonMember {
  key: string;
  keyStart: number;
  value: JsonNode;
}
export interface JsonArray extends Span {
  type: 'array';
  items: JsonNode[];
}
export interface JsonString extends Span {
  type: 'string';
  value: string;
}
export interface JsonNumber extends Span {
  type: 'number';
  value: number;
}
export interface JsonBoolean extends Span {
  type: 'boolean';
  value: boolean;
}
export interface JsonNull extends Span {
  type: 'null';
}
export type JsonNode = JsonObject | JsonArray | JsonString | JsonNumber | JsonBoolean | JsonNull;

export interface JsonSyntaxError {
  offset: number;
  message: string;
  /** The range ended before the value did (a line or file cut off), as opposed to a wrong character. */
  endedEarly: boolean;
}
export type JsonParseResult = { ok: true; value: JsonNode } | { ok: false; error: JsonSyntaxError };

/** What the parsed range is, for messages: "the line ends" (JSON Lines) or "the file ends". */
export type JsonUnit = 'line' | 'file';

/** Deeper nesting than this is reported instead of risking the call stack; no real data set comes close. */
export const MAX_JSON_DEPTH = 256;

class Failure {
  constructor(
    readonly offset: number,
    readonly message: string,
    readonly endedEarly = false,
  ) {}
}

export function parseJson(text: string, from = 0, to = text.length, unit: JsonUnit = 'file'): JsonParseResult {
  const parser = new Parser(text, from, to, unit);
  try {
    parser.skipWhitespace();
    if (parser.pos >= to) return { ok: false, error: { offset: from, message: `the ${unit} is empty`, endedEarly: true } };
    const value = parser.value(0);
    parser.skipWhitespace();
    if (parser.pos < to) {
      const hint = unit === 'line' ? ' (JSON Lines holds one example per line)' : '';
      parser.fail(`unexpected ${describe(text, parser.pos)} after the end of the JSON value${hint}`);
    }
    return { ok: true, value };
  } catch (error) {
    if (error instanceof Failure) {
      return { ok: false, error: { offset: error.offset, message: error.message, endedEarly: error.endedEarly } };
    }
    throw error;
  }
}

/** Names what stands at `offset`, for messages: `'}'`, `a line break`, `the letter 'x'`. */
function describe(text: string, offset: number): string {
  const c = text[offset];
  if (c === undefined) return 'end';
  if (c === '\n' || c === '\r') return 'a line break';
  if (c === '\t') return 'a tab';
  if (c === '\uFEFF') return 'a byte-order mark (U+FEFF, invisible; files joined together?)';
  const code = c.charCodeAt(0);
  if (code < 0x20) return `control character U+${code.toString(16).toUpperCase().padStart(4, '0')}`;
  return `'${String.fromCodePoint(text.codePointAt(offset)!)}'`;
}

class Parser {
  pos: number;

  constructor(
    readonly text: string,
    readonly from: number,
    readonly to: number,
    readonly unit: JsonUnit,
  ) {
    this.pos = from;
  }

  fail(message: string, offset = this.pos, endedEarly = false): never {
    throw new Failure(offset, message, endedEarly);
  }

  failAtEnd(expected: string): never {
    this.fail(`the ${this.unit} ends before the JSON is complete (expected ${expected})`, this.to, true);
  }

  skipWhitespace(): void {
    const { text, to } = this;
    while (this.pos < to) {
      const c = text.charCodeAt(this.pos);
      if (c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d) this.pos++;
      else break;
    }
  }

  value(depth: number): JsonNode {
    if (depth > MAX_JSON_DEPTH) this.fail(`JSON nested deeper than ${MAX_JSON_DEPTH} levels`);
    if (this.pos >= this.to) this.failAtEnd('a value');
    const c = this.text[this.pos];
    switch (c) {
      case '{':
        return this.object(depth);
      case '[':
        return this.array(depth);
      case '"':
        return this.string();
      case "'":
        this.fail("strings need double quotes (\"), not single quotes (')");
      default:
        if (c === '-' || (c >= '0' && c <= '9')) return this.number();
        return this.literal();
    }
  }

  object(depth: number): JsonObject {
    const start = this.pos;
    this.pos++; // '{'
    const members: JsonMember[] = [];
    this.skipWhitespace();
    if (this.peek() === '}') {
      this.pos++;
      return { type: 'object', start, end: this.pos, members };
    }
    for (;;) {
      this.skipWhitespace();
      if (this.pos >= this.to) this.failAtEnd("a property name or '}'");
      const c = this.text[this.pos];
      if (c === '}' && members.length > 0) this.fail("trailing comma: remove the ',' before '}'");
      if (c === "'") this.fail("property names need double quotes (\"), not single quotes (')");
      if (c !== '"') this.fail(`expected a property name in double quotes, found ${describe(this.text, this.pos)}`);
      const keyStart = this.pos;
      const key = this.string().value;
      this.skipWhitespace();
      if (this.pos >= this.to) this.failAtEnd("':'");
      if (this.text[this.pos] !== ':') {
        this.fail(`expected ':' after the property name "${key}", found ${describe(this.text, this.pos)}`);
      }
      this.pos++;
      this.skipWhitespace();
      const value = this.value(depth + 1);
      members.push({ key, keyStart, value });
      this.skipWhitespace();
      if (this.pos >= this.to) this.failAtEnd("',' or '}'");
      const next = this.text[this.pos];
      if (next === ',') {
        this.pos++;
        continue;
      }
      if (next === '}') {
        this.pos++;
        return { type: 'object', start, end: this.pos, members };
      }
      if (next === '"') this.fail("missing ',' between properties");
      this.fail(`expected ',' or '}' after a property, found ${describe(this.text, this.pos)}`);
    }
  }

  array(depth: number): JsonArray {
    const start = this.pos;
    this.pos++; // '['
    const items: JsonNode[] = [];
    this.skipWhitespace();
    if (this.peek() === ']') {
      this.pos++;
      return { type: 'array', start, end: this.pos, items };
    }
    for (;;) {
      this.skipWhitespace();
      if (this.pos >= this.to) this.failAtEnd("a value or ']'");
      if (this.text[this.pos] === ']' && items.length > 0) this.fail("trailing comma: remove the ',' before ']'");
      items.push(this.value(depth + 1));
      this.skipWhitespace();
      if (this.pos >= this.to) this.failAtEnd("',' or ']'");
      const next = this.text[this.pos];
      if (next === ',') {
        this.pos++;
        continue;
      }
      if (next === ']') {
        this.pos++;
        return { type: 'array', start, end: this.pos, items };
      }
      if (next === '{' || next === '[' || next === '"') this.fail("missing ',' between list items");
      this.fail(`expected ',' or ']' in a list, found ${describe(this.text, this.pos)}`);
    }
  }

  string(): JsonString {
    const { text, to } = this;
    const start = this.pos;
    this.pos++; // opening quote
    let value = '';
    let chunkStart = this.pos;
    for (;;) {
      if (this.pos >= to) {
        this.fail(`this string is never closed: the ${this.unit} ends before its closing '"'`, start, true);
      }
      const c = text.charCodeAt(this.pos);
      if (c === 0x22) {
        value += text.slice(chunkStart, this.pos);
        this.pos++;
        return { type: 'string', start, end: this.pos, value };
      }
      if (c === 0x5c) {
        value += text.slice(chunkStart, this.pos);
        value += this.escape();
        chunkStart = this.pos;
        continue;
      }
      if (c === 0x0a || c === 0x0d) this.fail('a string cannot contain a line break; write it as \\n');
      if (c < 0x20) {
        const name = c === 0x09 ? 'a tab; write it as \\t' : `${describe(text, this.pos)}; escape it as \\u00XX`;
        this.fail(`a string cannot contain ${name}`);
      }
      this.pos++;
    }
  }

  /** Reads one escape sequence at `pos` (the backslash) and returns the text it stands for. */
  escape(): string {
    const at = this.pos;
    this.pos++;
    if (this.pos >= this.to) this.fail(`the ${this.unit} ends inside an escape sequence`, at, true);
    const c = this.text[this.pos];
    this.pos++;
    switch (c) {
      case '"':
        return '"';
      case '\\':
        return '\\';
      case '/':
        return '/';
      case 'b':
        return '\b';
      case 'f':
        return '\f';
      case 'n':
        return '\n';
      case 'r':
        return '\r';
      case 't':
        return '\t';
      case 'u': {
        const hex = this.text.slice(this.pos, Math.min(this.pos + 4, this.to));
        if (!/^[0-9a-fA-F]{4}$/.test(hex)) this.fail('\\u must be followed by four hexadecimal digits', at);
        this.pos += 4;
        return String.fromCharCode(parseInt(hex, 16));
      }
      default:
        this.fail(`invalid escape \\${c === undefined ? '' : c} in a string (a literal backslash is written \\\\)`, at);
    }
  }

  number(): JsonNumber {
    const start = this.pos;
    const digits = () => {
      const first = this.pos;
      while (this.pos < this.to && this.text.charCodeAt(this.pos) >= 0x30 && this.text.charCodeAt(this.pos) <= 0x39) {
        this.pos++;
      }
      return this.pos - first;
    };
    if (this.peek() === '-') this.pos++;
    if (this.peek() === '0') this.pos++;
    else if (digits() === 0) this.fail('invalid number', start);
    if (this.peek() === '.') {
      this.pos++;
      if (digits() === 0) this.fail('invalid number: digits must follow the decimal point', start);
    }
    const e = this.peek();
    if (e === 'e' || e === 'E') {
      this.pos++;
      const sign = this.peek();
      if (sign === '+' || sign === '-') this.pos++;
      if (digits() === 0) this.fail('invalid number: digits must follow the exponent', start);
    }
    const after = this.peek();
    if (after !== undefined && /[0-9A-Za-z_.]/.test(after)) this.fail('invalid number', start);
    return { type: 'number', start, end: this.pos, value: Number(this.text.slice(start, this.pos)) };
  }

  literal(): JsonBoolean | JsonNull {
    const start = this.pos;
    const word = /^[A-Za-z_$][A-Za-z0-9_$]*/.exec(this.text.slice(start, Math.min(this.to, start + 40)))?.[0];
    if (word === 'true' || word === 'false') {
      this.pos += word.length;
      return { type: 'boolean', start, end: this.pos, value: word === 'true' };
    }
    if (word === 'null') {
      this.pos += 4;
      return { type: 'null', start, end: this.pos };
    }
    if (word !== undefined) {
      const hint = ['True', 'False', 'None', 'NaN', 'Infinity', 'undefined'].includes(word)
        ? ' (JSON writes true, false and null)'
        : ' (text values need double quotes)';
      this.fail(`${word} is not a JSON value${hint}`);
    }
    this.fail(`unexpected ${describe(this.text, start)}; expected a value`);
  }

  peek(): string | undefined {
    return this.pos < this.to ? this.text[this.pos] : undefined;
  }
}

export function jsonTypeName(node: JsonNode): string {
  switch (node.type) {
    case 'object':
      return 'an object';
    case 'array':
      return 'a list';
    case 'string':
      return 'a string';
    case 'number':
      return 'a number';
    case 'boolean':
      return node.value ? 'true' : 'false';
    case 'null':
      return 'null';
  }
}

export function member(node: JsonObject, key: string): JsonMember | undefined {
  // Like JSON.parse, the last of repeated keys wins.
  for (let i = node.members.length - 1; i >= 0; i--) if (node.members[i].key === key) return node.members[i];
  return undefined;
}
