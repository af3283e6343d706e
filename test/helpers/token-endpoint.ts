import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';

/**
 * An OAuth2 token endpoint (client-credentials grant) on loopback: checks the client and scope,
 * issues `token-1`, `token-2`, … valid for `lifetimeS`, and remembers every token it issued.
 */
export class TokenEndpoint {
  readonly requests: URLSearchParams[] = [];
  readonly issued = new Set<string>();
  private readonly server: HttpServer;
  private port = 0;

  constructor(
    private readonly expected: { clientId: string; clientSecret: string; scope: string; lifetimeS?: number },
  ) {
    this.server = createHttpServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (chunk: Buffer) => chunks.push(chunk));
      req.on('end', () => {
        const form = new URLSearchParams(Buffer.concat(chunks).toString());
        this.requests.push(form);
        const reply = (status: number, body: Record<string, unknown>) => {
          res.writeHead(status, { 'content-type': 'application/json' });
          res.end(JSON.stringify(body));
        };
        if (req.method !== 'POST' || req.headers['content-type'] !== 'application/x-www-form-urlencoded')
          return reply(400, { error: 'invalid_request' });
        if (form.get('grant_type') !== 'client_credentials') return reply(400, { error: 'unsupported_grant_type' });
        if (
          form.get('client_id') !== this.expected.clientId ||
          form.get('client_secret') !== this.expected.clientSecret
        ) {
          return reply(401, {
            error: 'invalid_client',
            error_description: 'AADSTS7000215: Invalid client secret provided.',
          });
        }
        if (form.get('scope') !== this.expected.scope) return reply(400, { error: 'invalid_scope' });
        const token = `token-${this.requests.length}`;
        this.issued.add(token);
        reply(200, { token_type: 'Bearer', access_token: token, expires_in: this.expected.lifetimeS ?? 3600 });
      });
    });
  }

  async listen(): Promise<string> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.port = (this.server.address() as { port: number }).port;
    return this.url;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}/oauth2/v2.0/token`;
  }

  close(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}
