import type { ClientActivity } from './activity';
import type { EventOutput } from './event-file';
import type { Observer, RelayEvent } from './events';
import type { Logger } from './logger';
import type { Metrics } from './metrics';
import type { RecentEvents } from './recent-events';

/** The event types that the event contract (docs/architecture.md) makes one JSON event each (file and webhook). */
const OUTCOME_TYPES = new Set(['received', 'rejected', 'delivered', 'deferred', 'bounced', 'expired']);
/**
 * What `smarthop trace` needs on top of the outcomes to tell a message's whole story: every
 * smart-host transaction (failovers included) and the DSN a message caused. Only outputs that ask
 * for them get them (the events file); the webhook keeps the outcome types its receivers expect.
 */
const TRACE_TYPES = new Set(['attempt', 'dsn']);

export interface ObserverDeps {
  metrics: Metrics;
  logger: Logger;
  /** Where outcome events go (events.jsonl, webhook); none when `events` is not configured. */
  outputs: readonly EventOutput[];
  /** The last outcome and trace events, for the status page (they take what the events file takes). */
  recent?: RecentEvents;
  /** Per-client traffic of the last hour, for `smarthop status`. */
  activity: ClientActivity;
  now?: () => number;
}

/**
 * Fans every stage event out to metrics, one human log line, and the JSON event outputs. Log lines
 * carry envelope data and replies, never message bodies or secrets: events simply have no field for them.
 */
export class RelayObserver implements Observer {
  private readonly metrics: Metrics;
  private readonly logger: Logger;
  private readonly now: () => number;

  constructor(private readonly deps: ObserverDeps) {
    this.metrics = deps.metrics;
    this.logger = deps.logger;
    this.now = deps.now ?? Date.now;
  }

  emit(event: RelayEvent): void {
    this.metrics.record(event);
    this.log(event);
    if (event.type === 'received') this.deps.activity.record(event.client, event.to.length, this.now());
    if (OUTCOME_TYPES.has(event.type) || TRACE_TYPES.has(event.type)) this.deps.recent?.record(event);
    if (OUTCOME_TYPES.has(event.type) && this.deps.outputs.length > 0) {
      const json = toJsonEvent(event);
      for (const output of this.deps.outputs) output.write(json);
    } else if (TRACE_TYPES.has(event.type) && this.deps.outputs.some((output) => output.traceEvents)) {
      const json = toJsonEvent(event);
      for (const output of this.deps.outputs) if (output.traceEvents) output.write(json);
    }
  }

  async close(): Promise<void> {
    await Promise.all(this.deps.outputs.map((output) => output.close()));
  }

  /**
   * The events of every message (received, delivered, attempt, connection) build their line only
   * when its level is logged: otherwise each message builds lines and fields that pino then drops.
   */
  private log(event: RelayEvent): void {
    switch (event.type) {
      case 'received':
        if (!this.logger.isLevelEnabled('info')) return;
        this.logger.info(
          {
            event: event.type,
            queue_id: event.queueId,
            client: event.client,
            listener: event.listener,
            remote: event.remote,
          },
          `${event.queueId}: client=${event.client}[${event.remote}], listener=${event.listener}, ` +
            `from=<${event.from}>, size=${event.size}, nrcpt=${event.to.length} (queued)`,
        );
        return;
      case 'rejected':
        this.logger.info(
          {
            event: event.type,
            client: event.client,
            reason: event.reason,
            remote: event.remote,
            listener: event.listener,
          },
          `NOQUEUE: reject: client=${event.client}[${event.remote}], listener=${event.listener}` +
            (event.from !== undefined ? `, from=<${event.from}>` : '') +
            (event.to !== undefined ? `, to=<${event.to}>` : '') +
            `, reason=${event.reason} (${event.response})`,
        );
        return;
      case 'delivered':
      case 'deferred':
      case 'bounced':
      case 'expired': {
        const level = event.type === 'delivered' ? 'info' : 'warn';
        if (!this.logger.isLevelEnabled(level)) return;
        const status = event.type === 'delivered' ? 'sent' : event.type;
        const relay = event.relay ?? 'none';
        this.logger[level](
          {
            event: event.type,
            queue_id: event.queueId,
            client: event.client,
            smarthost: event.smarthost,
            attempt: event.attempt,
          },
          `${event.queueId}: to=<${event.to}>, relay=${relay}, delay=${(event.delayMs / 1000).toFixed(2)}, ` +
            `attempt=${event.attempt}, status=${status} (${event.response})`,
        );
        return;
      }
      case 'failover':
        this.logger.warn(
          { event: event.type, queue_id: event.queueId, from: event.from, to: event.to },
          `${event.queueId}: failover from ${event.from} to ${event.to}`,
        );
        return;
      case 'breaker': {
        const what =
          event.state === 'open'
            ? `circuit opened after ${event.failures} consecutive connection failure(s); ` +
              `skipped until ${new Date(event.until ?? 0).toISOString()}`
            : event.state === 'half_open'
              ? 'cooldown over, one probe delivery decides'
              : 'circuit closed, delivering again';
        this.logger[event.state === 'closed' ? 'info' : 'warn'](
          { event: event.type, smarthost: event.smarthost, state: event.state },
          `smart host ${event.relay}: ${what}`,
        );
        return;
      }
      case 'throttled': {
        const until = new Date(event.until).toISOString();
        this.logger.warn(
          { event: event.type, smarthost: event.smarthost, until },
          `smart host ${event.relay}: asked to wait until ${until}, skipped until then (${event.detail})`,
        );
        return;
      }
      case 'credentials_refused': {
        const until = event.until === null ? '' : `, marked down until ${new Date(event.until).toISOString()}`;
        const advice = 'fix them and reload (smarthop doctor explains)';
        this.logger.error(
          { event: event.type, smarthost: event.smarthost },
          `smart host ${event.relay}: credentials refused${until}; ${advice}: ${event.detail}`,
        );
        return;
      }
      case 'dsn':
        this.logger.info(
          { event: event.type, queue_id: event.original, dsn_id: event.queueId },
          `${event.original}: sender non-delivery notification: ${event.queueId} ` +
            `(to=<${event.to.join('>,<')}> about <${event.recipients.join('>,<')}>)`,
        );
        return;
      case 'auth':
        if (event.result === 'failure') {
          this.logger.warn(
            { event: event.type, remote: event.remote, listener: event.listener, username: event.username },
            `authentication failed for username ${JSON.stringify(event.username)} from [${event.remote}]`,
          );
        }
        return;
      case 'auth_delayed':
        this.logger.info(
          { event: event.type, remote: event.remote, scope: event.scope },
          `failed authentication from [${event.remote}] answered ${event.delayMs} ms late (${event.scope} budget)`,
        );
        return;
      case 'connection':
        if (!this.logger.isLevelEnabled('debug')) return;
        this.logger.debug(
          { event: event.type, remote: event.remote, listener: event.listener, result: event.result },
          `connect from [${event.remote}] on ${event.listener}: ${event.result}`,
        );
        return;
      case 'attempt':
        if (!this.logger.isLevelEnabled('debug')) return;
        this.logger.debug(
          { event: event.type, queue_id: event.queueId, smarthost: event.smarthost, outcome: event.outcome },
          `${event.queueId}: attempt via ${event.relay}: ${event.outcome} (${event.response})`,
        );
        return;
      case 'config_reload':
        if (event.result === 'failure') {
          this.logger.error(
            { event: event.type, trigger: event.trigger, result: event.result, errors: event.errors },
            `config reload (${event.trigger}) refused, still running the previous configuration: ` +
              `${event.errors.join('; ')}`,
          );
        } else {
          const now =
            event.changed.length > 0
              ? `now running new ${event.changed.join(', ')}`
              : 'nothing that applies at runtime changed';
          this.logger.info(
            {
              event: event.type,
              trigger: event.trigger,
              result: event.result,
              changed: event.changed,
              restart_required: event.restartRequired,
            },
            `config reloaded (${event.trigger}): ${now}`,
          );
          if (event.restartRequired.length > 0) {
            this.logger.warn(
              { event: event.type, restart_required: event.restartRequired },
              `config reload: restart required for ${event.restartRequired.join(', ')} ` +
                '(still running the previous values)',
            );
          }
        }
        return;
      case 'state_backend':
        if (event.backend === 'local_fallback') {
          this.logger.warn(
            { event: event.type, backend: event.backend, redis: event.location },
            `state: Redis at ${event.location} unreachable (${event.detail}): rate limits, quotas and lockouts ` +
              `are now counted by this relay alone, each at 1/${event.fleetSize} of the fleet limit, ` +
              'until Redis answers again',
          );
        } else {
          this.logger.info(
            { event: event.type, backend: event.backend, redis: event.location },
            `state: Redis at ${event.location} ${event.detail}: rate limits, quotas and lockouts are fleet-wide again`,
          );
        }
        return;
      case 'rate_limited':
        this.logger.warn(
          { event: event.type, client: event.client, limit: event.limit },
          `rate limit ${event.limit} reached for client=${event.client}`,
        );
        return;
      case 'line_endings_normalized':
      case 'connection_closed':
        return;
    }
  }
}

/** `at`: when the event was emitted (ms since the epoch). */
export function toJsonEvent(event: RelayEvent, at = Date.now()): Record<string, unknown> {
  const ts = new Date(at).toISOString();
  switch (event.type) {
    case 'received':
      return {
        ts,
        type: event.type,
        queue_id: event.queueId,
        client: event.client,
        from: event.from,
        to: event.to,
        smarthost: null,
        response: null,
        attempt: 0,
        size: event.size,
        message_id: event.messageId ?? null,
        remote: event.remote,
        listener: event.listener,
      };
    case 'rejected':
      return {
        ts,
        type: event.type,
        queue_id: null,
        client: event.client,
        from: event.from ?? null,
        to: event.to ?? null,
        smarthost: null,
        response: event.response,
        attempt: 0,
        reason: event.reason,
        remote: event.remote,
        listener: event.listener,
      };
    case 'attempt':
      // One smart-host transaction: `to` are the recipients it carried, `accepted` how many the host took.
      return {
        ts,
        type: event.type,
        queue_id: event.queueId,
        client: null,
        from: null,
        to: event.recipients,
        smarthost: event.smarthost,
        response: event.response,
        attempt: null,
        outcome: event.outcome,
        accepted: event.accepted,
        relay: event.relay,
        duration_ms: Math.round(event.durationMs),
      };
    case 'dsn':
      // queue_id is the message the DSN reports on (as in the log line); dsn_id is the DSN's own queue id.
      return {
        ts,
        type: event.type,
        queue_id: event.original,
        client: null,
        from: '',
        to: event.to,
        smarthost: null,
        response: null,
        attempt: null,
        dsn_id: event.queueId,
        recipients: event.recipients,
      };
    case 'delivered':
    case 'deferred':
    case 'bounced':
    case 'expired':
      // A DSN's own outcomes name the message it reports on, so events.jsonl alone links the two.
      return {
        ts,
        type: event.type,
        queue_id: event.queueId,
        client: event.client,
        from: event.from,
        to: event.to,
        smarthost: event.smarthost,
        response: event.response,
        attempt: event.attempt,
        ...(event.dsnOf !== undefined ? { dsn_of: event.dsnOf } : {}),
      };
    default:
      return { ts, type: event.type };
  }
}
