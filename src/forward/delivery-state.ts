import type { AttemptOutcome, RelayEvent } from '../observe/events';
import type { RecipientState } from '../spool/message';
import { describeOutcome, type Outcome } from './outcome';
import { recipientLimitTail } from './recipient-limit';

/**
 * One delivery attempt of one queued message as a pure state machine (the clock is an input).
 * dispatcher.ts is the loop that does its I/O: it asks `nextStep` what to do, does it (a smart
 * host's admission, a transaction), and feeds the result back; delivery-state-verdict.ts decides
 * what the attempt's end means for the spool.
 *
 *   beginAttempt ─▶ nextStep ──admit(host, n)──▶ afterAdmission ──transaction──▶ afterTransaction ─┐
 *                    ▲   │                            └──(refused, retired: next host)─────────────┤
 *                    │   └──settle──▶ settleAttempt                                                │
 *                    └─────────────────────────────────────────────────────────────────────────────┘
 *
 * Each recipient moves on its own (recipientAfter):
 *
 *   pending ──2xx──────────────────────────────────────────────▶ delivered
 *   pending ──5xx from its PERMANENT_AFTER_REJECTIONS-th host──▶ failed (rejected)
 *   pending ──5xx from an earlier host──▶ pending, refused by it (that host is never offered it again)
 *   pending ──4xx, connection, breaker, quota, retired host──▶ pending, deferred (Retry-After kept)
 *   pending ──452 behind recipients the host took──▶ pending (offered in the next transaction)
 *   pending ──settle: refused by some host, deferred by none──▶ failed (rejected)
 *   pending ──expire──▶ failed (expired)
 *   delivered, failed: final
 */

/** A recipient refused (5xx) by this many smart hosts has failed for good (the next host is tried once). */
export const PERMANENT_AFTER_REJECTIONS = 2;

/** What this attempt decided for a recipient. */
export type Decision = 'delivered' | 'rejected' | 'expired';

/** One recipient during one attempt: its state as the spool keeps it, and what the attempt learned. */
export interface RecipientInAttempt {
  readonly state: Readonly<RecipientState>;
  /** Set once this attempt delivered it or failed it; never set for one an earlier attempt decided. */
  readonly decided?: Decision;
  /** Some host deferred it or could not take it in this attempt: a refusal alone does not fail it yet. */
  readonly deferred: boolean;
  /** Some host was sent it in this attempt. */
  readonly offered: boolean;
  /** A host's Retry-After from an earlier attempt has not passed: no host is offered it in this one. */
  readonly held: boolean;
}

export type RecipientEvent =
  /** A host answered for it, or could not be reached while trying (a transient outcome), at `at`. */
  | { kind: 'reply'; host: string; outcome: Outcome; at: number }
  /** The host has taken as many recipients as one transaction holds: the 452 is recorded, nothing decided. */
  | { kind: 'over_limit'; host: string; outcome: Outcome }
  /** It was due for a host that could not take it now (breaker, quota, retired, down, our copy unreadable). */
  | { kind: 'not_reached' }
  /** Every host had its turn. */
  | { kind: 'settle' }
  /** The message has been queued for max_queue_lifetime. */
  | { kind: 'expire' };

export function beginRecipient(state: RecipientState, now: number): RecipientInAttempt {
  const waiting = state.status === 'pending' && state.notBefore !== undefined && state.notBefore > now;
  return { state: waiting ? state : withoutWait(state), deferred: waiting, offered: false, held: waiting };
}

/** The transition table of one recipient (see the diagram above). Delivered and failed recipients never move. */
export function recipientAfter(recipient: RecipientInAttempt, event: RecipientEvent): RecipientInAttempt {
  if (recipient.state.status !== 'pending') return recipient;
  switch (event.kind) {
    case 'reply':
      return afterReply(recipient, event.host, event.outcome, event.at);
    case 'over_limit':
      return {
        ...recipient,
        state: { ...recipient.state, response: describeOutcome(event.outcome), smarthost: event.host },
      };
    case 'not_reached':
      return recipient.deferred ? recipient : { ...recipient, deferred: true };
    case 'settle':
      // Refused by every host that could take it, and none merely deferred it: no later attempt can help.
      return (recipient.state.rejectedBy ?? []).length > 0 && !recipient.deferred
        ? fail(recipient, 'rejected')
        : recipient;
    case 'expire':
      return fail(recipient, 'expired');
  }
}

function afterReply(recipient: RecipientInAttempt, host: string, outcome: Outcome, at: number): RecipientInAttempt {
  const state: RecipientState = { ...recipient.state, response: describeOutcome(outcome), smarthost: host };
  switch (outcome.kind) {
    case 'delivered':
      return { ...recipient, state: { ...withoutWait(state), status: 'delivered' }, decided: 'delivered' };
    case 'transient':
      // Retry-After only grows within an attempt: the host that asked longest is the one that binds.
      if (outcome.retryAfterMs !== undefined) {
        state.notBefore = Math.max(state.notBefore ?? -Infinity, at + outcome.retryAfterMs);
      }
      return { ...recipient, state, deferred: true };
    case 'permanent': {
      const rejectedBy = [...(state.rejectedBy ?? []), host];
      const refused = { ...recipient, state: { ...state, rejectedBy, permanentRejections: rejectedBy.length } };
      return rejectedBy.length >= PERMANENT_AFTER_REJECTIONS ? fail(refused, 'rejected') : refused;
    }
  }
}

function fail(recipient: RecipientInAttempt, decided: 'rejected' | 'expired'): RecipientInAttempt {
  return { ...recipient, state: { ...recipient.state, status: 'failed' }, decided };
}

function withoutWait(state: RecipientState): RecipientState {
  if (state.notBefore === undefined) return state;
  const copy = { ...state };
  delete copy.notBefore;
  return copy;
}

/** A smart host that could not take a transaction now (breaker open, quota used up), and until when. */
export interface Skip {
  host: string;
  retryAt: number;
  detail: string;
}

export interface AttemptState {
  /** Every recipient of the message, in envelope order (delivered and failed ones ride along unchanged). */
  readonly recipients: readonly RecipientInAttempt[];
  /** The smart hosts of the route, in the order this attempt tries them. */
  readonly hosts: readonly string[];
  /** Index in `hosts` of the host whose turn it is; `hosts.length` once every host had its turn. */
  readonly turn: number;
  /** Recipients (indexes in `recipients`) still to offer the host whose turn it is, in RCPT order. */
  readonly queue: readonly number[];
  /** The host this attempt sent its last transaction to. */
  readonly lastHost: string | null;
  /** The message's attempt count; this attempt counts once it sends its first transaction. */
  readonly attempts: number;
  readonly skips: readonly Skip[];
  /** Hosts of this attempt's order that a reload retired while it ran. */
  readonly retired: readonly string[];
  /** Our own copy of the message could not be read: the next host would get the same file. */
  readonly unreadable: boolean;
}

export function beginAttempt(input: {
  recipients: readonly RecipientState[];
  hosts: readonly string[];
  attempts: number;
  now: number;
}): AttemptState {
  const recipients = input.recipients.map((recipient) => beginRecipient(recipient, input.now));
  const start: AttemptState = {
    recipients,
    hosts: input.hosts,
    turn: 0,
    queue: [],
    lastHost: null,
    attempts: input.attempts,
    skips: [],
    retired: [],
    unreadable: false,
  };
  return turnFrom(start, 0);
}

/** What the loop does next: ask the host whose turn it is to admit a transaction, or end the attempt. */
export type Step = { kind: 'admit'; host: string; recipients: number } | { kind: 'settle' };

export function nextStep(state: AttemptState): Step {
  if (state.turn >= state.hosts.length) return { kind: 'settle' };
  return { kind: 'admit', host: state.hosts[state.turn], recipients: state.queue.length };
}

/** What the host whose turn it is said to a transaction of up to `recipients` recipients. */
export type HostAdmission =
  /** It takes this many now: at most its `max_recipients`, fewer when a recipient quota is nearly used up. */
  | { kind: 'admitted'; recipients: number }
  /** Breaker open or quota used up, until `retryAt`. */
  | { kind: 'refused'; retryAt: number; detail: string }
  /** A reload removed or replaced it while this attempt ran: it is sent nothing more. */
  | { kind: 'retired' };

/** One transaction for the loop to send. */
export interface Transaction {
  host: string;
  /** Indexes in `recipients`, in RCPT order. */
  recipients: readonly number[];
  to: readonly string[];
  /** The host this attempt sent its previous transaction to, when it was another one. */
  failoverFrom: string | null;
}

export function afterAdmission(
  state: AttemptState,
  admission: HostAdmission,
): { state: AttemptState; transaction: Transaction | null } {
  const host = state.hosts[state.turn];
  switch (admission.kind) {
    case 'retired':
      // Its recipients wait for the next attempt, on the configuration the reload brought.
      return {
        state: turnFrom({ ...notReached(state, state.queue), retired: [...state.retired, host] }, state.turn + 1),
        transaction: null,
      };
    case 'refused': {
      const skip = { host, retryAt: admission.retryAt, detail: admission.detail };
      return {
        state: turnFrom({ ...notReached(state, state.queue), skips: [...state.skips, skip] }, state.turn + 1),
        transaction: null,
      };
    }
    case 'admitted': {
      const batch = state.queue.slice(0, admission.recipients);
      const recipients = [...state.recipients];
      for (const i of batch) recipients[i] = { ...recipients[i], offered: true };
      const transaction = {
        host,
        recipients: batch,
        to: batch.map((i) => recipients[i].state.address),
        failoverFrom: state.lastHost !== null && state.lastHost !== host ? state.lastHost : null,
      };
      const attempts = state.lastHost === null ? state.attempts + 1 : state.attempts;
      return {
        state: { ...state, recipients, queue: state.queue.slice(admission.recipients), lastHost: host, attempts },
        transaction,
      };
    }
  }
}

/** What a host says about a recipient it reported nothing for. */
const NO_OUTCOME: Outcome = { kind: 'transient', cause: 'reply', detail: 'no outcome reported for this recipient' };

export function outcomeFor(outcomes: ReadonlyMap<string, Outcome>, address: string): Outcome {
  return outcomes.get(address) ?? NO_OUTCOME;
}

/** Applies a transaction's outcomes (`at`: when they came) and gives the turn to whoever is next. */
export function afterTransaction(
  state: AttemptState,
  transaction: Transaction,
  outcomes: ReadonlyMap<string, Outcome>,
  at: number,
): AttemptState {
  const { host } = transaction;
  const outcomeOf = (i: number) => outcomeFor(outcomes, state.recipients[i].state.address);
  const replies = transaction.recipients.map(outcomeOf);
  const recipients = [...state.recipients];
  const reply = (i: number) => {
    recipients[i] = recipientAfter(recipients[i], { kind: 'reply', host, outcome: outcomeOf(i), at });
  };

  // Our own copy could not be read (a damaged queue file): the next host would be sent the same file,
  // so the attempt ends here. Every recipient still pending waits, also one this host was not
  // offered because it had refused it before: the next host has not had its turn, so that refusal
  // must not become a bounce.
  if (replies.every(isUnreadableCopy)) {
    transaction.recipients.forEach(reply);
    const everyone = recipients.map((_, i) => i);
    return turnFrom(notReached({ ...state, recipients, unreadable: true }, everyone), state.hosts.length);
  }

  // RFC 5321 §4.5.3.1.10: a host out of recipients for this transaction answers 452 to the rest of
  // the RCPTs, so a 452 tail behind recipients it took goes in the next transaction, not the next
  // attempt. Only the tail: a 452 with others taken after it is about that recipient (a full
  // mailbox), and at the head of the next transaction it is no longer a tail.
  const tookSome = replies.some((outcome) => outcome.kind === 'delivered');
  const overLimit = tookSome ? recipientLimitTail(transaction.recipients, outcomeOf) : [];
  const resent = new Set(overLimit);
  for (const i of transaction.recipients) {
    if (resent.has(i)) {
      recipients[i] = recipientAfter(recipients[i], { kind: 'over_limit', host, outcome: outcomeOf(i) });
    } else {
      reply(i);
    }
  }
  const queue = [...overLimit, ...state.queue];
  const next = { ...state, recipients, queue };

  // A host that answered none of this transaction's recipients itself (down, or deferring them all)
  // is not offered the rest of the envelope: the next host is, and this one may take them in a
  // later attempt.
  const answered = replies.some((outcome) => outcome.kind === 'delivered' || outcome.kind === 'permanent');
  if (!answered) return turnFrom(notReached(next, queue), state.turn + 1);
  return queue.length > 0 ? next : turnFrom(next, state.turn + 1);
}

/** The relay could not read its own queued copy: the spool's problem, whichever host was trying. */
export function isUnreadableCopy(outcome: Outcome): boolean {
  return outcome.kind === 'transient' && outcome.cause === 'spool';
}

function notReached(state: AttemptState, which: readonly number[]): AttemptState {
  const recipients = [...state.recipients];
  for (const i of which) recipients[i] = recipientAfter(recipients[i], { kind: 'not_reached' });
  return { ...state, recipients };
}

/** Gives the turn to host `turn`, or to the first host after it that has a recipient to offer. */
function turnFrom(state: AttemptState, turn: number): AttemptState {
  for (let next = turn; !state.unreadable && next < state.hosts.length; next++) {
    const host = state.hosts[next];
    // A host that refused a recipient for good is not offered it again: the next one is tried instead.
    const queue = state.recipients.flatMap((recipient, i) => (isDueFor(recipient, host) ? [i] : []));
    if (queue.length > 0) return { ...state, turn: next, queue };
  }
  return { ...state, turn: state.hosts.length, queue: [] };
}

function isDueFor(recipient: RecipientInAttempt, host: string): boolean {
  return recipient.state.status === 'pending' && !recipient.held && !(recipient.state.rejectedBy ?? []).includes(host);
}

/** The message as events name it. */
export interface MessageFacts {
  id: string;
  client: string;
  from: string;
  dsnOf?: string;
  receivedAt: number;
}

/** The fields every per-recipient outcome event carries. */
export function recipientEventBase(message: MessageFacts, to: string, attempts: number, now: number) {
  return {
    queueId: message.id,
    ...(message.dsnOf !== undefined ? { dsnOf: message.dsnOf } : {}),
    client: message.client,
    from: message.from,
    to,
    attempt: attempts,
    delayMs: now - message.receivedAt,
  };
}

/**
 * What a transaction reports, in order: `delivered` for each recipient the host took, then the
 * `attempt` itself. `state` is the attempt after the transaction (its count of attempts).
 */
export function transactionEvents(
  message: MessageFacts,
  state: AttemptState,
  transaction: Transaction,
  outcomes: ReadonlyMap<string, Outcome>,
  report: { relay: string; durationMs: number; at: number },
): RelayEvent[] {
  const events: RelayEvent[] = [];
  let accepted = 0;
  let unreachable = false;
  let transient = false;
  let response = '';
  for (const address of transaction.to) {
    const outcome = outcomeFor(outcomes, address);
    response = describeOutcome(outcome);
    if (outcome.kind === 'delivered') {
      accepted++;
      events.push({
        type: 'delivered',
        ...recipientEventBase(message, address, state.attempts, report.at),
        smarthost: transaction.host,
        relay: report.relay,
        response,
      });
    } else if (outcome.kind === 'transient') {
      transient = true;
      // The host was not the problem when the reply came from it, or when our own queue file failed.
      unreachable ||= outcome.cause !== 'reply' && outcome.cause !== 'spool';
    }
  }
  let outcome: AttemptOutcome = 'failed';
  if (accepted === transaction.to.length) outcome = 'delivered';
  else if (unreachable) outcome = 'unreachable';
  else if (transient) outcome = 'deferred';
  events.push({
    type: 'attempt',
    queueId: message.id,
    smarthost: transaction.host,
    relay: report.relay,
    outcome,
    durationMs: report.durationMs,
    recipients: [...transaction.to],
    response,
    accepted,
  });
  return events;
}
