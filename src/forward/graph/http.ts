import type { IncomingHttpHeaders } from 'node:http';
import { Agent, request } from 'node:https';

/**
 * The HTTPS client of a Graph smart host: Node's own `https` with one keep-alive agent per host,
 * so the host's `ca`, `tls_verify`, `max_connections` and timeouts apply to every request it makes
 * (token endpoint, Graph, upload URLs) the way they apply to an SMTP host's connections.
 */

export interface HttpAnswer {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

/** Why no answer came: the breaker and the outcome name these like an SMTP connection's failures. */
export type HttpFailureKind = 'connect' | 'tls' | 'timeout' | 'answer';

export class HttpFailure extends Error {
  constructor(
    readonly kind: HttpFailureKind,
    message: string,
  ) {
    super(message);
  }
}

export interface HttpClientOptions {
  /** A private CA's PEM (the host's `ca`); none: the system's roots. */
  ca?: Buffer;
  verify: boolean;
  maxSockets: number;
  connectTimeoutMs: number;
  /** No byte in either direction for this long ends the request. */
  socketTimeoutMs: number;
}

export interface HttpRequest {
  method: 'GET' | 'POST' | 'PUT' | 'DELETE';
  headers?: Record<string, string>;
  body?: Buffer | string;
}

/**
 * Graph's answers are small JSON documents (a created draft echoes its body, a few MB at most);
 * anything longer is not an answer this client needs, and it is not kept in memory.
 */
const MAX_ANSWER_BYTES = 16 * 1024 * 1024;

/** OpenSSL and Node codes of a failed TLS handshake or certificate check. */
function isTlsError(err: NodeJS.ErrnoException): boolean {
  const code = err.code ?? '';
  return (
    code.startsWith('ERR_TLS') ||
    code.startsWith('ERR_SSL') ||
    code.includes('CERT') ||
    code === 'EPROTO' ||
    /certificate|SSL routines/i.test(err.message)
  );
}

export class HttpsClient {
  private readonly agent: Agent;

  constructor(private readonly options: HttpClientOptions) {
    this.agent = new Agent({
      keepAlive: true,
      maxSockets: options.maxSockets,
      rejectUnauthorized: options.verify,
      ...(options.ca !== undefined ? { ca: options.ca } : {}),
    });
  }

  send(url: string, init: HttpRequest): Promise<HttpAnswer> {
    const body =
      init.body === undefined ? undefined : Buffer.isBuffer(init.body) ? init.body : Buffer.from(init.body, 'utf8');
    const headers: Record<string, string> = { ...init.headers };
    if (body !== undefined) headers['content-length'] = String(body.length);
    return new Promise<HttpAnswer>((resolve, reject) => {
      let settled = false;
      const fail = (failure: HttpFailure) => {
        if (settled) return;
        settled = true;
        req.destroy();
        reject(failure);
      };
      const req = request(url, { method: init.method, headers, agent: this.agent }, (res) => {
        const chunks: Buffer[] = [];
        let length = 0;
        res.on('data', (chunk: Buffer) => {
          length += chunk.length;
          if (length > MAX_ANSWER_BYTES) {
            fail(
              new HttpFailure(
                'answer',
                `${init.method} ${printableUrl(url)}: answer longer than ${MAX_ANSWER_BYTES} bytes`,
              ),
            );
          } else chunks.push(chunk);
        });
        res.on('end', () => {
          if (settled) return;
          settled = true;
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) });
        });
        res.on('error', (err) =>
          fail(new HttpFailure('connect', `${init.method} ${printableUrl(url)}: ${err.message}`)),
        );
      });
      req.on('socket', (socket) => {
        // A reused keep-alive socket is connected already; a new one gets connect_timeout for TCP and TLS.
        if (!socket.connecting) return;
        const timer = setTimeout(
          () =>
            fail(
              new HttpFailure(
                'timeout',
                `${printableUrl(url)}: no TLS connection within ${this.options.connectTimeoutMs} ms`,
              ),
            ),
          this.options.connectTimeoutMs,
        );
        socket.once('secureConnect', () => clearTimeout(timer));
        socket.once('close', () => clearTimeout(timer));
      });
      req.setTimeout(this.options.socketTimeoutMs, () => {
        fail(
          new HttpFailure(
            'timeout',
            `${init.method} ${printableUrl(url)}: nothing sent or received for ${this.options.socketTimeoutMs} ms`,
          ),
        );
      });
      req.on('error', (err: NodeJS.ErrnoException) => {
        fail(
          new HttpFailure(
            isTlsError(err) ? 'tls' : 'connect',
            `${init.method} ${printableUrl(url)}: ${err.code ?? 'ERROR'}: ${err.message}`,
          ),
        );
      });
      req.end(body);
    });
  }

  /** Closes every connection: call once no request is under way (the transport waits for its sends). */
  close(): void {
    this.agent.destroy();
  }
}

/** A URL for a log line: an upload URL carries its credential in the query, which never goes into a log. */
export function printableUrl(url: string): string {
  const parsed = URL.canParse(url) ? new URL(url) : null;
  return parsed ? `${parsed.origin}${parsed.pathname}` : '(invalid URL)';
}
