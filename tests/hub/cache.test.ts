// The model caches: the in-memory one, and the Cache Storage one driven through a stand-in for the browser's
// CacheStorage (Node has none), checking entries, sizes, listing, deletion, that an interrupted write leaves nothing
// usable behind, and that a full store surfaces as a quota error with sizes and what could be deleted.

import { describe, expect, it } from 'vitest';
import {
  CacheApiModelCache,
  cacheWriteError,
  MemoryModelCache,
  type CacheLike,
  type CacheStorageLike,
  type ModelCache,
} from '../../src/engine/hub/cache.ts';

/** Cache Storage in memory, with an optional byte quota and a way to fail the Nth put. */
class FakeCacheStorage implements CacheStorageLike {
  readonly stored = new Map<string, Uint8Array>();
  failPutNumber: number | null = null;
  private puts = 0;
  constructor(private readonly quotaBytes = Number.POSITIVE_INFINITY) {}

  async open(): Promise<CacheLike> {
    return {
      match: async (url) => {
        const bytes = this.stored.get(url);
        return bytes ? new Response(bytes.slice()) : undefined;
      },
      put: async (url, response) => {
        this.puts++;
        const bytes = new Uint8Array(await response.arrayBuffer());
        if (this.puts === this.failPutNumber) throw new Error('disk error');
        let used = 0;
        for (const [key, value] of this.stored) if (key !== url) used += value.length;
        if (used + bytes.length > this.quotaBytes) throw new DOMException('quota', 'QuotaExceededError');
        this.stored.set(url, bytes);
      },
      delete: async (url) => this.stored.delete(url),
      keys: async () => [...this.stored.keys()].map((url) => ({ url })),
    };
  }
}

const files = (sizes: Record<string, number>) =>
  new Map(Object.entries(sizes).map(([name, n]) => [name, Uint8Array.from({ length: n }, (_, i) => i % 251)]));

async function exerciseCache(cache: ModelCache): Promise<void> {
  expect(await cache.has('a')).toBe(false);
  expect(await cache.get('a', 'config.json')).toBeNull();
  const a = files({ 'config.json': 10, 'model.safetensors': 300 });
  const info = await cache.put('a', a, 'model A');
  expect(info).toMatchObject({ key: 'a', description: 'model A', totalBytes: 310 });
  a.get('config.json')!.fill(0); // the caller's buffers are not the cache's
  await cache.put('hub:https://huggingface.co/user/b@refs/pr/1', files({ 'config.json': 5 }), 'model B');

  expect(await cache.has('a')).toBe(true);
  expect(Array.from((await cache.get('a', 'config.json'))!)).toEqual(Array.from(files({ 'config.json': 10 }).get('config.json')!));
  expect(await cache.get('a', 'tokenizer.json')).toBeNull();
  expect((await cache.list()).map((e) => [e.key, e.totalBytes])).toEqual([
    ['a', 310],
    ['hub:https://huggingface.co/user/b@refs/pr/1', 5],
  ]);
  expect(await cache.totalBytes()).toBe(315);

  await cache.put('a', files({ 'config.json': 20 }), 'model A, again');
  expect(await cache.get('a', 'model.safetensors')).toBeNull();
  expect(await cache.totalBytes()).toBe(25);

  expect(await cache.delete('a')).toBe(true);
  expect(await cache.delete('a')).toBe(false);
  expect(await cache.has('a')).toBe(false);
  expect((await cache.list()).map((e) => e.key)).toEqual(['hub:https://huggingface.co/user/b@refs/pr/1']);
}

describe('MemoryModelCache', () => {
  it('keeps, lists, sizes and deletes entries', async () => {
    await exerciseCache(new MemoryModelCache());
  });

  it('refuses past its quota with a QuotaExceededError', async () => {
    const cache = new MemoryModelCache({ quotaBytes: 100 });
    await cache.put('small', files({ 'config.json': 60 }), 'small');
    await expect(cache.put('big', files({ 'config.json': 50 }), 'big')).rejects.toMatchObject({ name: 'QuotaExceededError' });
    await cache.put('small', files({ 'config.json': 100 }), 'small, replaced'); // replacing frees the old copy first
    expect(await cache.storageEstimate()).toEqual({ usage: 100, quota: 100 });
  });
});

describe('CacheApiModelCache', () => {
  it('keeps, lists, sizes and deletes entries', async () => {
    await exerciseCache(new CacheApiModelCache({ storage: new FakeCacheStorage(), estimate: async () => null }));
  });

  it('leaves no usable or space-taking entry when a write fails midway', async () => {
    const storage = new FakeCacheStorage();
    const cache = new CacheApiModelCache({ storage, estimate: async () => null });
    storage.failPutNumber = 2;
    await expect(cache.put('m', files({ 'config.json': 10, 'model.safetensors': 50 }), 'm')).rejects.toThrow('disk error');
    expect(await cache.has('m')).toBe(false);
    expect(await cache.get('m', 'config.json')).toBeNull();
    expect(storage.stored.size).toBe(0);
  });

  it('turns a full store into a quota message with sizes and what could be deleted', async () => {
    const storage = new FakeCacheStorage(1500);
    const cache = new CacheApiModelCache({ storage, estimate: async () => ({ usage: 1200, quota: 1500 }) });
    await cache.put('old', files({ 'model.safetensors': 1000 }), 'distilgpt2 (revision main)');
    let failure: unknown;
    try {
      await cache.put('new', files({ 'model.safetensors': 2_500_000 }), 'gpt2');
    } catch (error) {
      failure = error;
    }
    const error = await cacheWriteError(failure, cache, 'gpt2', 2_500_000, 'new');
    expect(error.reason).toBe('quota');
    expect(error.message).toMatch(/it needs 2\.5 MB\. This site may store 1\.5 kB and uses 1\.2 kB, so 300 bytes is free\./);
    expect(error.message).toMatch(/Delete cached models you no longer need: distilgpt2 \(revision main\) \(1\.0 kB\)/);
    expect(await cache.has('new')).toBe(false);

    const other = await cacheWriteError(new Error('disk error'), cache, 'gpt2', 10, 'new');
    expect(other.reason).toBe('storage');
    expect(other.message).toMatch(/could not keep gpt2 in the browser's Cache Storage \(disk error\)/);
  });
});
