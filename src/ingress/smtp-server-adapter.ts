import { readFileSync } from 'node:fs';
import type { Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { SMTPServer, type SMTPServerOptions, type SMTPServerSession } from 'smtp-server';
import { SMTPConnection, type SMTPConnectionOptions } from 'smtp-server/lib/smtp-connection';

/**
 * The one module that touches smtp-server's private members. Everything else uses the library's
 * published options and hooks. Each private use below says why no public API does the job and what
 * upstream change would let it go. The members used exist in exactly the pinned version (package.json
 * pins it, and `assertSupportedSmtpServer` refuses to start on any other), because private members
 * change between releases without notice.
 *
 * Private members used: `SMTPConnection` as a base class (its `init`, `_setListeners`,
 * `connectionReady`, `send`, `upgrade`, `handler_EHLO`, `_socket`, `_server`), `SMTPServer#connect`,
 * `SMTPServer#connections`, `SMTPServer#_handleProxy` and `SMTPServer#_pendingSockets`.
 */

export const SUPPORTED_SMTP_SERVER_VERSION = '3.21.6';

let installedVersion: string | undefined;

/** The version of smtp-server that is installed, read (once) from its package.json. */
export function installedSmtpServerVersion(): string {
  if (installedVersion === undefined) {
    const path = require.resolve('smtp-server/package.json');
    const manifest = JSON.parse(readFileSync(path, 'utf8')) as { version?: unknown };
    installedVersion = typeof manifest.version === 'string' ? manifest.version : 'unknown';
  }
  return installedVersion;
}

/** Throws a clear error when the installed smtp-server is not the version this adapter was written against. */
export function assertSupportedSmtpServer(version = installedSmtpServerVersion()): void {
  if (version === SUPPORTED_SMTP_SERVER_VERSION) return;
  throw new Error(
    `smtp-server ${version} is installed, but smarthop supports exactly ${SUPPORTED_SMTP_SERVER_VERSION}: ` +
      'src/ingress/smtp-server-adapter.ts uses private members that change between releases. ' +
      `Install the pinned version (npm ci), or check the adapter against ${version} and move the pin.`,
  );
}

/** One client connection, as the listener may act on it. */
export interface ClientConnection {
  readonly session: SMTPServerSession;
  /** Every chunk the client sends: on the plaintext socket, and after STARTTLS on the TLS one. */
  onClientData(listener: (chunk: Buffer) => void): void;
  /** Sends a last reply (text after the code) and closes the connection. */
  closeWith(code: number, text: string): void;
}

export interface ConnectionHooks {
  /** Pause before the greeting; smtp-server's own is a fixed 100 ms. */
  greetingDelayMs: number;
  /**
   * Whether the EHLO reply lists AUTH for this session now (without it: as smtp-server decides). The
   * AUTH command itself stays available either way, so a client that sends it unoffered still gets
   * the relay's own reply (530, 538).
   */
  offerAuth?(session: SMTPServerSession): boolean;
  /** A new connection, before its greeting. */
  onConnection?(connection: ClientConnection): void;
}

/**
 * smtp-server's connection with three changes, each needing a private member:
 *
 * - Greeting delay. The library holds every greeting back 100 ms (to catch clients that talk before
 *   it), with no option. For LAN apps that send one message per connection that pause alone caps a
 *   listener at 10 messages/s per connection, so the delay is the listener's `greeting_delay`. The
 *   replacement `init` keeps the library's connection-limit check. Upstream change that lets it go: a
 *   `greetingDelay` server option.
 * - AUTH offered only where it can succeed. smtp-server's public `session.disabledCommands` hides AUTH
 *   from EHLO, but also turns the AUTH command into "500 command not recognized", where the relay
 *   promises 530 (before STARTTLS) and 538 (plaintext). So AUTH is hidden for the EHLO reply only.
 *   Upstream change that lets it go: a per-session list of hidden EHLO extensions (or an `onEhlo` hook).
 * - The client's bytes, for the command-line deadline: the idle timeout (`socketTimeout`) is reset by
 *   every byte, so a client trickling one byte a second keeps a session forever. Watching the socket
 *   (and the TLS socket after STARTTLS) is the only way to see a line that never ends. Upstream change
 *   that lets it go: a per-line (or per-command) deadline option in the command parser.
 */
class RelayConnection extends SMTPConnection {
  private readonly dataListeners: ((chunk: Buffer) => void)[] = [];
  private readonly watched = new WeakSet<Socket>();

  constructor(
    server: SMTPServer,
    socket: Socket | TLSSocket,
    options: SMTPConnectionOptions | null | undefined,
    private readonly hooks: ConnectionHooks,
  ) {
    super(server, socket, options);
  }

  override init(): void {
    this._setListeners(() => {
      const { maxClients } = this._server.options;
      if (maxClients && this._server.connections.size > maxClients) {
        this.send(421, `${this.name} Too many connected clients, try again in a moment`, false);
        return;
      }
      this.watch(this._socket);
      const delay = this.hooks.greetingDelayMs;
      if (delay === 0) return this.connectionReady();
      setTimeout(() => this.connectionReady(), delay).unref();
    });
  }

  override upgrade(callback: () => void, secureCallback?: () => void): void {
    super.upgrade(callback, () => {
      this.watch(this._socket);
      secureCallback?.();
    });
  }

  override handler_EHLO(command: Buffer, callback: () => void): void {
    if (!this.hooks.offerAuth || this.hooks.offerAuth(this.session)) return super.handler_EHLO(command, callback);
    const own = this.session.disabledCommands;
    this.session.disabledCommands = [...(own ?? this._server.options.disabledCommands ?? []), 'AUTH'];
    try {
      // EHLO answers synchronously; a command pipelined behind it runs only after this returns.
      super.handler_EHLO(command, callback);
    } finally {
      this.session.disabledCommands = own;
    }
  }

  handle(): ClientConnection {
    return {
      session: this.session,
      onClientData: (listener) => {
        this.dataListeners.push(listener);
      },
      closeWith: (code, text) => {
        this.send(code, text, false);
        // smtp-server closes after a 421 itself; any other last reply needs the close here.
        if (code !== 421) this.close();
      },
    };
  }

  private watch(socket: Socket): void {
    if (this.watched.has(socket)) return;
    this.watched.add(socket);
    socket.on('data', (chunk: Buffer) => {
      for (const listener of this.dataListeners) listener(chunk);
    });
  }
}

/** An SMTPServer whose connections are RelayConnections (see there); only this server, not the process, is changed. */
export function createSmtpServer(options: SMTPServerOptions, hooks: ConnectionHooks): SMTPServer {
  assertSupportedSmtpServer();
  const server = new SMTPServer(options);
  // The library's connect(), with our connection class instead of its own (same events, same bookkeeping).
  server.connect = (socket, socketOptions) => {
    const connection = new RelayConnection(server, socket, socketOptions, hooks);
    server.connections.add(connection);
    connection.on('error', (err: Error) => server.emit('error', err));
    connection.on('connect', (info: Parameters<SMTPServer['_onClientConnect']>[0]) => server.emit('connect', info));
    hooks.onConnection?.(connection.handle());
    connection.init();
  };
  return server;
}

/** What a proxy gate says about a peer: go on to the PROXY header, or refuse it (optionally with a reply line). */
export type ProxyPeerVerdict = { ok: true } | { ok: false; reply: string | null; reason: string };

/** How long a refused socket stays open for its reply line to reach the peer. */
const REFUSAL_LINGER_MS = 1_000;

/**
 * Puts `gate` in front of smtp-server's PROXY-header step, so a peer can be refused before a byte of
 * it is read. `useProxy` takes exact addresses, not CIDRs, and a peer missing from its list is not
 * asked for a header at all (its PROXY line is then read as an SMTP command), so the listener runs
 * with `useProxy: true` and this gate decides who may send one. Private member: `_handleProxy`.
 * Upstream change that lets it go: CIDRs (or a callback) in `useProxy`, with refusal of the others.
 */
export function gateProxyHeader(server: SMTPServer, gate: (socket: Socket) => ProxyPeerVerdict): void {
  const library = server._handleProxy;
  if (typeof library !== 'function') {
    throw new Error(`smtp-server has no PROXY handler to guard (expected ${SUPPORTED_SMTP_SERVER_VERSION})`);
  }
  server._handleProxy = (socket, callback) => {
    const verdict = gate(socket);
    if (verdict.ok) return library.call(server, socket, callback);
    socket.on('error', () => undefined);
    if (verdict.reply !== null) socket.end(`${verdict.reply}\r\n`);
    setTimeout(() => socket.destroy(), REFUSAL_LINGER_MS).unref();
    callback(new Error(verdict.reason));
  };
}

/**
 * The socket carrying each open session of a server (for a test smart host that hangs up on its
 * clients). Private members: `connections`, `_socket`. Upstream change that lets it go: a public
 * way from a session to its connection (e.g. `session.close()` / `session.destroy()`).
 */
export function sessionSockets(server: SMTPServer): { session: SMTPServerSession; socket: Socket }[] {
  assertSupportedSmtpServer();
  return [...server.connections].map((connection) => ({ session: connection.session, socket: connection._socket }));
}

/** What became of a socket that a PendingSocketGate let through. */
export type PendingOutcome = 'session' | 'closed' | 'timeout';

export interface PendingSocketGate {
  /** How long a socket may take to reach its session (the PROXY header, the TLS handshake). */
  deadlineMs: number;
  /**
   * A new socket, before smtp-server sees it: null drops it at once (nothing can be written to it
   * before the handshake); else a function told once what became of it.
   */
  admit(socket: Socket): ((outcome: PendingOutcome) => void) | null;
}

/**
 * Puts `gate` in front of the sockets smtp-server holds before their session begins (an implicit-TLS
 * listener's handshake, a `proxy_protocol` listener's PROXY header). smtp-server keeps them in a pool
 * of its own capped at `maxClients` and bounded in time only by `socketTimeout`, and destroys every
 * socket past the cap, so one silent peer holding `maxClients` sockets locked everybody out for a
 * minute at a time. The gate sees each socket first (smtp-server's own 'connection' listener, the
 * one it registers on its public `server`, runs only for what the gate admits) and gives each a
 * deadline of its own. Private member: `_pendingSockets`, for the socket on top of a handshake under
 * way (destroying the plain socket under a TLS handshake in progress tears the TLS wrap down from
 * below, which crashes Node, as smtp-server's own close() notes). Upstream change that lets it go: a
 * per-peer admission hook and a handshake timeout option of its own.
 */
export function gatePendingSockets(server: SMTPServer, gate: PendingSocketGate): void {
  const net = server.server;
  const library = net.listeners('connection');
  if (library.length !== 1 || !(server._pendingSockets instanceof Map)) {
    const supported = SUPPORTED_SMTP_SERVER_VERSION;
    throw new Error(`smtp-server does not accept connections as expected (supported: ${supported})`);
  }
  const accept = library[0] as (socket: Socket) => void;
  net.removeListener('connection', accept);
  /** Admitted sockets still on their way to a session, by peer address and port (the TLS socket shares them). */
  const onTheirWay = new Map<string, () => void>();
  net.on('connection', (socket: Socket) => {
    const settled = gate.admit(socket);
    if (!settled) {
      socket.on('error', () => undefined);
      socket.destroy();
      return;
    }
    const peer = `${socket.remoteAddress}|${socket.remotePort}`;
    let done = false;
    const settle = (outcome: PendingOutcome) => {
      if (done) return;
      done = true;
      clearTimeout(deadline);
      socket.off('close', onClose);
      if (onTheirWay.get(peer) === reached) onTheirWay.delete(peer);
      settled(outcome);
    };
    const onClose = () => settle('closed');
    const reached = () => settle('session');
    const deadline = setTimeout(() => {
      settle('timeout');
      socket.on('error', () => undefined);
      (server._pendingSockets.get(socket) ?? socket).destroy();
    }, gate.deadlineMs);
    deadline.unref();
    socket.once('close', onClose);
    onTheirWay.set(peer, reached);
    accept.call(net, socket);
  });
  const connect = server.connect.bind(server);
  server.connect = (socket, socketOptions) => {
    onTheirWay.get(`${socket.remoteAddress}|${socket.remotePort}`)?.();
    connect(socket, socketOptions);
  };
}
