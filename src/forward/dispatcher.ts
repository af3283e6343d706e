import type { RelayConfig } from '../config/schema';
import type { AttemptOutcome, Observer } from '../observe/events';
import { pendingRecipients, type MessageMeta, type RecipientState } from '../spool/message';
import type { AttemptResult } from '../spool/scheduler';
import type { SpoolStore } from '../spool/store';
import { describeOutcome, type Outcome } from './outcome';
import { orderSmartHosts, retryDelay } from './plan';
import type { SmartHost } from './smarthost';

/** A recipient refused (5xx) by this many smart hosts in one attempt has failed for good. */
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
  now?: () => number;
}

interface RecipientAttempt {
  state: RecipientState;
  rejections: number;
  sawTransient: boolean;
}

/**
 * One delivery attempt of one queued message: every eligible smart host of its route in order,
 * per recipient, until each recipient is delivered, failed for good, or left for a later attempt.
 * State is read from and written back to the spool; nothing is kept in memory between attempts.
 */
export class Dispatcher {
  private readonly now: () => number;

  constructor(private readonly deps: DispatcherDeps) {
    this.now = deps.now ?? Date.now;
  }

  async attempt(id: string): Promise<AttemptResult> {
    const { store } = this.deps;
    const current = this.deps.current();
    const meta = await store.read(id);
    meta.attempts += 1;
    const started = this.now();
    const recipients: RecipientAttempt[] = pendingRecipients(meta).map((state) => ({ state, rejections: 0, sawTransient: false }));
    let lastHost: SmartHost | null = null;

    for (const host of this.eligibleHosts(current, meta.route, started)) {
      const targets = recipients.filter((r) => r.state.status === 'pending');
      if (targets.length === 0) break;
      if (lastHost) this.deps.observer.emit({ type: 'failover', queueId: id, from: lastHost.name, to: host.name });
      lastHost = host;
      const attemptStart = this.now();
      const outcomes = await host.send({ from: meta.from, to: targets.map((r) => r.state.address) }, store.bodyPath(id));
      this.recordAttempt(meta, host, targets, outcomes, this.now() - attemptStart);
    }

    return this.settle(current.config, meta, recipients, lastHost);
  }

  private eligibleHosts({ config, smarthosts }: DeliveryConfig, routeName: string, now: number): SmartHost[] {
    // A route removed by a reload falls back to `default`, as a client without a policy does.
    const route = config.routes[routeName] ?? config.routes.default;
    const candidates = config.smarthosts.filter((host) => route?.smarthosts.includes(host.name));
    return orderSmartHosts(candidates)
      .map((candidate) => smarthosts.get(candidate.name))
      .filter((host): host is SmartHost => host !== undefined && host.available(now));
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
        unreachable ||= outcome.cause !== 'reply';
        recipient.sawTransient = true;
      } else {
        recipient.rejections++;
        recipient.state.permanentRejections = (recipient.state.permanentRejections ?? 0) + 1;
        if (recipient.rejections >= PERMANENT_AFTER_REJECTIONS) this.fail(meta, recipient.state, host);
      }
    }
    let outcome: AttemptOutcome = 'failed';
    if (accepted === targets.length) outcome = 'delivered';
    else if (unreachable) outcome = 'unreachable';
    else if (transient) outcome = 'deferred';
    this.deps.observer.emit({ type: 'attempt', queueId: meta.id, smarthost: host.name, relay: host.relay, outcome, durationMs, recipients: targets.map((r) => r.state.address), response: lastResponse, accepted });
  }

  /** Decides what happens to the recipients this attempt did not deliver, then commits it to the spool. */
  private async settle(config: DeliveryConfig['config'], meta: MessageMeta, recipients: RecipientAttempt[], lastHost: SmartHost | null): Promise<AttemptResult> {
    const { store } = this.deps;
    for (const recipient of recipients) {
      // Refused by every host that was tried, and no host merely deferred it: no later attempt can help.
      if (recipient.state.status === 'pending' && recipient.rejections > 0 && !recipient.sawTransient) this.fail(meta, recipient.state, lastHost);
    }

    const pending = pendingRecipients(meta);
    const now = this.now();
    if (pending.length > 0 && now - meta.receivedAt >= config.spool.max_queue_lifetime) {
      for (const recipient of pending) {
        recipient.status = 'failed';
        this.deps.observer.emit({ type: 'expired', ...this.eventBase(meta, recipient), smarthost: recipient.smarthost ?? null, relay: null, response: `4.4.7 message expired after ${Math.round((now - meta.receivedAt) / 1000)}s in the queue; last: ${recipient.response ?? 'no attempt'}` });
      }
      meta.dead = { reason: 'expired', at: now, response: pending[0].response ?? 'no attempt' };
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

    meta.nextAttemptAt = now + retryDelay(meta.attempts, config.spool.retry);
    for (const recipient of pending) {
      this.deps.observer.emit({
        type: 'deferred', ...this.eventBase(meta, recipient), smarthost: recipient.smarthost ?? null, relay: lastHost?.relay ?? null,
        response: recipient.response ?? 'no smart host available', nextAttemptAt: meta.nextAttemptAt,
      });
    }
    await store.update(meta);
    return { kind: 'retry', at: meta.nextAttemptAt };
  }

  private fail(meta: MessageMeta, recipient: RecipientState, host: SmartHost | null): void {
    if (recipient.status !== 'pending') return;
    recipient.status = 'failed';
    this.deps.observer.emit({ type: 'bounced', ...this.eventBase(meta, recipient), smarthost: host?.name ?? null, relay: host?.relay ?? null, response: recipient.response ?? '' });
  }

  private eventBase(meta: MessageMeta, recipient: RecipientState) {
    return { queueId: meta.id, client: meta.client, from: meta.from, to: recipient.address, attempt: meta.attempts, delayMs: this.now() - meta.receivedAt };
  }
}
