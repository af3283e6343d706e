import { readFileSync } from 'node:fs';
import type { AddressInfo, Socket } from 'node:net';
import { SMTPServer, type SMTPServerOptions, type SMTPServerSession } from 'smtp-server';
import { SMTPConnection } from 'smtp-server/lib/smtp-connection';
import type { ListenerConfig, RelayConfig } from '../config/schema';
import type { Logger } from '../observe/logger';
import { inNetworks } from './networks';
import type { IngressSessions, SessionState, Verdict } from './session';

/**
 * The one place that knows smtp-server exists: it adapts its callbacks to the typed, async
 * decisions of `IngressSessions` and turns verdicts back into replies.
 */

/** Commands a relay never needs: sendmail debug relics, and relaying identity from the client itself. */
const ALWAYS_DISABLED = ['WIZ', 'SHELL', 'KILL', 'XCLIENT', 'XFORWARD'];

/** A hard ceiling on RCPT per transaction whatever a policy says; smtp-server answers 452 past it. */
const MAX_RECIPIENTS = 1000;

export interface ListenerDeps {
  listener: ListenerConfig;
  config: Pick<RelayConfig, 'hostname' | 'max_message_size' | 'tls' | 'shutdown_grace'>;
  sessions: IngressSessions;
  logger: Logger;
}

/**
 * smtp-server holds every greeting back 100 ms to catch clients that talk before it (a spam-bot
 * trait), with no option to change it. For LAN apps that send one message per connection that
 * pause alone caps a listener at 10 messages/s per connection, so the delay is the listener's
 * `greeting_delay` instead (0: greet at once, as Postfix's smtpd does). The replacement keeps the
 * library's own connection-limit check and then greets after the configured delay.
 */
let greetingDelayInstalled = false;
export function installConfigurableGreetingDelay(): void {
  if (greetingDelayInstalled) return;
  greetingDelayInstalled = true;
  const libraryInit = SMTPConnection.prototype.init;
  SMTPConnection.prototype.init = function init(this: SMTPConnection): void {
    const delay = (this._server.options as { greetingDelay?: number }).greetingDelay;
    if (delay === undefined) return libraryInit.call(this);
    this._setListeners(() => {
      const { maxClients } = this._server.options;
      if (maxClients && this._server.connections.size > maxClients) {
        this.send(421, `${this.name} Too many connected clients, try again in a moment`, false);
        return;
      }
      if (delay === 0) return this.connectionReady();
      setTimeout(() => this.connectionReady(), delay).unref();
    });
  };
}

/** smtp-server's PROXY step for one accepted socket (private API, checked for at construction). */
type ProxyHandler = (this: SMTPServer, socket: Socket, callback: (err: Error | null, socketOptions?: unknown) => void) => void;

/** How long a refused socket stays open for its 554 line to reach the peer. */
const REFUSAL_LINGER_MS = 1_000;

export class SmtpListener {
  private readonly server: SMTPServer;
  private readonly states = new WeakMap<SMTPServerSession, { state: SessionState; accepted: boolean; closed: boolean }>();

  constructor(private readonly deps: ListenerDeps) {
    installConfigurableGreetingDelay();
    this.server = new SMTPServer({ ...this.options(), greetingDelay: deps.listener.greeting_delay } as SMTPServerOptions);
    if (deps.listener.proxy_protocol) this.trustOnlyProxies();
    this.server.on('error', (err) => deps.logger.warn({ err, listener: deps.listener.name }, `listener ${deps.listener.name}: ${err.message}`));
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
   * PROXY protocol from `trusted_proxies` only. smtp-server's `useProxy` takes exact addresses, not
   * CIDRs, and a peer missing from its list is simply not asked for a header: its PROXY line would
   * then be read as an unknown SMTP command (or a "talk too soon"), depending on timing. So the
   * listener runs with `useProxy: true` (a header is required before anything else) and this gate
   * in front of the library's PROXY step refuses every other peer with a 554 before a byte of it is
   * read: a forged header from a direct connection never names anybody.
   */
  private trustOnlyProxies(): void {
    const server = this.server as unknown as { _handleProxy?: ProxyHandler };
    const library = server._handleProxy;
    if (typeof library !== 'function') throw new Error('proxy_protocol: this smtp-server version has no PROXY handler to guard (expected 3.21.x)');
    const { listener, sessions } = this.deps;
    server._handleProxy = (socket, callback) => {
      const peer = socket.remoteAddress ?? '';
      if (inNetworks(peer, listener.trusted_proxies)) return library.call(this.server, socket, callback);
      const verdict = sessions.untrustedProxy(listener, peer);
      socket.on('error', () => undefined);
      if (!verdict.ok) socket.end(`${verdict.code} ${verdict.message}\r\n`);
      setTimeout(() => socket.destroy(), REFUSAL_LINGER_MS).unref();
      callback(new Error(`${peer} is not a trusted proxy`));
    };
  }

  private options(): SMTPServerOptions {
    const { listener, config } = this.deps;
    const disabled = [...ALWAYS_DISABLED];
    if (listener.auth === 'off') disabled.push('AUTH');
    if (listener.tls !== 'starttls') disabled.push('STARTTLS');
    const tlsFiles = listener.tls !== 'none' && config.tls ? { key: readFileSync(config.tls.key), cert: readFileSync(config.tls.cert) } : {};
    return {
      ...tlsFiles,
      name: config.hostname,
      banner: 'smarthop',
      secure: listener.tls === 'implicit',
      minVersion: 'TLSv1.2',
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
      onAuth: (auth, session, callback) => {
        const state = this.state(session);
        this.deps.sessions.auth(state, auth.username ?? '', auth.password ?? '').then(
          (verdict) => (verdict.ok ? callback(null, { user: auth.username }) : callback(toError(verdict))),
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
        this.deps.sessions.data(this.state(session), envelope, stream).then(
          (verdict) => (verdict.ok ? callback(null, `2.0.0 Ok: queued as ${verdict.queueId}`) : callback(toError(verdict))),
          (err: Error) => callback(internalError(err, this.deps.logger)),
        );
      },
      onClose: (session) => {
        const entry = this.states.get(session);
        if (!entry) return;
        entry.closed = true;
        if (entry.accepted) this.deps.sessions.close(entry.state, true);
      },
    };
  }

  private handleConnect(session: SMTPServerSession, callback: (err?: Error | null) => void): void {
    const state: SessionState = {
      listener: this.deps.listener,
      remoteAddress: session.remoteAddress,
      secure: session.secure,
      heloName: '',
      esmtp: true,
    };
    const entry = { state, accepted: false, closed: false };
    this.states.set(session, entry);
    this.deps.sessions.connect(state).then(
      (verdict) => {
        if (verdict.ok && entry.closed) {
          // The client left while the guards were deciding: give its slot back at once.
          this.deps.sessions.close(state, true);
          return;
        }
        entry.accepted = verdict.ok;
        callback(verdict.ok ? null : toError(verdict));
      },
      (err: Error) => callback(internalError(err, this.deps.logger)),
    );
  }

  /** Our view of the session, refreshed with what smtp-server learnt since (TLS upgrade, HELO). */
  private state(session: SMTPServerSession): SessionState {
    const entry = this.states.get(session);
    if (!entry) throw new Error(`no state for SMTP session ${session.id}`);
    const { state } = entry;
    state.secure = session.secure;
    state.tls = session.tlsOptions ? { version: session.tlsOptions.version, cipher: session.tlsOptions.name } : undefined;
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
