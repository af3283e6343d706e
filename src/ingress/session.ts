import type { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ClientConfig, ListenerConfig, RelayConfig } from '../config/schema';
import { chooseRoute } from './router';
import { UNKNOWN_CLIENT, type Observer, type RejectReason } from '../observe/events';
import type { MessageMeta } from '../spool/message';
import type { FreeSpaceGuard } from '../spool/free-space';
import type { IncomingFile } from '../spool/incoming';
import type { SpoolStore } from '../spool/store';
import { OpenCounts } from '../limits/open-counts';
import type { ClientDirectory } from './clients';
import { DataGuard, type DataViolation } from './data-guard';
import type { BodyInspector, MessageContext, MessageFilter, Outgoing, Refusal } from './filters';
import type { HeaderBlock } from '../message/header-block';
import { HeaderSplitter } from '../message/header-splitter';
import { isPlainAddress } from '../message/plain-address';
import type { AuthOutcome, ConnectionGuard, SessionPolicy } from './ports';
import { buildReceivedHeader } from './received-header';
import { pipeChain } from './stream-chain';

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
  /** A stranger not yet authenticated: counted against the listener's max_unidentified_clients. */
  unidentified?: boolean;
  /** Whether the address guard took this connection's slot as a network client's (given back the same way). */
  guardedAsNetworkClient?: boolean;
  /** Aborts when the connection closes (a password check still waiting for its place is then dropped). */
  closed?: AbortSignal;
}

/**
 * The part of the running configuration ingress reads, and what is built from it; a reload swaps
 * it between SMTP commands (each step reads it once, never keeps it).
 */
export interface IngressConfig {
  config: Pick<RelayConfig, 'hostname' | 'max_message_size' | 'policies' | 'routes'>;
  clients: ClientDirectory;
  /** Policy and re-enveloping stages that see (and may edit) each message as it streams in, in order. */
  filters?: readonly MessageFilter[];
  /** Per-client policy decisions at MAIL, RCPT and end of DATA; without it only the global limits apply. */
  policy?: SessionPolicy;
}

export interface IngressDeps {
  current: () => IngressConfig;
  store: SpoolStore;
  freeSpace: FreeSpaceGuard;
  observer: Observer;
  /** Per-source-address guards: connections, AUTH lockout (their limits need a restart to change). */
  guard?: ConnectionGuard;
  /**
   * Called once a message is durable in the queue (after the fsync, before any reply): it is
   * scheduled, or on a `delivery: inline` listener tried at once. Says what the client is told:
   * go on (250), or the smart hosts' own 5xx (the message is then already gone from the spool).
   * The scheduler must have the message before the returned promise is made (no await first): the
   * queue scan leaves the message alone only until this returns.
   */
  onQueued: (meta: MessageMeta, listener: ListenerConfig) => Promise<Verdict>;
}

/** A header block larger than this is refused: headers are held in memory, bodies never are. */
const MAX_HEADER_BYTES = 256 * 1024;

/** RFC 5322's line limit: a longer Message-ID is not a real one, and it goes into every event line. */
const MAX_MESSAGE_ID_LENGTH = 998;

const STARTTLS_FIRST = '5.7.0 Must issue a STARTTLS command first';

/**
 * The SMTP-facing decisions of the reply contract (docs/architecture.md): who the session is, whether
 * it may go on, and the durable acceptance of DATA. Every refusal is reported with its reason.
 */
export class IngressSessions {
  /** Unidentified sessions (strangers not yet authenticated) open now, by listener name. */
  private readonly unidentified = new OpenCounts();

  constructor(private readonly deps: IngressDeps) {}

  /**
   * An accepted connection holds a guard slot until `close(session, true)`; a stranger's also holds
   * a place among the listener's unidentified sessions until it authenticates or leaves.
   */
  async connect(session: SessionState): Promise<Verdict> {
    session.networkClient = this.deps.current().clients.byAddress(session.remoteAddress);
    const listener = session.listener.name;
    // Nobody's network, and no AUTH that could identify it: on `auth: off`, and on a plaintext
    // listener (AUTH without TLS is only for addresses in some client's networks), it is refused now.
    if (!session.networkClient && (session.listener.auth === 'off' || session.listener.tls === 'none')) {
      this.deps.observer.emit({ type: 'connection', listener, remote: session.remoteAddress, result: 'refused' });
      return this.accessDenied(session);
    }
    const networkClient = session.networkClient !== undefined;
    const guarded = await this.deps.guard?.connect(session.remoteAddress, this.label(session), networkClient);
    if (guarded) {
      this.deps.observer.emit({ type: 'connection', listener, remote: session.remoteAddress, result: 'refused' });
      return this.refuse(session, guarded);
    }
    session.guardedAsNetworkClient = networkClient;
    if (!session.networkClient && !this.takeUnidentifiedPlace(session)) {
      this.deps.guard?.disconnect(session.remoteAddress, networkClient);
      this.deps.observer.emit({ type: 'connection', listener, remote: session.remoteAddress, result: 'refused' });
      this.deps.observer.emit({ type: 'rate_limited', client: UNKNOWN_CLIENT, limit: 'unidentified_clients' });
      const max = session.listener.max_unidentified_clients;
      const text = `4.7.0 Too many unidentified connections on listener ${listener} (at most ${max} at once)`;
      return this.reject(session, 'rate_limited', 421, `${text}; try again later`);
    }
    this.deps.observer.emit({ type: 'connection', listener, remote: session.remoteAddress, result: 'accepted' });
    return { ok: true };
  }

  /**
   * Whether EHLO offers AUTH: only where it can succeed (as Postfix's smtpd_tls_auth_only), so a
   * client that authenticates whenever AUTH is offered does not fail where it could relay by address.
   */
  authOffered(session: SessionState): boolean {
    const { listener } = session;
    if (listener.auth === 'off') return false;
    if (session.secure) return true;
    if (listener.require_tls) return false;
    return listener.allow_insecure_auth && session.networkClient !== undefined;
  }

  /** A deadline ran out: the last reply the session gets (421), counted as a rejection with reason `timeout`. */
  timedOut(session: SessionState, deadline: 'command_line' | 'identify'): Verdict {
    if (deadline === 'command_line') {
      const seconds = wholeSeconds(session.listener.command_deadline);
      const text = `4.4.2 Command line not completed within ${seconds}s; closing connection`;
      return this.reject(session, 'timeout', 421, text);
    }
    const seconds = wholeSeconds(session.listener.identify_timeout);
    return this.reject(session, 'timeout', 421, `4.7.0 Not authenticated within ${seconds}s; closing connection`);
  }

  /**
   * A peer outside `trusted_proxies` on a `proxy_protocol` listener: refused before a byte of it is
   * read, so a PROXY header it sends can never name somebody else's address.
   */
  untrustedProxy(listener: ListenerConfig, remoteAddress: string): Verdict {
    const session: SessionState = { listener, remoteAddress, secure: false, heloName: '', esmtp: false };
    this.deps.observer.emit({ type: 'connection', listener: listener.name, remote: remoteAddress, result: 'refused' });
    return this.reject(
      session,
      'access_denied',
      554,
      `5.7.1 Access denied: [${remoteAddress}] is not a trusted proxy of listener ${listener.name}`,
    );
  }

  /** Whether the address is in some client's networks (the current configuration's). */
  inNetworks(remoteAddress: string): boolean {
    return this.deps.current().clients.byAddress(remoteAddress) !== undefined;
  }

  /**
   * A stranger's connection dropped before its TLS handshake (or PROXY header) because it holds as
   * many of those as it may (see HandshakeGuard): no reply can reach it, the refusal is counted.
   */
  handshakeRefused(listener: ListenerConfig, remoteAddress: string): void {
    this.deps.observer.emit({ type: 'connection', listener: listener.name, remote: remoteAddress, result: 'refused' });
    this.deps.observer.emit({ type: 'rate_limited', client: UNKNOWN_CLIENT, limit: 'handshakes' });
  }

  /** A connection that did not finish its TLS handshake (or PROXY header) within `handshake_timeout`, dropped. */
  handshakeTimedOut(listener: ListenerConfig, remoteAddress: string): void {
    const seconds = wholeSeconds(listener.handshake_timeout);
    this.deps.observer.emit({
      type: 'rejected',
      client: UNKNOWN_CLIENT,
      listener: listener.name,
      remote: remoteAddress,
      reason: 'timeout',
      response: `none (handshake not completed within ${seconds}s; connection closed)`,
    });
  }

  close(session: SessionState, wasAccepted: boolean): void {
    if (!wasAccepted) return;
    this.leaveUnidentified(session);
    this.deps.guard?.disconnect(session.remoteAddress, session.guardedAsNetworkClient ?? false);
    this.deps.observer.emit({ type: 'connection_closed', listener: session.listener.name });
  }

  async auth(session: SessionState, username: string, password: string): Promise<Verdict> {
    const { listener } = session;
    if (listener.require_tls && !session.secure) return { ok: false, code: 530, message: STARTTLS_FIRST };
    if (!this.authOffered(session)) {
      return { ok: false, code: 538, message: '5.7.11 Encryption required for requested authentication mechanism' };
    }
    const { clients } = this.deps.current();
    const check = () => clients.authenticate(username, password);
    const attempt = {
      remoteAddress: session.remoteAddress,
      username,
      client: this.label(session),
      networkClient: session.networkClient !== undefined,
      closed: session.closed,
    };
    const outcome = this.deps.guard ? await this.deps.guard.authenticate(attempt, check) : unguarded(await check());
    if (outcome.kind === 'refused') return this.refuse(session, outcome.refusal);
    // Nobody is left to answer; nothing was checked.
    if (outcome.kind === 'abandoned') return { ok: false, code: 421, message: '4.4.2 Connection closed' };
    const result = outcome.kind;
    this.deps.observer.emit({ type: 'auth', listener: listener.name, remote: session.remoteAddress, username, result });
    if (outcome.kind === 'failure') {
      if (outcome.refusal) return this.refuse(session, outcome.refusal);
      if (outcome.delayMs > 0) await sleep(outcome.delayMs);
      return { ok: false, code: 535, message: '5.7.8 Authentication credentials invalid' };
    }
    session.authClient = outcome.value;
    this.leaveUnidentified(session);
    return { ok: true };
  }

  /**
   * The TLS handshake after STARTTLS is done: what the client established before it is forgotten
   * (RFC 3207 4.2), an AUTH included, as smtp-server forgets its own record of the user.
   */
  secured(session: SessionState): void {
    session.authClient = undefined;
  }

  /** `declaredSize` is the SIZE= parameter, when the client gave one. */
  async mailFrom(session: SessionState, from: string, declaredSize?: number): Promise<Verdict> {
    const { listener } = session;
    if (listener.require_tls && !session.secure) return { ok: false, code: 530, message: STARTTLS_FIRST };
    // Identity is looked up again in the current client list, so a reload that removes or changes a
    // client takes effect at the next transaction of a session that is already open.
    const { clients, policy } = this.deps.current();
    session.networkClient = clients.byAddress(session.remoteAddress);
    if (session.authClient) session.authClient = clients.byName(session.authClient.name, session.authClient.username);
    // A credential wins over a network match; on `auth: required` a network match alone is not enough.
    session.client = session.authClient ?? (listener.auth === 'required' ? undefined : session.networkClient);
    if (!session.client) {
      // Where AUTH cannot succeed (off, or in clear for an address in nobody's networks) asking for it is no
      // answer: a session whose client a reload removed is refused as a stranger is at connect.
      const canUpgrade = session.secure || listener.tls === 'starttls' || session.networkClient !== undefined;
      if (listener.auth === 'off' || !canUpgrade) {
        return this.accessDenied(session, { from });
      }
      return this.reject(session, 'auth_required', 530, '5.7.0 Authentication required', { from });
    }
    if (from !== '' && !isPlainAddress(from)) return this.notPlain(session, 'Sender', from);
    if (!(await this.deps.freeSpace.hasRoom())) {
      return this.reject(session, 'storage', 452, '4.3.1 Insufficient system storage, try again later', { from });
    }
    const refusal = await policy?.mailFrom(session.client, from, declaredSize);
    if (refusal) return this.refuse(session, refusal, { from });
    return { ok: true };
  }

  /** `acceptedSoFar`: recipients already accepted in this transaction. */
  async rcptTo(session: SessionState, to: string, acceptedSoFar = 0): Promise<Verdict> {
    if (!session.client) return { ok: false, code: 503, message: '5.5.1 Error: need MAIL command' };
    const { policy } = this.deps.current();
    if (!this.refreshClient(session))
      return this.reject(session, 'access_denied', 451, '4.7.0 Client configuration changed, try again', { to });
    if (!isPlainAddress(to)) return this.notPlain(session, 'Recipient', to);
    const refusal = await policy?.rcptTo(session.client, to, acceptedSoFar);
    if (refusal) return this.refuse(session, refusal, { to });
    return { ok: true };
  }

  /**
   * Streams DATA to the spool and answers only once it is durable. The answer is always one of:
   * 250 queued, 552 too big, 550 malformed line endings or a header out of bounds, a filter's or the policy's refusal,
   * 452 spool trouble, or (inline delivery) the 5xx every smart host gave.
   */
  async data(
    session: SessionState,
    envelope: { from: string; to: string[] },
    stream: Readable,
  ): Promise<Verdict & { queueId?: string }> {
    const { store } = this.deps;
    // One configuration for the whole message, even if a reload lands while it streams.
    const { config, policy, filters } = this.deps.current();
    if (!this.refreshClient(session)) {
      stream.resume();
      return this.reject(session, 'access_denied', 451, '4.7.0 Client configuration changed, try again', {
        from: envelope.from,
      });
    }
    const client = session.client as ClientConfig;
    const id = store.newId();
    // A policy may only lower the relay's maximum (the config schema makes sure of that).
    const policyMax = policy?.maxMessageSize(client);
    const maxSize =
      policyMax !== undefined && policyMax < config.max_message_size ? policyMax : config.max_message_size;
    const guard = new DataGuard(maxSize, session.listener.line_endings);
    const outgoing: Outgoing = {
      route: chooseRoute(config, client.policy, envelope.from),
      from: envelope.from,
      prependHeaders: '',
    };
    const trace = buildReceivedHeader({
      heloName: session.heloName,
      clientName: client.name,
      hostname: config.hostname,
      queueId: id,
      secure: session.secure,
      authenticated: session.authClient !== undefined,
      esmtp: session.esmtp,
      tls: session.tls,
      recipients: envelope.to,
      date: new Date(),
      remoteAddress: config.routes[outgoing.route]?.received_include_address ? session.remoteAddress : undefined,
    });
    const filtering = new FilterRun(filters ?? [], { queueId: id, client, session, envelope, trace, outgoing });
    const splitter: HeaderSplitter = new HeaderSplitter(
      MAX_HEADER_BYTES,
      (headers) => filtering.headers(headers, splitter.original as HeaderBlock),
      (chunk) => filtering.body(chunk),
    );
    const storageTrouble = (err: unknown, otherwise = 'write failed') =>
      this.reject(
        session,
        'storage',
        452,
        `4.3.1 Insufficient system storage, try again later (${(err as NodeJS.ErrnoException).code ?? otherwise})`,
        { from: envelope.from },
      );
    let incoming: IncomingFile;
    try {
      incoming = await store.createIncoming(id);
    } catch (err) {
      stream.resume();
      return storageTrouble(err);
    }
    // Whatever happens before the commit (a refusal, a dropped client, an unexpected error), the
    // file in tmp/ and its handle go with it.
    let meta: MessageMeta | undefined;
    let commitMs: number;
    try {
      let refusal: Refusal | undefined;
      try {
        incoming.stream.write(trace);
        await pipeChain(stream, [guard, splitter], incoming.stream);
        refusal = await filtering.end();
      } catch (err) {
        stream.resume();
        return storageTrouble(err);
      }

      if (guard.oversize) {
        const message =
          maxSize < config.max_message_size
            ? `5.3.4 Message size exceeds maximum message size of ${maxSize} bytes for client ${client.name}`
            : `5.3.4 Message size exceeds fixed maximum message size of ${config.max_message_size} bytes`;
        refusal = { code: 552, message, reason: 'too_big' };
      } else if (guard.violation)
        refusal = { code: 550, message: violationReply(guard.violation), reason: 'smuggling' };
      else if (splitter.headerTooLarge)
        refusal = { code: 552, message: `5.3.4 Message header exceeds ${MAX_HEADER_BYTES} bytes`, reason: 'too_big' };
      else if (splitter.headerOutOfBounds !== null)
        refusal = { code: 550, message: `5.6.0 ${splitter.headerOutOfBounds}`, reason: 'header_limit' };
      // Counted only for a message that is otherwise acceptable: a refused one costs no byte quota.
      refusal ??= await policy?.dataComplete(client, incoming.bytesWritten);
      if (refusal) return this.reject(session, refusal.reason, refusal.code, refusal.message, { from: envelope.from });

      const received: MessageMeta = {
        version: 2,
        id,
        receivedAt: Date.now(),
        client: client.name,
        listener: session.listener.name,
        remote: session.remoteAddress,
        route: outgoing.route,
        from: outgoing.from,
        recipients: envelope.to.map((address) => ({ address, status: 'pending' })),
        size: incoming.bytesWritten,
        attempts: 0,
        nextAttemptAt: Date.now(),
        ...(outgoing.from !== envelope.from ? { clientFrom: envelope.from } : {}),
        ...(outgoing.prependHeaders !== '' ? { prependHeaders: outgoing.prependHeaders } : {}),
      };
      const commitStart = performance.now();
      try {
        await store.commit(received, incoming);
        commitMs = performance.now() - commitStart;
      } catch (err) {
        return storageTrouble(err, 'commit failed');
      }
      meta = received;
    } finally {
      if (!meta) await incoming.discard().catch(() => undefined);
    }

    let handing: Promise<Verdict>;
    try {
      if (guard.normalizedLineEndings > 0)
        this.deps.observer.emit({ type: 'line_endings_normalized', client: client.name });
      this.deps.observer.emit({
        type: 'received',
        queueId: id,
        client: client.name,
        listener: session.listener.name,
        remote: session.remoteAddress,
        from: envelope.from,
        to: envelope.to,
        size: meta.size,
        commitMs,
        ...(filtering.messageId !== undefined ? { messageId: filtering.messageId } : {}),
      });
      handing = this.deps.onQueued(meta, session.listener);
    } finally {
      // The scheduler has it now (onQueued takes it before its first await); had anything failed
      // before, the queue scan finds it on disk.
      store.handedOver(id);
    }
    const verdict = await handing;
    if (!verdict.ok)
      return this.reject(session, 'smarthost_rejected', verdict.code, verdict.message, { from: envelope.from });
    return { ok: true, queueId: id };
  }

  /**
   * A reload between MAIL and RCPT or DATA may have changed or removed this transaction's client:
   * take its current definition (so its current policy applies), or false when it is gone.
   */
  private refreshClient(session: SessionState): boolean {
    const before = session.client;
    if (!before) return false;
    const { clients } = this.deps.current();
    const current =
      before.username !== undefined
        ? clients.byName(before.name, before.username)
        : clients.byAddress(session.remoteAddress);
    session.client = current?.name === before.name ? current : undefined;
    return session.client !== undefined;
  }

  /** Counts a stranger among the listener's unidentified sessions, or false when they are full. */
  private takeUnidentifiedPlace(session: SessionState): boolean {
    const name = session.listener.name;
    if (this.unidentified.get(name) >= session.listener.max_unidentified_clients) return false;
    this.unidentified.add(name);
    session.unidentified = true;
    return true;
  }

  /** The session authenticated or left: its place among the unidentified is free again. */
  private leaveUnidentified(session: SessionState): void {
    if (!session.unidentified) return;
    session.unidentified = false;
    this.unidentified.remove(session.listener.name);
  }

  private refuse(session: SessionState, refusal: Refusal, envelope: { from?: string; to?: string } = {}): Verdict {
    return this.reject(session, refusal.reason, refusal.code, refusal.message, envelope);
  }

  /** An address that is no client and cannot become one on this listener: 554, at connect or at MAIL. */
  private accessDenied(session: SessionState, envelope: { from?: string } = {}): Verdict {
    const message = `5.7.1 Access denied: [${session.remoteAddress}] is not a permitted client`;
    return this.reject(session, 'access_denied', 554, message, envelope);
  }

  /** A quoted local part or a comment in MAIL FROM or RCPT TO: 501, with the address's own status code. */
  private notPlain(session: SessionState, role: 'Sender' | 'Recipient', address: string): Verdict {
    const status = role === 'Sender' ? '5.1.7' : '5.1.3';
    const why = 'quoted local parts and comments are not accepted';
    const message = `${status} ${role} address <${address}> is not relayed: ${why}`;
    return this.reject(
      session,
      'address_syntax',
      501,
      message,
      role === 'Sender' ? { from: address } : { to: address },
    );
  }

  private reject(
    session: SessionState,
    reason: RejectReason,
    code: number,
    message: string,
    envelope: { from?: string; to?: string } = {},
  ): Verdict {
    this.deps.observer.emit({
      type: 'rejected',
      client: this.label(session),
      listener: session.listener.name,
      remote: session.remoteAddress,
      reason,
      response: `${code} ${message}`,
      ...envelope,
    });
    return { ok: false, code, message };
  }

  /** The client label for metrics and events: whoever the session is attributed to so far. */
  private label(session: SessionState): string {
    return session.client?.name ?? session.authClient?.name ?? session.networkClient?.name ?? UNKNOWN_CLIENT;
  }
}

/** Without address guards (a relay built without them), every AUTH is simply checked. */
function unguarded<T>(value: T | undefined): AuthOutcome<T> {
  return value === undefined ? { kind: 'failure', delayMs: 0 } : { kind: 'success', value };
}

function wholeSeconds(ms: number): number {
  return Math.max(1, Math.round(ms / 1000));
}

/** The 550 5.6.0 text for data that could be read differently downstream. */
function violationReply(violation: DataViolation): string {
  if (violation === 'nul') return '5.6.0 Message contains a NUL byte, which SMTP data must not carry';
  const ending = violation === 'bare_cr' ? 'bare CR' : 'bare LF';
  return `5.6.0 Message contains a ${ending} line ending; lines must end with CRLF`;
}

/** One message's pass through the filters: header verdicts first, then body inspectors' verdicts at the end. */
class FilterRun {
  /** The Message-ID once every filter had the header (re-enveloping adds a missing one); one header line at most. */
  messageId: string | undefined;
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
    this.messageId = editable.value('message-id')?.slice(0, MAX_MESSAGE_ID_LENGTH) || undefined;
    // A message the headers already refused is not worth inspecting further.
    if (this.refusal) return;
    this.inspectors = this.filters
      .map((filter) => filter.body?.(context, editable))
      .filter((inspector): inspector is BodyInspector => inspector !== undefined);
    if (this.inspectors.length > 0) await this.body(Buffer.concat([original.toBuffer(), Buffer.from('\r\n')]));
  }

  /**
   * Feeds every inspector; a promise (only when some inspector pushes back) holds the stream until all have taken the
   * chunk.
   */
  body(chunk: Buffer): void | Promise<void> {
    let pending: Promise<void>[] | undefined;
    for (const inspector of this.inspectors) {
      const taken = inspector.write(chunk);
      if (taken) (pending ??= []).push(taken);
    }
    if (pending) return Promise.all(pending).then(() => undefined);
  }

  async end(): Promise<Refusal | undefined> {
    for (const inspector of this.inspectors) {
      const verdict = await inspector.end();
      this.refusal ??= verdict;
    }
    return this.context ? this.refusal : undefined;
  }
}
