/** What one smart host said about one recipient (errors crossing a stage boundary are values, not exceptions). */

export interface SmtpReply {
  code: number;
  text: string;
}

/**
 * `spool`: this relay could not read the queued message (never held against the smart host).
 * `credentials`: the smart host (or the token endpoint it trusts) refused this relay's credentials,
 * an admin's mistake that no retry mends: the host is marked down at once.
 */
export type TransientCause = 'connect' | 'tls' | 'timeout' | 'reply' | 'quota' | 'breaker' | 'spool' | 'credentials';

export type Outcome =
  | { kind: 'delivered'; reply: SmtpReply }
  | {
      kind: 'transient';
      cause: TransientCause;
      reply?: SmtpReply;
      detail: string;
      /**
       * The host asked not to be sent this recipient again for this long (an HTTP `Retry-After`):
       * the recipient's next attempt comes no earlier, whatever the backoff says. Other hosts may
       * still take it in the same attempt (failover is not a retry).
       */
      retryAfterMs?: number;
    }
  | { kind: 'permanent'; reply: SmtpReply };

/** `250 2.0.0 Ok` or the connection error, as the log line and the event show it. */
export function describeOutcome(outcome: Outcome): string {
  if (outcome.kind === 'transient' && !outcome.reply) return outcome.detail;
  const reply = outcome.reply as SmtpReply;
  return reply.text;
}

export function parseReply(response: string | undefined, fallbackCode: number): SmtpReply {
  const text = (response ?? '').trim();
  const match = /^(\d{3})/.exec(text);
  return { code: match ? Number(match[1]) : fallbackCode, text: text === '' ? String(fallbackCode) : text };
}
