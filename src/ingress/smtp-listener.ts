import { readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import type { SMTPServer, SMTPServerOptions, SMTPServerSession } from 'smtp-server';
import type { ListenerConfig, RelayConfig } from '../config/schema';
import type { Logger } from '../observe/logger';
import { CommandLineDeadline } from './command-deadline';
import { HandshakeGuard } from './handshake-guard';
import { inNetworks } from './networks';
import type { IngressSessions, SessionState, Verdict } from './session';
import { createSmtpServer, gatePendingSockets, gateProxyHeader, type ClientConnection } from './smtp-server-adapter';

/**
 * Adapts smtp-server's callbacks to the typed, async decisions of `IngressSessions` and turns
 * verdicts back into replies. What needs smtp-server's private members goes through
 * smtp-server-adapter.ts.
 */

/** Commands a relay never needs: sendmail debug relics, and relaying identity from the client itself. */
const ALWAYS_DISABLED = ['WIZ', 'SHELL', 'KILL', 'XCLIENT', 'XFORWARD'];

/** A hard ceiling on RCPT per transaction whatever a policy says; smtp-server answers 452 past it. */
const MAX_RECIPIENTS = 1000;

/**
 * The reason every session's `closed` signal is aborted with. Nothing reads it, but abort() without a
 * reason builds a new DOMException, stack trace and all, on every connection's close.
 */
const CONNECTION_CLOSED = new Error('the connection closed');

export interface ListenerDeps {
  listener: ListenerConfig;
  config: Pick<RelayConfig, 'hostname' | 'max_message_size' | 'tls' | 'shutdown_grace' | 'limits'>;
  sessions: IngressSessions;
  logger: Logger;
}

/** What the listener keeps per session: our state, the connection to act on, and its deadlines. */
interface SessionEntry {
  state: SessionState;
  accepted: boolean;
  closed: boolean;
  connection: ClientConnection;
  commandLine: CommandLineDeadline;
  identifyTimer?: NodeJS.Timeout;
  /**
   * Aborted when the connection closes (state.closed). Made at the session's first AUTH, the only
   * step that waits on it: most sessions (LAN hosts known by their address) never authenticate.
   */
  closing?: AbortController;
}

export class SmtpListener {
  private readonly server: SMTPServer;
  /** Connections seen, before onConnect gives them a state. */
  private readonly connections = new WeakMap<SMTPServerSession, ClientConnection>();
  private readonly entries = new WeakMap<SMTPServerSession, SessionEntry>();
  /** Connections accepted and not yet in their session (TLS handshake, PROXY header): smarthop_connections_pending. */
  private pending = 0;

  constructor(private readonly deps: ListenerDeps) {
    this.server = createSmtpServer(this.options(), {
      greetingDelayMs: deps.listener.greeting_delay,
      offerAuth: (session) => {
        const entry = this.entries.get(session);
        return entry !== undefined && deps.sessions.authOffered(this.state(session));
      },
      onConnection: (connection) => this.connections.set(connection.session, connection),
    });
    if (deps.listener.proxy_protocol) this.trustOnlyProxies();
    if (deps.listener.tls === 'implicit' || deps.listener.proxy_protocol) this.guardHandshakes();
    this.server.on('error', (err) =>
      deps.logger.warn({ err, listener: deps.listener.name }, `listener ${deps.listener.name}: ${err.message}`),
    );
  }

  get name(): string {
    return this.deps.listener.name;
  }

  /** Connections accepted and still in their TLS handshake or before their PROXY header (0 where there is none). */
  get pendingConnections(): number {
    return this.pending;
  }

  async listen(): Promise<AddressInfo> {
    const { host, port } = this.deps.listener.address;
    await new Promise<void>((resolve, reject) => {
      const onError = (err: Error) => reject(err);
      this.server.server.once('error', onError);
      this.server.listen(port, host, () => {
        this.server.server.off('error', onError);
        resolve();
      });
    });
    return this.server.server.address() as AddressInfo;
  }

  /** Stops listening; a DATA in progress still gets its 250, idle sessions get 421 after the grace period. */
  close(): Promise<void> {
    return new Promise((resolve) => this.server.close(() => resolve()));
  }

  /**
   * PROXY protocol from `trusted_proxies` only: the listener requires a header (`useProxy: true`)
   * and every other peer is refused with a 554 before a byte of it is read, so a forged header from
   * a direct connection never names anybody.
   */
  private trustOnlyProxies(): void {
    const { listener, sessions } = this.deps;
    gateProxyHeader(this.server, (socket) => {
      const peer = socket.remoteAddress ?? '';
      if (inNetworks(peer, listener.trusted_proxies)) return { ok: true };
      const verdict = sessions.untrustedProxy(listener, peer);
      const reply = verdict.ok ? null : `${verdict.code} ${verdict.message}`;
      return { ok: false, reply, reason: `${peer} is not a trusted proxy` };
    });
  }

  /**
   * Connections before their session (TLS handshake, PROXY header): strangers get a bounded number
   * of them (HandshakeGuard), everybody a deadline (`handshake_timeout`).
   */
  private guardHandshakes(): void {
    const { listener, config, sessions } = this.deps;
    const handshakes = new HandshakeGuard({
      limits: config.limits,
      maxStrangers: listener.max_unidentified_clients,
      trusted: (peer) =>
        sessions.inNetworks(peer) || (listener.proxy_protocol && inNetworks(peer, listener.trusted_proxies)),
    });
    gatePendingSockets(this.server, {
      deadlineMs: listener.handshake_timeout,
      admit: (socket) => {
        const peer = socket.remoteAddress ?? '';
        const release = handshakes.admit(peer);
        if (!release) {
          sessions.handshakeRefused(listener, peer);
          return null;
        }
        this.pending++;
        return (outcome) => {
          this.pending--;
          release();
          if (outcome === 'timeout') sessions.handshakeTimedOut(listener, peer);
        };
      },
    });
  }

  private options(): SMTPServerOptions {
    const { listener, config } = this.deps;
    const disabled = [...ALWAYS_DISABLED];
    if (listener.auth === 'off') disabled.push('AUTH');
    if (listener.tls !== 'starttls') disabled.push('STARTTLS');
    const settings = listener.tls !== 'none' ? config.tls : undefined;
    const tls = settings
      ? {
          key: readFileSync(settings.key),
          cert: readFileSync(settings.cert),
          ciphers: settings.ciphers,
          minVersion: settings.min_version,
        }
      : {};
    return {
      ...tls,
      name: config.hostname,
      banner: 'smarthop',
      secure: listener.tls === 'implicit',
      size: config.max_message_size,
      authMethods: ['PLAIN', 'LOGIN'],
      // Identity and its replies are decided in IngressSessions (530 5.7.0 at MAIL, 538 for plaintext AUTH).
      authOptional: true,
      allowInsecureAuth: true,
      disabledCommands: disabled,
      disableReverseLookup: true,
      // With proxy_protocol, trustOnlyProxies() decides who may send the header; everyone else is refused.
      useProxy: listener.proxy_protocol,
      maxClients: listener.max_clients,
      maxRecipients: MAX_RECIPIENTS,
      socketTimeout: listener.socket_timeout,
      closeTimeout: config.shutdown_grace,
      logger: false,
      onConnect: (session, callback) => this.handleConnect(session, callback),
      onSecure: (_socket, session, callback) => {
        const entry = this.entries.get(session);
        if (entry) this.deps.sessions.secured(entry.state);
        callback();
      },
      onAuth: (auth, session, callback) => {
        const state = this.state(session);
        this.signalClose(session);
        this.deps.sessions.auth(state, auth.username ?? '', auth.password ?? '').then(
          (verdict) => {
            if (!verdict.ok) return callback(toError(verdict));
            this.identified(session);
            callback(null, { user: auth.username });
          },
          (err: Error) => callback(internalError(err, this.deps.logger)),
        );
      },
      onMailFrom: (address, session, callback) => {
        const size = address.args ? address.args.SIZE : undefined;
        // smtp-server has already checked SIZE= syntax and the listener maximum.
        const declared = typeof size === 'string' ? Number(size) : undefined;
        this.deps.sessions.mailFrom(this.state(session), address.address, declared).then(
          (verdict) => nextTurn(() => callback(verdict.ok ? null : toError(verdict))),
          (err: Error) => callback(internalError(err, this.deps.logger)),
        );
      },
      onRcptTo: (address, session, callback) => {
        this.deps.sessions.rcptTo(this.state(session), address.address, session.envelope.rcptTo.length).then(
          (verdict) => nextTurn(() => callback(verdict.ok ? null : toError(verdict))),
          (err: Error) => callback(internalError(err, this.deps.logger)),
        );
      },
      onData: (stream, session, callback) => {
        const envelope = {
          from: session.envelope.mailFrom ? session.envelope.mailFrom.address : '',
          to: session.envelope.rcptTo.map((rcpt) => rcpt.address),
        };
        // Message lines are not command lines: the deadline sleeps until the reply to DATA.
        const commandLine = this.entries.get(session)?.commandLine;
        commandLine?.pause();
        this.deps.sessions.data(this.state(session), envelope, stream).then(
          (verdict) => {
            commandLine?.resume();
            if (verdict.ok) callback(null, `2.0.0 Ok: queued as ${verdict.queueId}`);
            else callback(toError(verdict));
          },
          (err: Error) => {
            commandLine?.resume();
            callback(internalError(err, this.deps.logger));
          },
        );
      },
      onClose: (session) => {
        const entry = this.entries.get(session);
        if (!entry) return;
        entry.closed = true;
        entry.closing?.abort(CONNECTION_CLOSED);
        entry.commandLine.stop();
        clearTimeout(entry.identifyTimer);
        if (entry.accepted) this.deps.sessions.close(entry.state, true);
      },
    };
  }

  private handleConnect(session: SMTPServerSession, callback: (err?: Error | null) => void): void {
    const connection = this.connections.get(session);
    if (!connection) {
      return callback(internalError(new Error(`no connection for SMTP session ${session.id}`), this.deps.logger));
    }
    const { listener, sessions } = this.deps;
    const { remoteAddress, secure } = session;
    const state: SessionState = { listener, remoteAddress, secure, heloName: '', esmtp: true };
    const entry: SessionEntry = {
      state,
      accepted: false,
      closed: false,
      connection,
      commandLine: new CommandLineDeadline(listener.command_deadline, () => this.drop(entry, 'command_line')),
    };
    this.entries.set(session, entry);
    connection.onClientData((chunk) => entry.commandLine.bytes(chunk));
    sessions.connect(state).then(
      (verdict) => {
        if (verdict.ok && entry.closed) {
          // The client left while the guards were deciding: give its slot back at once.
          sessions.close(state, true);
          return;
        }
        entry.accepted = verdict.ok;
        if (verdict.ok && state.networkClient === undefined) {
          entry.identifyTimer = setTimeout(() => this.drop(entry, 'identify'), listener.identify_timeout);
          entry.identifyTimer.unref();
        }
        callback(verdict.ok ? null : toError(verdict));
      },
      (err: Error) => callback(internalError(err, this.deps.logger)),
    );
  }

  /** From now on the session's `closed` signal aborts when the connection closes. */
  private signalClose(session: SMTPServerSession): void {
    const entry = this.entries.get(session);
    if (!entry || entry.closing) return;
    entry.closing = new AbortController();
    entry.state.closed = entry.closing.signal;
    // A connection gone before its AUTH reached here: the check is abandoned, as it would have been.
    if (entry.closed) entry.closing.abort(CONNECTION_CLOSED);
  }

  /** The session authenticated: no identify deadline any more. */
  private identified(session: SMTPServerSession): void {
    const entry = this.entries.get(session);
    if (entry) clearTimeout(entry.identifyTimer);
  }

  /** A deadline ran out: the session gets its 421 and the connection closes. */
  private drop(entry: SessionEntry, deadline: 'command_line' | 'identify'): void {
    if (entry.closed) return;
    if (deadline === 'identify' && entry.state.authClient !== undefined) return;
    entry.commandLine.stop();
    clearTimeout(entry.identifyTimer);
    const verdict = this.deps.sessions.timedOut(entry.state, deadline);
    if (!verdict.ok) entry.connection.closeWith(verdict.code, verdict.message);
  }

  /** Our view of the session, refreshed with what smtp-server learnt since (TLS upgrade, HELO). */
  private state(session: SMTPServerSession): SessionState {
    const entry = this.entries.get(session);
    if (!entry) throw new Error(`no state for SMTP session ${session.id}`);
    const { state } = entry;
    state.secure = session.secure;
    state.tls = session.tlsOptions
      ? { version: session.tlsOptions.version, cipher: session.tlsOptions.name }
      : undefined;
    state.heloName = session.hostNameAppearsAs || session.clientHostname || '';
    state.esmtp = session.openingCommand !== 'HELO';
    return state;
  }
}

/**
 * MAIL and RCPT are answered on a later turn of the event loop. A verdict decided from memory
 * resolves within the same turn, and smtp-server reads the next pipelined command as soon as it has
 * the answer: without the turn, one client pipelining thousands of RCPT had them all decided before
 * any other session was served (10,000 held the loop for a quarter of a second).
 */
function nextTurn(answer: () => void): void {
  setImmediate(answer);
}

function toError(verdict: Verdict): Error {
  if (verdict.ok) throw new Error('an accepting verdict is not an error');
  return Object.assign(new Error(verdict.message), { responseCode: verdict.code });
}

/** A bug or unexpected failure in our own code: a temporary refusal, never a silent accept. */
function internalError(err: Error, logger: Logger): Error {
  logger.error({ err }, `internal error in SMTP session: ${err.message}`);
  return Object.assign(new Error('4.3.0 Internal error, try again later'), { responseCode: 451 });
}
