// The findings of data validation: stable codes (tests, the UI and scripts match on them), a message a learner can act
// on, and where in the user's own text the problem is.

/** Problems that make data untrainable. */
export const ERROR_CODES = [
  'json-syntax', // a line (JSONL) or the file (JSON) is not valid JSON; has a column
  'csv-syntax', // a quoted CSV/TSV field is not closed, or text follows a closing quote
  'wrong-type', // an example or a message is not a JSON object
  'missing-messages', // a chat example has no "messages" list
  'message-missing-key', // a message lacks "role" or "content"
  'unrecognized-key', // a message has a key other than role, content, weight, name
  'unrecognized-role', // a role other than system, user, assistant
  'empty-content', // a message's content is empty or only whitespace
  'no-assistant-message', // a chat example has no assistant message to learn from
  'not-a-string', // a prompt, completion or content that is not a string
  'missing-field', // a prompt/completion example without "prompt" or "completion"
  'bad-weight', // "weight" other than 0 or 1, or on a message that is not the assistant's
  'mixed-formats', // chat examples and prompt/completion examples in one file
  'missing-columns', // a CSV/TSV header without prompt and completion columns
  'column-count', // a CSV/TSV row with fewer or more fields than the header
  'no-examples', // the file holds no examples at all
  'no-training-tokens', // no token anywhere counts for the loss
] as const;

/** Things worth knowing that do not stop training. */
export const WARNING_CODES = [
  'few-examples', // fewer than 10 training examples
  'too-long', // an example longer than the context; says how many tokens are cut
  'duplicate', // the same example twice in one file
  'near-duplicate', // the same apart from case and whitespace
  'empty-completion', // a completion that is empty
  'train-validation-overlap', // an example in validation also in training
  'ignored-key', // a key or column Tunelab does not use
  'special-token-in-text', // text contains the end-of-text token's text, which the tokenizer reads as that token
  'nothing-to-train', // an example whose tokens all have weight 0
  'not-utf8', // bytes that are not UTF-8; they were read as U+FFFD
  'no-validation', // too few examples to set some aside for validation
] as const;

export type ErrorCode = (typeof ERROR_CODES)[number];
export type WarningCode = (typeof WARNING_CODES)[number];
export type IssueCode = ErrorCode | WarningCode;

/** Which of the user's files an issue points into. */
export type DataSourceName = 'train' | 'validation';

export interface DataIssue {
  severity: 'error' | 'warning';
  code: IssueCode;
  message: string;
  source: DataSourceName;
  /** 1-based line in the user's text. Errors always have one; warnings about the whole data set do not. */
  line?: number;
  /** 1-based column (UTF-16 code units, as editors count) where it is known. */
  column?: number;
}

/** `FILE:LINE: code: message` for errors, `FILE:LINE: warning: code: message` for warnings (compiler style). */
export function formatIssue(issue: DataIssue, fileName: string): string {
  const where = issue.line !== undefined ? `${fileName}:${issue.line}` : fileName;
  const kind = issue.severity === 'warning' ? 'warning: ' : '';
  const column = issue.column !== undefined ? ` (column ${issue.column})` : '';
  return `${where}: ${kind}${issue.code}: ${issue.message}${column}`;
}

export function isErrorCode(code: IssueCode): code is ErrorCode {
  return (ERROR_CODES as readonly string[]).includes(code);
}
