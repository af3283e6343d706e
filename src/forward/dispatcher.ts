import { setTimeout as sleep } from 'node:timers/promises';
import type { RelayConfig, RetryConfig } from '../config/schema';
import type { Observer } from '../observe/events';
import { messageBytes, type MessageMeta } from '../spool/message';
import type { AttemptResult } from '../spool/scheduler';
import type { SpoolStore } from '../spool/store';
import type { Bouncer } from './bounce';
import {
  afterAdmission,
  afterTransaction,
  beginAttempt,
  nextStep,
  transactionEvents,
  type AttemptState,
  type HostAdmission,
  type MessageFacts,
  type Transaction,
} from './delivery-state';
import { settleAttempt, type Verdict } from './delivery-state-verdict';
import type { FailedRecipient } from './dsn';
import type { SmtpReply } from './outcome';
import { orderSmartHosts, retryDelay, type Rotation } from './plan';
import type { MessageBody, SmartHost } from './smarthost';

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
  /**
   * The spool cannot take an attempt's outcome that carries deliveries; the attempt writes it again
   * in `retryInMs` and does not end before it is written (see Dispatcher.saveDeliveries).
   */
  onOutcomeUnwritable?: (id: string, err: unknown, retryInMs: number) => void;
  /** How often an unwritable outcome is written again; the default suits a disk an admin is clearing. */
  outcomeWriteRetry?: RetryConfig;
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

const OUTCOME_WRITE_RETRY: RetryConfig = { initial: 1_000, max: 60_000, factor: 2 };

/**
 * Runs delivery attempts: the I/O around the pure machine of delivery-state.ts. Each attempt reads
 * the message's state from the spool, lets the machine choose hosts and transactions, and writes
 * the outcome back; only the hosts' rotation is kept in memory between attempts.
 *
 * An attempt that delivered to some recipients does not end before the spool knows it: if the
 * disk cannot take the outcome (full while writing the state or the DSN), the attempt writes it
 * again until it can, and so the message is not attempted again, or touched by an admin, meanwhile.
 * Nothing else needs keeping: whatever failed in it is still pending on disk, and is failed and
 * reported again by the next attempt.
 */
export class Dispatcher {
  private readonly now: () => number;
  private readonly rotations = new Map<string, Rotation>();
  private readonly stopping = new AbortController();

  constructor(private readonly deps: DispatcherDeps) {
    this.now = deps.now ?? Date.now;
  }

  /** Stops waiting for the disk: an attempt still waiting to write its outcome gives up (as a crash would). */
  stop(): void {
    this.stopping.abort();
  }

  async attempt(id: string, inline?: InlineClaim): Promise<DispatchResult> {
    const current = this.deps.current();
    let meta: MessageMeta;
    let message: Buffer | undefined;
    try {
      ({ meta, message } = await this.deps.store.readForDelivery(id));
    } catch (err) {
      // Deleted or held by an admin between being scheduled and now: nothing left to attempt here.
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { kind: 'done' };
      throw err;
    }
    const hosts = new Map(this.orderedHosts(current, meta.route).map((host) => [host.name, host]));
    const body: MessageBody = {
      path: this.deps.store.bodyPath(id),
      size: messageBytes(meta),
      ...(meta.prependHeaders ? { prependHeaders: meta.prependHeaders } : {}),
      ...(message ? { message } : {}),
    };
    let state = beginAttempt({
      recipients: meta.recipients,
      hosts: [...hosts.keys()],
      attempts: meta.attempts,
      now: this.now(),
    });
    for (let step = nextStep(state); step.kind === 'admit'; step = nextStep(state)) {
      const host = hosts.get(step.host) as SmartHost;
      const admitted = afterAdmission(state, await this.admit(host, step.recipients));
      state = admitted.state;
      if (admitted.transaction) state = await this.send(meta, state, host, admitted.transaction, body);
    }
    const lastRelay = state.lastHost !== null ? (hosts.get(state.lastHost) as SmartHost).relay : null;
    return this.conclude(meta, state, { spool: current.config.spool, lastRelay }, inline);
  }

  /**
   * A reload while this attempt ran may have retired the host: checked before admission and again
   * after it, which may wait on shared counters.
   */
  private async admit(host: SmartHost, recipients: number): Promise<HostAdmission> {
    if (this.isRetired(host)) return { kind: 'retired' };
    const admission = await host.admit(recipients, this.now());
    if (!admission.ok) return { kind: 'refused', retryAt: admission.retryAt, detail: admission.detail };
    if (this.isRetired(host)) return { kind: 'retired' };
    return { kind: 'admitted', recipients: admission.recipients };
  }

  private async send(
    meta: MessageMeta,
    state: AttemptState,
    host: SmartHost,
    transaction: Transaction,
    body: MessageBody,
  ): Promise<AttemptState> {
    const { observer } = this.deps;
    if (transaction.failoverFrom !== null) {
      observer.emit({ type: 'failover', queueId: meta.id, from: transaction.failoverFrom, to: host.name });
    }
    const startedAt = this.now();
    const outcomes = await host.send({ from: meta.from, to: [...transaction.to] }, body);
    const at = this.now();
    const next = afterTransaction(state, transaction, outcomes, at);
    const report = { relay: host.relay, durationMs: at - startedAt, at };
    for (const event of transactionEvents(facts(meta), next, transaction, outcomes, report)) observer.emit(event);
    return next;
  }

  /** Writes the attempt's outcome in the order that keeps a crash from losing a DSN or repeating a delivery. */
  private async conclude(
    meta: MessageMeta,
    state: AttemptState,
    { spool, lastRelay }: { spool: DeliveryConfig['config']['spool']; lastRelay: string | null },
    inline?: InlineClaim,
  ): Promise<DispatchResult> {
    const { store, observer } = this.deps;
    // The attempt's own configuration for its timing; the live one (a reload may have landed) names the hosts.
    const { config, smarthosts } = this.deps.current();
    const verdict = settleAttempt(state, {
      message: facts(meta),
      now: this.now(),
      maxQueueLifetime: spool.max_queue_lifetime,
      retry: spool.retry,
      lastRelay,
      relays: new Map([...smarthosts].map(([name, host]) => [name, host.relay])),
      remoteMtas: new Map(config.smarthosts.map((host) => [host.name, host.host])),
    });
    const counted = { ...meta, attempts: state.attempts };
    if (verdict.inlineRejection && inline?.claimRejection()) {
      // The client hears the smart host's verdict itself: nothing to bounce, nothing to keep.
      await store.remove(meta.id, { durable: true });
      return { kind: 'done', rejected: verdict.inlineRejection };
    }

    const safe: MessageMeta = { ...counted, recipients: verdict.untilReported };
    let deliveriesSaved = verdict.delivered === 0;
    // The DSN is on disk before the original leaves the queue: a crash in between repeats it, never
    // loses it. And what this attempt delivered is on disk before the DSN: a crash in between repeats
    // the DSN (its recipients are saved as still pending), never a delivery.
    if (verdict.failures.length > 0) {
      if (this.deps.bouncer.addressees(meta).length > 0) {
        try {
          await store.update(safe);
        } catch (err) {
          if (deliveriesSaved) throw err;
          await this.saveDeliveries(safe, err);
        }
        deliveriesSaved = true;
      }
      await this.bounce(meta, verdict.failures);
    }
    // Reported once the DSN is on disk: an attempt whose DSN could not be written bounces nothing yet.
    for (const event of verdict.reported) observer.emit(event);
    try {
      await this.end(counted, verdict);
    } catch (err) {
      // The error still ends the attempt (the scheduler logs it and tries the message again later),
      // but not before the spool knows what it delivered.
      if (!deliveriesSaved) await this.saveDeliveries(safe, err);
      throw err;
    }
    return verdict.end.kind === 'retry' ? { kind: 'retry', at: verdict.end.at } : { kind: 'done' };
  }

  private async end(meta: MessageMeta, verdict: Verdict): Promise<void> {
    const { store, observer } = this.deps;
    const { end, recipients } = verdict;
    switch (end.kind) {
      case 'remove':
        return store.remove(meta.id);
      case 'dead':
        return store.moveToDead({ ...meta, recipients, dead: end.dead });
      case 'retry':
        for (const event of end.deferred) observer.emit(event);
        return store.update({ ...meta, recipients, nextAttemptAt: end.at });
    }
  }

  /**
   * The spool could not take an outcome that carries deliveries (a full disk while writing the DSN
   * or the new state). Recipients delivered in it must never be sent again, so the attempt writes
   * `safe` (its deliveries, its failures still pending) until the disk takes it; meanwhile the
   * message is still being attempted, so nothing else acts on its stale state. A relay that stops
   * meanwhile gives up, as a crash at this point would: those recipients may be sent again.
   */
  private async saveDeliveries(safe: MessageMeta, cause: unknown): Promise<void> {
    const retry = this.deps.outcomeWriteRetry ?? OUTCOME_WRITE_RETRY;
    for (let tries = 1; ; tries++) {
      const delay = retryDelay(tries, retry);
      this.deps.onOutcomeUnwritable?.(safe.id, cause, delay);
      try {
        await sleep(delay, undefined, { signal: this.stopping.signal });
      } catch {
        const reason = cause instanceof Error ? cause.message : String(cause);
        throw new Error(
          `${safe.id}: stopped before the outcome of its attempt could be written (${reason}); ` +
            'recipients it delivered may be sent again',
        );
      }
      try {
        await this.deps.store.update(safe);
        return;
      } catch (err) {
        cause = err;
      }
    }
  }

  private async bounce(meta: MessageMeta, failures: FailedRecipient[]): Promise<void> {
    const dsn = await this.deps.bouncer.bounce(meta, failures);
    if (!dsn) return;
    this.deps.observer.emit({
      type: 'dsn',
      queueId: dsn.id,
      original: meta.id,
      to: dsn.recipients.map((r) => r.address),
      recipients: failures.map((f) => f.address),
    });
    this.deps.onGenerated(dsn);
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
    return order
      .map((candidate) => smarthosts.get(candidate.name))
      .filter((host): host is SmartHost => host !== undefined);
  }
}

function facts(meta: MessageMeta): MessageFacts {
  return {
    id: meta.id,
    client: meta.client,
    from: meta.from,
    receivedAt: meta.receivedAt,
    ...(meta.dsnOf !== undefined ? { dsnOf: meta.dsnOf } : {}),
  };
}
