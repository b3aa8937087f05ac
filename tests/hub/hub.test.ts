// Loading a model the way the app loads one from the Hugging Face Hub, against a local server (127.0.0.1) laid out like
// the Hub's resolve URLs: download with progress, keep in a cache, load again from the cache with the server stopped;
// and each failure a learner can meet gives its own HubError reason (not found, gated, server errors retried, an
// aborted download, another architecture, a body cut short, the network down, CORS, a full cache). Also sharded
// checkpoints, resuming with Range, and plain folder URLs. Retries use 1-5 ms waits so the suite stays fast.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TunelabError } from '../../src/engine/errors.ts';
import { fetchHubModel, loadHubModel, MemoryModelCache, type HubProgress } from '../../src/engine/hub/index.ts';
import { HubError, type HubErrorReason } from '../../src/engine/hub/errors.ts';
import { parseSafetensors, readTensorF32, writeSafetensors } from '../../src/engine/io/safetensors.ts';
import { modelConfig } from '../../src/engine/model/config.ts';
import { createModelDirectory } from '../../src/engine/model/init.ts';
import { checkTokenizerJson, loadModel } from '../../src/engine/model/load.ts';
import { byteLevelTokenizerJson } from '../../src/engine/tokenizer/byte-level.ts';
import { startHubTestServer, type HubTestServer } from './server.ts';

const CONFIG = modelConfig({ nLayer: 1, nHead: 2, nEmbd: 8, nPositions: 16, vocabSize: 257, bosTokenId: 256, eosTokenId: 256 });
const FAST_RETRY = { attempts: 3, baseDelayMs: 1, maxDelayMs: 5 };

const made = createModelDirectory({
  config: CONFIG,
  seed: 5,
  tokenizerJson: checkTokenizerJson(byteLevelTokenizerJson()),
  tokenizerDescription: 'bytes',
});
const modelFiles: Record<string, Uint8Array> = {
  'config.json': made.files['config.json'],
  'tokenizer.json': made.files['tokenizer.json'],
  'model.safetensors': made.files['model.safetensors'],
};
const modelBytes = Object.values(modelFiles).reduce((sum, f) => sum + f.length, 0);

async function failure(promise: Promise<unknown>): Promise<HubError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error, 'expected the load to fail').toBeInstanceOf(HubError);
  return error as HubError;
}

async function expectReason(promise: Promise<unknown>, reason: HubErrorReason, message: RegExp): Promise<HubError> {
  const error = await failure(promise);
  expect(error.reason, error.message).toBe(reason);
  expect(error.message).toMatch(message);
  expect(error).toBeInstanceOf(TunelabError);
  return error;
}

let server: HubTestServer;

beforeAll(async () => {
  server = await startHubTestServer();
  server.addRepo('tunelab/tiny', modelFiles);
  server.addRepo('tiny', modelFiles); // a name without a user, like gpt2
});
afterAll(async () => {
  await server?.close();
});

const resolvePath = (repo: string, file: string) => `/${repo}/resolve/main/${file}`;

describe('downloading from a Hub-shaped server', () => {
  it('downloads with progress, caches, and loads again from the cache with the server stopped', async () => {
    const own = await startHubTestServer();
    own.addRepo('tunelab/tiny', modelFiles);
    const cache = new MemoryModelCache();
    const events: HubProgress[] = [];
    const first = await loadHubModel('tunelab/tiny', {
      endpoint: own.endpoint,
      cache,
      retry: FAST_RETRY,
      onProgress: (p) => events.push({ ...p }),
    });
    expect(first.hub.fromCache).toBe(false);
    expect(first.hub.cacheError).toBeNull();
    expect(first.hub.totalBytes).toBe(modelBytes);
    expect(first.model.config).toEqual(CONFIG);
    expect(first.model.weights.data).toEqual(made.parameters.data);

    // Progress: overall bytes never go back, every file is seen, and the last event is the whole, known total.
    expect(events.length).toBeGreaterThan(3);
    for (let i = 1; i < events.length; i++) expect(events[i].loaded).toBeGreaterThanOrEqual(events[i - 1].loaded);
    expect(new Set(events.map((e) => e.file))).toEqual(new Set(Object.keys(modelFiles)));
    const last = events[events.length - 1];
    expect(last.loaded).toBe(modelBytes);
    expect(last.total).toBe(modelBytes);
    for (const name of Object.keys(modelFiles)) {
      const fileEvents = events.filter((e) => e.file === name);
      expect(fileEvents[fileEvents.length - 1].fileLoaded).toBe(modelFiles[name].length);
      expect(fileEvents[fileEvents.length - 1].fileTotal).toBe(modelFiles[name].length);
    }
    expect(events.filter((e) => e.file === 'model.safetensors').length, 'the weights arrive in several chunks').toBeGreaterThan(1);

    const [entry] = await cache.list();
    expect(entry.totalBytes).toBe(modelBytes);
    expect(entry.files.map((f) => f.name).sort()).toEqual(Object.keys(modelFiles).sort());

    await own.close();
    const requestsBefore = own.requests.length;
    const again = await loadHubModel('tunelab/tiny', { endpoint: own.endpoint, cache, retry: FAST_RETRY });
    expect(again.hub.fromCache).toBe(true);
    expect(again.model.weights.data).toEqual(made.parameters.data);
    expect(again.model.tokenizerJson).toEqual(first.model.tokenizerJson);
    expect(own.requests.length).toBe(requestsBefore);

    // Without the cache the stopped server is a network failure.
    await expectReason(
      fetchHubModel('tunelab/tiny', { endpoint: own.endpoint, retry: { attempts: 2, baseDelayMs: 1, maxDelayMs: 2 } }),
      'network',
      /could not reach 127\.0\.0\.1:\d+ .*tried 2 times/,
    );
  });

  it('loads a name without a user (like gpt2) and a plain folder URL', async () => {
    const byName = await loadHubModel('tiny', { endpoint: server.endpoint, retry: FAST_RETRY });
    expect(byName.hub.location.baseUrl).toBe(`${server.endpoint}/tiny/resolve/main/`);
    expect(byName.model.weights.data).toEqual(made.parameters.data);

    server.addFolder('models/tiny', modelFiles);
    const byUrl = await loadHubModel(`${server.endpoint}/models/tiny/config.json`, { retry: FAST_RETRY });
    expect(byUrl.hub.location.kind).toBe('url');
    expect(byUrl.hub.location.baseUrl).toBe(`${server.endpoint}/models/tiny/`);
    expect(byUrl.model.weights.data).toEqual(made.parameters.data);
  });

  it('says "no such model, or gated/private" for 404 and 401, and names a missing revision', async () => {
    await expectReason(
      fetchHubModel('tunelab/nothing-here', { endpoint: server.endpoint, retry: FAST_RETRY }),
      'not-found',
      /no such model "tunelab\/nothing-here".*gated or private \(HTTP 404\)/,
    );
    server.misbehave(resolvePath('tunelab/tiny', 'config.json'), { kind: 'status', status: 401, errorCode: 'RepositoryNotFound' });
    const unauthorized = await expectReason(
      fetchHubModel('tunelab/tiny', { endpoint: server.endpoint, retry: FAST_RETRY }),
      'not-found',
      /gated or private \(HTTP 401\)/,
    );
    expect(unauthorized.status).toBe(401);
    server.misbehave(resolvePath('tunelab/tiny', 'config.json'), { kind: 'status', status: 403, errorCode: 'GatedRepo' });
    await expectReason(fetchHubModel('tunelab/tiny', { endpoint: server.endpoint, retry: FAST_RETRY }), 'not-found', /is gated/);
    server.misbehave('/tunelab/tiny/resolve/v2/config.json', { kind: 'status', status: 404, errorCode: 'RevisionNotFound' });
    await expectReason(
      fetchHubModel('tunelab/tiny@v2', { endpoint: server.endpoint, retry: FAST_RETRY }),
      'not-found',
      /has no revision "v2"/,
    );
  });

  it('retries a 500 and then succeeds; gives up with a server error when it keeps failing', async () => {
    const path = resolvePath('tunelab/tiny', 'config.json');
    const before = server.requestsFor(path).length;
    server.misbehave(path, { kind: 'status', status: 500 });
    const hub = await fetchHubModel('tunelab/tiny', { endpoint: server.endpoint, retry: FAST_RETRY });
    expect(hub.totalBytes).toBe(modelBytes);
    expect(server.requestsFor(path).length - before).toBe(2);

    const weights = resolvePath('tunelab/tiny', 'model.safetensors');
    server.misbehave(weights, { kind: 'status', status: 503 }, { kind: 'status', status: 502 }, { kind: 'status', status: 500 });
    const error = await expectReason(
      fetchHubModel('tunelab/tiny', { endpoint: server.endpoint, retry: FAST_RETRY }),
      'server',
      /HTTP 500 .*tried 3 times/,
    );
    expect(error.status).toBe(500);
  });

  it('stops at once on abort, and caches nothing', async () => {
    const weights = resolvePath('tunelab/tiny', 'model.safetensors');
    server.misbehave(weights, { kind: 'stall', bytes: 4096 });
    const cache = new MemoryModelCache();
    const controller = new AbortController();
    const error = await expectReason(
      fetchHubModel('tunelab/tiny', {
        endpoint: server.endpoint,
        cache,
        retry: FAST_RETRY,
        signal: controller.signal,
        onProgress: (p) => {
          if (p.file === 'model.safetensors' && p.fileLoaded > 0) controller.abort();
        },
      }),
      'aborted',
      /cancelled/,
    );
    expect(error.code).toBe('cancelled');
    expect(await cache.list()).toEqual([]);
    // An already-aborted signal never reaches the server.
    const before = server.requests.length;
    await expectReason(
      fetchHubModel('tunelab/tiny', { endpoint: server.endpoint, signal: AbortSignal.abort() }),
      'aborted',
      /cancelled/,
    );
    expect(server.requests.length).toBe(before);
  });

  it('refuses a model that is not GPT-2 before downloading its weights, naming what it is', async () => {
    const llamaConfig = new TextEncoder().encode(
      JSON.stringify({ model_type: 'llama', architectures: ['LlamaForCausalLM'], hidden_size: 64 }),
    );
    server.addRepo('someone/tiny-llama', { ...modelFiles, 'config.json': llamaConfig });
    await expectReason(
      fetchHubModel('someone/tiny-llama', { endpoint: server.endpoint, retry: FAST_RETRY }),
      'unsupported-architecture',
      /someone\/tiny-llama is a llama model \(LlamaForCausalLM\)\. Tunelab runs GPT-2-family models/,
    );
    expect(server.requestsFor(resolvePath('someone/tiny-llama', 'model.safetensors'))).toEqual([]);

    // A GPT-2 variant with other math is refused too, with the config's own reason.
    const wide = JSON.parse(new TextDecoder().decode(modelFiles['config.json']));
    server.addRepo('someone/wide-mlp', { ...modelFiles, 'config.json': new TextEncoder().encode(JSON.stringify({ ...wide, n_inner: 7 })) });
    await expectReason(
      fetchHubModel('someone/wide-mlp', { endpoint: server.endpoint, retry: FAST_RETRY }),
      'unsupported-architecture',
      /n_inner=7 is not supported/,
    );
  });

  it('reports a body shorter than its Content-Length as truncated after the retries', async () => {
    const weights = resolvePath('tunelab/tiny', 'model.safetensors');
    server.rangeSupport = false;
    try {
      server.misbehave(weights, ...Array.from({ length: 3 }, () => ({ kind: 'truncate' as const, bytes: 1000 })));
      await expectReason(
        fetchHubModel('tunelab/tiny', { endpoint: server.endpoint, retry: FAST_RETRY }),
        'truncated',
        /stopped after 1\.0 kB of \d+\.\d kB.*tried 3 times/,
      );
    } finally {
      server.rangeSupport = true;
    }
  });

  it('resumes a cut download with a Range request where the server allows it', async () => {
    const weights = resolvePath('tunelab/tiny', 'model.safetensors');
    const before = server.requestsFor(weights).length;
    server.misbehave(weights, { kind: 'truncate', bytes: 6144 });
    const { model } = await loadHubModel('tunelab/tiny', { endpoint: server.endpoint, retry: FAST_RETRY });
    expect(model.weights.data).toEqual(made.parameters.data);
    const tries = server.requestsFor(weights).slice(before);
    expect(tries.map((r) => r.range)).toEqual([null, 'bytes=6144-']);
  });

  it('restarts from the beginning when the server ignores Range', async () => {
    const weights = resolvePath('tunelab/tiny', 'model.safetensors');
    server.rangeSupport = false;
    try {
      const before = server.requestsFor(weights).length;
      server.misbehave(weights, { kind: 'truncate', bytes: 4096 });
      const { model } = await loadHubModel('tunelab/tiny', { endpoint: server.endpoint, retry: FAST_RETRY });
      expect(model.weights.data).toEqual(made.parameters.data);
      expect(server.requestsFor(weights).slice(before).length).toBe(2);
    } finally {
      server.rangeSupport = true;
    }
  });

  it('joins a sharded checkpoint (model.safetensors.index.json) into one', async () => {
    const checkpoint = parseSafetensors(modelFiles['model.safetensors']);
    const names = [...checkpoint.tensors.keys()];
    const half = Math.ceil(names.length / 2);
    const shardNames = ['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors'];
    const shardOf = (i: number) => (i < half ? 0 : 1);
    const shards = shardNames.map((_, s) =>
      writeSafetensors(
        names
          .filter((_, i) => shardOf(i) === s)
          .map((name) => ({ name, shape: checkpoint.tensors.get(name)!.shape, data: readTensorF32(checkpoint, name) })),
        { metadata: { format: 'pt' } },
      ),
    );
    const index = { metadata: { total_size: 0 }, weight_map: Object.fromEntries(names.map((n, i) => [n, shardNames[shardOf(i)]])) };
    server.addRepo('someone/sharded', {
      'config.json': modelFiles['config.json'],
      'tokenizer.json': modelFiles['tokenizer.json'],
      'model.safetensors.index.json': new TextEncoder().encode(JSON.stringify(index)),
      [shardNames[0]]: shards[0],
      [shardNames[1]]: shards[1],
    });
    const events: HubProgress[] = [];
    const { model, hub } = await loadHubModel('someone/sharded', {
      endpoint: server.endpoint,
      retry: FAST_RETRY,
      onProgress: (p) => events.push({ ...p }),
    });
    expect(hub.shardCount).toBe(2);
    expect(model.weights.data).toEqual(made.parameters.data);
    expect(model.checkpointMetadata.format).toBe('pt');
    const last = events[events.length - 1];
    expect(last.file).toBe(shardNames[1]);
    expect(last.loaded).toBe(last.total);

    // Without weights in either form, the message says what Tunelab reads.
    server.addRepo('someone/bin-only', { 'config.json': modelFiles['config.json'], 'tokenizer.json': modelFiles['tokenizer.json'] });
    await expectReason(
      fetchHubModel('someone/bin-only', { endpoint: server.endpoint, retry: FAST_RETRY }),
      'missing-file',
      /has no model\.safetensors \(nor model\.safetensors\.index\.json\).*safe_serialization=True/,
    );
  });

  it('names a missing tokenizer.json', async () => {
    server.addRepo('someone/no-tokenizer', { 'config.json': modelFiles['config.json'], 'model.safetensors': modelFiles['model.safetensors'] });
    await expectReason(
      fetchHubModel('someone/no-tokenizer', { endpoint: server.endpoint, retry: FAST_RETRY }),
      'missing-file',
      /has no tokenizer\.json; .*save_pretrained/,
    );
  });

  it('loads, but reports how much room is needed and what to delete, when the cache is full', async () => {
    const cache = new MemoryModelCache({ quotaBytes: modelBytes + 500 });
    await cache.put('url:https://example.org/old/', new Map([['config.json', new Uint8Array(1000)]]), 'an old model');
    const hub = await fetchHubModel('tunelab/tiny', { endpoint: server.endpoint, cache, retry: FAST_RETRY });
    expect(hub.fromCache).toBe(false);
    expect((await loadModel(hub.source)).weights.data).toEqual(made.parameters.data);
    expect(hub.cacheError?.reason).toBe('quota');
    expect(hub.cacheError?.code).toBe('too-large');
    const needed = `${(modelBytes / 1e3).toFixed(1)} kB`;
    expect(hub.cacheError?.message).toContain(`it needs ${needed}`);
    expect(hub.cacheError?.message).toMatch(/Delete cached models you no longer need: an old model \(1\.0 kB\)/);
    expect(hub.cacheError?.message).toMatch(/downloaded again next time/);
    expect(await cache.has(hub.location.cacheKey)).toBe(false);
  });

  it('tells CORS from a network failure in a browser page (by a no-cors probe)', async () => {
    const calls: RequestMode[] = [];
    const blockedByCors: typeof fetch = async (_input, init) => {
      calls.push(init?.mode ?? 'cors');
      if (init?.mode === 'no-cors') return new Response(null, { status: 200 });
      throw new TypeError('Failed to fetch');
    };
    await expectReason(
      fetchHubModel('https://models.example.org/tiny/', { fetch: blockedByCors, pageOrigin: 'https://app.example', retry: FAST_RETRY }),
      'cors',
      /does not allow pages from https:\/\/app\.example to read .*CORS/,
    );
    expect(calls).toEqual(['cors', 'no-cors']); // no pointless retries

    const offline: typeof fetch = async () => {
      throw new TypeError('Failed to fetch');
    };
    await expectReason(
      fetchHubModel('https://models.example.org/tiny/', { fetch: offline, pageOrigin: 'https://app.example', retry: FAST_RETRY }),
      'network',
      /could not reach models\.example\.org \(Failed to fetch\); check the internet connection/,
    );
  });

  it('sends an access token when given one', async () => {
    const seen: (string | null)[] = [];
    const recording: typeof fetch = async (input, init) => {
      seen.push(new Headers(init?.headers).get('authorization'));
      return fetch(input, init);
    };
    await fetchHubModel('tunelab/tiny', { endpoint: server.endpoint, fetch: recording, accessToken: 'hf_test', retry: FAST_RETRY });
    expect(seen).toEqual(['Bearer hf_test', 'Bearer hf_test', 'Bearer hf_test']);
  });
});
