import nodemailer from 'nodemailer';
import type { NodemailerError } from 'nodemailer/lib/errors';
import type { SmartHostConfig } from '../config/schema';
import { parseReply, type Outcome, type TransientCause } from './outcome';

export interface Envelope {
  /** '' is the null sender. */
  from: string;
  to: string[];
}

export interface SmartHost {
  readonly name: string;
  /** `primary[smtp.provider.example]:587`, as log lines name the relay. */
  readonly relay: string;
  available(now: number): boolean;
  send(envelope: Envelope, bodyPath: string): Promise<Map<string, Outcome>>;
  /** What the host can tell about its breaker and quotas (see smartHostStatus); absent means nothing beyond available(). */
  details?(now: number): SmartHostDetails;
  /** Closes the pool once the sends under way have finished (a reload retires hosts this way). */
  close(): void;
}

export interface QuotaStatus {
  /** The window as configured (`1m`, `1d`): a config value, so a bounded metric label. */
  window: string;
  remaining: number;
}

export interface SmartHostDetails {
  breaker?: 'closed' | 'open' | 'half_open';
  quota?: QuotaStatus[];
}

/**
 * One configured smart host behind a pooled nodemailer transport: connections are reused across
 * messages and bounded by `max_connections`. The stored file is sent as it is (nodemailer dot-stuffs
 * it); the envelope is explicit, so nothing in the headers can redirect the message.
 */
export class NodemailerSmartHost implements SmartHost {
  readonly name: string;
  readonly relay: string;
  private readonly transport: ReturnType<typeof createPool>;
  private inFlight = 0;
  private closing = false;

  constructor(config: SmartHostConfig, heloName: string) {
    this.name = config.name;
    this.relay = `${config.name}[${config.host}]:${config.port}`;
    this.transport = createPool(config, heloName);
  }

  available(_now: number): boolean {
    return true;
  }

  async send(envelope: Envelope, bodyPath: string): Promise<Map<string, Outcome>> {
    this.inFlight++;
    try {
      return await this.transact(envelope, bodyPath);
    } finally {
      this.inFlight--;
      if (this.closing && this.inFlight === 0) this.transport.close();
    }
  }

  private async transact(envelope: Envelope, bodyPath: string): Promise<Map<string, Outcome>> {
    const outcomes = new Map<string, Outcome>();
    try {
      const info = await this.transport.sendMail({ envelope: { from: envelope.from, to: envelope.to }, raw: { path: bodyPath } });
      const reply = parseReply(info.response, 250);
      const rejectedErrors = (info as { rejectedErrors?: NodemailerError[] }).rejectedErrors ?? [];
      for (const err of rejectedErrors) if (err.recipient) outcomes.set(err.recipient, replyOutcome(err));
      for (const address of envelope.to) if (!outcomes.has(address)) outcomes.set(address, { kind: 'delivered', reply });
    } catch (caught) {
      const err = caught as NodemailerError;
      for (const rejected of err.rejectedErrors ?? []) if (rejected.recipient) outcomes.set(rejected.recipient, replyOutcome(rejected));
      // Only a reply to the transaction itself speaks about the recipients; a failed AUTH (535) or
      // STARTTLS is the smart host's problem and must never bounce mail.
      const aboutTransaction = (err.code === 'EENVELOPE' || err.code === 'EMESSAGE') && err.responseCode !== undefined;
      const whole = aboutTransaction ? replyOutcome(err) : connectionOutcome(err);
      for (const address of envelope.to) if (!outcomes.has(address)) outcomes.set(address, whole);
    }
    return outcomes;
  }

  close(): void {
    this.closing = true;
    // nodemailer's close() fails messages still queued in the pool; wait for ours to finish instead.
    if (this.inFlight === 0) this.transport.close();
  }
}

function createPool(config: SmartHostConfig, heloName: string) {
  return nodemailer.createTransport({
    pool: true,
    host: config.host,
    port: config.port,
    name: heloName,
    secure: config.tls === 'implicit',
    requireTLS: config.tls === 'starttls',
    ignoreTLS: config.tls === 'none',
    tls: { rejectUnauthorized: config.tls_verify, servername: config.host },
    auth: config.auth ? { user: config.auth.user, pass: config.auth.pass } : undefined,
    maxConnections: config.max_connections,
    maxMessages: 1000,
    connectionTimeout: config.connect_timeout,
    greetingTimeout: config.connect_timeout,
    socketTimeout: config.socket_timeout,
    logger: false,
    debug: false,
  });
}

/** A reply from the smart host: 5xx is permanent (nodemailer already treats 503 as transient). */
function replyOutcome(err: NodemailerError): Outcome {
  const reply = parseReply(err.response, err.responseCode ?? 451);
  if (err.permanent) return { kind: 'permanent', reply };
  return { kind: 'transient', cause: 'reply', reply, detail: reply.text };
}

/** No reply to go by: an unknown error is a temporary one (maddy's rule). */
function connectionOutcome(err: NodemailerError): Outcome {
  let cause: TransientCause = 'connect';
  if (err.code === 'ETLS' || err.code === 'EREQUIRETLS') cause = 'tls';
  else if (err.code === 'ETIMEDOUT') cause = 'timeout';
  const code = err.originalCode ?? err.code ?? 'ERROR';
  return { kind: 'transient', cause, detail: `${code}: ${err.message}` };
}
