import { connect, type Socket } from 'node:net';
import { performance } from 'node:perf_hooks';

/**
 * A deliberately small raw-socket SMTP client for load generation. nodemailer would add its own
 * buffering, pooling and event-loop work between "final dot sent" and "250 seen", which is exactly
 * the latency the benchmark wants to measure, so the bench speaks the protocol itself.
 */

export interface Reply {
  code: number;
  /** Text of every line of the reply, without the code and separator. */
  lines: string[];
  /** performance.now() when the last line arrived: latency is taken here, not when the reply is awaited. */
  receivedAt: number;
}

export interface Timeouts {
  connectMs: number;
  /** Per reply; the relay's own socket timeout is 60s, so anything longer is a hang. */
  replyMs: number;
}

/** One SMTP connection: writes commands, hands back complete (possibly multi-line) replies in order. */
export class SmtpConnection {
  private buffer = '';
  private pendingLines: string[] = [];
  private readonly replies: Reply[] = [];
  private waiter: { resolve: (reply: Reply) => void; reject: (err: Error) => void; timer: NodeJS.Timeout } | null =
    null;
  private failure: Error | null = null;

  private constructor(private readonly socket: Socket) {
    socket.setNoDelay(true);
    socket.setEncoding('latin1');
    socket.on('data', (chunk: string) => this.onData(chunk));
    socket.on('error', (err) => this.fail(err));
    socket.on('close', () => this.fail(new Error('connection closed by server')));
  }

  static open(host: string, port: number, timeoutMs: number): Promise<SmtpConnection> {
    return new Promise((resolve, reject) => {
      const socket = connect({ host, port });
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new Error(`connect timeout after ${timeoutMs} ms`));
      }, timeoutMs);
      socket.once('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
      socket.once('connect', () => {
        clearTimeout(timer);
        socket.removeAllListeners('error');
        resolve(new SmtpConnection(socket));
      });
    });
  }

  /** The next complete reply; replies that arrived earlier are queued, so none is ever missed. */
  read(timeoutMs: number): Promise<Reply> {
    const queued = this.replies.shift();
    if (queued) return Promise.resolve(queued);
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiter = null;
        reject(new Error(`no reply within ${timeoutMs} ms`));
        this.destroy();
      }, timeoutMs);
      this.waiter = { resolve, reject, timer };
    });
  }

  async command(line: string, timeoutMs: number): Promise<Reply> {
    this.socket.write(`${line}\r\n`);
    return this.read(timeoutMs);
  }

  /** Queues data without waiting: the kernel buffer and the socket's own queue keep the order. */
  write(data: string | Buffer): void {
    this.socket.write(data);
  }

  /** Resolves with performance.now() once `data` has been handed to the kernel. */
  writeFlushed(data: string | Buffer): Promise<number> {
    return new Promise((resolve, reject) => {
      this.socket.write(data, (err) => (err ? reject(err) : resolve(performance.now())));
    });
  }

  /** Half-closes politely; the server may already have closed after 221. */
  end(): void {
    this.socket.end();
  }

  destroy(): void {
    this.socket.destroy();
  }

  private onData(chunk: string): void {
    this.buffer += chunk;
    let newline: number;
    while ((newline = this.buffer.indexOf('\n')) !== -1) {
      const line = this.buffer.slice(0, newline).replace(/\r$/, '');
      this.buffer = this.buffer.slice(newline + 1);
      this.onLine(line);
    }
  }

  /** "250-..." continues a reply, "250 ..." (or a bare "250") ends it (RFC 5321 4.2.1). */
  private onLine(line: string): void {
    const match = /^(\d{3})([ -]?)(.*)$/.exec(line);
    if (!match) {
      this.fail(new Error(`malformed reply line: ${JSON.stringify(line.slice(0, 80))}`));
      this.destroy();
      return;
    }
    this.pendingLines.push(match[3]);
    if (match[2] === '-') return;
    const reply: Reply = { code: Number(match[1]), lines: this.pendingLines, receivedAt: performance.now() };
    this.pendingLines = [];
    if (this.waiter) {
      const { resolve, timer } = this.waiter;
      clearTimeout(timer);
      this.waiter = null;
      resolve(reply);
    } else {
      this.replies.push(reply);
    }
  }

  private fail(err: Error): void {
    this.failure ??= err;
    if (this.waiter) {
      const { reject, timer } = this.waiter;
      clearTimeout(timer);
      this.waiter = null;
      reject(this.failure);
    }
  }
}

export interface BenchMessage {
  /** `<bench-RUNID-N@bench.localhost>`, as the sink will report it. */
  messageId: string;
  from: string;
  to: string;
  /** Headers and body, CRLF line endings, no line starting with "." (so no dot-stuffing is needed). */
  content: Buffer;
}

export type SendResult =
  | { kind: 'accepted'; latencyMs: number; reply: string }
  /** The relay answered, but not with 2xx/3xx where it should have. */
  | { kind: 'rejected'; stage: string; reply: string }
  /** Connection error, timeout or protocol error: no verdict from the relay at all. */
  | { kind: 'failed'; stage: string; error: string };

/** The stages of one smtp-source style transaction, with the reply class each must get. */
const ENVELOPE_STEPS: { stage: string; line: (m: BenchMessage) => string; expect: 2 | 3 }[] = [
  { stage: 'EHLO', line: () => 'EHLO bench.localhost', expect: 2 },
  { stage: 'MAIL', line: (m) => `MAIL FROM:<${m.from}>`, expect: 2 },
  { stage: 'RCPT', line: (m) => `RCPT TO:<${m.to}>`, expect: 2 },
  { stage: 'DATA', line: () => 'DATA', expect: 3 },
];

/** Tracks live connections so an overall deadline can cut every one of them at once. */
export type ConnectionRegistry = Set<SmtpConnection>;

/**
 * One message on one connection: connect, greeting, EHLO, MAIL, RCPT, DATA, content, ".", QUIT.
 * The accept latency runs from the final "." reaching the kernel to the 250 arriving.
 */
export async function sendOne(
  host: string,
  port: number,
  message: BenchMessage,
  timeouts: Timeouts,
  live: ConnectionRegistry,
): Promise<SendResult> {
  let stage = 'connect';
  let connection: SmtpConnection | null = null;
  try {
    connection = await SmtpConnection.open(host, port, timeouts.connectMs);
    live.add(connection);
    stage = 'greeting';
    const greeting = await connection.read(timeouts.replyMs);
    if (greeting.code !== 220) return { kind: 'rejected', stage, reply: formatReply(greeting) };

    for (const step of ENVELOPE_STEPS) {
      stage = step.stage;
      const reply = await connection.command(step.line(message), timeouts.replyMs);
      if (Math.floor(reply.code / 100) !== step.expect) return { kind: 'rejected', stage, reply: formatReply(reply) };
    }

    stage = 'end of DATA';
    connection.write(message.content);
    const sentAt = await connection.writeFlushed('.\r\n');
    const verdict = await connection.read(timeouts.replyMs);
    if (Math.floor(verdict.code / 100) !== 2) return { kind: 'rejected', stage, reply: formatReply(verdict) };
    const result: SendResult = {
      kind: 'accepted',
      latencyMs: Math.max(0, verdict.receivedAt - sentAt),
      reply: formatReply(verdict),
    };

    // QUIT is a courtesy: the message is already accepted, so its outcome no longer matters.
    stage = 'QUIT';
    await connection.command('QUIT', Math.min(timeouts.replyMs, 5_000)).catch(() => undefined);
    connection.end();
    return result;
  } catch (err) {
    return { kind: 'failed', stage, error: (err as Error).message };
  } finally {
    if (connection) {
      live.delete(connection);
      connection.destroy();
    }
  }
}

function formatReply(reply: Reply): string {
  return `${reply.code} ${reply.lines.join(' / ')}`;
}

/** 76 visible characters + CRLF: the line length of base64 bodies, none starting with ".". */
const FILLER_LINE = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/ABCDEFGHIJKL\r\n';

/**
 * A message of exactly `size` bytes (headers included) when `size` leaves room for at least one
 * body line; the body is 76-character lines plus one shorter closing line.
 */
export function buildMessage(runId: string, n: number, size: number): BenchMessage {
  const messageId = `<bench-${runId}-${n}@bench.localhost>`;
  const from = 'bench@bench.localhost';
  const to = `rcpt-${n}@sink.example`;
  const headers =
    `From: smarthop bench <${from}>\r\n` +
    `To: <${to}>\r\n` +
    `Subject: smarthop bench message ${n}\r\n` +
    `Date: ${new Date().toUTCString()}\r\n` +
    `Message-ID: ${messageId}\r\n` +
    '\r\n';
  const content = Buffer.from(headers + paddedBody(size - headers.length), 'latin1');
  return { messageId, from, to, content };
}

function paddedBody(bytes: number): string {
  if (bytes < 3) return 'x\r\n'; // tiny --size: a one-line body, the message is a little larger
  const full = Math.floor(bytes / FILLER_LINE.length);
  const rest = bytes % FILLER_LINE.length;
  let body = FILLER_LINE.repeat(full);
  if (rest >= 3) body += `${FILLER_LINE.slice(0, rest - 2)}\r\n`;
  else if (rest > 0) {
    // lengthen the last line by 1-2 chars
    body = body.slice(0, -2) + FILLER_LINE.slice(0, rest) + '\r\n';
  }
  return body;
}
