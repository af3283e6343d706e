import type { RelayConfig } from '../config/schema';
import type { AttemptOutcome, Observer, RelayEvent } from '../observe/events';
import { messageBytes, pendingRecipients, type MessageMeta, type RecipientState } from '../spool/message';
import type { AttemptResult } from '../spool/scheduler';
import type { SpoolStore } from '../spool/store';
import type { Bouncer } from './bounce';
import type { FailedRecipient } from './dsn';
import { describeOutcome, parseReply, type Outcome, type SmtpReply } from './outcome';
import { nextAttemptAt, orderSmartHosts, type Rotation } from './plan';
import { recipientLimitTail } from './recipient-limit';
import type { SmartHost } from './smarthost';

/** A recipient refused (5xx) by this many smart hosts has failed for good (the next host is tried once). */
const PERMANENT_AFTER_REJECTIONS = 2;

/** The part of the running configuration delivery reads; a reload swaps it between attempts. */
export interface DeliveryConfig {
  config: Pick<RelayConfig, 'routes' | 'smarthosts' | 'spool'>;
  smarthosts: ReadonlyMap<string, SmartHost>;
}

export interface DispatcherDeps {
  store: SpoolStore;
  /** Read once per attempt, so one attempt sees one consistent configuration. */
  current: () => DeliveryConfig;
  observer: Observer;
  bouncer: Bouncer;
  /** A message the relay generated (a DSN) is committed to the spool and needs scheduling. */
  onGenerated: (meta: MessageMeta) => void;
  now?: () => number;
}

/**
 * Inline delivery: the SMTP client is still waiting for the reply to its DATA. When every
 * recipient failed for good, the dispatcher asks to give the client that verdict instead of a DSN;
 * the answer is synchronous, so the inline timeout cannot answer 250 in between.
 */
export interface InlineClaim {
  claimRejection(): boolean;
}

/** `rejected`: the inline client gets this reply, and the message is gone from the spool (no DSN). */
export type DispatchResult = { kind: 'done'; rejected?: SmtpReply } | Extract<AttemptResult, { kind: 'retry' }>;

interface RecipientAttempt {
  state: RecipientState;
  /** Some host deferred it or could not take it (connection, 4xx, breaker, quota) in this attempt. */
  sawTransient: boolean;
  /** Failed for good in this attempt (reported in this attempt's DSN). */
  failedNow: boolean;
}

interface Skip {
  host: string;
  retryAt: number;
  detail: string;
}

/**
 * One delivery attempt of one queued message: the smart hosts of its route in order, per
 * recipient, until each recipient is delivered, failed for good, or left for a later attempt.
 * State is read from and written back to the spool; only the hosts' rotation is kept in memory.
 */
export class Dispatcher {
  private readonly now: () => number;
  private readonly rotations = new Map<string, Rotation>();
  /** Outcomes the spool could not take yet (see keepUnsaved): bounded by the messages in the queue. */
  private readonly unsaved = new Map<string, MessageMeta>();

  constructor(private readonly deps: DispatcherDeps) {
    this.now = deps.now ?? Date.now;
  }

  async attempt(id: string, inline?: InlineClaim): Promise<DispatchResult> {
    const { store } = this.deps;
    const current = this.deps.current();
    let meta: MessageMeta;
    let message: Buffer | undefined;
    try {
      const unsaved = this.unsaved.get(id);
      if (unsaved) meta = unsaved;
      else ({ meta, message } = await store.readForDelivery(id));
    } catch (err) {
      // Deleted or held by an admin between being scheduled and now: nothing left to attempt here.
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { kind: 'done' };
      throw err;
    }
    const statusAtStart = new Map(meta.recipients.map((r) => [r, r.status]));
    const recipients: RecipientAttempt[] = pendingRecipients(meta).map((state) => ({ state, sawTransient: false, failedNow: false }));
    const skips: Skip[] = [];
    /** Hosts of this attempt's order that a reload retired while it ran. */
    const retired: string[] = [];
    const skipIfRetired = (host: SmartHost, targets: readonly RecipientAttempt[]): boolean => {
      if (!this.isRetired(host)) return false;
      retired.push(host.name);
      for (const target of targets) target.sawTransient = true;
      return true;
    };
    let lastHost: SmartHost | null = null;
    /** Recipients some host was sent in this attempt (a retired host may leave others never offered). */
    const offered = new Set<RecipientAttempt>();

    hosts: for (const host of this.orderedHosts(current, meta.route)) {
      // A host that refused a recipient for good is not offered it again: the next one is tried instead.
      let targets = recipients.filter((r) => r.state.status === 'pending' && !(r.state.rejectedBy ?? []).includes(host.name));
      // One transaction per admission: a host admits at most its `max_recipients`, and a recipient
      // quota may admit fewer, so a big envelope goes to the same host over several transactions.
      while (targets.length > 0) {
        // A reload while this attempt ran may have retired the host (removed, or replaced by a changed
        // definition): it is sent nothing more, and its recipients wait for the next attempt. Checked
        // again after admission, which may wait on shared counters.
        if (skipIfRetired(host, targets)) continue hosts;
        const admission = await host.admit(targets.length, this.now());
        if (!admission.ok) {
          skips.push({ host: host.name, retryAt: admission.retryAt, detail: admission.detail });
          for (const target of targets) target.sawTransient = true;
          continue hosts;
        }
        if (skipIfRetired(host, targets)) continue hosts;
        const batch = targets.slice(0, admission.recipients);
        targets = targets.slice(admission.recipients);
        if (lastHost === null) meta.attempts += 1;
        else if (lastHost !== host) this.deps.observer.emit({ type: 'failover', queueId: id, from: lastHost.name, to: host.name });
        lastHost = host;
        for (const recipient of batch) offered.add(recipient);
        const sawTransientBefore = new Map(batch.map((r) => [r, r.sawTransient]));
        const attemptStart = this.now();
        const body = { path: store.bodyPath(id), size: messageBytes(meta), ...(meta.prependHeaders ? { prependHeaders: meta.prependHeaders } : {}), ...(message ? { message } : {}) };
        const outcomes = await host.send({ from: meta.from, to: batch.map((r) => r.state.address) }, body);
        this.recordAttempt(meta, host, batch, outcomes, this.now() - attemptStart);
        // Our own copy could not be read (a damaged queue file): the next host would be sent the same
        // file, so this attempt ends here and the message waits for its next one. Every recipient
        // still pending waits with it, also one this host was not offered because it had refused it
        // before: the next host has not had its turn, so that refusal must not become a bounce.
        if (batch.every((r) => isUnreadableCopy(outcomes.get(r.state.address)))) {
          for (const recipient of recipients) if (recipient.state.status === 'pending') recipient.sawTransient = true;
          break hosts;
        }
        // RFC 5321 §4.5.3.1.10: a host out of recipients for this transaction answers 452 to the rest
        // of the RCPTs, so a 452 tail behind recipients it took goes in the next transaction, not the
        // next attempt. Only the tail: a 452 with others taken after it is about that recipient (a
        // full mailbox), and at the head of the next transaction it is no longer a tail.
        if (batch.some((r) => r.state.status === 'delivered')) {
          const overLimit = recipientLimitTail(batch, (r) => outcomes.get(r.state.address));
          for (const recipient of overLimit) {
            // Not deferred yet: its next transaction decides (a 5xx there may still fail it for good now).
            recipient.sawTransient = sawTransientBefore.get(recipient) ?? false;
          }
          targets = [...overLimit, ...targets];
        }
        // A host that answered none of this transaction's recipients itself (down, or deferring them
        // all) is not offered the rest of the envelope: the next host is, and this one may take them
        // in a later attempt.
        if (!batch.some((r) => r.state.status === 'delivered' || (r.state.rejectedBy ?? []).includes(host.name))) {
          for (const target of targets) target.sawTransient = true;
          continue hosts;
        }
      }
    }

    // Recipients no host was sent because a reload retired the hosts in the way: the next attempt, on
    // the new config, need not wait for a backoff. (A host that was tried sets the backoff of the
    // recipients it was sent, unless some were never offered.)
    const neverOffered = recipients.some((r) => r.state.status === 'pending' && !offered.has(r));
    if (retired.length > 0 && neverOffered) skips.push({ host: retired.join(', '), retryAt: this.now(), detail: `${retired.join(', ')} retired by a config reload` });

    try {
      const result = await this.settle(current.config, meta, recipients, lastHost, skips, inline);
      this.unsaved.delete(id);
      return result;
    } catch (err) {
      await this.keepUnsaved(meta, statusAtStart);
      throw err;
    }
  }

  /**
   * The spool could not take this attempt's outcome (a full disk while writing the DSN or the new
   * state). Recipients delivered in it must never be sent again, so their state is kept in memory
   * for the next attempt until it can be written; recipients that failed in it go back to pending,
   * so they are bounced again next time (their 5xx hosts are remembered). An unknown error is a
   * temporary one: the scheduler tries the message again later.
   */
  private async keepUnsaved(meta: MessageMeta, statusAtStart: ReadonlyMap<RecipientState, RecipientState['status']>): Promise<void> {
    for (const recipient of meta.recipients) {
      if (recipient.status === 'failed' && statusAtStart.get(recipient) !== 'failed') recipient.status = 'pending';
    }
    delete meta.dead;
    this.unsaved.set(meta.id, meta);
    try {
      await this.deps.store.update(meta);
      this.unsaved.delete(meta.id);
    } catch {
      // Still unwritable: the copy in memory carries the delivered recipients to the next attempt.
    }
  }

  /** The host is no longer the live one of its name: a reload removed or replaced it. */
  private isRetired(host: SmartHost): boolean {
    return this.deps.current().smarthosts.get(host.name) !== host;
  }

  private orderedHosts({ config, smarthosts }: DeliveryConfig, routeName: string): SmartHost[] {
    // A route removed by a reload falls back to `default`, as a client without a policy does.
    const route = config.routes[routeName] ?? config.routes.default;
    const candidates = config.smarthosts.filter((host) => route?.smarthosts.includes(host.name));
    const { order, rotation } = orderSmartHosts(candidates, this.rotations.get(routeName));
    this.rotations.set(routeName, rotation);
    return order.map((candidate) => smarthosts.get(candidate.name)).filter((host): host is SmartHost => host !== undefined);
  }

  private recordAttempt(meta: MessageMeta, host: SmartHost, targets: RecipientAttempt[], outcomes: Map<string, Outcome>, durationMs: number): void {
    let accepted = 0;
    let unreachable = false;
    let transient = false;
    let lastResponse = '';
    for (const recipient of targets) {
      const outcome = outcomes.get(recipient.state.address) ?? { kind: 'transient', cause: 'reply', detail: 'no outcome reported for this recipient' };
      const response = describeOutcome(outcome);
      lastResponse = response;
      recipient.state.response = response;
      recipient.state.smarthost = host.name;
      if (outcome.kind === 'delivered') {
        accepted++;
        recipient.state.status = 'delivered';
        this.deps.observer.emit({ type: 'delivered', ...this.eventBase(meta, recipient.state), smarthost: host.name, relay: host.relay, response });
      } else if (outcome.kind === 'transient') {
        transient = true;
        // The host was not the problem when the reply came from it, or when our own queue file failed.
        unreachable ||= outcome.cause !== 'reply' && outcome.cause !== 'spool';
        recipient.sawTransient = true;
      } else {
        recipient.state.rejectedBy = [...(recipient.state.rejectedBy ?? []), host.name];
        recipient.state.permanentRejections = recipient.state.rejectedBy.length;
        if (recipient.state.rejectedBy.length >= PERMANENT_AFTER_REJECTIONS) this.fail(recipient);
      }
    }
    let outcome: AttemptOutcome = 'failed';
    if (accepted === targets.length) outcome = 'delivered';
    else if (unreachable) outcome = 'unreachable';
    else if (transient) outcome = 'deferred';
    this.deps.observer.emit({ type: 'attempt', queueId: meta.id, smarthost: host.name, relay: host.relay, outcome, durationMs, recipients: targets.map((r) => r.state.address), response: lastResponse, accepted });
  }

  /** Decides what happens to the recipients this attempt did not deliver, then commits it to the spool. */
  private async settle(config: DeliveryConfig['config'], meta: MessageMeta, recipients: RecipientAttempt[], lastHost: SmartHost | null, skips: Skip[], inline?: InlineClaim): Promise<DispatchResult> {
    const { store } = this.deps;
    for (const recipient of recipients) {
      // Refused by every host that could take it, and none merely deferred it: no later attempt can help.
      if (recipient.state.status === 'pending' && (recipient.state.rejectedBy ?? []).length > 0 && !recipient.sawTransient) this.fail(recipient);
    }

    const failedNow = recipients.filter((r) => r.failedNow);
    if (inline && failedNow.length > 0 && failedNow.length === meta.recipients.length && inline.claimRejection()) {
      // The client hears the smart host's verdict itself: nothing to bounce, nothing to keep.
      await store.remove(meta.id, { durable: true });
      return { kind: 'done', rejected: parseReply(failedNow[0].state.response, 550) };
    }
    // Reported once the DSN is on disk: an attempt whose DSN could not be written bounces nothing yet.
    const outcomes: RelayEvent[] = failedNow.map((recipient) => ({ type: 'bounced', ...this.eventBase(meta, recipient.state), smarthost: recipient.state.smarthost ?? null, relay: this.relayOf(recipient.state.smarthost), response: recipient.state.response ?? '' }));
    const failures: FailedRecipient[] = failedNow.map((r) => this.failure(r.state, 'rejected'));

    const pending = pendingRecipients(meta);
    const now = this.now();
    const expired = pending.length > 0 && now - meta.receivedAt >= config.spool.max_queue_lifetime;
    if (expired) {
      for (const recipient of pending) {
        recipient.status = 'failed';
        failures.push(this.failure(recipient, 'expired'));
        outcomes.push({ type: 'expired', ...this.eventBase(meta, recipient), smarthost: recipient.smarthost ?? null, relay: null, response: `4.4.7 message expired after ${Math.round((now - meta.receivedAt) / 1000)}s in the queue; last: ${recipient.response ?? this.skipSummary(skips)}` });
      }
    }

    // The DSN is on disk before the original leaves the queue: a crash in between repeats it, never loses it.
    if (failures.length > 0) {
      // And what this attempt delivered is on disk before the DSN: a crash in between repeats the
      // DSN (its recipients are saved as still pending), never a delivery.
      if (this.deps.bouncer.addressees(meta).length > 0) await store.update(withPending(meta, new Set([...failedNow.map((r) => r.state), ...(expired ? pending : [])])));
      await this.bounce(meta, failures);
    }
    for (const event of outcomes) this.deps.observer.emit(event);

    if (expired) {
      meta.dead = { reason: 'expired', at: now, response: pending[0].response ?? this.skipSummary(skips) };
      await store.moveToDead(meta);
      return { kind: 'done' };
    }

    if (pending.length === 0) {
      const failed = meta.recipients.filter((r) => r.status === 'failed');
      if (failed.length > 0) {
        meta.dead = { reason: 'rejected', at: now, response: failed[0].response ?? '' };
        await store.moveToDead(meta);
      } else {
        await store.remove(meta.id);
      }
      return { kind: 'done' };
    }

    // Never later than the message's expiry: a breaker cooldown or a quota window longer than what is
    // left of max_queue_lifetime must not keep it queued past it.
    const expiresAt = meta.receivedAt + config.spool.max_queue_lifetime;
    meta.nextAttemptAt = Math.min(expiresAt, nextAttemptAt({ now, tried: lastHost !== null, attempts: meta.attempts, retry: config.spool.retry, skippedUntil: skips.map((s) => s.retryAt) }));
    for (const recipient of pending) {
      this.deps.observer.emit({
        type: 'deferred', ...this.eventBase(meta, recipient), smarthost: recipient.smarthost ?? null, relay: lastHost?.relay ?? null,
        response: (lastHost ? recipient.response : undefined) ?? this.skipSummary(skips), nextAttemptAt: meta.nextAttemptAt,
      });
    }
    await store.update(meta);
    return { kind: 'retry', at: meta.nextAttemptAt };
  }

  private async bounce(meta: MessageMeta, failures: FailedRecipient[]): Promise<void> {
    const dsn = await this.deps.bouncer.bounce(meta, failures);
    if (!dsn) return;
    this.deps.observer.emit({ type: 'dsn', queueId: dsn.id, original: meta.id, to: dsn.recipients.map((r) => r.address), recipients: failures.map((f) => f.address) });
    this.deps.onGenerated(dsn);
  }

  private fail(recipient: RecipientAttempt): void {
    if (recipient.state.status !== 'pending') return;
    recipient.state.status = 'failed';
    recipient.failedNow = true;
  }

  private failure(state: RecipientState, reason: FailedRecipient['reason']): FailedRecipient {
    const host = this.deps.current().config.smarthosts.find((h) => h.name === state.smarthost);
    return { address: state.address, response: state.response, remoteMta: host?.host, reason };
  }

  private relayOf(name: string | undefined): string | null {
    return (name !== undefined ? this.deps.current().smarthosts.get(name)?.relay : undefined) ?? null;
  }

  private skipSummary(skips: Skip[]): string {
    return skips.length > 0 ? `no smart host available: ${skips.map((s) => s.detail).join('; ')}` : 'no smart host available';
  }

  private eventBase(meta: MessageMeta, recipient: RecipientState) {
    return { queueId: meta.id, ...(meta.dsnOf !== undefined ? { dsnOf: meta.dsnOf } : {}), client: meta.client, from: meta.from, to: recipient.address, attempt: meta.attempts, delayMs: this.now() - meta.receivedAt };
  }
}

/** The relay could not read its own queued copy: the spool's problem, whichever host was trying. */
function isUnreadableCopy(outcome: Outcome | undefined): boolean {
  return outcome?.kind === 'transient' && outcome.cause === 'spool';
}

/**
 * `meta` with the recipients that failed in this attempt still pending: what is saved before their
 * DSN is written. Their responses and refusing hosts are kept, so the next attempt fails them again.
 */
function withPending(meta: MessageMeta, failing: ReadonlySet<RecipientState>): MessageMeta {
  return { ...meta, recipients: meta.recipients.map((r) => (failing.has(r) ? { ...r, status: 'pending' } : r)) };
}
