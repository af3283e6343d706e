import { createHash } from 'node:crypto';
import type { ConsumeResult, WindowCounters, WindowLimit } from './window-counters';

/**
 * WindowCounters in Redis, shared by every relay of a fleet, with MemoryWindowCounters' semantics:
 * a window starts at the first count after the previous one ended and lasts `windowMs`; `consume`
 * counts `amount` in every limit's window only if none would go over, else counts nothing and says
 * which limit and when its window ends; `peek` answers the same without counting.
 *
 * Check and count happen in one Lua script per call, so two relays can never both take the last
 * unit of a window (no read-modify-write between nodes). A window is a key holding the count with
 * a TTL of the window: Redis' clock ends windows, so relays with skewed clocks still agree, and the
 * `now` argument is not used. rate-limiter-flexible was the other candidate: its limiters hold one
 * limit each and count a refused request too, which is not "all limits or nothing".
 */

/** What the store needs from a Redis client: ioredis' eval/evalsha/mget (kept this narrow for tests). */
export interface RedisScripting {
  evalsha(sha: string, numKeys: number, ...args: (string | number)[]): Promise<unknown>;
  eval(script: string, numKeys: number, ...args: (string | number)[]): Promise<unknown>;
  mget(...keys: string[]): Promise<(string | null)[]>;
}

// KEYS: one counter per limit. ARGV[1]: 'consume' or 'peek', ARGV[2]: amount, then windowMs and max of each limit.
// Returns {-1, 0} when every window has room (and, for consume, counted), else {index of the first
// full limit (0-based), ms until its window ends}.
const WINDOWS_SCRIPT = `
local amount = tonumber(ARGV[2])
for i = 1, #KEYS do
  local max = tonumber(ARGV[2 + i * 2])
  local used = tonumber(redis.call('GET', KEYS[i]) or '0')
  if used + amount > max then
    local ttl = redis.call('PTTL', KEYS[i])
    if ttl < 1 then ttl = tonumber(ARGV[1 + i * 2]) end
    return {i - 1, ttl}
  end
end
if ARGV[1] == 'consume' then
  for i = 1, #KEYS do
    redis.call('INCRBY', KEYS[i], amount)
    if redis.call('PTTL', KEYS[i]) < 0 then redis.call('PEXPIRE', KEYS[i], ARGV[1 + i * 2]) end
  end
end
return {-1, 0}
`;
const WINDOWS_SHA = createHash('sha1').update(WINDOWS_SCRIPT).digest('hex');

// KEYS: one counter per limit. ARGV[1]: amount. Takes it back from each window that still counts
// something, never below 0 (DECRBY keeps the key's TTL, so the window still ends when it would have).
const RELEASE_SCRIPT = `
local amount = tonumber(ARGV[1])
for i = 1, #KEYS do
  local used = tonumber(redis.call('GET', KEYS[i]) or '0')
  if used > 0 then redis.call('DECRBY', KEYS[i], math.min(used, amount)) end
end
return 0
`;
const RELEASE_SHA = createHash('sha1').update(RELEASE_SCRIPT).digest('hex');

export class RedisWindowCounters implements WindowCounters {
  /**
   * `namespace` keeps each caller's keys apart (`smarthop:policy:`, `smarthop:quota:`, …), as the
   * separate MemoryWindowCounters instances do in one process.
   */
  constructor(
    private readonly redis: RedisScripting,
    private readonly namespace: string,
  ) {}

  consume(key: string, limits: readonly WindowLimit[], amount: number, _now: number): Promise<ConsumeResult> {
    return this.run('consume', key, limits, amount);
  }

  peek(key: string, limits: readonly WindowLimit[], amount: number, _now: number): Promise<ConsumeResult> {
    return this.run('peek', key, limits, amount);
  }

  async release(key: string, limits: readonly WindowLimit[], amount: number, _now: number): Promise<void> {
    if (limits.length === 0) return;
    await this.script(RELEASE_SCRIPT, RELEASE_SHA, limits.length, [...this.keys(key, limits), amount]);
  }

  async remaining(key: string, limits: readonly WindowLimit[], _now: number): Promise<number[]> {
    if (limits.length === 0) return [];
    const used = await this.redis.mget(...this.keys(key, limits));
    return limits.map((limit, i) => Math.max(0, limit.max - Number(used[i] ?? 0)));
  }

  private async run(
    mode: 'consume' | 'peek',
    key: string,
    limits: readonly WindowLimit[],
    amount: number,
  ): Promise<ConsumeResult> {
    if (limits.length === 0) return { ok: true };
    const args = [...this.keys(key, limits), mode, amount, ...limits.flatMap((limit) => [limit.windowMs, limit.max])];
    return parseReply(await this.script(WINDOWS_SCRIPT, WINDOWS_SHA, limits.length, args));
  }

  private async script(source: string, sha: string, numKeys: number, args: (string | number)[]): Promise<unknown> {
    try {
      return await this.redis.evalsha(sha, numKeys, ...args);
    } catch (err) {
      // A restarted (or flushed) Redis has forgotten the script: send it once in full, which caches it again.
      if (!(err instanceof Error) || !err.message.startsWith('NOSCRIPT')) throw err;
      return this.redis.eval(source, numKeys, ...args);
    }
  }

  /**
   * One key per limit, as MemoryWindowCounters names its windows (a changed limit is a new window).
   * The caller's key sits in a hash tag, so every window of one call maps to one Redis Cluster slot;
   * its NUL separators are written `|`, which no configured name or address contains.
   */
  private keys(key: string, limits: readonly WindowLimit[]): string[] {
    const tag = `${this.namespace}{${key.replaceAll('\u0000', '|')}}`;
    return limits.map((limit, i) => `${tag}:${i}:${limit.windowMs}:${limit.max}`);
  }
}

function parseReply(reply: unknown): ConsumeResult {
  if (!Array.isArray(reply) || reply.length !== 2 || typeof reply[0] !== 'number' || typeof reply[1] !== 'number') {
    throw new Error(`unexpected reply from the Redis window script: ${JSON.stringify(reply)}`);
  }
  const [limit, retryAfterMs] = reply as [number, number];
  return limit < 0 ? { ok: true } : { ok: false, limit, retryAfterMs: Math.max(1, retryAfterMs) };
}
