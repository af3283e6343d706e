/**
 * Which store the fleet-wide counters use right now: Redis, or (while Redis cannot be reached) each
 * relay's own memory. One instance per relay, shared by every FallbackWindowCounters, so the switch
 * happens once for all limits and is reported once: one event per transition, never one per call.
 * Any failed Redis call (refused, closed, timed out) switches to the fallback at once; from then on
 * calls stay local without waiting on Redis, and a probe every `probeIntervalMs` (or as soon as the
 * connection says it is ready) switches back when a round trip succeeds.
 */

export type StateBackend = 'memory' | 'redis' | 'local_fallback';

export interface SharedStateHealthDeps {
  /** One cheap round trip to Redis (PING); rejects when Redis cannot answer. */
  probe: () => Promise<unknown>;
  probeIntervalMs: number;
  /** A transition: to `local_fallback` with why, or back to `redis`. */
  onChange: (backend: 'redis' | 'local_fallback', detail: string) => void;
}

export class SharedStateHealth {
  private state: 'redis' | 'local_fallback' = 'redis';
  private timer: NodeJS.Timeout | null = null;
  private probing = false;
  private stopped = false;

  constructor(private readonly deps: SharedStateHealthDeps) {}

  get backend(): 'redis' | 'local_fallback' {
    return this.state;
  }

  /** Whether calls should go to Redis now (false: use the local counters, do not wait on Redis). */
  usingShared(): boolean {
    return this.state === 'redis';
  }

  /** The first round trip: a relay whose Redis is down at start runs on the fallback, it does not refuse to start. */
  async start(): Promise<void> {
    try {
      await this.deps.probe();
    } catch (err) {
      this.failed(err);
    }
  }

  /** A call to Redis failed: the next calls go to the local counters until a probe succeeds. */
  failed(err: unknown): void {
    if (this.stopped || this.state === 'local_fallback') return;
    this.state = 'local_fallback';
    this.deps.onChange('local_fallback', err instanceof Error ? err.message : String(err));
    this.timer = setInterval(() => void this.probeNow(), this.deps.probeIntervalMs);
    this.timer.unref();
  }

  /** Asks Redis once whether it is back (no-op while on Redis or while a probe is under way). */
  async probeNow(): Promise<void> {
    if (this.stopped || this.state === 'redis' || this.probing) return;
    this.probing = true;
    try {
      await this.deps.probe();
      // Another path may have switched while the probe was out.
      if (this.stopped || this.usingShared()) return;
      this.state = 'redis';
      this.clearTimer();
      this.deps.onChange('redis', 'reachable again');
    } catch {
      // still unreachable: the next probe asks again
    } finally {
      this.probing = false;
    }
  }

  /** No transitions after this (closing the connection at shutdown is not an outage). */
  stop(): void {
    this.stopped = true;
    this.clearTimer();
  }

  private clearTimer(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }
}
