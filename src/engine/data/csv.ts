// CSV and TSV as spreadsheets write them (RFC 4180): fields split by a delimiter, records by LF or CRLF, a field in
// double quotes may hold delimiters, quotes (doubled) and line breaks. Blank rows are skipped. Every field keeps its
// offset in the text so problems can be shown on the right line. Never throws; syntax problems are collected and
// parsing goes on.

export interface CsvField {
  value: string;
  /** Offset of the field's first character (its opening quote when quoted). */
  start: number;
}

export interface CsvRecord {
  fields: CsvField[];
  start: number;
}

export interface CsvSyntaxError {
  offset: number;
  message: string;
}

export interface CsvParseResult {
  records: CsvRecord[];
  errors: CsvSyntaxError[];
}

/** Parses records from `from` to the end of `text`. */
export function parseCsv(text: string, delimiter: ',' | '\t', from = 0): CsvParseResult {
  const records: CsvRecord[] = [];
  const errors: CsvSyntaxError[] = [];
  const n = text.length;
  const delimiterName = delimiter === ',' ? 'comma' : 'tab';
  let pos = from;

  while (pos < n) {
    const recordStart = pos;
    const fields: CsvField[] = [];
    let recordEnded = false;
    while (!recordEnded) {
      const fieldStart = pos;
      let value: string;
      if (text[pos] === '"') {
        // Quoted field: runs to the next quote that is not doubled.
        let parts = '';
        let chunk = pos + 1;
        let closed = false;
        pos++;
        while (pos < n) {
          const q = text.indexOf('"', pos);
          if (q === -1) break;
          if (text[q + 1] === '"') {
            parts += text.slice(chunk, q + 1);
            pos = q + 2;
            chunk = pos;
            continue;
          }
          parts += text.slice(chunk, q);
          pos = q + 1;
          closed = true;
          break;
        }
        if (!closed) {
          errors.push({
            offset: fieldStart,
            message: 'this quoted field is never closed: add the closing \'"\' (a quote inside a field is written "")',
          });
          parts += text.slice(chunk);
          pos = n;
        } else if (pos < n && text[pos] !== delimiter && text[pos] !== '\n' && text[pos] !== '\r') {
          errors.push({
            offset: pos,
            message: `text after a closing quote: a field that starts with '"' must end with '"' before the next ${delimiterName}`,
          });
          // Keep the stray text in the field rather than lose it.
          const end = nextBoundary(text, pos, delimiter);
          parts += text.slice(pos, end);
          pos = end;
        }
        value = parts;
      } else {
        const end = nextBoundary(text, pos, delimiter);
        value = text.slice(pos, end);
        pos = end;
      }
      fields.push({ value, start: fieldStart });
      if (pos >= n) recordEnded = true;
      else if (text[pos] === delimiter) pos++;
      else {
        // LF or CRLF ends the record (a CR alone stays inside its field).
        if (text[pos] === '\r' && text[pos + 1] === '\n') pos += 2;
        else pos++;
        recordEnded = true;
      }
    }
    // Blank lines, and the empty rows spreadsheets write as ",,", hold no data.
    const blank = fields.every((field) => field.value.trim() === '');
    if (!blank) records.push({ fields, start: recordStart });
  }
  return { records, errors };
}

/** Offset of the next delimiter, LF or CRLF at or after `pos` (or the end of the text). */
function nextBoundary(text: string, pos: number, delimiter: string): number {
  for (let i = pos; i < text.length; i++) {
    const c = text[i];
    if (c === delimiter || c === '\n' || (c === '\r' && text[i + 1] === '\n')) return i;
  }
  return text.length;
}
