import type { Readable } from 'node:stream';
import nodemailer from 'nodemailer';
import addressparser, { type Address, type MailboxAddress } from 'nodemailer/lib/addressparser';
import type { NodemailerError } from 'nodemailer/lib/errors';
import MimeNode from 'nodemailer/lib/mime-node';
import type { PinnedLibrary } from './pinned-library';

/**
 * nodemailer as smarthop uses it (the smart-host transport in forward/, the address-list parser of
 * the message model in message/), and the only module that reaches below its public API: a leaf of
 * src/ so that both can import it. package.json pins nodemailer to exactly this version, and the
 * relay refuses to start with another (checkPinnedVersion), because each private use below can
 * change in any release:
 *
 * 1. The SMTP pool's `send(mail, callback)`, handed a message object of our own (PooledMessage).
 *    `sendMail` would first build a MIME tree around the ready-made bytes (plugins, a Message-ID and
 *    a boundary from random bytes, stream plumbing), which cost about twice what the SMTP
 *    transaction itself does. Goes when nodemailer offers a documented way to send prepared bytes
 *    with an explicit envelope (a `raw` send that skips composing), or documents the pool's
 *    message interface.
 * 2. MimeNode's envelope normaliser (`setEnvelope`/`getEnvelope`): domains lower-cased and IDN
 *    domains punycoded for an ASCII local part, exactly as `sendMail` puts them on the wire. Goes
 *    with 1 (the public send path normalises by itself), or when nodemailer exports its address
 *    normaliser.
 * 3. The error fields the pool reports (`code`, `responseCode`, `command`, `recipient`,
 *    `rejectedErrors`, `permanent`, `originalCode`), typed from `nodemailer/lib/errors`. Goes when
 *    the package's main entry exports the `NodemailerError` type.
 * 4. `nodemailer/lib/addressparser`, which reads the From and Sender fields for the message model
 *    (message/mailbox.ts): one pass, comments and quotes included. nodemailer's exports map lists the
 *    path, but its documentation does not name it as API. Goes when it does, or when the parser is
 *    published on its own again.
 */
export const NODEMAILER: PinnedLibrary = {
  name: 'nodemailer',
  supported: '10.6.0',
  adapter: 'src/nodemailer-adapter.ts uses its SMTP pool and address parser below the public API',
};

/** A failure as nodemailer reports it: the smart host's reply when there was one, else the connection's error. */
export type SmtpFailure = NodemailerError;

/**
 * An envelope as SMTP carries it: `from: false` is the null sender `<>`; `size` goes out as SIZE=,
 * `use8BitMime` as BODY=8BITMIME.
 */
export interface WireEnvelope {
  from: string | false;
  to: string[];
  size?: number;
  use8BitMime?: boolean;
}

/** What the smart host answered to a transaction that went through (some recipients may have been refused). */
export interface SmtpSent {
  response?: string;
  rejectedErrors?: SmtpFailure[];
}

/** Where and how to connect: the public options of nodemailer's SMTP transport that smarthop sets. */
export interface PoolSettings {
  host: string;
  port: number;
  /** EHLO name. */
  name: string;
  secure: boolean;
  requireTLS: boolean;
  ignoreTLS: boolean;
  tls: { rejectUnauthorized: boolean; ca?: Buffer };
  auth?: PoolAuth;
  maxConnections: number;
  maxMessages: number;
  connectionTimeout: number;
  greetingTimeout: number;
  socketTimeout: number;
}

export type TokenCallback = (err: Error | null, accessToken?: string, expires?: number) => void;

export type PoolAuth =
  | { user: string; pass: string }
  | {
      type: 'OAuth2';
      user: string;
      provisionCallback: (user: string, renew: boolean, callback: TokenCallback) => void;
    };

/**
 * One smart host's pool of SMTP connections: reused across messages, at most `maxConnections`, a
 * connection the server dropped is replaced and the message sent again over the new one.
 */
export class SmtpConnectionPool {
  private readonly transport: ReturnType<typeof createTransport>;
  private readonly pool: SmtpPool;

  constructor(settings: PoolSettings) {
    this.transport = createTransport(settings);
    this.pool = this.transport.transporter as unknown as SmtpPool;
  }

  /**
   * Sends prepared bytes to `envelope`. `body` is called for every try (the pool sends again over
   * another connection when a reused one was gone), so it must return a fresh stream each time.
   */
  send(envelope: WireEnvelope, body: () => Readable): Promise<SmtpSent> {
    const mail: PooledMessage = {
      data: {},
      message: {
        // A fresh object for every try: the connection writes its progress onto the envelope it is
        // given (`mailError` above all, never cleared), so a message retried over a new connection
        // after a 421 to MAIL would fail again with the old connection's reply.
        getEnvelope: () => ({ ...envelope, to: [...envelope.to] }),
        messageId: () => '',
        getHeader: () => '',
        createReadStream: body,
      },
    };
    return new Promise<SmtpSent>((resolve, reject) => {
      this.pool.send(mail, (err, info) => (err ? reject(err) : resolve(info as SmtpSent)));
    });
  }

  /** Closes every connection; messages still queued in the pool fail. */
  close(): void {
    this.transport.close();
  }
}

function createTransport(settings: PoolSettings) {
  return nodemailer.createTransport({ pool: true, ...settings, logger: false, debug: false });
}

/** What nodemailer's SMTP pool reads of a message (smtp-pool/index.js and pool-resource.js). */
interface PooledMessage {
  data: Record<string, never>;
  message: {
    getEnvelope(): WireEnvelope;
    messageId(): string;
    getHeader(name: string): string;
    createReadStream(): Readable;
  };
}

interface SmtpPool {
  send(mail: PooledMessage, callback: (err: Error | null, info?: unknown) => void): boolean;
}

const addressNormalizer = new MimeNode();

/** The envelope sender as `sendMail` would put it on the wire; '' (the null sender) is `false`. */
export function wireSender(address: string): string | false {
  if (address === '') return false;
  return addressNormalizer.setEnvelope({ from: address, to: [] }).getEnvelope().from || address;
}

/** A recipient as `sendMail` would put it on the wire. */
export function wireRecipient(address: string): string {
  return addressNormalizer.setEnvelope({ to: [address] }).getEnvelope().to[0] ?? address;
}

export type { Address, MailboxAddress };

/** An address field (From, Sender) as nodemailer's parser reads it: mailboxes, and groups of them. */
export function parseAddressList(value: string): Address[] {
  return addressparser(value);
}
