import type { SharedStateHealth } from './shared-state-health';
import type { ConsumeResult, WindowCounters, WindowLimit } from './window-counters';

/**
 * Fleet-wide counters that survive a Redis outage: every call goes to the shared store while it is
 * healthy; when a call fails (or the store is known to be down) the same call is answered by this
 * relay's own memory counters with each limit divided by the fleet size. Mail keeps flowing, no
 * limit is dropped, and the fleet as a whole stays near its limits (each of `fleetSize` relays takes
 * at most its share) until Redis is back. Counts made locally are not carried over to Redis.
 */

/** A relay's share of a fleet limit: rounded up, never 0 (a limit of 0 would refuse everything). */
export function localShare(limits: readonly WindowLimit[], fleetSize: number): WindowLimit[] {
  return limits.map((limit) => ({ windowMs: limit.windowMs, max: Math.max(1, Math.ceil(limit.max / fleetSize)) }));
}

export class FallbackWindowCounters implements WindowCounters {
  constructor(
    private readonly shared: WindowCounters,
    private readonly local: WindowCounters,
    private readonly health: SharedStateHealth,
    private readonly fleetSize: number,
  ) {}

  consume(key: string, limits: readonly WindowLimit[], amount: number, now: number): Promise<ConsumeResult> {
    return this.call(
      (counters, own) => counters.consume(key, own, amount, now).then((result) => withShare(result, limits, own)),
      limits,
    );
  }

  remaining(key: string, limits: readonly WindowLimit[], now: number): Promise<number[]> {
    return this.call((counters, own) => counters.remaining(key, own, now), limits);
  }

  peek(key: string, limits: readonly WindowLimit[], amount: number, now: number): Promise<ConsumeResult> {
    return this.call(
      (counters, own) => counters.peek(key, own, amount, now).then((result) => withShare(result, limits, own)),
      limits,
    );
  }

  /**
   * Goes to whichever store answers now. A unit taken from Redis and given back while on the fallback
   * (or the other way round) is not given back where it was taken: that window is stricter until it ends.
   */
  release(key: string, limits: readonly WindowLimit[], amount: number, now: number): Promise<void> {
    return this.call((counters, own) => counters.release(key, own, amount, now), limits);
  }

  private async call<T>(
    run: (counters: WindowCounters, limits: readonly WindowLimit[]) => Promise<T>,
    limits: readonly WindowLimit[],
  ): Promise<T> {
    if (this.health.usingShared()) {
      try {
        return await run(this.shared, limits);
      } catch (err) {
        this.health.failed(err);
      }
    }
    return run(this.local, localShare(limits, this.fleetSize));
  }
}

/** A refusal under a local share says which max refused it, so the reply does not quote the fleet's. */
function withShare(
  result: ConsumeResult,
  configured: readonly WindowLimit[],
  applied: readonly WindowLimit[],
): ConsumeResult {
  if (result.ok || applied[result.limit].max === configured[result.limit].max) return result;
  return { ...result, share: applied[result.limit].max };
}
