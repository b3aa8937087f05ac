// What a learner may type to name a model: Hub ids with or without a user and a revision, Hub page URLs, other URLs
// (a folder, or a file in it), and the refusals for text that is none of these.

import { describe, expect, it } from 'vitest';
import { HubError } from '../../src/engine/hub/errors.ts';
import { modelFileUrl, resolveModelRef } from '../../src/engine/hub/ref.ts';

describe('resolveModelRef', () => {
  it('maps Hub ids to {endpoint}/{repo}/resolve/{revision}/', () => {
    const gpt2 = resolveModelRef('gpt2');
    expect(gpt2).toMatchObject({ kind: 'hub', repo: 'gpt2', revision: 'main', baseUrl: 'https://huggingface.co/gpt2/resolve/main/' });
    expect(gpt2.description).toBe('gpt2 (revision main) on the Hugging Face Hub');
    expect(modelFileUrl(gpt2, 'config.json')).toBe('https://huggingface.co/gpt2/resolve/main/config.json');

    const user = resolveModelRef('  openai-community/gpt2-medium ');
    expect(user.baseUrl).toBe('https://huggingface.co/openai-community/gpt2-medium/resolve/main/');

    // A revision with a slash is one path segment on the Hub, so it is percent-encoded.
    const pr = resolveModelRef('distilbert/distilgpt2@refs/pr/1');
    expect(pr.revision).toBe('refs/pr/1');
    expect(pr.baseUrl).toBe('https://huggingface.co/distilbert/distilgpt2/resolve/refs%2Fpr%2F1/');
    expect(resolveModelRef('gpt2@abc', { revision: 'v1' }).revision).toBe('v1');

    const mirror = resolveModelRef('gpt2', { endpoint: 'http://127.0.0.1:8080/' });
    expect(mirror.baseUrl).toBe('http://127.0.0.1:8080/gpt2/resolve/main/');
    expect(mirror.description).toBe('gpt2 (revision main) on http://127.0.0.1:8080');
    expect(mirror.cacheKey).not.toBe(resolveModelRef('gpt2').cacheKey);
    expect(resolveModelRef('gpt2@dev').cacheKey).not.toBe(resolveModelRef('gpt2').cacheKey);
  });

  it('reads Hub page URLs as ids', () => {
    expect(resolveModelRef('https://huggingface.co/openai-community/gpt2')).toMatchObject({ kind: 'hub', repo: 'openai-community/gpt2' });
    expect(resolveModelRef('https://huggingface.co/gpt2/tree/dev')).toMatchObject({ repo: 'gpt2', revision: 'dev' });
    expect(resolveModelRef('https://huggingface.co/user/repo/resolve/main/config.json')).toMatchObject({ repo: 'user/repo', revision: 'main' });
    expect(resolveModelRef('https://huggingface.co/user/repo/blob/refs%2Fpr%2F2/README.md').revision).toBe('refs/pr/2');
  });

  it('takes other URLs as a folder of files', () => {
    const folder = resolveModelRef('https://example.org/models/tiny');
    expect(folder).toMatchObject({ kind: 'url', baseUrl: 'https://example.org/models/tiny/' });
    expect(folder.cacheKey).toBe('url:https://example.org/models/tiny/');
    expect(resolveModelRef('https://example.org/models/tiny/model.safetensors?download=1').baseUrl).toBe('https://example.org/models/tiny/');
    expect(resolveModelRef('https://huggingface.co/api/models/gpt2/extra/parts').kind).toBe('url');
  });

  it('refuses what is not an id or a web URL, saying what is accepted', () => {
    const cases: [string, RegExp][] = [
      ['', /type a model id such as gpt2/],
      ['user/repo/extra', /too many "\/"/],
      ['has space', /is not a Hugging Face model id/],
      ['-leading', /is not a Hugging Face model id/],
      ['double--dash', /is not a Hugging Face model id/],
      ['gpt2@', /is not a revision/],
      ['ftp://example.org/model', /not an http\(s\) URL/],
    ];
    for (const [input, message] of cases) {
      let error: unknown;
      try {
        resolveModelRef(input);
      } catch (e) {
        error = e;
      }
      expect(error, input).toBeInstanceOf(HubError);
      expect((error as HubError).reason).toBe('bad-id');
      expect((error as HubError).message).toMatch(message);
    }
  });
});
