// The user's text as given: reading bytes (UTF-8 with or without a byte-order mark, or UTF-16 as spreadsheets save
// "Unicode text"), and turning offsets into the line and column an editor shows.
import type { DataIssue, DataSourceName } from './issues.ts';

const BOM = 0xfeff;

/** Offset where content starts: 1 after a byte-order mark, else 0. */
export function contentStart(text: string): number {
  return text.charCodeAt(0) === BOM ? 1 : 0;
}

/** Maps offsets in a text to 1-based lines and columns. CRLF and LF both end a line; a leading BOM takes no column. */
export class LineIndex {
  private readonly starts: number[] = [];

  constructor(text: string) {
    this.starts.push(contentStart(text));
    for (let i = text.indexOf('\n'); i !== -1; i = text.indexOf('\n', i + 1)) this.starts.push(i + 1);
  }

  get lineCount(): number {
    return this.starts.length;
  }

  /** Offset of the first character of a 1-based line. */
  lineStart(line: number): number {
    return this.starts[line - 1];
  }

  line(offset: number): number {
    let lo = 0;
    let hi = this.starts.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.starts[mid] <= offset) lo = mid;
      else hi = mid - 1;
    }
    return lo + 1;
  }

  position(offset: number): { line: number; column: number } {
    const line = this.line(offset);
    return { line, column: Math.max(1, offset - this.starts[line - 1] + 1) };
  }
}

export interface DecodedText {
  text: string;
  encoding: 'utf-8' | 'utf-16le' | 'utf-16be';
  /** `not-utf8` when some bytes were not UTF-8. */
  issues: DataIssue[];
}

/** Reads a data file's bytes. Never throws: invalid UTF-8 becomes U+FFFD and a warning on the first bad line. */
export function decodeDataBytes(bytes: Uint8Array, source: DataSourceName = 'train'): DecodedText {
  if (bytes.length >= 2 && bytes[0] === 0xff && bytes[1] === 0xfe) {
    return { text: new TextDecoder('utf-16le').decode(bytes), encoding: 'utf-16le', issues: [] };
  }
  if (bytes.length >= 2 && bytes[0] === 0xfe && bytes[1] === 0xff) {
    return { text: new TextDecoder('utf-16be').decode(bytes), encoding: 'utf-16be', issues: [] };
  }
  // Keep the BOM in the text (ignoreBOM) so the text is exactly what the file holds; parsing skips it.
  const text = new TextDecoder('utf-8', { ignoreBOM: true }).decode(bytes);
  const bad = firstInvalidUtf8(bytes);
  const issues: DataIssue[] = [];
  if (bad !== -1) {
    let line = 1;
    for (let i = 0; i < bad; i++) if (bytes[i] === 0x0a) line++;
    issues.push({
      severity: 'warning',
      code: 'not-utf8',
      source,
      line,
      message:
        'the file is not valid UTF-8 from here on (saved in another encoding?); unreadable bytes became \uFFFD — ' +
        'save it as UTF-8',
    });
  }
  return { text, encoding: 'utf-8', issues };
}

/** Index of the first byte that does not start or continue a well-formed UTF-8 sequence, or -1. */
export function firstInvalidUtf8(bytes: Uint8Array): number {
  let i = 0;
  while (i < bytes.length) {
    const b = bytes[i];
    if (b < 0x80) {
      i++;
      continue;
    }
    let need: number;
    let min: number;
    let cp: number;
    if (b >= 0xc2 && b <= 0xdf) [need, min, cp] = [1, 0x80, b & 0x1f];
    else if (b >= 0xe0 && b <= 0xef) [need, min, cp] = [2, 0x800, b & 0x0f];
    else if (b >= 0xf0 && b <= 0xf4) [need, min, cp] = [3, 0x10000, b & 0x07];
    else return i;
    if (i + need >= bytes.length) return i; // cut off inside a character
    for (let k = 1; k <= need; k++) {
      const c = bytes[i + k];
      if ((c & 0xc0) !== 0x80) return i;
      cp = (cp << 6) | (c & 0x3f);
    }
    // Overlong forms, UTF-16 surrogates and code points past U+10FFFF are not UTF-8.
    if (cp < min || (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff) return i;
    i += need + 1;
  }
  return -1;
}
