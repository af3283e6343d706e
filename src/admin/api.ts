import { once } from 'node:events';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { SmartHostStatus } from '../forward/smarthost-status';
import type { ReloadResult } from '../lifecycle/reload';
import { parseTraceQuery, type TraceQuery } from '../trace/query';
import type { TraceReport } from '../trace/trace';
import type { ApiHandler } from '../observe/http';
import { DEFAULT_LIST_LIMIT, type QueueFilter } from '../spool/inspect';
import type { AdminResult, QueueAdmin } from '../spool/queue-admin';
import { isSpoolId } from '../spool/store';
import { adminAuthorised } from './auth';
import { PAGE_CSP, renderPage, SEARCH_FIELDS, SEARCH_PERIODS, type PageSearch, type SearchField } from './page';
import { parseQueueQuery } from './query';
import type { StatusReport } from './types';

export interface AdminDeps {
  queue: QueueAdmin;
  status: () => Promise<StatusReport>;
  smarthosts: () => Promise<SmartHostStatus[]>;
  reload: () => Promise<ReloadResult>;
  /** The last events, newest first, for the status page. */
  recentEvents: () => Record<string, unknown>[];
  /** Message trace over the events files; null when `events.file` is not configured. */
  trace: ((query: TraceQuery) => Promise<TraceReport>) | null;
  /** The bearer token required on every /api request, if one is configured. */
  token: () => string | undefined;
}

/**
 * The admin API (queue inspection and control, smart hosts, status, reload) on `http.address`:
 *
 *   GET    /api/status                    GET  /api/smarthosts          POST /api/reload
 *   GET    /api/trace?queue_id=&message_id=&sender=&recipient=&client=&smarthost=&outcome=&since=&from=&until=&limit=
 *   GET    /api/queue?state=&client=&recipient=&min_age=&max_age=&limit=[&format=ndjson]
 *   POST   /api/queue/flush
 *   GET    /api/queue/<id>                DELETE /api/queue/<id>
 *   POST   /api/queue/<id>/retry|hold|release|delete
 *
 * and the read-only status page at `/` (admin/page.ts).
 *
 * Requests need `http.token` when one is configured (as a bearer token, or as the password of HTTP
 * Basic authentication, which is how a browser sends it: admin/auth.ts), and are refused when they
 * carry an `Origin` header: a web page the admin happens to visit must not be able to flush or
 * delete the queue of a relay on loopback. A browser sends none when it loads the page or submits
 * its search form (a GET).
 */
export class AdminApi implements ApiHandler {
  constructor(private readonly deps: AdminDeps) {}

  async handle(req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> {
    req.resume(); // no endpoint reads a body; drain whatever was sent
    if (req.headers.origin !== undefined)
      return send(res, 403, { error: 'browser requests are not accepted by the admin API' });
    const page = url.pathname === '/';
    if (!adminAuthorised(req, this.deps.token())) {
      if (page) {
        // A browser asks for the token (as the password) once, then sends it with every request.
        res.writeHead(401, {
          'www-authenticate': 'Basic realm="smarthop", charset="UTF-8"',
          'content-type': 'text/plain; charset=utf-8',
          'cache-control': 'no-store',
        });
        res.end('The status page needs the admin token (http.token) as the password; any user name.\n');
        return;
      }
      res.setHeader('www-authenticate', 'Bearer realm="smarthop"');
      return send(res, 401, { error: 'missing or wrong bearer token (http.token)' });
    }
    if (page) return this.statusPage(req, res, url);
    const method = req.method ?? 'GET';
    const parts = url.pathname
      .split('/')
      .filter((p) => p !== '')
      .slice(1);
    const [resource, id, action] = parts;

    if (parts.length === 1 && resource === 'status')
      return this.only(res, method, 'GET', async () => send(res, 200, await this.deps.status()));
    if (parts.length === 1 && resource === 'smarthosts')
      return this.only(res, method, 'GET', async () => send(res, 200, { smarthosts: await this.deps.smarthosts() }));
    if (parts.length === 1 && resource === 'reload') {
      return this.only(res, method, 'POST', async () => {
        const result = await this.deps.reload();
        send(res, result.ok ? 200 : 422, result);
      });
    }
    if (parts.length === 1 && resource === 'trace') {
      return this.only(res, method, 'GET', async () => {
        const trace = this.deps.trace;
        if (!trace) return send(res, 404, { error: 'no events file: set events.file to trace messages' });
        const parsed = parseTraceQuery(url.searchParams, Date.now());
        if (!parsed.ok) return send(res, 400, { error: parsed.error });
        send(res, 200, await trace(parsed.query));
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
    if (parts.length === 2 && id === 'flush')
      return this.only(res, method, 'POST', () => send(res, 200, { flushed: this.deps.queue.flush() }));
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

  private async statusPage(req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> {
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
      return;
    }
    const html = renderPage({
      status: await this.deps.status(),
      recentEvents: this.deps.recentEvents(),
      traceAvailable: this.deps.trace !== null,
      search: await this.search(url.searchParams),
      now: new Date(),
    });
    res.writeHead(200, {
      'content-type': 'text/html; charset=utf-8',
      'content-security-policy': PAGE_CSP,
      'x-frame-options': 'DENY',
      'x-content-type-options': 'nosniff',
      'referrer-policy': 'no-referrer',
      'cache-control': 'no-store',
    });
    res.end(html);
  }

  /** The page's search form (`?by=recipient&q=…&since=24h`) as a trace query. */
  private async search(params: URLSearchParams): Promise<PageSearch | null> {
    const text = params.get('q')?.trim() ?? '';
    const trace = this.deps.trace;
    if (text === '' || !trace) return null;
    const byParam = params.get('by') ?? 'recipient';
    const by: SearchField = SEARCH_FIELDS.some(([field]) => field === byParam) ? (byParam as SearchField) : 'recipient';
    const sinceParam = params.get('since') ?? '24h';
    const since = SEARCH_PERIODS.some(([period]) => period === sinceParam) ? sinceParam : '24h';
    const query = new URLSearchParams({ [by]: text });
    if (since !== '') query.set('since', since);
    const parsed = parseTraceQuery(query, Date.now());
    if (!parsed.ok) return { by, text, since, result: { ok: false, error: parsed.error } };
    try {
      return { by, text, since, result: { ok: true, report: await trace(parsed.query) } };
    } catch (err) {
      const error = `the events could not be read: ${(err as Error).message}`;
      return { by, text, since, result: { ok: false, error } };
    }
  }

  private async only(
    res: ServerResponse,
    method: string,
    allowed: 'GET' | 'POST',
    run: () => void | Promise<void>,
  ): Promise<void> {
    if (method !== allowed) {
      res.setHeader('allow', allowed);
      return send(res, 405, { error: `use ${allowed}` });
    }
    await run();
  }
}

function answer(res: ServerResponse, result: AdminResult<unknown>): void {
  if (result.ok) return send(res, 200, result.value);
  send(res, result.error === 'not_found' ? 404 : 409, { error: result.message });
}

function send(res: ServerResponse, status: number, body: unknown): void {
  res
    .writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' })
    .end(`${JSON.stringify(body)}\n`);
}
