import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { HostCheck } from './host-check';
import type { Metrics } from './metrics';

export interface HealthSource {
  /** Liveness: the process answers. Readiness: it can take and pass on mail right now. */
  ready(): Promise<{ ok: boolean; checks: Record<string, boolean | string> }>;
}

/** Serves everything under `/api/` (the admin API); it does its own authentication. */
export interface ApiHandler {
  handle(req: IncomingMessage, res: ServerResponse, url: URL): Promise<void>;
}

/**
 * `/metrics` for Prometheus, `/healthz` (alive), `/readyz` (spool writable, a smart host eligible)
 * and the admin API under `/api/`. The first three stay open so Prometheus and health checks need no
 * credentials; they reveal counts, never message contents. Every request, whatever its path, must
 * carry a Host header that `hostCheck` accepts (DNS rebinding), or it gets 403.
 */
export class HttpEndpoints {
  private readonly server: Server;

  constructor(
    private readonly metrics: Metrics,
    private readonly health: HealthSource,
    private readonly api: ApiHandler | null = null,
    private readonly hostCheck: HostCheck | null = null,
  ) {
    this.server = createServer((req, res) => {
      this.route(req, res).catch((err: Error) => {
        if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' });
        res.end(`internal error: ${err.message}\n`);
      });
    });
  }

  async listen(host: string, port: number): Promise<AddressInfo> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, host, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
    return this.server.address() as AddressInfo;
  }

  close(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }

  private async route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (this.hostCheck && !this.hostCheck.allows(req.headers.host)) {
      req.resume();
      const error = 'Host header not accepted: use the http.address host, localhost, or a name in http.allowed_hosts';
      res.writeHead(403, { 'content-type': 'application/json' }).end(`${JSON.stringify({ error })}\n`);
      return;
    }
    const url = new URL(req.url ?? '/', 'http://relay');
    if (url.pathname === '/api' || url.pathname.startsWith('/api/')) {
      if (this.api) return this.api.handle(req, res, url);
      res.writeHead(404, { 'content-type': 'application/json' }).end('{"error":"no admin API"}\n');
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
      return;
    }
    switch (url.pathname) {
      case '/metrics': {
        const body = await this.metrics.exposition();
        res.writeHead(200, { 'content-type': this.metrics.registry.contentType }).end(body);
        return;
      }
      case '/healthz':
        res.writeHead(200, { 'content-type': 'application/json' }).end('{"status":"ok"}\n');
        return;
      case '/readyz': {
        const { ok, checks } = await this.health.ready();
        res.writeHead(ok ? 200 : 503, { 'content-type': 'application/json' }).end(`${JSON.stringify({ status: ok ? 'ready' : 'not ready', checks })}\n`);
        return;
      }
      default:
        res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
    }
  }
}
