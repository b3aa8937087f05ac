// What a learner types to name a model, turned into where its files are. Accepted:
//   gpt2, distilgpt2, openai-community/gpt2        a Hub id (revision "main" unless given)
//   user/repo@my-branch                             a Hub id with a revision (branch, tag or commit)
//   https://huggingface.co/user/repo[/tree/rev]     a model page on the Hub (same as the id)
//   https://example.org/models/tiny/               any other URL: a folder holding config.json, tokenizer.json, ...
// Hub files live at {endpoint}/{repo}/resolve/{revision}/{file}; the revision is one path segment, so a revision with a
// slash (refs/pr/1) is percent-encoded, as the Hub expects.

import { HubError } from './errors.ts';

export const DEFAULT_HUB_ENDPOINT = 'https://huggingface.co';
export const DEFAULT_REVISION = 'main';

export interface ModelLocation {
  kind: 'hub' | 'url';
  /** Hub: 'openai-community/gpt2'; URL: the base URL. */
  name: string;
  /** Hub only: the repository id, revision and endpoint. */
  repo?: string;
  revision?: string;
  endpoint?: string;
  /** The folder the files are in, ending with '/'. */
  baseUrl: string;
  /** For messages: 'gpt2 (revision main) on https://huggingface.co'. */
  description: string;
  /** Identifies the model in a ModelCache; the same files give the same key. */
  cacheKey: string;
}

export interface ModelRefOptions {
  /** The Hub's address (a mirror or a local test server); default https://huggingface.co. */
  endpoint?: string;
  /** Branch, tag or commit; wins over an `@revision` in the id. Default 'main'. */
  revision?: string;
}

/** Files that a pasted file URL may end with; the folder above them is the model. */
const MODEL_FILES = new Set(['config.json', 'tokenizer.json', 'model.safetensors', 'model.safetensors.index.json']);

// The Hub's rules for a repository name: letters, digits, '-', '_', '.', at most 96 characters, no '--' or '..',
// not starting or ending with '-' or '.'.
const NAME = /^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9_])?$/;

function checkRepoName(part: string, input: string): void {
  if (!NAME.test(part) || part.includes('--') || part.includes('..') || part.length > 96) {
    throw new HubError(
      'bad-id',
      `"${input}" is not a Hugging Face model id: use a name like gpt2 or distilgpt2, or user/repo ` +
        '(letters, digits, "-", "_" and "."), or paste the model\'s https:// URL',
    );
  }
}

function checkRevision(revision: string, input: string): void {
  if (revision === '' || /\s/.test(revision) || revision.includes('..')) {
    throw new HubError('bad-id', `"${revision}" in "${input}" is not a revision: use a branch, a tag or a commit hash`);
  }
}

function normalizeEndpoint(endpoint: string): string {
  let url: URL;
  try {
    url = new URL(endpoint);
  } catch {
    throw new HubError('bad-id', `the Hub endpoint "${endpoint}" is not a URL (default: ${DEFAULT_HUB_ENDPOINT})`);
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') {
    throw new HubError('bad-id', `the Hub endpoint "${endpoint}" must be an http(s) URL`);
  }
  return url.href.replace(/\/+$/, '');
}

function hubLocation(repo: string, revision: string, endpoint: string): ModelLocation {
  const baseUrl = `${endpoint}/${repo}/resolve/${encodeURIComponent(revision)}/`;
  const onDefault = endpoint === DEFAULT_HUB_ENDPOINT;
  return {
    kind: 'hub',
    name: repo,
    repo,
    revision,
    endpoint,
    baseUrl,
    description: `${repo} (revision ${revision})${onDefault ? ' on the Hugging Face Hub' : ` on ${endpoint}`}`,
    cacheKey: `hub:${endpoint}/${repo}@${revision}`,
  };
}

/** A Hub repo id from a page URL path like /user/repo, /gpt2, /user/repo/tree/dev, /user/repo/resolve/main/config.json. */
function repoFromHubPath(path: string): { repo: string; revision?: string } | null {
  const parts = path.split('/').filter((p) => p !== '');
  if (parts.length === 0) return null;
  const marker = parts.findIndex((p) => p === 'tree' || p === 'resolve' || p === 'blob');
  const repoParts = marker === -1 ? parts : parts.slice(0, marker);
  if (repoParts.length < 1 || repoParts.length > 2 || (marker !== -1 && marker + 1 >= parts.length)) return null;
  if (!repoParts.every((p) => NAME.test(p))) return null;
  const repo = repoParts.join('/');
  return marker === -1 ? { repo } : { repo, revision: decodeURIComponent(parts[marker + 1]) };
}

/** Resolves what the learner typed into a location, or throws HubError('bad-id') saying what is accepted. */
export function resolveModelRef(input: string, options: ModelRefOptions = {}): ModelLocation {
  const text = input.trim();
  const endpoint = normalizeEndpoint(options.endpoint ?? DEFAULT_HUB_ENDPOINT);
  if (text === '') throw new HubError('bad-id', 'type a model id such as gpt2 or distilgpt2, or a URL');

  if (/^[a-z][a-z0-9+.-]*:/i.test(text)) {
    let url: URL;
    try {
      url = new URL(text);
    } catch {
      throw new HubError('bad-id', `"${text}" is not a valid URL`);
    }
    if (url.protocol !== 'https:' && url.protocol !== 'http:') {
      throw new HubError('bad-id', `"${text}" is not an http(s) URL; give a Hub id (gpt2) or a web address`);
    }
    if (url.origin === new URL(endpoint).origin) {
      const found = repoFromHubPath(url.pathname);
      if (found) {
        const revision = options.revision ?? found.revision ?? DEFAULT_REVISION;
        checkRevision(revision, text);
        return hubLocation(found.repo, revision, endpoint);
      }
    }
    // Any other URL is a folder; a pasted link to one of its files means that file's folder.
    url.search = '';
    url.hash = '';
    const segments = url.pathname.split('/');
    if (MODEL_FILES.has(segments[segments.length - 1])) segments[segments.length - 1] = '';
    url.pathname = segments.join('/').replace(/\/?$/, '/');
    const baseUrl = url.href;
    return { kind: 'url', name: baseUrl, baseUrl, description: baseUrl, cacheKey: `url:${baseUrl}` };
  }

  const at = text.indexOf('@');
  const id = at === -1 ? text : text.slice(0, at);
  const revision = options.revision ?? (at === -1 ? DEFAULT_REVISION : text.slice(at + 1));
  const parts = id.split('/');
  if (parts.length > 2) {
    throw new HubError('bad-id', `"${text}" has too many "/": a Hub model id is a name (gpt2) or user/repo`);
  }
  for (const part of parts) checkRepoName(part, text);
  checkRevision(revision, text);
  return hubLocation(id, revision, endpoint);
}

/** The URL of one file of the model. */
export function modelFileUrl(location: ModelLocation, fileName: string): string {
  return location.baseUrl + fileName.split('/').map(encodeURIComponent).join('/');
}
