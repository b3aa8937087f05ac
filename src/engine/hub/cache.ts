// Where downloaded models are kept for offline reuse. One entry per model (its cache key: Hub repo + revision, or a
// base URL) holding its files and a manifest written last, so an entry whose writing was interrupted is not taken for
// a model. Two implementations: the browser's Cache Storage (works in pages and workers, survives reloads, counted in
// the site's storage quota) and memory (tests, and a session that must not write to disk).

import { formatBytes, HubError, isQuotaExceeded } from './errors.ts';

export interface CachedFileInfo {
  name: string;
  bytes: number;
}

export interface CachedModelInfo {
  key: string;
  /** For people: 'gpt2 (revision main) on the Hugging Face Hub'. */
  description: string;
  files: CachedFileInfo[];
  totalBytes: number;
  /** ISO 8601 time of saving. */
  savedAt: string;
}

/** What the browser says about this site's storage; null where it cannot tell. */
export interface StorageEstimateInfo {
  usage: number;
  quota: number;
}

export interface ModelCache {
  /** For messages: "the browser's Cache Storage". */
  readonly description: string;
  /** True when the entry is complete (its manifest was written). */
  has(key: string): Promise<boolean>;
  /** One file of a complete entry, or null. */
  get(key: string, fileName: string): Promise<Uint8Array | null>;
  /** Replaces the entry with these files. Rejects with the store's own error (a QuotaExceededError when full). */
  put(key: string, files: ReadonlyMap<string, Uint8Array>, description: string): Promise<CachedModelInfo>;
  /** Removes the entry; false when there was none. */
  delete(key: string): Promise<boolean>;
  /** Complete entries, largest first. */
  list(): Promise<CachedModelInfo[]>;
  /** Bytes of all complete entries. */
  totalBytes(): Promise<number>;
  /** The site's storage use and quota, when the platform says. */
  storageEstimate(): Promise<StorageEstimateInfo | null>;
}

function manifestOf(key: string, files: ReadonlyMap<string, Uint8Array>, description: string): CachedModelInfo {
  const list = [...files].map(([name, bytes]) => ({ name, bytes: bytes.length }));
  return {
    key,
    description,
    files: list,
    totalBytes: list.reduce((sum, f) => sum + f.bytes, 0),
    savedAt: new Date().toISOString(),
  };
}

function largestFirst(entries: CachedModelInfo[]): CachedModelInfo[] {
  return entries.sort((a, b) => b.totalBytes - a.totalBytes || a.key.localeCompare(b.key));
}

// ---- memory ------------------------------------------------------------------------------------------------------

export interface MemoryModelCacheOptions {
  /** Refuse a put that would take the total past this, as a browser's quota would (default: no limit). */
  quotaBytes?: number;
}

/** A ModelCache in memory: for tests, and for sessions that must not store anything. */
export class MemoryModelCache implements ModelCache {
  readonly description = 'memory';
  private readonly entries = new Map<string, { info: CachedModelInfo; files: Map<string, Uint8Array> }>();
  private readonly quotaBytes: number;

  constructor(options: MemoryModelCacheOptions = {}) {
    this.quotaBytes = options.quotaBytes ?? Number.POSITIVE_INFINITY;
  }

  async has(key: string): Promise<boolean> {
    return this.entries.has(key);
  }

  async get(key: string, fileName: string): Promise<Uint8Array | null> {
    return this.entries.get(key)?.files.get(fileName) ?? null;
  }

  async put(key: string, files: ReadonlyMap<string, Uint8Array>, description: string): Promise<CachedModelInfo> {
    const info = manifestOf(key, files, description);
    const others = (await this.totalBytes()) - (this.entries.get(key)?.info.totalBytes ?? 0);
    if (others + info.totalBytes > this.quotaBytes) {
      throw new DOMException(`storing ${info.totalBytes} bytes exceeds the quota`, 'QuotaExceededError');
    }
    // Copies, so that a caller reusing its buffers cannot change what is cached.
    this.entries.set(key, { info, files: new Map([...files].map(([name, bytes]) => [name, bytes.slice()])) });
    return info;
  }

  async delete(key: string): Promise<boolean> {
    return this.entries.delete(key);
  }

  async list(): Promise<CachedModelInfo[]> {
    return largestFirst([...this.entries.values()].map((e) => e.info));
  }

  async totalBytes(): Promise<number> {
    let sum = 0;
    for (const entry of this.entries.values()) sum += entry.info.totalBytes;
    return sum;
  }

  async storageEstimate(): Promise<StorageEstimateInfo | null> {
    if (!Number.isFinite(this.quotaBytes)) return null;
    return { usage: await this.totalBytes(), quota: this.quotaBytes };
  }
}

// ---- browser Cache Storage -----------------------------------------------------------------------------------------

/** The part of the Cache API used here (so tests can give a stand-in). */
export interface CacheStorageLike {
  open(cacheName: string): Promise<CacheLike>;
}
export interface CacheLike {
  match(request: string): Promise<Response | undefined>;
  put(request: string, response: Response): Promise<void>;
  delete(request: string): Promise<boolean>;
  keys(): Promise<readonly { url: string }[]>;
}

export interface CacheApiModelCacheOptions {
  /** Cache Storage name; a new name starts empty (bump it if the layout ever changes). */
  cacheName?: string;
  /** Default: globalThis.caches. */
  storage?: CacheStorageLike;
  /** Default: navigator.storage.estimate(), where present. */
  estimate?: () => Promise<StorageEstimateInfo | null>;
}

/** Requests are keyed by URL; these never leave the browser, so any well-formed URL does. */
const KEY_ORIGIN = 'https://tunelab.cache.invalid/models/';
const MANIFEST = '.manifest.json';

function entryPrefix(key: string): string {
  return `${KEY_ORIGIN}${encodeURIComponent(key)}/`;
}

async function navigatorEstimate(): Promise<StorageEstimateInfo | null> {
  const storage = (globalThis as { navigator?: { storage?: { estimate?: () => Promise<{ usage?: number; quota?: number }> } } })
    .navigator?.storage;
  if (!storage?.estimate) return null;
  try {
    const { usage, quota } = await storage.estimate();
    return typeof usage === 'number' && typeof quota === 'number' ? { usage, quota } : null;
  } catch {
    return null;
  }
}

/** Models in the browser's Cache Storage (pages and workers; needs a secure context: https or localhost). */
export class CacheApiModelCache implements ModelCache {
  readonly description = "the browser's Cache Storage";
  private readonly cacheName: string;
  private readonly storage: CacheStorageLike;
  private readonly estimate: () => Promise<StorageEstimateInfo | null>;
  private opened: Promise<CacheLike> | null = null;

  constructor(options: CacheApiModelCacheOptions = {}) {
    this.cacheName = options.cacheName ?? 'tunelab-models-v1';
    const storage = options.storage ?? (globalThis as { caches?: CacheStorageLike }).caches;
    if (!storage) {
      throw new HubError(
        'storage',
        'this browser context has no Cache Storage (it needs https or localhost); models cannot be kept for offline use',
      );
    }
    this.storage = storage;
    this.estimate = options.estimate ?? navigatorEstimate;
  }

  private cache(): Promise<CacheLike> {
    return (this.opened ??= this.storage.open(this.cacheName));
  }

  private async manifest(key: string): Promise<CachedModelInfo | null> {
    const response = await (await this.cache()).match(entryPrefix(key) + MANIFEST);
    if (!response) return null;
    try {
      return (await response.json()) as CachedModelInfo;
    } catch {
      return null; // a damaged manifest: the entry is not complete
    }
  }

  async has(key: string): Promise<boolean> {
    return (await this.manifest(key)) !== null;
  }

  async get(key: string, fileName: string): Promise<Uint8Array | null> {
    const info = await this.manifest(key);
    if (!info || !info.files.some((f) => f.name === fileName)) return null;
    const response = await (await this.cache()).match(entryPrefix(key) + encodeURIComponent(fileName));
    if (!response) return null;
    const bytes = new Uint8Array(await response.arrayBuffer());
    const expected = info.files.find((f) => f.name === fileName)!.bytes;
    return bytes.length === expected ? bytes : null;
  }

  async put(key: string, files: ReadonlyMap<string, Uint8Array>, description: string): Promise<CachedModelInfo> {
    const cache = await this.cache();
    await this.delete(key);
    const info = manifestOf(key, files, description);
    try {
      for (const [name, bytes] of files) {
        const response = new Response(bytes as Uint8Array<ArrayBuffer>, {
          headers: { 'content-type': 'application/octet-stream', 'content-length': String(bytes.length) },
        });
        await cache.put(entryPrefix(key) + encodeURIComponent(name), response);
      }
      const manifest = new Response(JSON.stringify(info), { headers: { 'content-type': 'application/json' } });
      await cache.put(entryPrefix(key) + MANIFEST, manifest);
    } catch (error) {
      // Leave nothing half-written behind: it would take quota and never be used.
      await this.removeFiles(key, [...files.keys()]).catch(() => undefined);
      throw error;
    }
    return info;
  }

  private async removeFiles(key: string, names: string[]): Promise<void> {
    const cache = await this.cache();
    for (const name of names) await cache.delete(entryPrefix(key) + encodeURIComponent(name));
  }

  async delete(key: string): Promise<boolean> {
    const cache = await this.cache();
    const prefix = entryPrefix(key);
    let removed = false;
    // Every request under the entry's prefix, listed or not (leftovers of an interrupted put included).
    for (const request of await cache.keys()) {
      if (request.url.startsWith(prefix)) removed = (await cache.delete(request.url)) || removed;
    }
    return removed;
  }

  async list(): Promise<CachedModelInfo[]> {
    const cache = await this.cache();
    const entries: CachedModelInfo[] = [];
    for (const request of await cache.keys()) {
      if (!request.url.startsWith(KEY_ORIGIN) || !request.url.endsWith(`/${MANIFEST}`)) continue;
      const key = decodeURIComponent(request.url.slice(KEY_ORIGIN.length, -(MANIFEST.length + 1)));
      const info = await this.manifest(key);
      if (info) entries.push(info);
    }
    return largestFirst(entries);
  }

  async totalBytes(): Promise<number> {
    return (await this.list()).reduce((sum, e) => sum + e.totalBytes, 0);
  }

  storageEstimate(): Promise<StorageEstimateInfo | null> {
    return this.estimate();
  }
}

/**
 * The HubError for a cache that refused `neededBytes`: how much it needs, how much room the site has, and which
 * cached models could be deleted to make room (largest first). A quota refusal gives reason 'quota'; anything else
 * 'storage'.
 */
export async function cacheWriteError(
  error: unknown,
  cache: ModelCache,
  what: string,
  neededBytes: number,
  exceptKey: string,
): Promise<HubError> {
  const later = 'The model is loaded for this session, but will be downloaded again next time.';
  if (!isQuotaExceeded(error)) {
    const why = error instanceof Error ? error.message : String(error);
    return new HubError('storage', `could not keep ${what} in ${cache.description} (${why}). ${later}`, { cause: error });
  }
  const estimate = await cache.storageEstimate().catch(() => null);
  const others = (await cache.list().catch(() => [] as CachedModelInfo[])).filter((e) => e.key !== exceptKey);
  const room = estimate
    ? ` This site may store ${formatBytes(estimate.quota)} and uses ${formatBytes(estimate.usage)}, ` +
      `so ${formatBytes(Math.max(0, estimate.quota - estimate.usage))} is free.`
    : '';
  const deletable = others.length
    ? ` Delete cached models you no longer need: ${others
        .slice(0, 5)
        .map((e) => `${e.description} (${formatBytes(e.totalBytes)})`)
        .join(', ')}${others.length > 5 ? ` and ${others.length - 5} more` : ''}.`
    : ' Free space in the browser (site settings → storage) or on the disk.';
  return new HubError(
    'quota',
    `not enough browser storage to keep ${what} for offline use: it needs ${formatBytes(neededBytes)}.${room}${deletable} ${later}`,
    { cause: error },
  );
}
