import { createHash, timingSafeEqual } from 'node:crypto';
import { once } from 'node:events';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { SmartHostStatus } from '../forward/smarthost-status';
import type { ReloadResult } from '../lifecycle/reload';
import type { ApiHandler } from '../observe/http';
import { DEFAULT_LIST_LIMIT, type QueueFilter } from '../spool/inspect';
import type { AdminResult, QueueAdmin } from '../spool/queue-admin';
import { isSpoolId } from '../spool/store';
import { parseQueueQuery } from './query';
import type { StatusReport } from './types';

export interface AdminDeps {
  queue: QueueAdmin;
  status: () => Promise<StatusReport>;
  smarthosts: () => Promise<SmartHostStatus[]>;
  reload: () => Promise<ReloadResult>;
  /** The bearer token required on every /api request, if one is configured. */
  token: () => string | undefined;
}

/**
 * The admin API (queue inspection and control, smart hosts, status, reload) on `http.address`:
 *
 *   GET    /api/status                    GET  /api/smarthosts          POST /api/reload
 *   GET    /api/queue?state=&client=&recipient=&min_age=&max_age=&limit=[&format=ndjson]
 *   POST   /api/queue/flush
 *   GET    /api/queue/<id>                DELETE /api/queue/<id>
 *   POST   /api/queue/<id>/retry|hold|release|delete
 *
 * Requests need `Authorization: Bearer <http.token>` when a token is configured, and are refused
 * when they carry an `Origin` header: a web page the admin happens to visit must not be able to
 * flush or delete the queue of a relay on loopback.
 */
export class AdminApi implements ApiHandler {
  constructor(private readonly deps: AdminDeps) {}

  async handle(req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> {
    req.resume(); // no endpoint reads a body; drain whatever was sent
    if (req.headers.origin !== undefined) return send(res, 403, { error: 'browser requests are not accepted by the admin API' });
    if (!this.authorised(req)) {
      res.setHeader('www-authenticate', 'Bearer realm="smarthop"');
      return send(res, 401, { error: 'missing or wrong bearer token (http.token)' });
    }
    const method = req.method ?? 'GET';
    const parts = url.pathname.split('/').filter((p) => p !== '').slice(1);
    const [resource, id, action] = parts;

    if (parts.length === 1 && resource === 'status') return this.only(res, method, 'GET', async () => send(res, 200, await this.deps.status()));
    if (parts.length === 1 && resource === 'smarthosts') return this.only(res, method, 'GET', async () => send(res, 200, { smarthosts: await this.deps.smarthosts() }));
    if (parts.length === 1 && resource === 'reload') {
      return this.only(res, method, 'POST', async () => {
        const result = await this.deps.reload();
        send(res, result.ok ? 200 : 422, result);
      });
    }
    if (resource !== 'queue') return send(res, 404, { error: `no such endpoint ${url.pathname}` });

    if (parts.length === 1) {
      return this.only(res, method, 'GET', async () => {
        const parsed = parseQueueQuery(url.searchParams);
        if (!parsed.ok) return send(res, 400, { error: parsed.error });
        if (url.searchParams.get('format') === 'ndjson') return this.streamList(res, parsed.filter);
        send(res, 200, await this.deps.queue.list(parsed.filter));
      });
    }
    if (parts.length === 2 && id === 'flush') return this.only(res, method, 'POST', () => send(res, 200, { flushed: this.deps.queue.flush() }));
    if (!isSpoolId(id) || parts.length > 3) return send(res, 404, { error: `no message ${id} in the spool` });

    if (parts.length === 2) {
      if (method === 'DELETE') return answer(res, await this.deps.queue.delete(id));
      return this.only(res, method, 'GET', async () => {
        const detail = await this.deps.queue.show(id);
        if (!detail) return send(res, 404, { error: `no message ${id} in the spool` });
        send(res, 200, detail);
      });
    }
    const actions: Record<string, (id: string) => Promise<AdminResult<unknown>>> = {
      retry: (m) => this.deps.queue.retry(m),
      hold: (m) => this.deps.queue.hold(m),
      release: (m) => this.deps.queue.release(m),
      delete: (m) => this.deps.queue.delete(m),
    };
    const run = actions[action];
    if (!run) return send(res, 404, { error: `no action ${action} (retry, hold, release, delete)` });
    return this.only(res, method, 'POST', async () => answer(res, await run(id)));
  }

  /**
   * `format=ndjson`: one message per line as the spool walk finds it, then `{"truncated":…}`. A search
   * over a deep queue (a recipient, say) reads every message; the first rows go out at once and
   * the relay holds none of the listing.
   */
  private async streamList(res: ServerResponse, filter: QueueFilter): Promise<void> {
    const limit = filter.limit ?? DEFAULT_LIST_LIMIT;
    res.writeHead(200, { 'content-type': 'application/x-ndjson', 'cache-control': 'no-store' });
    let count = 0;
    let truncated = false;
    for await (const entry of this.deps.queue.walk(filter)) {
      if (res.destroyed) return;
      if (count === limit) {
        truncated = true;
        break;
      }
      count++;
      if (!res.write(`${JSON.stringify(entry)}\n`)) await Promise.race([once(res, 'drain'), once(res, 'close')]);
    }
    res.end(`${JSON.stringify({ truncated })}\n`);
  }

  private authorised(req: IncomingMessage): boolean {
    const token = this.deps.token();
    if (token === undefined) return true;
    const match = /^Bearer\s+(\S+)\s*$/i.exec(req.headers.authorization ?? '');
    if (!match) return false;
    // Compare digests: equal length whatever was sent, and constant time.
    return timingSafeEqual(digest(match[1]), digest(token));
  }

  private async only(res: ServerResponse, method: string, allowed: 'GET' | 'POST', run: () => void | Promise<void>): Promise<void> {
    if (method !== allowed) {
      res.setHeader('allow', allowed);
      return send(res, 405, { error: `use ${allowed}` });
    }
    await run();
  }
}

function digest(value: string): Buffer {
  return createHash('sha256').update(value).digest();
}

function answer(res: ServerResponse, result: AdminResult<unknown>): void {
  if (result.ok) return send(res, 200, result.value);
  send(res, result.error === 'not_found' ? 404 : 409, { error: result.message });
}

function send(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' }).end(`${JSON.stringify(body)}\n`);
}
