// A local HTTP server laid out like the Hugging Face Hub's file URLs ({repo}/resolve/{revision}/{file}), on 127.0.0.1
// only, for the hub tests. Each file can be given a queue of misbehaviours that the next requests for it meet (a
// status, a body cut short, a body that stalls); after the queue, the file is served normally, with Range support
// unless turned off. Bodies go out in small chunks with a pause between them, so that progress is seen to grow.

import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export type Misbehaviour =
  | { kind: 'status'; status: number; errorCode?: string }
  /** Announce the whole length, send `bytes`, then drop the connection. */
  | { kind: 'truncate'; bytes: number }
  /** Send `bytes`, then nothing more until the client goes away. */
  | { kind: 'stall'; bytes: number };

export interface RecordedRequest {
  path: string;
  range: string | null;
}

export interface HubTestServer {
  /** http://127.0.0.1:PORT */
  readonly endpoint: string;
  readonly requests: RecordedRequest[];
  /** Serve `files` at {repo}/resolve/{revision}/{name}. */
  addRepo(repo: string, files: Record<string, Uint8Array>, revision?: string): void;
  /** Serve `files` at /{folder}/{name} (a plain folder of files, not Hub-shaped). */
  addFolder(folder: string, files: Record<string, Uint8Array>): void;
  /** Queue misbehaviours for the next requests of a URL path. */
  misbehave(path: string, ...queue: Misbehaviour[]): void;
  /** Ignore Range headers (always answer 200 with the whole file). */
  rangeSupport: boolean;
  /** Requests whose path is `path`. */
  requestsFor(path: string): RecordedRequest[];
  close(): Promise<void>;
}

const CHUNK_BYTES = 2048;

function pause(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

export async function startHubTestServer(): Promise<HubTestServer> {
  const files = new Map<string, Uint8Array>();
  const queues = new Map<string, Misbehaviour[]>();
  const requests: RecordedRequest[] = [];

  async function sendChunks(res: ServerResponse, body: Uint8Array): Promise<void> {
    for (let offset = 0; offset < body.length && !res.destroyed; offset += CHUNK_BYTES) {
      res.write(body.subarray(offset, offset + CHUNK_BYTES));
      await pause(1);
    }
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = decodeURIComponent(new URL(req.url ?? '/', 'http://127.0.0.1').pathname);
    const range = typeof req.headers.range === 'string' ? req.headers.range : null;
    requests.push({ path, range });
    const body = files.get(path);
    const trouble = queues.get(path)?.shift();

    if (trouble?.kind === 'status') {
      const headers: Record<string, string> = { 'content-type': 'text/plain' };
      if (trouble.errorCode) headers['x-error-code'] = trouble.errorCode;
      res.writeHead(trouble.status, headers).end(`status ${trouble.status}`);
      return;
    }
    if (!body) {
      res.writeHead(404, { 'content-type': 'text/plain', 'x-error-code': 'EntryNotFound' }).end('Entry not found');
      return;
    }
    const etag = `"${body.length}-${body[0] ?? 0}"`;
    if (trouble?.kind === 'truncate' || trouble?.kind === 'stall') {
      res.writeHead(200, { 'content-length': String(body.length), 'accept-ranges': 'bytes', etag });
      await sendChunks(res, body.subarray(0, trouble.bytes));
      if (trouble.kind === 'truncate') {
        // Let the bytes leave, then cut the connection before the announced length.
        await pause(5);
        res.socket?.destroy();
      }
      return; // a stalled response stays open until the client aborts or the server closes
    }
    const match = server.rangeSupport && range ? /^bytes=(\d+)-$/.exec(range) : null;
    if (match && Number(match[1]) < body.length) {
      const start = Number(match[1]);
      res.writeHead(206, {
        'content-length': String(body.length - start),
        'content-range': `bytes ${start}-${body.length - 1}/${body.length}`,
        'accept-ranges': 'bytes',
        etag,
      });
      await sendChunks(res, body.subarray(start));
    } else {
      res.writeHead(200, { 'content-length': String(body.length), 'accept-ranges': 'bytes', etag });
      await sendChunks(res, body);
    }
    res.end();
  }

  const http: Server = createServer((req, res) => {
    handle(req, res).catch(() => res.destroy());
  });
  await new Promise<void>((resolve, reject) => {
    http.once('error', reject);
    http.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = http.address() as AddressInfo;

  const server: HubTestServer = {
    endpoint: `http://127.0.0.1:${port}`,
    requests,
    rangeSupport: true,
    addRepo(repo, repoFiles, revision = 'main') {
      for (const [name, bytes] of Object.entries(repoFiles)) files.set(`/${repo}/resolve/${revision}/${name}`, bytes);
    },
    addFolder(folder, folderFiles) {
      for (const [name, bytes] of Object.entries(folderFiles)) files.set(`/${folder}/${name}`, bytes);
    },
    misbehave(path, ...queue) {
      queues.set(path, [...(queues.get(path) ?? []), ...queue]);
    },
    requestsFor(path) {
      return requests.filter((r) => r.path === path);
    },
    close() {
      return new Promise<void>((resolve) => {
        http.close(() => resolve());
        http.closeAllConnections();
      });
    },
  };
  return server;
}
