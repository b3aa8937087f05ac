// Small wrappers over localStorage for what survives a reload (the editor's text, the data format, the training
// settings). Reading never throws (a missing, corrupt or blocked store reads as nothing); writing reports why it
// failed (storage full, storage blocked) so the UI can say so instead of losing work silently.

/** Every key Tunelab writes starts with this, so they are easy to find and clear. */
const PREFIX = 'tunelab.';

export type SaveResult = { ok: true } | { ok: false; reason: string };

function storage(): Storage | undefined {
  try {
    return globalThis.localStorage ?? undefined;
  } catch {
    // Some browsers throw on the mere access when site data is blocked.
    return undefined;
  }
}

/** The parsed JSON stored under `key`, or undefined when there is none or it cannot be read. */
export function readStored(key: string): unknown {
  try {
    const text = storage()?.getItem(PREFIX + key);
    return text === null || text === undefined ? undefined : JSON.parse(text);
  } catch {
    return undefined;
  }
}

function isQuotaError(error: unknown): boolean {
  return error instanceof DOMException && (error.name === 'QuotaExceededError' || error.code === 22);
}

/** Stores `value` as JSON under `key`. */
export function writeStored(key: string, value: unknown): SaveResult {
  const store = storage();
  if (!store) return { ok: false, reason: 'this browser does not let the page store data (site data is blocked)' };
  try {
    store.setItem(PREFIX + key, JSON.stringify(value));
    return { ok: true };
  } catch (error) {
    if (isQuotaError(error)) {
      return { ok: false, reason: "the browser's storage for this page is full" };
    }
    return { ok: false, reason: error instanceof Error ? error.message : String(error) };
  }
}

export function removeStored(key: string): void {
  try {
    storage()?.removeItem(PREFIX + key);
  } catch {
    // Nothing to do: a store that cannot be written holds nothing of ours either.
  }
}

/** Calls `run` once calls have stopped for `delayMs`; `flush` runs a pending call now, `cancel` drops it. */
export function debounce(run: () => void, delayMs: number): { schedule(): void; flush(): void; cancel(): void } {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return {
    schedule() {
      clearTimeout(timer);
      timer = setTimeout(() => {
        timer = undefined;
        run();
      }, delayMs);
    },
    flush() {
      if (timer === undefined) return;
      clearTimeout(timer);
      timer = undefined;
      run();
    },
    cancel() {
      clearTimeout(timer);
      timer = undefined;
    },
  };
}
