import type { RetryConfig } from '../config/schema';
import type { RelayEvent } from '../observe/events';
import type { MessageMeta, RecipientState } from '../spool/message';
import {
  recipientAfter,
  recipientEventBase,
  type AttemptState,
  type MessageFacts,
  type RecipientInAttempt,
  type Skip,
} from './delivery-state';
import type { FailedRecipient } from './dsn';
import { parseReply, type SmtpReply } from './outcome';
import { firstDue, nextAttemptAt } from './plan';

/**
 * The end of an attempt, decided purely: which recipients fail now, which expire, what the DSN
 * reports, which events go out, and what the spool keeps. dispatcher.ts writes it in this order:
 *
 *   1. `untilReported` (only when a DSN is due): the attempt's deliveries on disk, its failures still
 *      pending, so a crash before the DSN repeats the DSN, never a delivery;
 *   2. the DSN about `failures`; then the `reported` events (bounced, expired);
 *   3. `end`: the message removed, moved to dead/, or saved for its next attempt (`deferred` events first).
 */

type DeadMark = NonNullable<MessageMeta['dead']>;

export type AttemptEnd =
  { kind: 'remove' } | { kind: 'dead'; dead: DeadMark } | { kind: 'retry'; at: number; deferred: RelayEvent[] };

export interface VerdictInput {
  message: MessageFacts;
  now: number;
  maxQueueLifetime: number;
  retry: RetryConfig;
  /** `relay` of each live smart host by name, as a reload left it (events name it). */
  relays: ReadonlyMap<string, string>;
  /** Host name of each configured smart host by name (the DSN's Remote-MTA). */
  remoteMtas: ReadonlyMap<string, string>;
  /** `relay` of the host this attempt sent its last transaction to. */
  lastRelay: string | null;
}

export interface Verdict {
  /** Every recipient as this attempt leaves it. */
  recipients: RecipientState[];
  /**
   * The spool's copy that keeps this attempt safe until its DSN is on disk: what it delivered is
   * saved, and what failed in it is still pending (with its refusing hosts), so a later attempt
   * fails and reports it again.
   */
  untilReported: RecipientState[];
  /** Recipients this attempt delivered: the attempt ends only once the spool knows them. */
  delivered: number;
  /** For the DSN: this attempt's refusals, then its expiries. */
  failures: FailedRecipient[];
  /** `bounced` and `expired`, reported once the DSN is on disk. */
  reported: RelayEvent[];
  /** Every recipient of the message was refused for good now: an inline client may hear this reply instead. */
  inlineRejection: SmtpReply | null;
  end: AttemptEnd;
}

export function settleAttempt(attempt: AttemptState, input: VerdictInput): Verdict {
  const { message, now } = input;
  const skips: Skip[] = [...attempt.skips];
  // Recipients no host was sent because a reload retired the hosts in the way: the next attempt, on
  // the new config, need not wait for a backoff. (A host that was tried sets the backoff of the
  // recipients it was sent, unless some were never offered.)
  const neverOffered = attempt.recipients.some((r) => r.state.status === 'pending' && !r.offered);
  if (attempt.retired.length > 0 && neverOffered) {
    const hosts = attempt.retired.join(', ');
    skips.push({ host: hosts, retryAt: now, detail: `${hosts} retired by a config reload` });
  }
  const skipSummary =
    skips.length > 0 ? `no smart host available: ${skips.map((s) => s.detail).join('; ')}` : 'no smart host available';
  const base = (recipient: RecipientState) => recipientEventBase(message, recipient.address, attempt.attempts, now);
  const relayOf = (name: string | undefined) => (name !== undefined ? input.relays.get(name) : undefined) ?? null;
  const failure = (state: RecipientState, reason: FailedRecipient['reason']): FailedRecipient => ({
    address: state.address,
    response: state.response,
    remoteMta: state.smarthost !== undefined ? input.remoteMtas.get(state.smarthost) : undefined,
    reason,
  });

  let recipients = attempt.recipients.map((r) => recipientAfter(r, { kind: 'settle' }));
  const rejected = recipients.filter((r) => r.decided === 'rejected').map((r) => r.state);
  const failures = rejected.map((state) => failure(state, 'rejected'));
  const reported: RelayEvent[] = rejected.map((state) => ({
    type: 'bounced',
    ...base(state),
    smarthost: state.smarthost ?? null,
    relay: relayOf(state.smarthost),
    response: state.response ?? '',
  }));
  const inlineRejection =
    rejected.length > 0 && rejected.length === recipients.length ? parseReply(rejected[0].response, 550) : null;

  const pending = recipients.filter((r) => r.state.status === 'pending').map((r) => r.state);
  const expired = pending.length > 0 && now - message.receivedAt >= input.maxQueueLifetime;
  if (expired) {
    recipients = recipients.map((r) => recipientAfter(r, { kind: 'expire' }));
    const age = Math.round((now - message.receivedAt) / 1000);
    for (const state of pending) {
      failures.push(failure(state, 'expired'));
      const response = `4.4.7 message expired after ${age}s in the queue; last: ${state.response ?? skipSummary}`;
      reported.push({ type: 'expired', ...base(state), smarthost: state.smarthost ?? null, relay: null, response });
    }
  }

  const verdict = {
    recipients: recipients.map((r) => r.state),
    untilReported: recipients.map(untilReported),
    delivered: recipients.filter((r) => r.decided === 'delivered').length,
    failures,
    reported,
    inlineRejection,
  };
  if (expired) {
    const dead: DeadMark = { reason: 'expired', at: now, response: pending[0].response ?? skipSummary };
    return { ...verdict, end: { kind: 'dead', dead } };
  }
  if (pending.length === 0) {
    const failed = verdict.recipients.find((r) => r.status === 'failed');
    const end: AttemptEnd = failed
      ? { kind: 'dead', dead: { reason: 'rejected', at: now, response: failed.response ?? '' } }
      : { kind: 'remove' };
    return { ...verdict, end };
  }

  // Never later than the message's expiry: a breaker cooldown, a quota window or a Retry-After longer
  // than what is left of max_queue_lifetime must not keep it queued past it.
  const tried = attempt.lastHost !== null;
  const planned = nextAttemptAt({
    now,
    tried,
    attempts: attempt.attempts,
    retry: input.retry,
    skippedUntil: skips.map((s) => s.retryAt),
  });
  const at = Math.min(
    message.receivedAt + input.maxQueueLifetime,
    firstDue(
      planned,
      pending.map((state) => state.notBefore),
    ),
  );
  const waiting = recipients.filter((r) => r.state.status === 'pending');
  const deferred: RelayEvent[] = waiting.map(({ state, held }) => ({
    type: 'deferred',
    ...base(state),
    smarthost: state.smarthost ?? null,
    relay: input.lastRelay,
    response: (tried || held ? state.response : undefined) ?? skipSummary,
    nextAttemptAt: at,
  }));
  return { ...verdict, end: { kind: 'retry', at, deferred } };
}

function untilReported(recipient: RecipientInAttempt): RecipientState {
  const failedNow = recipient.decided === 'rejected' || recipient.decided === 'expired';
  return failedNow ? { ...recipient.state, status: 'pending' } : recipient.state;
}
