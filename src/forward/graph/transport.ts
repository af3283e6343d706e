import type { GraphSmartHostConfig } from '../../config/schema';
import type { Outcome } from '../outcome';
import type { Envelope, MessageBody, SmartHostTransport } from '../smarthost';
import { loadCa } from '../smarthost-ca';
import { QueueFileError } from '../stored-bytes';
import { GraphCalls, GraphRefusal, userPath } from './api';
import { graphCopy, type GraphCopy } from './copy';
import { base64Length, DraftSender, REQUEST_LIMIT, TooLargeForGraph } from './draft';
import { HttpFailure, HttpsClient } from './http';
import { acceptedOutcome, failedAnswerOutcome } from './replies';
import { CredentialsRefused, GraphTokens, loadCredential } from './token';

/**
 * A smart host that is Microsoft 365 through Microsoft Graph: each send is one `sendMail` with the
 * message as MIME (base64, `Content-Type: text/plain`), or a draft with attachments uploaded in
 * parts when the message is larger than one request takes. Graph answers for the whole message, so
 * every recipient of a send gets the same outcome.
 *
 * It runs on the event loop, also when SMTP hosts run on the delivery thread: a send is a few HTTPS
 * requests (async I/O like the spool's), there is no connection pool worth a thread, and the token,
 * the throttle and the breaker it feeds all live where the decisions are made. Exchange Online's
 * own limits (30 messages a minute per mailbox) keep its share of the loop small.
 */
export class GraphSmartHost implements SmartHostTransport {
  readonly name: string;
  readonly relay: string;
  private readonly http: HttpsClient;
  private readonly tokens: GraphTokens;
  private readonly now: () => number;
  private inFlight = 0;
  private closing = false;

  constructor(
    private readonly config: GraphSmartHostConfig,
    now: () => number = Date.now,
  ) {
    this.name = config.name;
    const graph = new URL(config.graph_url);
    this.relay = `${config.name}[${graph.hostname}]:${graph.port || '443'}`;
    // Read now, so a missing or wrong file stops the start (or the reload) with its name.
    const ca = loadCa(config);
    const credential = loadCredential(config);
    this.http = new HttpsClient({
      ...(ca !== undefined ? { ca } : {}),
      verify: config.tls_verify,
      maxSockets: config.max_connections,
      connectTimeoutMs: config.connect_timeout,
      socketTimeoutMs: config.socket_timeout,
    });
    this.tokens = new GraphTokens(config, this.http, credential, now);
    this.now = now;
  }

  async send(envelope: Envelope, body: MessageBody): Promise<Map<string, Outcome>> {
    this.inFlight++;
    try {
      const outcome = await this.deliver(envelope, body);
      return new Map(envelope.to.map((address) => [address, outcome]));
    } finally {
      this.inFlight--;
      if (this.closing && this.inFlight === 0) this.http.close();
    }
  }

  close(): void {
    this.closing = true;
    if (this.inFlight === 0) this.http.close();
  }

  private async deliver(envelope: Envelope, body: MessageBody): Promise<Outcome> {
    try {
      const copy = await graphCopy(body, envelope.to);
      if (copy.byteLength > this.config.max_message_size) {
        return tooLarge(
          `${copy.byteLength} bytes is more than this smart host's max_message_size of ${this.config.max_message_size}`,
        );
      }
      const mailbox = this.config.send_as === 'from' ? (copy.from ?? this.config.mailbox) : this.config.mailbox;
      if (mailbox === undefined) {
        return {
          kind: 'permanent',
          reply: { code: 550, text: '550 5.1.7 No From address to send as (send_as: from, and no mailbox configured)' },
        };
      }
      const calls = new GraphCalls(this.http, this.tokens, this.config.graph_url);
      return await this.sendCopy(calls, mailbox, copy);
    } catch (err) {
      return this.failureOutcome(err);
    }
  }

  private async sendCopy(calls: GraphCalls, mailbox: string, copy: GraphCopy): Promise<Outcome> {
    if (base64Length(copy.byteLength) <= REQUEST_LIMIT) {
      try {
        const mime = (await copy.bytes()).toString('base64');
        return acceptedOutcome(
          await calls.call('POST', `${userPath(mailbox)}/sendMail`, 202, { contentType: 'text/plain', data: mime }),
        );
      } catch (err) {
        // A 413: this request was larger than Graph takes after all; the draft takes the message in parts.
        if (!(err instanceof GraphRefusal) || err.answer.status !== 413) throw err;
      }
    }
    return acceptedOutcome(await new DraftSender(calls, this.http, mailbox).send(copy));
  }

  private failureOutcome(err: unknown): Outcome {
    if (err instanceof GraphRefusal) return failedAnswerOutcome(err.answer, this.now());
    if (err instanceof TooLargeForGraph) return tooLarge(err.message);
    if (err instanceof CredentialsRefused) return { kind: 'transient', cause: 'credentials', detail: err.message };
    if (err instanceof QueueFileError) return { kind: 'transient', cause: 'spool', detail: err.message };
    if (err instanceof HttpFailure) {
      return { kind: 'transient', cause: err.kind === 'answer' ? 'reply' : err.kind, detail: err.message };
    }
    // An unknown error is a temporary one.
    return { kind: 'transient', cause: 'reply', detail: `Microsoft Graph send failed: ${(err as Error).message}` };
  }
}

/** Permanent for this host, as an SMTP host's 552 is: a host with a larger limit may take it. */
function tooLarge(why: string): Outcome {
  return { kind: 'permanent', reply: { code: 552, text: `552 5.3.4 Message too large for Microsoft Graph: ${why}` } };
}
