import { connect, type Socket } from 'node:net';
import {
  connect as tlsConnect,
  createSecureContext,
  TLSSocket,
  type ConnectionOptions,
  type SecureContext,
} from 'node:tls';

let defaultContext: SecureContext | undefined;

/**
 * A deliberately raw SMTP client for tests: exact bytes out, exact reply lines back, and a source
 * address of our choosing (127.0.0.2 is "somebody else on the network").
 */
export class RawSmtpClient {
  private buffer = '';
  private waiters: ((line: string | null) => void)[] = [];
  private lines: string[] = [];
  private closed = false;

  private constructor(private socket: Socket) {
    this.attach(socket);
  }

  private attach(socket: Socket): void {
    socket.setEncoding('latin1');
    socket.on('data', (data: string) => {
      this.buffer += data;
      let index: number;
      while ((index = this.buffer.indexOf('\r\n')) !== -1) {
        this.push(this.buffer.slice(0, index));
        this.buffer = this.buffer.slice(index + 2);
      }
    });
    const end = () => {
      this.closed = true;
      for (const waiter of this.waiters.splice(0)) waiter(null);
    };
    socket.on('close', end);
    socket.on('error', end);
  }

  /**
   * STARTTLS and the TLS handshake (any certificate: tests make their own; `options` narrow versions
   * or suites); returns the STARTTLS reply, and rejects when the handshake fails.
   */
  async startTls(options: ConnectionOptions = {}): Promise<string | null> {
    const reply = await this.command('STARTTLS');
    if (!reply?.startsWith('220')) return reply;
    const plain = this.socket;
    plain.removeAllListeners('data');
    plain.removeAllListeners('close');
    plain.removeAllListeners('error');
    // Without options of its own, a session shares one client context: making one per handshake costs
    // more than the handshake's own client side, and some tests open hundreds.
    const shared = Object.keys(options).length === 0;
    const context = shared ? { secureContext: (defaultContext ??= createSecureContext()) } : {};
    const secure = tlsConnect({ socket: plain, rejectUnauthorized: false, ...context, ...options });
    await new Promise<void>((resolve, reject) => {
      secure.once('secureConnect', resolve);
      secure.once('error', reject);
    });
    this.socket = secure;
    this.attach(secure);
    return reply;
  }

  static async connect(port: number, options: { host?: string; localAddress?: string } = {}): Promise<RawSmtpClient> {
    const socket = connect({ port, host: options.host ?? '127.0.0.1', localAddress: options.localAddress });
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    return new RawSmtpClient(socket);
  }

  /** The next complete reply (all lines of a multi-line reply joined by \n), or null if the server closed. */
  async reply(timeoutMs = 10_000): Promise<string | null> {
    const lines: string[] = [];
    for (;;) {
      const line = await this.nextLine(timeoutMs);
      if (line === null) return lines.length > 0 ? lines.join('\n') : null;
      lines.push(line);
      if (!/^\d{3}-/.test(line)) return lines.join('\n');
    }
  }

  /** Sends one command line and returns its reply. */
  async command(line: string): Promise<string | null> {
    this.write(`${line}\r\n`);
    return this.reply();
  }

  write(data: string | Buffer): void {
    this.socket.write(data);
  }

  /** Writes every chunk, waiting for the socket to drain: a large body never piles up in this process. */
  async writeAll(chunks: Iterable<Buffer>): Promise<void> {
    for (const chunk of chunks) {
      if (!this.socket.write(chunk)) await new Promise<void>((resolve) => this.socket.once('drain', () => resolve()));
    }
  }

  /** The negotiated cipher suite once TLS is up, else null. */
  get cipher(): string | null {
    return this.socket instanceof TLSSocket ? this.socket.getCipher().name : null;
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Greeting, EHLO, MAIL, RCPT…, DATA, body: returns the reply to the end of data (or the first refusal). */
  async sendMessage(from: string, to: string[], body: string | Buffer): Promise<string | null> {
    const mail = await this.command(`MAIL FROM:<${from}>`);
    if (!mail?.startsWith('250')) return mail;
    for (const rcpt of to) {
      const reply = await this.command(`RCPT TO:<${rcpt}>`);
      if (!reply?.startsWith('250')) return reply;
    }
    const data = await this.command('DATA');
    if (!data?.startsWith('354')) return data;
    this.write(body);
    this.write('\r\n.\r\n');
    return this.reply();
  }

  async quit(): Promise<void> {
    if (!this.closed) {
      this.write('QUIT\r\n');
      await this.reply(2000).catch(() => null);
    }
    this.socket.destroy();
  }

  /** Drops the connection without a word, as a crashed or vanished client does. */
  destroy(): void {
    this.socket.destroy();
  }

  private push(line: string): void {
    const waiter = this.waiters.shift();
    if (waiter) waiter(line);
    else this.lines.push(line);
  }

  private nextLine(timeoutMs: number): Promise<string | null> {
    const queued = this.lines.shift();
    if (queued !== undefined) return Promise.resolve(queued);
    if (this.closed) return Promise.resolve(null);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        reject(new Error(`no reply within ${timeoutMs} ms`));
      }, timeoutMs);
      const waiter = (line: string | null) => {
        clearTimeout(timer);
        resolve(line);
      };
      this.waiters.push(waiter);
    });
  }
}

/** Connects, reads the greeting and says EHLO: the usual start of a test session. */
export async function openSession(
  port: number,
  options: { localAddress?: string; host?: string } = {},
): Promise<{ client: RawSmtpClient; greeting: string | null; ehlo: string | null }> {
  const client = await RawSmtpClient.connect(port, options);
  const greeting = await client.reply();
  const ehlo = greeting?.startsWith('220') ? await client.command('EHLO app.test') : null;
  return { client, greeting, ehlo };
}

/**
 * A session ready for AUTH under TLS: greeted (220), STARTTLS done (220) and EHLO said again under
 * TLS (250). A step that answers otherwise fails the test, naming the step and its reply.
 */
export async function openTlsSession(
  port: number,
  options: { localAddress?: string } = {},
  ehloName = 'app.test',
): Promise<RawSmtpClient> {
  const { client, greeting } = await openSession(port, options);
  const check = (step: string, reply: string | null, pattern: RegExp) => {
    if (reply !== null && pattern.test(reply)) return;
    client.destroy();
    throw new Error(`${step} answered ${reply === null ? 'nothing' : JSON.stringify(reply)}, expected ${pattern}`);
  };
  check('the greeting', greeting, /^220 /);
  check('STARTTLS', await client.startTls(), /^220 /);
  check(`EHLO ${ehloName}`, await client.command(`EHLO ${ehloName}`), /^250/);
  return client;
}

export function plainAuth(user: string, pass: string): string {
  return `AUTH PLAIN ${Buffer.from(`\0${user}\0${pass}`).toString('base64')}`;
}

/** A minimal RFC 5322 message with CRLF line endings. */
export function message(
  opts: { from?: string; to?: string; subject?: string; body?: string; messageId?: string } = {},
): string {
  const lines = [
    `From: ${opts.from ?? 'app@corp.example'}`,
    `To: ${opts.to ?? 'user@example.com'}`,
    `Subject: ${opts.subject ?? 'test'}`,
    `Message-ID: <${opts.messageId ?? `${Math.random().toString(36).slice(2)}@corp.example`}>`,
    'Date: Mon, 23 Nov 2026 10:00:00 +0000',
    '',
    opts.body ?? 'Hello from a legacy app.',
  ];
  return lines.join('\r\n');
}
