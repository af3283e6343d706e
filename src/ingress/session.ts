import { once } from 'node:events';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ClientConfig, ListenerConfig, RelayConfig } from '../config/schema';
import { UNKNOWN_CLIENT, type Observer, type RejectReason } from '../observe/events';
import type { MessageMeta } from '../spool/message';
import type { FreeSpaceGuard } from '../spool/free-space';
import type { SpoolStore } from '../spool/store';
import type { ClientDirectory } from './clients';
import { DataGuard } from './data-guard';
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

/** The part of the running configuration ingress reads; a reload swaps it between SMTP commands. */
export interface IngressConfig {
  config: Pick<RelayConfig, 'hostname' | 'max_message_size' | 'policies'>;
  clients: ClientDirectory;
}

export interface IngressDeps {
  current: () => IngressConfig;
  store: SpoolStore;
  freeSpace: FreeSpaceGuard;
  observer: Observer;
  /** Called once a message is durable in the queue (after the fsync, before the 250). */
  onQueued: (meta: MessageMeta) => void;
}

const STARTTLS_FIRST = '5.7.0 Must issue a STARTTLS command first';

/**
 * The SMTP-facing decisions of DESIGN.md: who the session is, whether it may go on, and the
 * durable acceptance of DATA. Every refusal is reported with its reason.
 */
export class IngressSessions {
  constructor(private readonly deps: IngressDeps) {}

  connect(session: SessionState): Verdict {
    session.networkClient = this.deps.current().clients.byAddress(session.remoteAddress);
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
    const client = await this.deps.current().clients.authenticate(username, password);
    this.deps.observer.emit({ type: 'auth', listener: listener.name, remote: session.remoteAddress, username, result: client ? 'success' : 'failure' });
    if (!client) return { ok: false, code: 535, message: '5.7.8 Authentication credentials invalid' };
    session.authClient = client;
    return { ok: true };
  }

  async mailFrom(session: SessionState, from: string): Promise<Verdict> {
    const { listener } = session;
    if (listener.require_tls && !session.secure) return { ok: false, code: 530, message: STARTTLS_FIRST };
    // Identity is looked up again in the current client list, so a reload that removes or changes a
    // client takes effect at the next transaction of a session that is already open.
    const { clients } = this.deps.current();
    session.networkClient = clients.byAddress(session.remoteAddress);
    if (session.authClient) session.authClient = clients.byName(session.authClient.name, session.authClient.username);
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
   * 250 queued, 552 too big, 550 malformed line endings, 452 spool trouble.
   */
  async data(session: SessionState, envelope: { from: string; to: string[] }, stream: Readable): Promise<Verdict & { queueId?: string }> {
    const client = session.client as ClientConfig;
    const { store } = this.deps;
    const { config } = this.deps.current();
    const id = store.newId();
    const guard = new DataGuard(config.max_message_size, session.listener.line_endings);
    const file = store.createIncoming(id);
    const received = Buffer.from(buildReceivedHeader({
      heloName: session.heloName, clientName: client.name, hostname: config.hostname, queueId: id, secure: session.secure,
      authenticated: session.authClient !== undefined, esmtp: session.esmtp, tls: session.tls, recipients: envelope.to, date: new Date(),
    }));
    file.write(received);

    try {
      await pipeline(stream, guard, file);
      if (!file.closed) await once(file, 'close');
    } catch (err) {
      stream.resume();
      await store.discardIncoming(id).catch(() => undefined);
      return this.reject(session, 'storage', 452, `4.3.1 Insufficient system storage, try again later (${(err as NodeJS.ErrnoException).code ?? 'write failed'})`, { from: envelope.from });
    }

    if (guard.refused) {
      await store.discardIncoming(id);
      if (guard.oversize) {
        return this.reject(session, 'too_big', 552, `5.3.4 Message size exceeds fixed maximum message size of ${config.max_message_size} bytes`, { from: envelope.from });
      }
      const what = guard.violation === 'bare_cr' ? 'bare CR' : 'bare LF';
      return this.reject(session, 'smuggling', 550, `5.6.0 Message contains a ${what} line ending; lines must end with CRLF`, { from: envelope.from });
    }

    const meta: MessageMeta = {
      version: 1, id, receivedAt: Date.now(), client: client.name, listener: session.listener.name, remote: session.remoteAddress,
      route: this.routeFor(config, client), from: envelope.from, recipients: envelope.to.map((address) => ({ address, status: 'pending' })),
      size: received.length + guard.bytesIn + guard.normalizedLineEndings, attempts: 0, nextAttemptAt: Date.now(),
    };
    try {
      await store.commit(meta);
    } catch (err) {
      await store.discardIncoming(id).catch(() => undefined);
      return this.reject(session, 'storage', 452, `4.3.1 Insufficient system storage, try again later (${(err as NodeJS.ErrnoException).code ?? 'commit failed'})`, { from: envelope.from });
    }

    if (guard.normalizedLineEndings > 0) this.deps.observer.emit({ type: 'line_endings_normalized', client: client.name });
    this.deps.observer.emit({ type: 'received', queueId: id, client: client.name, listener: session.listener.name, remote: session.remoteAddress, from: envelope.from, to: envelope.to, size: meta.size });
    this.deps.onQueued(meta);
    return { ok: true, queueId: id };
  }

  private routeFor(config: IngressConfig['config'], client: ClientConfig): string {
    return (client.policy !== undefined ? config.policies[client.policy]?.route : undefined) ?? 'default';
  }

  private reject(session: SessionState, reason: RejectReason, code: number, message: string, envelope: { from?: string; to?: string } = {}): Verdict {
    this.deps.observer.emit({
      type: 'rejected', client: session.client?.name ?? session.authClient?.name ?? session.networkClient?.name ?? UNKNOWN_CLIENT,
      listener: session.listener.name, remote: session.remoteAddress, reason, response: `${code} ${message}`, ...envelope,
    });
    return { ok: false, code, message };
  }
}
