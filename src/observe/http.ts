import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import type { HostCheck } from './host-check';
import type { Metrics } from './metrics';

export interface HealthSource {
  /** Liveness: the process answers. Readiness: it can take and pass on mail right now. */
  ready(): Promise<{ ok: boolean; checks: Record<string, boolean | string> }>;
}

/** Serves everything under `/api/` (the admin API) and the status page at `/`; it does its own authentication. */
export interface ApiHandler {
  handle(req: IncomingMessage, res: ServerResponse, url: URL): Promise<void>;
}

/** Bounds on what HTTP clients may hold: off loopback, anybody on the LAN can reach the endpoints. */
export interface HttpLimits {
  /** Open connections at once; past it Node closes a new connection at once. */
  maxConnections: number;
  /** Open connections from one address at once; past it a new one is closed at once. */
  maxConnectionsPerAddress: number;
  /** Longest a request's header may take to arrive, first byte to last (a trickled header is cut off). */
  headersTimeoutMs: number;
  /** Longest a whole request may take to arrive. */
  requestTimeoutMs: number;
  /** Largest request header block (431 past it). */
  maxHeaderBytes: number;
  /** Header fields read from one request (the rest are ignored). */
  maxHeaders: number;
}

/**
 * Prometheus, a health checker and an admin's CLI need a handful of connections, small headers and
 * a request that arrives at once.
 */
export const HTTP_LIMITS: HttpLimits = {
  maxConnections: 64,
  maxConnectionsPerAddress: 16,
  headersTimeoutMs: 10_000,
  requestTimeoutMs: 30_000,
  maxHeaderBytes: 16 * 1024,
  maxHeaders: 64,
};

/**
 * `/metrics` for Prometheus, `/healthz` (alive), `/readyz` (spool writable, a smart host eligible)
 * and the admin API under `/api/` with its status page at `/`. The first three stay open so Prometheus
 * and health checks need no credentials; they reveal counts, never message contents. Every request,
 * whatever its path, must carry a Host header that `hostCheck` accepts (DNS rebinding), or it gets 403.
 * Connections, header size and the time a request may take to arrive are bounded (HttpLimits).
 */
export class HttpEndpoints {
  private readonly server: Server;

  constructor(
    private readonly metrics: Metrics,
    private readonly health: HealthSource,
    private readonly api: ApiHandler | null = null,
    private readonly hostCheck: HostCheck | null = null,
    limits: HttpLimits = HTTP_LIMITS,
  ) {
    const options = {
      maxHeaderSize: limits.maxHeaderBytes,
      headersTimeout: limits.headersTimeoutMs,
      requestTimeout: limits.requestTimeoutMs,
      // Node looks for requests past their timeouts this often (30 s by default).
      connectionsCheckingInterval: Math.min(1_000, limits.headersTimeoutMs),
    };
    this.server = createServer(options, (req, res) => {
      this.route(req, res).catch((err: Error) => {
        if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' });
        res.end(`internal error: ${err.message}\n`);
      });
    });
    this.server.maxHeadersCount = limits.maxHeaders;
    this.server.maxConnections = limits.maxConnections;
    this.capPerAddress(limits.maxConnectionsPerAddress);
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

  /** At most `max` open connections from one address; a further one is closed before it is read. */
  private capPerAddress(max: number): void {
    const open = new Map<string, number>();
    this.server.on('connection', (socket: Socket) => {
      const address = socket.remoteAddress ?? '';
      const count = open.get(address) ?? 0;
      if (count >= max) {
        socket.destroy();
        return;
      }
      open.set(address, count + 1);
      socket.once('close', () => {
        const left = (open.get(address) ?? 1) - 1;
        if (left > 0) open.set(address, left);
        else open.delete(address);
      });
    });
  }

  private async route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (this.hostCheck && !this.hostCheck.allows(req.headers.host)) {
      req.resume();
      const error = 'Host header not accepted: use the http.address host, localhost, or a name in http.allowed_hosts';
      res.writeHead(403, { 'content-type': 'application/json' }).end(`${JSON.stringify({ error })}\n`);
      return;
    }
    const url = new URL(req.url ?? '/', 'http://relay');
    if (isAdminPath(url.pathname)) {
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
        res
          .writeHead(ok ? 200 : 503, { 'content-type': 'application/json' })
          .end(`${JSON.stringify({ status: ok ? 'ready' : 'not ready', checks })}\n`);
        return;
      }
      default:
        res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
    }
  }
}

/** The admin API and its status page: one handler, one authentication (and whatever else guards it). */
function isAdminPath(pathname: string): boolean {
  return pathname === '/' || pathname === '/api' || pathname.startsWith('/api/');
}
