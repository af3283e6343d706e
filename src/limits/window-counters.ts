import { LRUCache } from 'lru-cache';

/**
 * Fixed-window counters behind one small interface: per-client rate limits (policy), smart-host
 * quotas (forward) and AUTH brute-force lockouts all count "how much of X in the current window".
 * The memory implementation is bounded (lru-cache with a TTL); a fleet-wide store (Redis) can
 * implement the same interface later.
 */

export interface WindowLimit {
  /** Window length in ms; a window starts at the first count after the previous one ended. */
  windowMs: number;
  max: number;
}

export type ConsumeResult =
  | { ok: true }
  /**
   * Nothing was counted; `limit` is the index of the first limit that would be exceeded. `share` is
   * the max that refused it when that is not the configured one: this relay's share of a fleet
   * limit while the shared store is unreachable (FallbackWindowCounters).
   */
  | { ok: false; limit: number; retryAfterMs: number; share?: number };

export interface WindowCounters {
  /** Adds `amount` under `key` to every limit's window, only if none would go over its max. */
  consume(key: string, limits: readonly WindowLimit[], amount: number, now: number): Promise<ConsumeResult>;
  /** What is left in each limit's current window (max when the window has not started). */
  remaining(key: string, limits: readonly WindowLimit[], now: number): Promise<number[]>;
  /** What `consume` would answer, without counting anything (a lockout is a window already full). */
  peek(key: string, limits: readonly WindowLimit[], amount: number, now: number): Promise<ConsumeResult>;
  /**
   * Gives back `amount` counted earlier in each limit's current window (never below 0): a unit taken
   * ahead of a decision (an AUTH about to be checked) and not spent after all. A window that ended
   * since has nothing to give back.
   */
  release(key: string, limits: readonly WindowLimit[], amount: number, now: number): Promise<void>;
}

interface Window {
  startedAt: number;
  used: number;
}

export class MemoryWindowCounters implements WindowCounters {
  private readonly windows: LRUCache<string, Window>;

  /** `maxKeys` bounds memory whatever clients do: the least recently used windows are dropped first. */
  constructor(maxKeys = 100_000) {
    // The bound is a count (every window weighs 1), not lru-cache's `max`: with `max`, lru-cache
    // allocates its arrays for all `max` entries up front (and two more on the first TTL), about
    // 40 bytes an entry. The per-address guard's 300,000 keys (limits.max_tracked_addresses × 3)
    // were ~12 MB of heap held from start on a relay that sees a handful of LAN clients. With
    // `maxSize` the arrays grow with the entries actually held and eviction is the same LRU.
    this.windows = new LRUCache<string, Window>({ maxSize: maxKeys, sizeCalculation: () => 1 });
  }

  async consume(key: string, limits: readonly WindowLimit[], amount: number, now: number): Promise<ConsumeResult> {
    const current = limits.map((limit, i) => this.current(key, i, limit, now));
    const refused = this.check(current, limits, amount, now);
    if (refused) return refused;
    for (const [i, limit] of limits.entries()) {
      const window = current[i];
      window.used += amount;
      this.windows.set(windowKey(key, i, limit), window, { ttl: Math.max(1, window.startedAt + limit.windowMs - now) });
    }
    return { ok: true };
  }

  async remaining(key: string, limits: readonly WindowLimit[], now: number): Promise<number[]> {
    return limits.map((limit, i) => Math.max(0, limit.max - this.current(key, i, limit, now).used));
  }

  async peek(key: string, limits: readonly WindowLimit[], amount: number, now: number): Promise<ConsumeResult> {
    return (
      this.check(
        limits.map((limit, i) => this.current(key, i, limit, now)),
        limits,
        amount,
        now,
      ) ?? { ok: true }
    );
  }

  async release(key: string, limits: readonly WindowLimit[], amount: number, now: number): Promise<void> {
    for (const [i, limit] of limits.entries()) {
      const name = windowKey(key, i, limit);
      const window = this.windows.get(name);
      if (!window || now >= window.startedAt + limit.windowMs) continue;
      window.used = Math.max(0, window.used - amount);
    }
  }

  private check(
    current: Window[],
    limits: readonly WindowLimit[],
    amount: number,
    now: number,
  ): ConsumeResult | undefined {
    for (const [i, limit] of limits.entries()) {
      const window = current[i];
      if (window.used + amount > limit.max) {
        return { ok: false, limit: i, retryAfterMs: Math.max(1, window.startedAt + limit.windowMs - now) };
      }
    }
    return undefined;
  }

  private current(key: string, index: number, limit: WindowLimit, now: number): Window {
    const existing = this.windows.get(windowKey(key, index, limit));
    if (existing && now < existing.startedAt + limit.windowMs) return existing;
    return { startedAt: now, used: 0 };
  }
}

function windowKey(key: string, index: number, limit: WindowLimit): string {
  return `${key}\u0000${index}:${limit.windowMs}:${limit.max}`;
}
