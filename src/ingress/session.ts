import { once } from 'node:events';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ClientConfig, ListenerConfig, RelayConfig } from '../config/schema';
import { chooseRoute } from '../forward/router';
import { UNKNOWN_CLIENT, type Observer, type RejectReason } from '../observe/events';
import type { MessageMeta } from '../spool/message';
import type { FreeSpaceGuard } from '../spool/free-space';
import type { SpoolStore } from '../spool/store';
import type { ClientDirectory } from './clients';
import { DataGuard } from './data-guard';
import type { BodyInspector, MessageContext, MessageFilter, Outgoing, Refusal } from './filters';
import type { HeaderBlock } from './header-block';
import { HeaderSplitter } from './header-splitter';
import { buildReceivedHeader } from './received-header';

/** What the SMTP adapter answers: go on, or this exact reply. */
export type Verdict = { ok: true } | { ok: false; code: number; message: string };

/** What one SMTP session has established so far; owned by the adapter, read and updated here. */
export interface SessionState {
  readonly listener: ListenerConfig;
  readonly remoteAddress: string;
  secure: boolean;
  tls?: { version: string; cipher: string };
  heloName: string;
  esmtp: boolean;
  /** The client whose networks contain the source address, if any. */
  networkClient?: ClientConfig;
  /** The credential client after a successful AUTH (it wins over the network match). */
  authClient?: ClientConfig;
  /** The client this transaction is attributed to, fixed at MAIL FROM. */
  client?: ClientConfig;
}

export interface IngressDeps {
  config: Pick<RelayConfig, 'hostname' | 'max_message_size' | 'policies' | 'routes'>;
  clients: ClientDirectory;
  store: SpoolStore;
  freeSpace: FreeSpaceGuard;
  observer: Observer;
  /** Policy and re-enveloping stages that see (and may edit) each message as it streams in, in order. */
  filters?: readonly MessageFilter[];
  /**
   * Called once a message is durable in the queue (after the fsync, before any reply): it is
   * scheduled, or on a `delivery: inline` listener tried at once. Says what the client is told:
   * go on (250), or the smart hosts' own 5xx (the message is then already gone from the spool).
   */
  onQueued: (meta: MessageMeta, listener: ListenerConfig) => Promise<Verdict>;
}

/** A header block larger than this is refused: headers are held in memory, bodies never are. */
const MAX_HEADER_BYTES = 256 * 1024;

const STARTTLS_FIRST = '5.7.0 Must issue a STARTTLS command first';

/**
 * The SMTP-facing decisions of DESIGN.md: who the session is, whether it may go on, and the
 * durable acceptance of DATA. Every refusal is reported with its reason.
 */
export class IngressSessions {
  constructor(private readonly deps: IngressDeps) {}

  connect(session: SessionState): Verdict {
    session.networkClient = this.deps.clients.byAddress(session.remoteAddress);
    const listener = session.listener.name;
    if (!session.networkClient && session.listener.auth === 'off') {
      this.deps.observer.emit({ type: 'connection', listener, remote: session.remoteAddress, result: 'refused' });
      return this.reject(session, 'access_denied', 554, `5.7.1 Access denied: [${session.remoteAddress}] is not a permitted client`);
    }
    this.deps.observer.emit({ type: 'connection', listener, remote: session.remoteAddress, result: 'accepted' });
    return { ok: true };
  }

  close(session: SessionState, wasAccepted: boolean): void {
    if (wasAccepted) this.deps.observer.emit({ type: 'connection_closed', listener: session.listener.name });
  }

  async auth(session: SessionState, username: string, password: string): Promise<Verdict> {
    const { listener } = session;
    if (listener.require_tls && !session.secure) return { ok: false, code: 530, message: STARTTLS_FIRST };
    if (!session.secure && !(listener.allow_insecure_auth && session.networkClient)) {
      return { ok: false, code: 538, message: '5.7.11 Encryption required for requested authentication mechanism' };
    }
    const client = await this.deps.clients.authenticate(username, password);
    this.deps.observer.emit({ type: 'auth', listener: listener.name, remote: session.remoteAddress, username, result: client ? 'success' : 'failure' });
    if (!client) return { ok: false, code: 535, message: '5.7.8 Authentication credentials invalid' };
    session.authClient = client;
    return { ok: true };
  }

  async mailFrom(session: SessionState, from: string): Promise<Verdict> {
    const { listener } = session;
    if (listener.require_tls && !session.secure) return { ok: false, code: 530, message: STARTTLS_FIRST };
    // A credential wins over a network match; on `auth: required` a network match alone is not enough.
    session.client = session.authClient ?? (listener.auth === 'required' ? undefined : session.networkClient);
    if (!session.client) return this.reject(session, 'auth_required', 530, '5.7.0 Authentication required', { from });
    if (!(await this.deps.freeSpace.hasRoom())) {
      return this.reject(session, 'storage', 452, '4.3.1 Insufficient system storage, try again later', { from });
    }
    return { ok: true };
  }

  rcptTo(session: SessionState, _to: string): Verdict {
    if (!session.client) return { ok: false, code: 503, message: '5.5.1 Error: need MAIL command' };
    return { ok: true };
  }

  /**
   * Streams DATA to the spool and answers only once it is durable. The answer is always one of:
   * 250 queued, 552 too big, 550 malformed line endings, 452 spool trouble, or (inline delivery)
   * the 5xx every smart host gave.
   */
  async data(session: SessionState, envelope: { from: string; to: string[] }, stream: Readable): Promise<Verdict & { queueId?: string }> {
    const client = session.client as ClientConfig;
    const { store, config } = this.deps;
    const id = store.newId();
    const guard = new DataGuard(config.max_message_size, session.listener.line_endings);
    const outgoing: Outgoing = { route: chooseRoute(config, client.policy, envelope.from), from: envelope.from, prependHeaders: '' };
    const trace = buildReceivedHeader({
      heloName: session.heloName, clientName: client.name, hostname: config.hostname, queueId: id, secure: session.secure,
      authenticated: session.authClient !== undefined, esmtp: session.esmtp, tls: session.tls, recipients: envelope.to, date: new Date(),
      remoteAddress: config.routes[outgoing.route]?.received_include_address ? session.remoteAddress : undefined,
    });
    const filtering = new FilterRun(this.deps.filters ?? [], { queueId: id, client, session, envelope, trace, outgoing });
    const splitter = new HeaderSplitter(MAX_HEADER_BYTES, (headers) => filtering.headers(headers, splitter.original as HeaderBlock), (chunk) => filtering.body(chunk));
    const file = store.createIncoming(id);
    file.write(trace);

    let refusal: Refusal | undefined;
    try {
      await pipeline(stream, guard, splitter, file);
      if (!file.closed) await once(file, 'close');
      refusal = await filtering.end();
    } catch (err) {
      stream.resume();
      await store.discardIncoming(id).catch(() => undefined);
      return this.reject(session, 'storage', 452, `4.3.1 Insufficient system storage, try again later (${(err as NodeJS.ErrnoException).code ?? 'write failed'})`, { from: envelope.from });
    }

    if (guard.oversize) refusal = { code: 552, message: `5.3.4 Message size exceeds fixed maximum message size of ${config.max_message_size} bytes`, reason: 'too_big' };
    else if (guard.violation) refusal = { code: 550, message: `5.6.0 Message contains a ${guard.violation === 'bare_cr' ? 'bare CR' : 'bare LF'} line ending; lines must end with CRLF`, reason: 'smuggling' };
    else if (splitter.headerTooLarge) refusal = { code: 552, message: `5.3.4 Message header exceeds ${MAX_HEADER_BYTES} bytes`, reason: 'too_big' };
    if (refusal) {
      await store.discardIncoming(id);
      return this.reject(session, refusal.reason, refusal.code, refusal.message, { from: envelope.from });
    }

    const meta: MessageMeta = {
      version: 1, id, receivedAt: Date.now(), client: client.name, listener: session.listener.name, remote: session.remoteAddress,
      route: outgoing.route, from: outgoing.from, recipients: envelope.to.map((address) => ({ address, status: 'pending' })),
      size: file.bytesWritten, attempts: 0, nextAttemptAt: Date.now(),
      ...(outgoing.from !== envelope.from ? { clientFrom: envelope.from } : {}),
      ...(outgoing.prependHeaders !== '' ? { prependHeaders: outgoing.prependHeaders } : {}),
    };
    try {
      await store.commit(meta);
    } catch (err) {
      await store.discardIncoming(id).catch(() => undefined);
      return this.reject(session, 'storage', 452, `4.3.1 Insufficient system storage, try again later (${(err as NodeJS.ErrnoException).code ?? 'commit failed'})`, { from: envelope.from });
    }

    if (guard.normalizedLineEndings > 0) this.deps.observer.emit({ type: 'line_endings_normalized', client: client.name });
    this.deps.observer.emit({ type: 'received', queueId: id, client: client.name, listener: session.listener.name, remote: session.remoteAddress, from: envelope.from, to: envelope.to, size: meta.size });
    const verdict = await this.deps.onQueued(meta, session.listener);
    if (!verdict.ok) return this.reject(session, 'smarthost_rejected', verdict.code, verdict.message, { from: envelope.from });
    return { ok: true, queueId: id };
  }

  private reject(session: SessionState, reason: RejectReason, code: number, message: string, envelope: { from?: string; to?: string } = {}): Verdict {
    this.deps.observer.emit({
      type: 'rejected', client: session.client?.name ?? session.authClient?.name ?? session.networkClient?.name ?? UNKNOWN_CLIENT,
      listener: session.listener.name, remote: session.remoteAddress, reason, response: `${code} ${message}`, ...envelope,
    });
    return { ok: false, code, message };
  }
}

/** One message's pass through the filters: header verdicts first, then body inspectors' verdicts at the end. */
class FilterRun {
  private refusal: Refusal | undefined;
  private inspectors: BodyInspector[] = [];
  private context: MessageContext | null = null;

  constructor(
    private readonly filters: readonly MessageFilter[],
    private readonly base: Omit<MessageContext, 'original'>,
  ) {}

  async headers(editable: HeaderBlock, original: HeaderBlock): Promise<void> {
    const context: MessageContext = { ...this.base, original };
    this.context = context;
    for (const filter of this.filters) {
      this.refusal ??= await filter.headers?.(editable, context);
    }
    this.inspectors = this.filters.map((filter) => filter.body?.(context, editable)).filter((inspector): inspector is BodyInspector => inspector !== undefined);
    if (this.inspectors.length > 0) {
      const head = Buffer.concat([original.toBuffer(), Buffer.from('\r\n')]);
      for (const inspector of this.inspectors) inspector.write(head);
    }
  }

  body(chunk: Buffer): void {
    for (const inspector of this.inspectors) inspector.write(chunk);
  }

  async end(): Promise<Refusal | undefined> {
    for (const inspector of this.inspectors) {
      const verdict = await inspector.end();
      this.refusal ??= verdict;
    }
    return this.context ? this.refusal : undefined;
  }
}
