// Errors of loading a model from the Hugging Face Hub or a URL. Each names what went wrong in terms a learner can act
// on (check the spelling, the model is gated, the network is down, the site blocks browsers, free some storage), and
// carries a stable `reason` for the UI and tests. They are TunelabErrors so that code which only knows TunelabError
// still shows their message.

import { TunelabError, type TunelabErrorCode } from '../errors.ts';

export type HubErrorReason =
  /** The text is neither a Hub id nor an http(s) URL. */
  | 'bad-id'
  /** 404/401/403 on the model itself: no such model or revision, or it is private or gated. */
  | 'not-found'
  /** The model exists but lacks a file Tunelab needs (tokenizer.json, safetensors weights). */
  | 'missing-file'
  /** config.json describes a model Tunelab cannot run (not GPT-2, or a GPT-2 variant with other math). */
  | 'unsupported-architecture'
  /** No answer: offline, DNS, connection refused or reset, after the retries. */
  | 'network'
  /** The server answers, but not to this page: it sends no CORS headers. */
  | 'cors'
  /** The server kept failing (5xx, 429) or answered with a status that is not a file. */
  | 'server'
  /** The body ended before its Content-Length, after the retries. */
  | 'truncated'
  /** The caller's AbortSignal fired. */
  | 'aborted'
  /** The browser refused to store the model (QuotaExceededError). */
  | 'quota'
  /** The cache failed in another way. */
  | 'storage';

const CODE_OF_REASON: Readonly<Record<HubErrorReason, TunelabErrorCode>> = {
  'bad-id': 'bad-model',
  'not-found': 'bad-model',
  'missing-file': 'bad-model',
  'unsupported-architecture': 'bad-model',
  // TunelabErrorCode has no network code yet; 'bad-model' (the model could not be had) is the nearest.
  network: 'bad-model',
  cors: 'bad-model',
  server: 'bad-model',
  truncated: 'bad-model',
  aborted: 'cancelled',
  quota: 'too-large',
  storage: 'bad-model',
};

export class HubError extends TunelabError {
  readonly reason: HubErrorReason;
  /** The URL that failed, when one did. */
  readonly url?: string;
  /** HTTP status of the last answer, when there was one. */
  readonly status?: number;
  constructor(reason: HubErrorReason, message: string, details: { url?: string; status?: number; cause?: unknown } = {}) {
    super(CODE_OF_REASON[reason], message);
    this.name = 'HubError';
    this.reason = reason;
    if (details.url !== undefined) this.url = details.url;
    if (details.status !== undefined) this.status = details.status;
    if (details.cause !== undefined) (this as { cause?: unknown }).cause = details.cause;
  }
}

export function isHubError(error: unknown, reason?: HubErrorReason): error is HubError {
  return error instanceof HubError && (reason === undefined || error.reason === reason);
}

/** '548.1 MB' */
export function formatBytes(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)} GB`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)} MB`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)} kB`;
  return `${n} bytes`;
}

/** DOMException('…', 'QuotaExceededError'), or an error that says it is one (older Firefox: NS_ERROR_DOM_QUOTA_REACHED). */
export function isQuotaExceeded(error: unknown): boolean {
  if (typeof error !== 'object' || error === null) return false;
  const name = (error as { name?: unknown }).name;
  return name === 'QuotaExceededError' || name === 'NS_ERROR_DOM_QUOTA_REACHED';
}

export function isAbortError(error: unknown): boolean {
  return typeof error === 'object' && error !== null && (error as { name?: unknown }).name === 'AbortError';
}
