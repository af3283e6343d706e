import { Readable } from 'node:stream';
import type { SmtpSmartHostConfig } from '../config/schema';
import {
  SmtpConnectionPool,
  wireRecipient,
  wireSender,
  type PoolAuth,
  type PoolSettings,
  type SmtpFailure,
  type SmtpSent,
  type TokenCallback,
  type WireEnvelope,
} from '../nodemailer-adapter';
import { ClientCredentialsTokens } from './oauth2';
import { loadCa } from './smarthost-ca';
import { parseReply, type Outcome, type TransientCause } from './outcome';
import { QueueFileError, storedBytes } from './stored-bytes';

export interface Envelope {
  /** '' is the null sender. */
  from: string;
  to: string[];
}

/** What is sent of a queued message: the first `size` bytes of its file (its metadata follows them). */
export interface MessageBody {
  path: string;
  /** Undefined: the whole file (a message queued before trailers existed). */
  size?: number;
  /** Header lines sent above the stored bytes (the DKIM signatures kept in its metadata). */
  prependHeaders?: string;
  /** The first `size` bytes of the file, when the spool still had them from the commit: sent instead of reading it. */
  message?: Uint8Array;
}

/** Sends to one smart host, nothing more: a transaction in, an outcome per recipient out. */
export interface SmartHostTransport {
  readonly name: string;
  /** `primary[smtp.provider.example]:587`, as log lines name the relay. */
  readonly relay: string;
  send(envelope: Envelope, body: MessageBody): Promise<Map<string, Outcome>>;
  /** Closes the pool once the sends under way have finished (a reload retires hosts this way). */
  close(): void;
}

export interface QuotaStatus {
  /** The window as configured (`1m`, `1d`): a config value, so a bounded metric label. */
  window: string;
  unit: 'messages' | 'recipients';
  remaining: number;
}

export interface SmartHostDetails {
  breaker?: 'closed' | 'open' | 'half_open';
  quota?: QuotaStatus[];
}

/** Why a smart host cannot take a delivery right now, and when it might. */
export type Admission =
  { ok: true; recipients: number } | { ok: false; cause: 'breaker' | 'quota'; retryAt: number; detail: string };

/** A smart host as the dispatcher sees it: a transport behind its breaker and quota. */
export interface SmartHost extends SmartHostTransport {
  /** Breaker closed (or ready for its probe) and no known exhausted quota window. */
  available(now: number): boolean;
  /** `smarthop_smarthost_up`: the breaker is closed. */
  up(): boolean;
  /**
   * Asks to send one message to `recipients` recipients now: takes the breaker's probe slot and
   * counts the quota. It may admit fewer recipients than asked: never more than the host's
   * `max_recipients` per transaction, fewer when a recipient quota is nearly used up.
   */
  admit(recipients: number, now: number): Promise<Admission>;
  /** What the host can tell about its breaker and quotas, for the admin API and `smarthop status`. */
  details?(now: number): Promise<SmartHostDetails>;
}

/**
 * One configured smart host behind nodemailer's SMTP pool: connections are reused across messages
 * and bounded by `max_connections`. The stored bytes are sent as they are (the connection
 * dot-stuffs them); the envelope is explicit, so nothing in the headers can redirect the message.
 */
export class NodemailerSmartHost implements SmartHostTransport {
  readonly name: string;
  readonly relay: string;
  private readonly pool: SmtpConnectionPool;
  private inFlight = 0;
  private closing = false;

  /** `ca`: the contents of `config.ca`, when the caller has read it already (see loadCa). */
  constructor(config: SmtpSmartHostConfig, heloName: string, ca: Buffer | undefined = loadCa(config)) {
    this.name = config.name;
    this.relay = `${config.name}[${config.host}]:${config.port}`;
    this.pool = new SmtpConnectionPool(poolSettings(config, heloName, ca));
  }

  async send(envelope: Envelope, body: MessageBody): Promise<Map<string, Outcome>> {
    this.inFlight++;
    try {
      return await this.transact(envelope, body);
    } finally {
      this.inFlight--;
      if (this.closing && this.inFlight === 0) this.pool.close();
    }
  }

  private async transact(envelope: Envelope, body: MessageBody): Promise<Map<string, Outcome>> {
    const outcomes = new Map<string, Outcome>();
    const wire = onTheWire(envelope);
    // The smart host's refusals name recipients as they went out; outcomes are kept under the address the spool knows.
    const refuse = (rejected: SmtpFailure) => {
      for (const address of wire.original.get(rejected.recipient ?? '') ?? [])
        outcomes.set(address, replyOutcome(rejected));
    };
    try {
      const info = await this.submit(wire.envelope, body);
      const reply = parseReply(info.response, 250);
      for (const err of info.rejectedErrors ?? []) refuse(err);
      for (const address of envelope.to)
        if (!outcomes.has(address)) outcomes.set(address, { kind: 'delivered', reply });
    } catch (caught) {
      const err = caught as SmtpFailure;
      for (const rejected of err.rejectedErrors ?? []) refuse(rejected);
      // Only a reply to the transaction itself speaks about the recipients; a failed AUTH (535) or
      // STARTTLS is the smart host's problem and must never bounce mail.
      const aboutTransaction = (err.code === 'EENVELOPE' || err.code === 'EMESSAGE') && err.responseCode !== undefined;
      const whole = aboutTransaction
        ? replyOutcome(err)
        : isOverHostSizeLimit(err)
          ? overSizeLimit(err, body)
          : connectionOutcome(err);
      for (const address of envelope.to) if (!outcomes.has(address)) outcomes.set(address, whole);
    }
    return outcomes;
  }

  /** The stored bytes, behind the signature lines kept in the metadata, to the pool. */
  private submit(envelope: WireEnvelope, body: MessageBody): Promise<SmtpSent> {
    const head = body.prependHeaders ? Buffer.from(body.prependHeaders, 'latin1') : null;
    // Declared in MAIL FROM (RFC 1870 SIZE=): a host that cannot take the message says so before
    // its bytes are sent, and one whose EHLO named a smaller limit is not sent it at all.
    const size = messageSize(body);
    // A copy crossing from the event loop arrives as a plain Uint8Array; the connection wants Buffers.
    const bytes = body.message
      ? Buffer.from(body.message.buffer, body.message.byteOffset, body.message.byteLength)
      : null;
    const streams: Readable[] = [];
    // BODY=8BITMIME whenever the host offers it (RFC 6152): a legacy app's raw 8-bit text goes out
    // as it came in, and a client must not send 8-bit data without declaring it. Declaring it for a
    // 7-bit message is allowed, and cheaper than scanning every message for one byte.
    const wire: WireEnvelope = { ...envelope, use8BitMime: true, ...(size !== undefined ? { size } : {}) };
    // Called for every try. A connection found half-closed returns before it reads (or listens to)
    // the stream it was given, so every stream made here is destroyed once the send is over: none
    // keeps its file open, and none is left to fail with nobody listening.
    const stream = () => {
      const made = bytes
        ? Readable.from(head ? [head, bytes] : [bytes], { objectMode: false })
        : storedBytes(body.path, body.size, head);
      streams.push(made);
      return made;
    };
    return this.pool.send(wire, stream).finally(() => {
      for (const made of streams) made.destroy();
    });
  }

  close(): void {
    this.closing = true;
    // Closing the pool fails messages still queued in it; wait for ours to finish instead.
    if (this.inFlight === 0) this.pool.close();
  }
}

/** The bytes the host will be sent (before dot-stuffing, as RFC 1870 counts them), when known. */
function messageSize(body: MessageBody): number | undefined {
  const head = body.prependHeaders ? Buffer.byteLength(body.prependHeaders, 'latin1') : 0;
  if (body.message) return head + body.message.byteLength;
  return body.size === undefined ? undefined : head + body.size;
}

/**
 * nodemailer refuses to start a transaction for a message larger than the SIZE the host's EHLO
 * named: no reply came, but it is the host's own limit, known before a byte was sent.
 */
function isOverHostSizeLimit(err: SmtpFailure): boolean {
  return err.code === 'EMESSAGE' && err.responseCode === undefined && err.command === 'MAIL FROM';
}

/** Permanent for this host, as its own 552 would be: the next host (with a larger limit) may take it. */
function overSizeLimit(err: SmtpFailure, body: MessageBody): Outcome {
  const limit = /(\d+)\s*$/.exec(err.message)?.[1];
  const size = String(messageSize(body) ?? 'unknown');
  const text =
    `552 5.3.4 Message of ${size} bytes is larger than the smart host takes` +
    (limit ? ` (its EHLO SIZE is ${limit})` : '');
  return { kind: 'permanent', reply: { code: 552, text } };
}

/**
 * The envelope as `sendMail` puts addresses on the wire: domains lower-cased, and IDN domains
 * punycoded for an ASCII local part, so a smart host without SMTPUTF8 still takes them. Also which
 * spool address each wire address stands for.
 */
function onTheWire(envelope: Envelope): { envelope: WireEnvelope; original: Map<string, string[]> } {
  const original = new Map<string, string[]>();
  for (const address of envelope.to) {
    const wire = wireRecipient(address);
    original.set(wire, [...(original.get(wire) ?? []), address]);
  }
  return { envelope: { from: wireSender(envelope.from), to: [...original.keys()] }, original };
}

function poolSettings(config: SmtpSmartHostConfig, heloName: string, ca: Buffer | undefined): PoolSettings {
  return {
    host: config.host,
    port: config.port,
    name: heloName,
    secure: config.tls === 'implicit',
    // starttls means required: a host that does not offer it (or fails the handshake) gets nothing,
    // not even MAIL FROM, in clear. There is no opportunistic mode to downgrade to.
    requireTLS: config.tls === 'starttls',
    ignoreTLS: config.tls === 'none',
    // nodemailer sets SNI from the host name itself (and leaves it out for an IP address, as RFC 6066 wants).
    tls: { rejectUnauthorized: config.tls_verify, ...(ca !== undefined ? { ca } : {}) },
    auth: transportAuth(config),
    maxConnections: config.max_connections,
    maxMessages: config.messages_per_connection,
    connectionTimeout: config.connect_timeout,
    greetingTimeout: config.connect_timeout,
    socketTimeout: config.socket_timeout,
  };
}

function transportAuth(config: SmtpSmartHostConfig): PoolAuth | undefined {
  const { auth } = config;
  if (!auth) return undefined;
  if (!('type' in auth)) return { user: auth.user, pass: auth.pass };
  const tokens = new ClientCredentialsTokens(auth, { timeoutMs: config.connect_timeout });
  return {
    type: 'OAuth2',
    user: auth.user,
    // nodemailer asks for a token per pooled connection (and with renew=true when the server refused
    // one); the shared cache answers, and the expiry we hand back makes it ask again before it lapses.
    provisionCallback: (_user: string, renew: boolean, callback: TokenCallback) => {
      tokens.get(renew).then(
        (token) => callback(null, token.value, token.refreshAt),
        (err: Error) => callback(err),
      );
    },
  };
}

/** A reply from the smart host: 5xx is permanent (nodemailer already treats 503 as transient). */
function replyOutcome(err: SmtpFailure): Outcome {
  const reply = parseReply(err.response, err.responseCode ?? 451);
  if (err.permanent) return { kind: 'permanent', reply };
  return { kind: 'transient', cause: 'reply', reply, detail: reply.text };
}

/** No reply to go by: an unknown error is a temporary one (maddy's rule). */
function connectionOutcome(err: SmtpFailure): Outcome {
  if (err instanceof QueueFileError) return { kind: 'transient', cause: 'spool', detail: err.message };
  let cause: TransientCause = 'connect';
  if (err.code === 'ETLS' || err.code === 'EREQUIRETLS') cause = 'tls';
  else if (err.code === 'ETIMEDOUT') cause = 'timeout';
  const code = err.originalCode ?? err.code ?? 'ERROR';
  return { kind: 'transient', cause, detail: `${code}: ${err.message}` };
}
