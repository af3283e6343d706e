import { mkdirSync, readdirSync } from 'node:fs';
import { link, rm, writeFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';
import { SMTPServer, type SMTPServerOptions, type SMTPServerSession } from 'smtp-server';
import { createSmtpServer, sessionSockets } from '../ingress/smtp-server-adapter';

/**
 * A small capture smart host: accepts mail on loopback, writes each message to a folder and logs one
 * line per message. It is what `smarthop sink` runs by hand, and what the tests and the benchmark
 * forward to. Its behaviour can be switched to stand in for a provider having a bad day.
 */

export interface SinkMessage {
  from: string;
  to: string[];
  data: Buffer;
  /** `Message-ID` header value, if the message has one. */
  messageId: string | null;
  secure: boolean;
  authUser: string | null;
  /** `BODY=` of its MAIL FROM: `7bit` unless the client declared `8bitmime`. */
  bodyType: string;
}

export type SinkBehaviour =
  | { mode: 'accept' }
  /** 4xx at MAIL FROM (or at connect with `atConnect`). */
  | { mode: 'defer'; code?: number; atConnect?: boolean }
  /** 5xx at MAIL FROM. */
  | { mode: 'reject'; code?: number }
  /** Accept the connection and never answer. */
  | { mode: 'hang' }
  /** Close the connection in the middle of DATA. */
  | { mode: 'drop' };

export interface SinkOptions {
  host?: string;
  port?: number;
  /**
   * Write each message to `<dir>/<n>-<queue id>.eml` (`<n>.eml` when no smarthop Received line names
   * one). Numbers go on from the highest already in the folder, and a file is never overwritten.
   */
  dir?: string;
  /** Keep messages in memory (tests); the benchmark only counts. */
  keep?: boolean;
  behaviour?: SinkBehaviour;
  /** Per-recipient verdict: a reply such as `550 5.1.1 No such user` refuses just that recipient. */
  rcptReply?: (address: string) => { code: number; message: string } | null;
  /** Require AUTH with these credentials. */
  auth?: { user: string; pass: string };
  /**
   * Require AUTH XOAUTH2 (and offer nothing else) for this user; `validToken` decides whether the
   * bearer token is one the provider would accept. A refused token gets the provider-style 334
   * JSON challenge and then 535, as Microsoft 365 and Google answer.
   */
  xoauth2?: { user: string; validToken: (token: string) => boolean };
  tls?: { key: Buffer; cert: Buffer; implicit?: boolean };
  /**
   * Ends each connection after this many messages, as providers that cap messages per connection do:
   * `close` ends it right behind the last 250 (no goodbye), `refuse` answers the next MAIL with 421
   * and then closes (smtp-server closes after any 421).
   */
  messagesPerConnection?: { limit: number; then: 'close' | 'refuse' };
  /**
   * The SIZE it announces in EHLO and enforces (smtp-server: 552 at MAIL FROM or at the end of DATA); 100 MiB unless
   * set.
   */
  maxSize?: number;
  /** Waits this long before answering the end of DATA, as a slow provider does (the message is kept first). */
  dataReplyDelayMs?: number;
  /** Refuses recipients past this many in one transaction with `452 4.5.3`, as SES and Postmark do past 50. */
  maxRecipients?: number;
  /**
   * Closes a connection left idle this long with 421, as a provider's idle timeout does (smtp-server's default:
   * 60 s).
   */
  idleTimeoutMs?: number;
  log?: (line: string) => void;
  onMessage?: (message: SinkMessage) => void;
}

export class SmtpSink {
  readonly messages: SinkMessage[] = [];
  count = 0;
  /** MAIL FROM commands seen, accepted or not: what a smart host learnt of any envelope at all. */
  mailCommands = 0;
  /** Connections open now: a test waits on this to see a host close one (idle timeout, cap). */
  openConnections = 0;
  /** XOAUTH2 bearer tokens presented, in order. */
  readonly tokensSeen: string[] = [];
  behaviour: SinkBehaviour;
  private readonly server: SMTPServer;
  /** Messages taken per connection (by session id), for `messagesPerConnection`. */
  private readonly takenOn = new Map<string, number>();
  private address: AddressInfo | null = null;
  /** The number the next captured file gets. */
  private nextFileNumber = 1;
  /**
   * Sessions whose message is complete and being captured, by session id, until its reply is
   * written: a close lets each of them have its reply first (see close).
   */
  private readonly replyOwed = new Map<string, Promise<void>>();
  private closing: Promise<void> | null = null;

  constructor(private readonly options: SinkOptions = {}) {
    this.behaviour = options.behaviour ?? { mode: 'accept' };
    if (options.dir) {
      mkdirSync(options.dir, { recursive: true });
      this.nextFileNumber = highestCaptureNumber(options.dir) + 1;
    }
    // A smart host greets at once (Postfix does); smtp-server's fixed 100 ms would slow every new
    // connection to the sink, and with it the benchmark's harness ceiling. Only this server's own
    // connections are changed (see smtp-server-adapter.ts).
    const serverOptions: SMTPServerOptions = {
      name: 'sink.smarthop.test',
      banner: 'smarthop sink',
      logger: false,
      disableReverseLookup: true,
      disabledCommands: [
        ...(options.auth || options.xoauth2 ? [] : ['AUTH']),
        ...(options.tls && !options.tls.implicit ? [] : ['STARTTLS']),
      ],
      authMethods: options.xoauth2 ? ['XOAUTH2'] : ['PLAIN', 'LOGIN'],
      authOptional: !options.auth && !options.xoauth2,
      allowInsecureAuth: true,
      secure: options.tls?.implicit ?? false,
      key: options.tls?.key,
      cert: options.tls?.cert,
      size: options.maxSize ?? 100 * 1024 * 1024,
      maxClients: 1000,
      closeTimeout: 1000,
      ...(options.idleTimeoutMs !== undefined ? { socketTimeout: options.idleTimeoutMs } : {}),
      onConnect: (_session, callback) => {
        this.openConnections++;
        if (this.closing)
          return callback(Object.assign(new Error('4.3.2 Shutting down, try later'), { responseCode: 421 }));
        const b = this.behaviour;
        if (b.mode === 'defer' && b.atConnect)
          return callback(
            Object.assign(new Error('4.3.2 Service not available, try later'), { responseCode: b.code ?? 421 }),
          );
        if (b.mode === 'hang') return; // never greet
        callback();
      },
      onClose: (session) => {
        this.openConnections--;
        this.takenOn.delete(session.id);
      },
      onAuth: (auth, _session, callback) => {
        const oauth = this.options.xoauth2;
        if (oauth) {
          if (auth.method !== 'XOAUTH2')
            return callback(
              Object.assign(new Error('5.7.8 Authentication mechanism not allowed'), { responseCode: 535 }),
            );
          this.tokensSeen.push(auth.accessToken ?? '');
          if (auth.username === oauth.user && oauth.validToken(auth.accessToken ?? ''))
            return callback(null, { user: auth.username });
          return callback(null, {
            data: { status: '401', schemes: 'bearer', scope: 'https://outlook.office365.com/.default' },
          });
        }
        const expected = this.options.auth;
        if (expected && auth.username === expected.user && auth.password === expected.pass)
          return callback(null, { user: auth.username });
        callback(Object.assign(new Error('5.7.8 Authentication credentials invalid'), { responseCode: 535 }));
      },
      onMailFrom: (_address, session, callback) => {
        this.mailCommands++;
        const b = this.behaviour;
        if (b.mode === 'defer')
          return callback(Object.assign(new Error('4.7.0 Try again later'), { responseCode: b.code ?? 451 }));
        if (b.mode === 'reject')
          return callback(Object.assign(new Error('5.7.1 Message refused by policy'), { responseCode: b.code ?? 550 }));
        const cap = this.options.messagesPerConnection;
        if (cap?.then === 'refuse' && (this.takenOn.get(session.id) ?? 0) >= cap.limit) {
          return callback(
            Object.assign(new Error(`4.7.0 Too many messages on this connection (at most ${cap.limit}); reconnect`), {
              responseCode: 421,
            }),
          );
        }
        callback();
      },
      onRcptTo: (address, session, callback) => {
        const max = this.options.maxRecipients;
        if (max !== undefined && session.envelope.rcptTo.length >= max) {
          return callback(
            Object.assign(new Error(`4.5.3 Too many recipients (at most ${max} per message)`), { responseCode: 452 }),
          );
        }
        const reply = this.options.rcptReply?.(address.address);
        if (reply) return callback(Object.assign(new Error(reply.message), { responseCode: reply.code }));
        callback();
      },
      onData: (stream, session, callback) => {
        if (this.behaviour.mode === 'drop') {
          stream.once('data', () => this.destroySession(session));
          stream.resume();
          return;
        }
        const chunks: Buffer[] = [];
        stream.on('data', (chunk: Buffer) => chunks.push(chunk));
        stream.on('end', () => {
          const data = Buffer.concat(chunks);
          // The capture starts a microtask later, so the reply is owed (below) before onMessage, or
          // anything else the capture runs, can stop the sink.
          const replied = Promise.resolve()
            .then(() => this.record(session, data))
            .then(
              (id) =>
                new Promise<void>((resolve) => {
                  const answer = () => {
                    callback(null, `2.0.0 Ok: captured as ${id}`);
                    this.countTaken(session);
                    resolve();
                  };
                  if (this.options.dataReplyDelayMs) setTimeout(answer, this.options.dataReplyDelayMs);
                  else answer();
                }),
              (err: Error) => callback(Object.assign(new Error(`4.3.0 ${err.message}`), { responseCode: 451 })),
            );
          this.replyOwed.set(
            session.id,
            replied.finally(() => {
              this.replyOwed.delete(session.id);
              // The reply is written (smtp-server sends it inside the callback): a closing sink hangs up behind it.
              if (this.closing) this.endSession(session);
            }),
          );
        });
      },
    };
    this.server = createSmtpServer(serverOptions, { greetingDelayMs: 0 });
    this.server.on('error', () => undefined);
  }

  async listen(): Promise<AddressInfo> {
    await new Promise<void>((resolve, reject) => {
      this.server.server.once('error', reject);
      this.server.listen(this.options.port ?? 0, this.options.host ?? '127.0.0.1', () => resolve());
    });
    this.address = this.server.server.address() as AddressInfo;
    return this.address;
  }

  get port(): number {
    if (!this.address) throw new Error('sink not listening');
    return this.address.port;
  }

  /**
   * Stops the sink. A session whose message is already captured gets its reply first and is then
   * ended: cut between the capture and its 250, the client would take the message for undelivered
   * and send it again, to be captured twice. Every other session is cut at once (hanging and
   * half-open test connections must not hold the close), and a connection that arrives meanwhile
   * is told 421.
   */
  close(): Promise<void> {
    this.closing ??= this.shutDown();
    return this.closing;
  }

  private async shutDown(): Promise<void> {
    for (const { session, socket } of sessionSockets(this.server))
      if (!this.replyOwed.has(session.id)) socket.destroy();
    await Promise.all(this.replyOwed.values());
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  /** Every recipient address of every captured message, in arrival order. */
  recipients(): string[] {
    return this.messages.flatMap((m) => m.to);
  }

  /**
   * The message is written whole under a hidden temporary name, then linked to its capture name, so
   * whoever watches the folder never reads a capture still being written. A link, unlike a rename,
   * fails when the name is taken: a number another sink (or an earlier run) took meanwhile is
   * skipped, never overwritten.
   */
  private async writeCapture(dir: string, data: Buffer): Promise<string> {
    const head = data.subarray(0, 64 * 1024).toString('latin1');
    const queueId = SMARTHOP_RECEIVED_ID.exec(head)?.[1];
    const temporary = path.join(dir, `.capture-${process.pid}-${this.count}.tmp`);
    await writeFile(temporary, data, { flag: 'wx' });
    try {
      for (;;) {
        const name = `${String(this.nextFileNumber++).padStart(6, '0')}${queueId ? `-${queueId}` : ''}.eml`;
        try {
          await link(temporary, path.join(dir, name));
          return name;
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
        }
      }
    } finally {
      await rm(temporary, { force: true });
    }
  }

  /** One more message taken on this session's connection; `close` ends it behind the 250 just written. */
  private countTaken(session: SMTPServerSession): void {
    const cap = this.options.messagesPerConnection;
    if (!cap) return;
    const taken = (this.takenOn.get(session.id) ?? 0) + 1;
    this.takenOn.set(session.id, taken);
    if (cap.then === 'close' && taken >= cap.limit) this.endSession(session);
  }

  /** A FIN after what was written, the way a server that is done with a client hangs up. */
  private endSession(session: SMTPServerSession): void {
    for (const open of sessionSockets(this.server)) if (open.session === session) open.socket.end();
  }

  private destroySession(session: SMTPServerSession): void {
    for (const open of sessionSockets(this.server)) if (open.session === session) open.socket.destroy();
  }

  private async record(session: SMTPServerSession, data: Buffer): Promise<string> {
    this.count++;
    const n = this.count;
    const headerEnd = data.indexOf('\r\n\r\n');
    const headers = data.subarray(0, headerEnd === -1 ? data.length : headerEnd).toString('latin1');
    const messageId = /^message-id:\s*(.+(?:\r\n[ \t].*)*)/im.exec(headers)?.[1].replace(/\s+/g, '').trim() ?? null;
    const message: SinkMessage = {
      from: session.envelope.mailFrom ? session.envelope.mailFrom.address : '',
      to: session.envelope.rcptTo.map((r) => r.address),
      data,
      messageId,
      secure: session.secure,
      bodyType: session.envelope.bodyType ?? '7bit',
      authUser: typeof session.user === 'string' ? session.user : null,
    };
    const id = `${n}`;
    if (this.options.dir) await this.writeCapture(this.options.dir, data);
    if (this.options.keep) this.messages.push(message);
    this.options.log?.(
      `sink: #${id} from=<${message.from}> to=<${message.to.join('>,<')}> size=${data.length}` +
        (messageId ? ` message-id=${messageId}` : ''),
    );
    this.options.onMessage?.(message);
    return id;
  }
}

/** The queue id in the Received line smarthop adds: `by <host> (smarthop) with ESMTP id <id>`, maybe folded. */
const SMARTHOP_RECEIVED_ID = new RegExp(
  String.raw`^Received:[^\r\n]*(?:\r?\n[ \t][^\r\n]*)*?\bby \S+ \(smarthop\) with \S+ id ([0-9A-Z]{9,})`,
  'm',
);

/** The highest `<n>` of the `<n>.eml` and `<n>-<queue id>.eml` files already in `dir` (0 for none). */
function highestCaptureNumber(dir: string): number {
  let highest = 0;
  for (const name of readdirSync(dir)) {
    const match = /^(\d+)(?:-[^/]*)?\.eml$/.exec(name);
    if (match) highest = Math.max(highest, Number(match[1]));
  }
  return highest;
}
