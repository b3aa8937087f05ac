// Downloads one file over fetch: streamed with progress, abortable, retried with exponential backoff on transient
// failures (no answer, 5xx, 408, 429, a body cut short), and resumed with a Range request from the last byte received
// when the server allows it (a 206 that continues where we stopped; otherwise the file starts over). 404, 401 and 403
// are not failures here but a "missing" answer, because whether that means "no such model" or "no such file" depends
// on which file it was. In a browser, a fetch that fails without an answer on a cross-origin URL is probed once more
// in no-cors mode: if that succeeds the server is up and the real cause is CORS, which retrying cannot fix.

import { formatBytes, HubError, isAbortError } from './errors.ts';

export interface RetryOptions {
  /** Tries in all, the first included (4). */
  attempts: number;
  /** Wait before the second try; doubles each time (500 ms). */
  baseDelayMs: number;
  /** Longest wait between tries, also the cap on a server's Retry-After (8000 ms). */
  maxDelayMs: number;
}

export const DEFAULT_RETRY: Readonly<RetryOptions> = Object.freeze({ attempts: 4, baseDelayMs: 500, maxDelayMs: 8000 });

export interface DownloadOptions {
  fetch?: typeof fetch;
  signal?: AbortSignal;
  retry?: Partial<RetryOptions>;
  /** Extra request headers (an Authorization bearer token for private models). */
  headers?: Record<string, string>;
  /** Bytes received so far and the file's size (null while unknown). `loaded` drops to 0 when a download restarts. */
  onProgress?: (loaded: number, total: number | null) => void;
  /** The page's origin, to tell CORS failures from network ones; default `location.origin` (none in Node). */
  pageOrigin?: string | null;
}

export type DownloadResult =
  | { kind: 'ok'; bytes: Uint8Array }
  /** 404, 401, 403 or 410; `errorCode` is the Hub's X-Error-Code when the server exposes it. */
  | { kind: 'missing'; status: number; errorCode: string | null };

const MISSING_STATUSES = new Set([401, 403, 404, 410]);

function isTransientStatus(status: number): boolean {
  return status >= 500 || status === 408 || status === 429;
}

function abortedError(url: string, signal: AbortSignal | undefined): HubError {
  const why = signal?.reason instanceof Error && !isAbortError(signal.reason) ? `: ${signal.reason.message}` : '';
  return new HubError('aborted', `the download was cancelled${why}`, { url });
}

/** Waits `ms`, or rejects as soon as the signal fires. */
function sleep(ms: number, url: string, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(abortedError(url, signal));
    const onAbort = () => {
      clearTimeout(timer);
      reject(abortedError(url, signal));
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** Seconds or an HTTP date, as ms from now; null when absent or unreadable. */
function retryAfterMs(response: Response): number | null {
  const value = response.headers.get('retry-after');
  if (!value) return null;
  const seconds = Number(value);
  if (Number.isFinite(seconds)) return Math.max(0, seconds * 1000);
  const date = Date.parse(value);
  return Number.isFinite(date) ? Math.max(0, date - Date.now()) : null;
}

/** Content-Length of a body that arrives as sent (no Content-Encoding), else null: a gzip length is not the file's. */
function bodyLength(response: Response): number | null {
  const encoding = response.headers.get('content-encoding');
  if (encoding && encoding.toLowerCase() !== 'identity') return null;
  const text = response.headers.get('content-length');
  if (text === null || !/^\d+$/.test(text.trim())) return null;
  return Number(text);
}

/** 'bytes 100-199/1000' → {start 100, total 1000}; total null for '*'. */
function parseContentRange(value: string | null): { start: number; total: number | null } | null {
  const match = value ? /^bytes\s+(\d+)-\d+\/(\d+|\*)$/i.exec(value.trim()) : null;
  if (!match) return null;
  return { start: Number(match[1]), total: match[2] === '*' ? null : Number(match[2]) };
}

/** Bytes as they arrive: into one buffer when the size is known (no second copy), else into chunks. */
class ByteSink {
  private buffer: Uint8Array | null = null;
  private chunks: Uint8Array[] = [];
  length = 0;

  reset(expected: number | null): void {
    this.buffer = expected !== null ? new Uint8Array(expected) : null;
    this.chunks = [];
    this.length = 0;
  }

  /** Keeps what was received (a resume) with room for `expected` bytes in all. */
  reserve(expected: number): void {
    if (this.buffer && this.buffer.length === expected) return;
    const kept = this.bytes();
    this.buffer = new Uint8Array(Math.max(expected, kept.length));
    this.buffer.set(kept);
    this.chunks = [];
  }

  push(chunk: Uint8Array): void {
    if (this.buffer && this.length + chunk.length <= this.buffer.length) {
      this.buffer.set(chunk, this.length);
    } else {
      // More than announced (or no size known): fall back to chunks.
      if (this.buffer) {
        this.chunks = [this.buffer.slice(0, this.length)];
        this.buffer = null;
      }
      this.chunks.push(chunk);
    }
    this.length += chunk.length;
  }

  bytes(): Uint8Array {
    if (this.buffer) return this.length === this.buffer.length ? this.buffer : this.buffer.slice(0, this.length);
    const out = new Uint8Array(this.length);
    let offset = 0;
    for (const chunk of this.chunks) {
      out.set(chunk, offset);
      offset += chunk.length;
    }
    return out;
  }
}

/** Did a fetch that failed without an answer fail because of CORS? Only a browser page can tell, by a no-cors probe. */
async function failedOnCors(
  url: string,
  fetchImpl: typeof fetch,
  pageOrigin: string | null,
  signal: AbortSignal | undefined,
): Promise<boolean> {
  if (pageOrigin === null) return false;
  let target: URL;
  try {
    target = new URL(url);
  } catch {
    return false;
  }
  if (target.origin === pageOrigin) return false;
  const probe = new AbortController();
  const forward = () => probe.abort();
  signal?.addEventListener('abort', forward, { once: true });
  try {
    // An opaque answer means the server is reachable and only refuses to let this page read it.
    await fetchImpl(url, { mode: 'no-cors', signal: probe.signal, cache: 'no-store' });
    return true;
  } catch {
    return false;
  } finally {
    probe.abort(); // do not download the body of the probe
    signal?.removeEventListener('abort', forward);
  }
}

function defaultPageOrigin(): string | null {
  const location = (globalThis as { location?: { origin?: unknown } }).location;
  return typeof location?.origin === 'string' && location.origin !== 'null' ? location.origin : null;
}

function corsError(url: string, pageOrigin: string): HubError {
  const host = new URL(url).host;
  return new HubError(
    'cors',
    `${host} answered, but does not allow pages from ${pageOrigin} to read ${url} (no CORS headers). ` +
      'Browsers block such downloads. The Hugging Face Hub allows them; for your own server, send ' +
      '"Access-Control-Allow-Origin: *" with the model files, or put the files next to the app',
    { url },
  );
}

/**
 * Downloads `url` whole. Throws HubError: 'aborted', 'cors' (browser only), or, once the tries are used up,
 * 'network', 'server' or 'truncated'. Any other non-2xx answer is a 'server' error at once.
 */
export async function downloadFile(url: string, options: DownloadOptions = {}): Promise<DownloadResult> {
  const fetchImpl = options.fetch ?? globalThis.fetch.bind(globalThis);
  const retry = { ...DEFAULT_RETRY, ...options.retry };
  const attempts = Math.max(1, Math.floor(retry.attempts));
  const signal = options.signal;
  const pageOrigin = options.pageOrigin === undefined ? defaultPageOrigin() : options.pageOrigin;
  const sink = new ByteSink();
  let total: number | null = null;
  let etag: string | null = null;
  let lastError: HubError | null = null;

  const report = () => options.onProgress?.(sink.length, total);
  const backoff = async (attempt: number, serverWaitMs: number | null) => {
    if (attempt + 1 >= attempts) return;
    const exponential = retry.baseDelayMs * 2 ** attempt;
    // Up to a quarter less, so that many tabs retrying together spread out.
    const wait = Math.min(retry.maxDelayMs, serverWaitMs ?? exponential * (0.75 + 0.25 * Math.random()));
    await sleep(wait, url, signal);
  };

  for (let attempt = 0; attempt < attempts; attempt++) {
    if (signal?.aborted) throw abortedError(url, signal);
    const resumeFrom = sink.length;
    const headers: Record<string, string> = { ...options.headers };
    if (resumeFrom > 0) headers.Range = `bytes=${resumeFrom}-`;

    let response: Response;
    try {
      response = await fetchImpl(url, { signal, headers });
    } catch (error) {
      if (signal?.aborted || isAbortError(error)) throw abortedError(url, signal);
      if (await failedOnCors(url, fetchImpl, pageOrigin, signal)) throw corsError(url, pageOrigin!);
      const why = error instanceof Error ? describeFetchFailure(error) : String(error);
      lastError = new HubError(
        'network',
        `could not reach ${new URL(url).host} (${why}); check the internet connection, or load a model saved earlier`,
        { url, cause: error },
      );
      await backoff(attempt, null);
      continue;
    }

    if (MISSING_STATUSES.has(response.status)) {
      await response.body?.cancel().catch(() => undefined);
      return { kind: 'missing', status: response.status, errorCode: response.headers.get('x-error-code') };
    }
    if (isTransientStatus(response.status)) {
      await response.body?.cancel().catch(() => undefined);
      lastError = new HubError('server', `${new URL(url).host} answered HTTP ${response.status} for ${url}`, {
        url,
        status: response.status,
      });
      await backoff(attempt, retryAfterMs(response));
      continue;
    }
    if (!response.ok) {
      await response.body?.cancel().catch(() => undefined);
      throw new HubError(
        'server',
        `${new URL(url).host} answered HTTP ${response.status}${response.statusText ? ` ${response.statusText}` : ''} ` +
          `for ${url}, not the file`,
        { url, status: response.status },
      );
    }

    const responseEtag = response.headers.get('etag');
    if (response.status === 206) {
      const range = parseContentRange(response.headers.get('content-range'));
      const sameFile = etag === null || responseEtag === null || etag === responseEtag;
      if (!range || range.start !== resumeFrom || (total !== null && range.total !== null && range.total !== total) || !sameFile) {
        // Not the continuation we asked for: start over without a Range.
        await response.body?.cancel().catch(() => undefined);
        sink.reset(null);
        total = null;
        report();
        lastError = new HubError('server', `${url} answered a partial download that does not continue the file`, { url });
        continue;
      }
      if (range.total !== null) {
        total = range.total;
        sink.reserve(total);
      }
    } else {
      // A whole file: the first answer, or a server that ignored our Range (then what we had is dropped).
      total = bodyLength(response);
      sink.reset(total);
      if (resumeFrom > 0) report();
    }
    etag = responseEtag ?? etag;

    const body = response.body;
    try {
      if (body) {
        const reader = body.getReader();
        try {
          for (;;) {
            const { done, value } = await reader.read();
            if (done) break;
            sink.push(value);
            report();
          }
        } finally {
          reader.releaseLock();
        }
      } else {
        const bytes = new Uint8Array(await response.arrayBuffer());
        sink.push(bytes);
        report();
      }
    } catch (error) {
      if (signal?.aborted || isAbortError(error)) throw abortedError(url, signal);
      lastError = cutShort(url, sink.length, total, error);
      await backoff(attempt, null);
      continue;
    }
    if (total !== null && sink.length < total) {
      lastError = cutShort(url, sink.length, total, null);
      await backoff(attempt, null);
      continue;
    }
    if (total !== null && sink.length > total) total = sink.length; // a transparently decompressed body
    return { kind: 'ok', bytes: sink.bytes() };
  }
  const tries = attempts === 1 ? '' : ` (tried ${attempts} times)`;
  const error = lastError!;
  throw new HubError(error.reason, `${error.message}${tries}`, { url, status: error.status, cause: error });
}

function cutShort(url: string, received: number, total: number | null, cause: unknown): HubError {
  if (total !== null) {
    return new HubError(
      'truncated',
      `the download of ${url} stopped after ${formatBytes(received)} of ${formatBytes(total)}: the connection was ` +
        'cut or the server sent less than it announced',
      { url, cause },
    );
  }
  const why = cause instanceof Error ? ` (${describeFetchFailure(cause)})` : '';
  return new HubError('network', `the connection broke while downloading ${url}${why}`, { url, cause });
}

/** Node's fetch hides the socket error in `cause`; browsers say only "Failed to fetch". */
function describeFetchFailure(error: Error): string {
  const cause = (error as { cause?: unknown }).cause;
  const code = typeof cause === 'object' && cause !== null ? (cause as { code?: unknown }).code : undefined;
  if (typeof code === 'string') return `${error.message}: ${code}`;
  if (cause instanceof Error && cause.message) return `${error.message}: ${cause.message}`;
  return error.message;
}
