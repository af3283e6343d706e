/**
 * The observability port: every stage reports what happened as one of these typed events and
 * `observe/` turns it into metrics, a log line and a JSONL event. Label values are config names and
 * the fixed enums below, never free text.
 */

export type RejectReason =
  | 'access_denied'
  | 'auth_required'
  | 'sender_not_allowed'
  | 'recipient_not_allowed'
  | 'too_big'
  | 'too_many_recipients'
  | 'rate_limited'
  | 'content_rule'
  | 'suppressed'
  | 'smuggling'
  | 'storage'
  /** An envelope address with a quoted local part or a comment (501 5.1.3 / 5.1.7): see message/plain-address.ts. */
  | 'address_syntax'
  /** A header block out of the bounds of message/header-limits.ts (a field too long, too many fields): 550 5.6.0. */
  | 'header_limit'
  // DKIM signing failed at the end of DATA (451: the client retries rather than the mail leaving unsigned).
  | 'signing'
  /** Inline delivery: every smart host refused the message for good, and the client gets that 5xx. */
  | 'smarthost_rejected'
  /** A session dropped by a deadline (421): a command line not finished in time, or a stranger not authenticated. */
  | 'timeout';

export type AttemptOutcome = 'delivered' | 'deferred' | 'failed' | 'unreachable';

/** The client label for sessions that were never attributed to a configured client. */
export const UNKNOWN_CLIENT = '(unknown)';

export type RelayEvent =
  | { type: 'connection'; listener: string; remote: string; result: 'accepted' | 'refused' }
  | { type: 'connection_closed'; listener: string }
  | { type: 'auth'; listener: string; remote: string; username: string; result: 'success' | 'failure' }
  /**
   * A failed AUTH answered `delayMs` late: by the per-address budget (`limits.auth_failures`) or the
   * per-username one (`limits.auth_failures_per_username`). Refusals are `rate_limited` events.
   */
  | { type: 'auth_delayed'; scope: 'address' | 'username'; remote: string; delayMs: number }
  | {
      type: 'received';
      queueId: string;
      client: string;
      listener: string;
      remote: string;
      from: string;
      to: string[];
      size: number;
      /** The Message-ID the message leaves with (the client's, or one re-enveloping added), for `smarthop trace`. */
      messageId?: string;
      /**
       * End of DATA's checks to durable in queue/ (last write, fsync, rename, directory fsync): what the 250 waited for
       * on the disk.
       */
      commitMs: number;
    }
  | {
      type: 'rejected';
      client: string;
      listener: string;
      remote: string;
      reason: RejectReason;
      response: string;
      from?: string;
      to?: string;
    }
  | { type: 'line_endings_normalized'; client: string }
  /** A rate limit or address guard said no; `limit` is a config-derived label such as `messages_1m`. */
  | { type: 'rate_limited'; client: string; limit: string }
  | {
      type: 'config_reload';
      trigger: 'SIGHUP' | 'api';
      result: 'success' | 'failure';
      /** Why the new config was refused (failure), with YAML paths. */
      errors: string[];
      /** Top-level sections that now run with new values (success). */
      changed: string[];
      /** Keys that changed in the file but only take effect after a restart (success). */
      restartRequired: string[];
    }
  | {
      type: 'attempt';
      queueId: string;
      smarthost: string;
      relay: string;
      outcome: AttemptOutcome;
      durationMs: number;
      recipients: string[];
      /** How many of `recipients` the smart host accepted in this transaction. */
      accepted: number;
      response: string;
    }
  | { type: 'failover'; queueId: string; from: string; to: string }
  /**
   * Fleet-wide counters changed store: `local_fallback` when Redis became unreachable (each limit is
   * then enforced by this relay at 1/fleetSize), `redis` when it is back. `location` is host:port, never credentials.
   */
  | { type: 'state_backend'; backend: 'redis' | 'local_fallback'; location: string; fleetSize: number; detail: string }
  /** A smart host's circuit breaker changed state (`until`: end of the cooldown when it opened). */
  | {
      type: 'breaker';
      smarthost: string;
      relay: string;
      state: 'closed' | 'open' | 'half_open';
      failures: number;
      until: number | null;
    }
  /**
   * A smart host asked to be sent nothing until `until` (HTTP 429/503 with `Retry-After`): it is
   * skipped for every message until then, and the route's next host takes them.
   */
  | { type: 'throttled'; smarthost: string; relay: string; until: number; detail: string }
  /**
   * A smart host (or the token endpoint it trusts) refused this relay's credentials: an admin's
   * mistake. The host is marked down at once (its breaker opens until `until`) instead of retried.
   */
  | { type: 'credentials_refused'; smarthost: string; relay: string; detail: string; until: number | null }
  /** A delivery status notification about `original` was queued as `queueId`. */
  | { type: 'dsn'; queueId: string; original: string; to: string[]; recipients: string[] }
  | (RecipientOutcomeFields & { type: 'delivered'; smarthost: string; relay: string })
  | (RecipientOutcomeFields & { type: 'deferred'; nextAttemptAt: number })
  | (RecipientOutcomeFields & { type: 'bounced' })
  | (RecipientOutcomeFields & { type: 'expired' });

/** What every per-recipient outcome (delivered, deferred, bounced, expired) says. */
interface RecipientOutcomeFields {
  queueId: string;
  /** Set when the message is a DSN: the queue id of the message it reports on. */
  dsnOf?: string;
  client: string;
  from: string;
  to: string;
  smarthost: string | null;
  relay: string | null;
  response: string;
  attempt: number;
  delayMs: number;
}

export interface Observer {
  emit(event: RelayEvent): void;
}
