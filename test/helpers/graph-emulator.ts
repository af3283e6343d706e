import { constants, createHash, randomUUID, verify, X509Certificate } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { readFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createServer, type Server } from 'node:https';
import { makeCertificateAuthority } from './certificates';
import { attachmentOf, headerRecipients, messageView, type MessageView, type ViewAttachment } from './mime-view';
import { removeDir, tempDir } from './temp-dir';

/**
 * A local HTTPS stand-in for the Microsoft identity platform's token endpoint and the Graph mail
 * endpoints a Graph smart host uses, written from Microsoft's public documentation:
 *
 *   POST /{tenant}/oauth2/v2.0/token                        client credentials (secret or PS256 assertion)
 *   POST /v1.0/users/{id}/sendMail                          MIME, base64, Content-Type: text/plain → 202
 *   POST /v1.0/users/{id}/messages                          a draft from MIME → 201 {id}
 *   POST /v1.0/users/{id}/messages/{m}/attachments          a fileAttachment (contentBytes) → 201
 *   POST /v1.0/users/{id}/messages/{m}/attachments/createUploadSession → 201 {uploadUrl, nextExpectedRanges}
 *   PUT  {uploadUrl}                                        a byte range (Content-Range, no Authorization) → 200/201
 *   POST /v1.0/users/{id}/messages/{m}/send                 → 202
 *   DELETE /v1.0/users/{id}/messages/{m}                    → 204
 *   GET  /v1.0/users/{id}/mailFolders/drafts                → 200 (what `smarthop doctor` asks)
 *
 * It checks the bearer token on every Graph call, decodes the MIME, and records what Exchange Online
 * would deliver: to whom (To, Cc and Bcc of the MIME) and what the recipient sees (MessageView).
 * Any endpoint can be told to answer something else next (429 with Retry-After, 401, 413, 400 with
 * Graph's error body, 503) or to hang.
 */

export type Endpoint =
  'token' | 'sendMail' | 'createDraft' | 'attachment' | 'createUploadSession' | 'upload' | 'send' | 'delete' | 'drafts';

export type ScriptedAnswer = { status: number; headers?: Record<string, string>; body?: unknown } | 'hang';

export interface Delivery {
  mailbox: string;
  via: 'sendMail' | 'draft';
  /** Everyone the message goes to: the To, Cc and Bcc addresses of its MIME, repeats included. */
  recipients: string[];
  /** The MIME as Graph got it (a draft's: without the attachments sent beside it). */
  mime: Buffer;
  view: MessageView;
}

export interface RequestRecord {
  endpoint: Endpoint | 'unknown';
  method: string;
  path: string;
  status: number | 'hang';
  at: number;
  /** Bytes of the request body. */
  size: number;
}

export interface GraphEmulatorOptions {
  tls: { cert: string; key: string };
  tenant: string;
  clientId: string;
  /** The secret the app registration has; none: secrets are refused. */
  clientSecret?: string;
  /** PEM file of the certificate registered on the app: assertions signed by its key are accepted. */
  certificate?: string;
  /** Mailboxes of the tenant, and whether the app may use each (RBAC for Applications scope). */
  mailboxes: Record<string, { allowed: boolean }>;
  /** Mail.ReadWrite granted (drafts, attachments, upload sessions; Mail.Send alone is enough for sendMail). */
  readWrite?: boolean;
  tokenLifetimeS?: number;
  /** Largest request body Graph takes (bytes); above: 413. */
  requestLimit?: number;
}

interface Draft {
  mailbox: string;
  mime: Buffer;
  attachments: ViewAttachment[];
}

interface UploadSession {
  draft: string;
  token: string;
  name: string;
  contentType: string;
  inline: boolean;
  contentId: string | null;
  size: number;
  received: Buffer[];
  next: number;
}

function graphError(
  code: string,
  message: string,
): { error: { code: string; message: string; innerError: Record<string, string> } } {
  return { error: { code, message, innerError: { 'request-id': randomUUID(), date: new Date().toISOString() } } };
}

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

export class GraphEmulator extends EventEmitter {
  readonly delivered: Delivery[] = [];
  readonly requests: RequestRecord[] = [];
  /** Assertions and secrets the token endpoint was sent, in order. */
  readonly tokenRequests: URLSearchParams[] = [];
  readonly drafts = new Map<string, Draft>();
  private readonly uploads = new Map<string, UploadSession>();
  private readonly tokens = new Map<string, { expiresAt: number }>();
  private readonly scripts = new Map<Endpoint, ScriptedAnswer[]>();
  private readonly seenAssertionIds = new Set<string>();
  private readonly server: Server;
  private port = 0;

  constructor(private readonly options: GraphEmulatorOptions) {
    super();
    this.server = createServer(
      { cert: readFileSync(options.tls.cert), key: readFileSync(options.tls.key) },
      (req, res) => {
        void this.handle(req, res);
      },
    );
  }

  async listen(): Promise<void> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.port = (this.server.address() as { port: number }).port;
  }

  get origin(): string {
    return `https://127.0.0.1:${this.port}`;
  }

  get tokenUrl(): string {
    return `${this.origin}/${this.options.tenant}/oauth2/v2.0/token`;
  }

  get graphUrl(): string {
    return `${this.origin}/v1.0`;
  }

  /** The next answers of `endpoint`, in order, instead of what it would say. */
  script(endpoint: Endpoint, ...answers: ScriptedAnswer[]): void {
    this.scripts.set(endpoint, [...(this.scripts.get(endpoint) ?? []), ...answers]);
  }

  /** Every token issued so far stops being valid (as a token revoked or expired early). */
  expireTokens(): void {
    for (const token of this.tokens.values()) token.expiresAt = 0;
  }

  /** Requests to `endpoint` answered so far (hung ones included). */
  count(endpoint: Endpoint): number {
    return this.requests.filter((request) => request.endpoint === endpoint).length;
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', this.origin);
    const endpoint = this.endpointOf(req.method ?? '', url.pathname);
    const limit = endpoint === 'upload' ? 64 * 1024 * 1024 : (this.options.requestLimit ?? 4 * 1024 * 1024);
    const body = await this.readBody(req, limit);
    const record: RequestRecord = {
      endpoint,
      method: req.method ?? '',
      path: url.pathname,
      status: 0,
      at: Date.now(),
      size: body?.length ?? limit + 1,
    };
    const reply = (status: number, json?: unknown, headers: Record<string, string> = {}) => {
      record.status = status;
      this.requests.push(record);
      res.writeHead(status, {
        ...(json !== undefined ? { 'content-type': 'application/json' } : {}),
        'request-id': randomUUID(),
        ...headers,
      });
      res.end(json === undefined ? undefined : JSON.stringify(json));
      this.emit('request', record);
    };
    const scripted = endpoint === 'unknown' ? undefined : this.scripts.get(endpoint)?.shift();
    if (scripted === 'hang') {
      record.status = 'hang';
      this.requests.push(record);
      this.emit('request', record);
      return;
    }
    if (scripted) return reply(scripted.status, scripted.body, scripted.headers);
    if (body === null) {
      return reply(413, graphError('RequestEntityTooLarge', `The request is larger than ${limit} bytes.`));
    }
    try {
      switch (endpoint) {
        case 'token':
          return this.token(url, body, reply);
        case 'upload':
          return this.upload(req, url, body, reply);
        case 'unknown':
          return reply(404, graphError('UnknownRequest', `No route for ${req.method} ${url.pathname}.`));
        default:
          return this.graph(endpoint, req, url, body, reply);
      }
    } catch (err) {
      return reply(500, graphError('InternalServerError', (err as Error).message));
    }
  }

  private endpointOf(method: string, path: string): Endpoint | 'unknown' {
    if (method === 'POST' && path === `/${this.options.tenant}/oauth2/v2.0/token`) return 'token';
    if (method === 'POST' && /^\/[^/]+\/oauth2\/v2\.0\/token$/.test(path)) return 'token';
    if (method === 'PUT' && path.startsWith('/upload/')) return 'upload';
    const graph = /^\/v1\.0\/users\/[^/]+(\/.*)$/.exec(path);
    if (!graph) return 'unknown';
    const rest = graph[1];
    if (method === 'POST' && rest === '/sendMail') return 'sendMail';
    if (method === 'POST' && rest === '/messages') return 'createDraft';
    if (method === 'POST' && /^\/messages\/[^/]+\/attachments$/.test(rest)) return 'attachment';
    if (method === 'POST' && /^\/messages\/[^/]+\/attachments\/createUploadSession$/.test(rest)) {
      return 'createUploadSession';
    }
    if (method === 'POST' && /^\/messages\/[^/]+\/send$/.test(rest)) return 'send';
    if (method === 'DELETE' && /^\/messages\/[^/]+$/.test(rest)) return 'delete';
    if (method === 'GET' && /^\/mailFolders\/drafts$/i.test(rest)) return 'drafts';
    return 'unknown';
  }

  /** The body, or null when it is longer than `limit` (the rest is not read). */
  private readBody(req: IncomingMessage, limit: number): Promise<Buffer | null> {
    return new Promise((resolve) => {
      const chunks: Buffer[] = [];
      let length = 0;
      let over = false;
      req.on('data', (chunk: Buffer) => {
        length += chunk.length;
        if (length > limit) over = true;
        else chunks.push(chunk);
      });
      req.on('end', () => resolve(over ? null : Buffer.concat(chunks)));
      req.on('error', () => resolve(null));
    });
  }

  private token(url: URL, body: Buffer, reply: (status: number, json?: unknown) => void): void {
    const form = new URLSearchParams(body.toString('utf8'));
    this.tokenRequests.push(form);
    const refuse = (status: number, error: string, aadsts: number, description: string) =>
      reply(status, {
        error,
        error_description: [
          `AADSTS${aadsts}: ${description}`,
          `Trace ID: ${randomUUID()}`,
          `Correlation ID: ${randomUUID()}`,
          `Timestamp: ${new Date().toISOString()}`,
        ].join('\r\n'),
        error_codes: [aadsts],
      });
    const tenant = url.pathname.split('/')[1];
    if (tenant !== this.options.tenant) {
      return refuse(
        400,
        'invalid_request',
        90002,
        `Tenant '${tenant}' not found. Check to make sure you have the correct tenant ID ` +
          'and are signing into the correct cloud.',
      );
    }
    if (form.get('grant_type') !== 'client_credentials') {
      return refuse(400, 'unsupported_grant_type', 70003, 'The app requested an unsupported grant type.');
    }
    const clientId = form.get('client_id') ?? '';
    if (clientId !== this.options.clientId) {
      return refuse(
        400,
        'unauthorized_client',
        700016,
        `Application with identifier '${clientId}' was not found in the directory '${this.options.tenant}'.`,
      );
    }
    if (form.get('scope') !== `${this.origin}/.default`) {
      return refuse(
        400,
        'invalid_scope',
        70011,
        `The provided value for the input parameter 'scope' is not valid. The scope ${form.get('scope')} is not valid.`,
      );
    }
    const secret = form.get('client_secret');
    const assertion = form.get('client_assertion');
    if (secret !== null) {
      if (secret !== this.options.clientSecret) {
        return refuse(
          401,
          'invalid_client',
          7000215,
          'Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, ' +
            'not the client secret ID.',
        );
      }
    } else if (assertion !== null) {
      const problem =
        form.get('client_assertion_type') === 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer'
          ? this.assertionProblem(assertion, clientId)
          : 'client_assertion_type is not jwt-bearer';
      if (problem) {
        return refuse(
          401,
          'invalid_client',
          problem.startsWith('time') ? 700024 : 700027,
          `Client assertion failed: ${problem}.`,
        );
      }
    } else {
      return refuse(
        401,
        'invalid_client',
        7000218,
        "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
      );
    }
    const token = randomUUID();
    const lifetime = this.options.tokenLifetimeS ?? 3599;
    this.tokens.set(token, { expiresAt: Date.now() + lifetime * 1000 });
    reply(200, { token_type: 'Bearer', expires_in: lifetime, ext_expires_in: lifetime, access_token: token });
  }

  /** What is wrong with a client assertion (Microsoft's certificate credentials format), or null. */
  private assertionProblem(assertion: string, clientId: string): string | null {
    if (!this.options.certificate) return 'no certificate is registered on the app';
    const [header, claims, signature] = assertion.split('.');
    if (!header || !claims || !signature) return 'not a JWT';
    const certificate = new X509Certificate(readFileSync(this.options.certificate));
    const head = JSON.parse(Buffer.from(header, 'base64url').toString('utf8')) as Record<string, unknown>;
    if (head.alg !== 'PS256' || head.typ !== 'JWT') return 'header is not alg PS256, typ JWT';
    if (head['x5t#S256'] !== createHash('sha256').update(certificate.raw).digest('base64url')) {
      return 'x5t#S256 names no registered certificate';
    }
    const signed = verify(
      'sha256',
      Buffer.from(`${header}.${claims}`, 'ascii'),
      {
        key: certificate.publicKey,
        padding: constants.RSA_PKCS1_PSS_PADDING,
        saltLength: constants.RSA_PSS_SALTLEN_DIGEST,
      },
      Buffer.from(signature, 'base64url'),
    );
    if (!signed) return 'signature does not verify';
    const body = JSON.parse(Buffer.from(claims, 'base64url').toString('utf8')) as Record<string, unknown>;
    if (body.aud !== this.tokenUrl) return 'aud is not this token endpoint';
    if (body.iss !== clientId || body.sub !== clientId) return 'iss and sub must be the client id';
    const now = Date.now() / 1000;
    if (
      typeof body.exp !== 'number' ||
      typeof body.nbf !== 'number' ||
      body.exp < now ||
      body.nbf > now + 300 ||
      body.exp - body.nbf > 3600
    )
      return 'time range not valid';
    if (typeof body.jti !== 'string' || this.seenAssertionIds.has(body.jti)) return 'jti missing or used before';
    this.seenAssertionIds.add(body.jti);
    return null;
  }

  private graph(
    endpoint: Endpoint,
    req: IncomingMessage,
    url: URL,
    body: Buffer,
    reply: (status: number, json?: unknown, headers?: Record<string, string>) => void,
  ): void {
    const auth = /^Bearer (.+)$/.exec(req.headers.authorization ?? '');
    const token = auth ? this.tokens.get(auth[1]) : undefined;
    if (!auth) {
      return reply(401, graphError('InvalidAuthenticationToken', 'Access token is empty.'), {
        'www-authenticate': 'Bearer',
      });
    }
    if (!token) {
      return reply(401, graphError('InvalidAuthenticationToken', 'IDX14100: JWT is not well formed.'), {
        'www-authenticate': 'Bearer',
      });
    }
    if (token.expiresAt <= Date.now()) {
      return reply(401, graphError('InvalidAuthenticationToken', 'Lifetime validation failed, the token is expired.'), {
        'www-authenticate': 'Bearer error="invalid_token"',
      });
    }
    const segments = url.pathname.split('/');
    const requested = decodeURIComponent(segments[3]);
    const mailbox = Object.keys(this.options.mailboxes).find((name) => name.toLowerCase() === requested.toLowerCase());
    if (mailbox === undefined) {
      return reply(404, graphError('ErrorInvalidUser', `The requested user '${requested}' is invalid.`));
    }
    if (!this.options.mailboxes[mailbox].allowed) {
      return reply(403, graphError('ErrorAccessDenied', 'Access is denied. Check credentials and try again.'));
    }
    if (endpoint !== 'sendMail' && endpoint !== 'send' && !this.options.readWrite) {
      return reply(403, graphError('ErrorAccessDenied', 'Access is denied. Check credentials and try again.'));
    }
    const messageId =
      segments[4] === 'messages' && segments[5] !== undefined ? decodeURIComponent(segments[5]) : undefined;
    const draft = messageId === undefined ? undefined : this.drafts.get(messageId);
    if (messageId !== undefined && (draft === undefined || draft.mailbox !== mailbox)) {
      return reply(404, graphError('ErrorItemNotFound', 'The specified object was not found in the store.'));
    }
    switch (endpoint) {
      case 'sendMail':
      case 'createDraft': {
        const mime = this.mimeOf(req, body);
        if (typeof mime === 'string') return reply(400, graphError('ErrorMimeContentInvalidBase64String', mime));
        if (endpoint === 'createDraft') {
          const id = `AAMk${randomUUID()}`;
          this.drafts.set(id, { mailbox, mime, attachments: [] });
          return reply(201, { id, isDraft: true });
        }
        if (headerRecipients(mime).length === 0) {
          return reply(400, graphError('ErrorInvalidRecipients', 'At least one recipient is required.'));
        }
        void this.deliver(mailbox, 'sendMail', mime, []).then(() => reply(202));
        return;
      }
      case 'attachment': {
        const item = JSON.parse(body.toString('utf8')) as Record<string, unknown>;
        if (
          item['@odata.type'] !== '#microsoft.graph.fileAttachment' ||
          typeof item.name !== 'string' ||
          typeof item.contentBytes !== 'string' ||
          !BASE64.test(item.contentBytes)
        ) {
          return reply(
            400,
            graphError('ErrorInvalidRequest', 'A fileAttachment needs a name and base64 contentBytes.'),
          );
        }
        const bytes = Buffer.from(item.contentBytes, 'base64');
        (draft as Draft).attachments.push(
          attachmentOf(
            item.name,
            String(item.contentType ?? 'application/octet-stream'),
            item.isInline === true,
            typeof item.contentId === 'string' ? item.contentId : null,
            bytes,
          ),
        );
        return reply(201, { id: randomUUID(), name: item.name, size: bytes.length });
      }
      case 'createUploadSession': {
        const item = (JSON.parse(body.toString('utf8')) as { AttachmentItem?: Record<string, unknown> }).AttachmentItem;
        if (!item || item.attachmentType !== 'file' || typeof item.name !== 'string' || typeof item.size !== 'number') {
          return reply(
            400,
            graphError('ErrorInvalidRequest', 'AttachmentItem needs attachmentType file, name and size.'),
          );
        }
        if (item.size < 3_000_000) {
          return reply(
            400,
            graphError(
              'ErrorAttachmentSizeShouldNotBeLessThanMinimumSize',
              'Attachment size must be at least 3 MB for an upload session.',
            ),
          );
        }
        if (item.size > 150_000_000) {
          return reply(
            400,
            graphError(
              'ErrorAttachmentSizeShouldNotBeGreaterThanMaximumSize',
              'Attachment size must be at most 150 MB.',
            ),
          );
        }
        const id = randomUUID();
        const session: UploadSession = {
          draft: messageId as string,
          token: randomUUID(),
          name: item.name,
          contentType: String(item.contentType ?? 'application/octet-stream'),
          inline: item.isInline === true,
          contentId: typeof item.contentId === 'string' ? item.contentId : null,
          size: item.size,
          received: [],
          next: 0,
        };
        this.uploads.set(id, session);
        return reply(201, {
          uploadUrl: `${this.origin}/upload/${id}?authtoken=${session.token}`,
          expirationDateTime: new Date(Date.now() + 3_600_000).toISOString(),
          nextExpectedRanges: ['0-'],
        });
      }
      case 'send': {
        const sent = draft as Draft;
        this.drafts.delete(messageId as string);
        void this.deliver(mailbox, 'draft', sent.mime, sent.attachments).then(() => reply(202));
        return;
      }
      case 'delete':
        this.drafts.delete(messageId as string);
        return reply(204);
      case 'drafts':
        return reply(200, { id: 'drafts', displayName: 'Drafts' });
      default:
        return reply(404, graphError('UnknownRequest', 'No such endpoint.'));
    }
  }

  /** The MIME of a text/plain base64 body, or what is wrong with it. */
  private mimeOf(req: IncomingMessage, body: Buffer): Buffer | string {
    if (!(req.headers['content-type'] ?? '').startsWith('text/plain')) {
      return 'MIME content must be sent as Content-Type: text/plain.';
    }
    const text = body.toString('latin1').replace(/\r?\n/g, '');
    if (text === '' || text.length % 4 !== 0 || !BASE64.test(text)) return 'Invalid base64 string for MIME content.';
    return Buffer.from(text, 'base64');
  }

  private upload(
    req: IncomingMessage,
    url: URL,
    body: Buffer,
    reply: (status: number, json?: unknown, headers?: Record<string, string>) => void,
  ): void {
    const session = this.uploads.get(url.pathname.slice('/upload/'.length));
    if (!session || url.searchParams.get('authtoken') !== session.token) {
      return reply(404, graphError('ErrorItemNotFound', 'The upload session was not found or has expired.'));
    }
    // Microsoft: "Do not specify an Authorization request header" for the pre-authenticated upload URL.
    if (req.headers.authorization !== undefined) {
      return reply(401, graphError('InvalidAuthenticationToken', 'An upload URL takes no Authorization header.'));
    }
    const range = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(req.headers['content-range'] ?? '');
    if (!range) return reply(400, graphError('InvalidRange', 'Content-Range must be bytes {start}-{end}/{total}.'));
    const [start, end, total] = [Number(range[1]), Number(range[2]), Number(range[3])];
    if (
      start !== session.next ||
      end < start ||
      end - start + 1 !== body.length ||
      total !== session.size ||
      end >= total
    ) {
      return reply(
        416,
        graphError(
          'InvalidRange',
          `Expected bytes from ${session.next} of ${session.size}, ` +
            `got ${req.headers['content-range']} with ${body.length} bytes.`,
        ),
      );
    }
    session.received.push(body);
    session.next = end + 1;
    const expires = new Date(Date.now() + 3_600_000).toISOString();
    if (session.next < session.size) {
      return reply(200, { expirationDateTime: expires, nextExpectedRanges: [String(session.next)] });
    }
    const draft = this.drafts.get(session.draft);
    if (!draft) return reply(404, graphError('ErrorItemNotFound', 'The message of this upload session is gone.'));
    draft.attachments.push(
      attachmentOf(
        session.name,
        session.contentType,
        session.inline,
        session.contentId,
        Buffer.concat(session.received),
      ),
    );
    this.uploads.delete(url.pathname.slice('/upload/'.length));
    return reply(201, undefined, {
      location: `${this.graphUrl}/users/${encodeURIComponent(draft.mailbox)}/messages/${session.draft}/attachments/1`,
    });
  }

  private async deliver(
    mailbox: string,
    via: Delivery['via'],
    mime: Buffer,
    attachments: ViewAttachment[],
  ): Promise<void> {
    const delivery: Delivery = {
      mailbox,
      via,
      recipients: headerRecipients(mime),
      mime,
      view: await messageView(mime, attachments),
    };
    this.delivered.push(delivery);
    this.emit('delivered', delivery);
  }
}

export const TENANT = 'contoso.test';
export const CLIENT_ID = '00000000-0000-0000-0000-0000000000a1';
export const CLIENT_SECRET = 'app-secret-value';
export const MAILBOX = 'relay@corp.example';
/** A mailbox of the tenant that the app's RBAC scope leaves out. */
export const OUTSIDE_MAILBOX = 'ceo@corp.example';

export interface GraphPki {
  ca: string;
  cert: string;
  key: string;
}

/** A test CA and the emulator's certificate from it (openssl, in `dir`): slow, so once per test file. */
export function graphPki(dir: string): GraphPki {
  return makeCertificateAuthority(dir, 'graph.test');
}

/** graphPki for the tests of one file, in a folder of its own removed after them: call at the top of the file. */
export function graphPkiPerFile(): GraphPki {
  const dir = tempDir();
  afterAll(() => removeDir(dir));
  return graphPki(dir);
}

/**
 * An emulator on loopback with a test CA of its own (made with openssl in `dir`), the usual app
 * registration and one mailbox the app may send as; `host()` is a `type: graph` smart host for it.
 */
export async function startGraphEmulator(
  dir: string,
  options: Partial<GraphEmulatorOptions> = {},
  pki: GraphPki = graphPki(dir),
): Promise<{
  emulator: GraphEmulator;
  ca: string;
  host(overrides?: Record<string, unknown>): { name: string; [key: string]: unknown };
}> {
  const { ca, cert, key } = pki;
  const emulator = new GraphEmulator({
    tls: { cert, key },
    tenant: TENANT,
    clientId: CLIENT_ID,
    clientSecret: CLIENT_SECRET,
    mailboxes: { [MAILBOX]: { allowed: true }, [OUTSIDE_MAILBOX]: { allowed: false } },
    readWrite: true,
    ...options,
  });
  await emulator.listen();
  return {
    emulator,
    ca,
    host: (overrides = {}) => ({
      name: 'm365',
      type: 'graph',
      tenant: TENANT,
      client_id: CLIENT_ID,
      client_secret: CLIENT_SECRET,
      mailbox: MAILBOX,
      token_url: emulator.tokenUrl,
      graph_url: emulator.graphUrl,
      ca,
      ...overrides,
    }),
  };
}
