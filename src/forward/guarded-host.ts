import type { SmartHostConfig } from '../config/schema';
import type { Observer } from '../observe/events';
import {
  admit as breakerAdmit,
  classify,
  CLOSED,
  eligibleAt,
  isUp,
  probeNow,
  record,
  type BreakerState,
} from './breaker';
import type { Outcome } from './outcome';
import type { QuotaSample, SmartHostQuota } from './quota';
import type { Admission, Envelope, MessageBody, SmartHost, SmartHostDetails, SmartHostTransport } from './smarthost';

/**
 * One smart host with its circuit breaker and provider quota in front of its transport: the
 * dispatcher asks `admit` before each transaction, and every transaction's result feeds the breaker.
 * The breaker state lives here in memory on purpose: it describes the host, not a message, and a
 * restarted relay should give every host a fresh chance.
 */
export class GuardedSmartHost implements SmartHost {
  readonly name: string;
  readonly relay: string;
  private breaker: BreakerState = CLOSED;
  /** Set when an admission found a quota window full: `available` can answer without counting. */
  private quotaBlockedUntil = -Infinity;
  /** Set when the host asked to be sent nothing for a while (`Retry-After`): it is skipped until then. */
  private throttle: { until: number; detail: string } = { until: -Infinity, detail: '' };
  private readonly now: () => number;

  constructor(
    private readonly config: SmartHostConfig,
    private readonly transport: SmartHostTransport,
    private readonly quota: SmartHostQuota,
    private readonly observer: Observer,
    now: () => number = Date.now,
  ) {
    this.name = transport.name;
    this.relay = transport.relay;
    this.now = now;
  }

  available(now: number): boolean {
    return now >= this.availableAt(now);
  }

  /**
   * The earliest time this host may take a delivery: after its breaker's cooldown, any spent quota
   * window and any wait the host asked for (Retry-After).
   */
  availableAt(_now: number): number {
    return Math.max(eligibleAt(this.breaker, this.config.breaker), this.quotaBlockedUntil, this.throttle.until);
  }

  /** Its breaker is not closed but its cooldown is over: the next delivery is its probe. */
  probing(now: number): boolean {
    return (
      this.breaker.kind !== 'closed' &&
      !(this.breaker.kind === 'half_open' && this.breaker.everyone) &&
      this.available(now)
    );
  }

  /** An admin's flush or retry: try the host now, with every delivery, instead of after its cooldown (breaker.ts). */
  probeNow(now: number): void {
    this.setBreaker(probeNow(this.breaker, now));
  }

  up(): boolean {
    return isUp(this.breaker);
  }

  async admit(recipients: number, now: number): Promise<Admission> {
    // A provider's own "wait" is a quota it keeps: asking again early only earns a longer wait.
    if (now < this.throttle.until) {
      const until = new Date(this.throttle.until).toISOString();
      const detail = `${this.name} skipped: it asked to wait (${this.throttle.detail}) until ${until}`;
      return { ok: false, cause: 'quota', retryAt: this.throttle.until, detail };
    }
    // Look before counting quota, so an open breaker costs no quota…
    const look = breakerAdmit(this.breaker, now, this.config.breaker);
    if (!look.admitted) return this.breakerRefusal(look.retryAt);
    const quota = await this.quota.admit(Math.min(recipients, this.config.max_recipients), now);
    if (!quota.ok) {
      this.quotaBlockedUntil = Math.max(this.quotaBlockedUntil, quota.retryAt);
      return { ok: false, cause: 'quota', retryAt: quota.retryAt, detail: quota.detail };
    }
    // …then take the breaker's slot against its state now: another delivery may have taken the probe meanwhile.
    const slot = breakerAdmit(this.breaker, now, this.config.breaker);
    if (!slot.admitted) return this.breakerRefusal(slot.retryAt);
    this.setBreaker(slot.state);
    return { ok: true, recipients: quota.recipients };
  }

  async send(envelope: Envelope, body: MessageBody): Promise<Map<string, Outcome>> {
    const outcomes = await this.transport.send(envelope, body);
    const now = this.now();
    this.noteRetryAfter(outcomes, now);
    const result = classify(outcomes);
    const next = record(this.breaker, result, now, this.config.breaker);
    if (result === 'credentials_refused') {
      const first = [...outcomes.values()][0];
      const detail = first?.kind === 'transient' ? first.detail : '';
      const until = next.kind === 'open' ? next.until : null;
      this.observer.emit({ type: 'credentials_refused', smarthost: this.name, relay: this.relay, detail, until });
    }
    this.setBreaker(next);
    return outcomes;
  }

  /** The longest `Retry-After` of this transaction holds the host back for every message, not just this one. */
  private noteRetryAfter(outcomes: ReadonlyMap<string, Outcome>, now: number): void {
    let wait = 0;
    let detail = '';
    for (const outcome of outcomes.values()) {
      if (outcome.kind === 'transient' && outcome.retryAfterMs !== undefined && outcome.retryAfterMs > wait) {
        wait = outcome.retryAfterMs;
        detail = outcome.reply?.text ?? outcome.detail;
      }
    }
    if (wait <= 0 || now + wait <= this.throttle.until) return;
    this.throttle = { until: now + wait, detail };
    const { until } = this.throttle;
    this.observer.emit({ type: 'throttled', smarthost: this.name, relay: this.relay, until, detail });
  }

  quotaRemaining(now: number): Promise<QuotaSample[]> {
    return this.quota.remaining(now);
  }

  async details(now: number): Promise<SmartHostDetails> {
    return { breaker: this.breaker.kind, quota: await this.quota.remaining(now) };
  }

  close(): void {
    this.transport.close();
  }

  private breakerRefusal(retryAt: number): Admission {
    const what =
      this.breaker.kind === 'half_open'
        ? 'a probe delivery is under way'
        : `circuit open after ${this.breaker.failures} connection failure(s)`;
    return {
      ok: false,
      cause: 'breaker',
      retryAt,
      detail: `${this.name} skipped: ${what}, until ${new Date(retryAt).toISOString()}`,
    };
  }

  private setBreaker(next: BreakerState): void {
    const previous = this.breaker;
    this.breaker = next;
    if (previous.kind === next.kind) return;
    this.observer.emit({
      type: 'breaker',
      smarthost: this.name,
      relay: this.relay,
      state: next.kind,
      failures: next.kind === 'closed' ? previous.failures : next.failures,
      until: next.kind === 'open' ? next.until : null,
    });
  }
}
