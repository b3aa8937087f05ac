// Public entry of the hub module: models by Hugging Face Hub id or URL, downloaded with progress, retries and resume,
// kept in a cache for offline use.
//
//   const cache = new CacheApiModelCache();                       // browser; MemoryModelCache in tests
//   const hub = await fetchHubModel('distilgpt2', { cache, signal, onProgress: (p) => bar.set(p.loaded, p.total) });
//   if (hub.cacheError) show(hub.cacheError.message);             // loaded, but not kept (storage full)
//   const model = await loadModel(hub.source);
//
// Failures are HubErrors; `reason` says which: bad-id, not-found, missing-file, unsupported-architecture, network,
// cors, server, truncated, aborted, quota, storage.
export { fetchHubModel, loadHubModel, MODEL_FILE_NAMES } from './load.ts';
export type { HubLoadOptions, HubModelFiles, HubProgress } from './load.ts';
export { resolveModelRef, modelFileUrl, DEFAULT_HUB_ENDPOINT, DEFAULT_REVISION } from './ref.ts';
export type { ModelLocation, ModelRefOptions } from './ref.ts';
export { downloadFile, DEFAULT_RETRY } from './download.ts';
export type { DownloadOptions, DownloadResult, RetryOptions } from './download.ts';
export { MemoryModelCache, CacheApiModelCache, cacheWriteError } from './cache.ts';
export type {
  ModelCache,
  CachedModelInfo,
  CachedFileInfo,
  StorageEstimateInfo,
  CacheStorageLike,
  CacheLike,
  CacheApiModelCacheOptions,
  MemoryModelCacheOptions,
} from './cache.ts';
export { mergeSafetensorsShards, parseShardIndex } from './shards.ts';
export { HubError, isHubError, formatBytes, type HubErrorReason } from './errors.ts';
