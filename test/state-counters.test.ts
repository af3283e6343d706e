import { Redis } from 'ioredis';
import { FallbackWindowCounters, localShare } from '../src/limits/fallback-counters';
import { RedisWindowCounters } from '../src/limits/redis-window-counters';
import { SharedStateHealth } from '../src/limits/shared-state-health';
import {
  MemoryWindowCounters,
  type ConsumeResult,
  type WindowCounters,
  type WindowLimit,
} from '../src/limits/window-counters';
import { freePort } from '../bench/free-port';
import { removeDir, tempDir } from './helpers/temp-dir';
import { waitFor } from './helpers/wait-for';
import { findBinary } from './helpers/prometheus';
import { TestRedis } from './helpers/redis';
import { testUnless } from './helpers/skip';

const REDIS = findBinary('redis-server');

jest.setTimeout(60_000);

/** What a test compares: the verdict and which limit, not the exact milliseconds. */
function shape(result: ConsumeResult): string {
  return result.ok ? 'ok' : `refused:${result.limit}`;
}

describe('RedisWindowCounters against a real redis-server', () => {
  if (!REDIS && process.env.CI) {
    test('redis-server is installed in CI', () => {
      throw new Error(
        'CI is set but `redis-server` is not on PATH: .ci/run must install the Debian package `redis-server`',
      );
    });
    return;
  }
  const maybe = testUnless(
    REDIS ? null : '`redis-server` is not on PATH (apt-get install redis-server); CI must have it',
  );
  let dir: string;
  let redis: TestRedis;
  let clients: Redis[] = [];

  const client = () => {
    const c = new Redis(redis.url, { enableOfflineQueue: true, maxRetriesPerRequest: 1 });
    clients.push(c);
    return c;
  };

  beforeAll(async () => {
    if (!REDIS) return;
    dir = tempDir('smarthop-redis-');
    redis = new TestRedis(REDIS, dir, await freePort());
    await redis.start();
  });

  afterAll(async () => {
    for (const c of clients) c.disconnect();
    clients = [];
    await redis?.stop();
    if (dir) removeDir(dir);
  });

  maybe('answers every step of a scripted sequence as MemoryWindowCounters does', async () => {
    const memory = new MemoryWindowCounters();
    const shared = new RedisWindowCounters(client(), `t1:${Date.now()}:`);
    const limits: WindowLimit[] = [
      { windowMs: 60_000, max: 3 },
      { windowMs: 3_600_000, max: 10 },
    ];
    const steps: [op: 'consume' | 'peek' | 'remaining', key: string, amount: number][] = [
      ['consume', 'a', 1],
      ['consume', 'a', 2],
      ['peek', 'a', 1],
      ['consume', 'a', 1],
      ['remaining', 'a', 0],
      ['consume', 'b', 4],
      ['peek', 'b', 3],
      ['consume', 'b', 3],
      ['remaining', 'b', 0],
      ['consume', 'b', 1],
    ];
    for (const [op, key, amount] of steps) {
      const now = Date.now();
      if (op === 'remaining') {
        expect(await shared.remaining(key, limits, now)).toEqual(await memory.remaining(key, limits, now));
        continue;
      }
      const [a, b] = [await memory[op](key, limits, amount, now), await shared[op](key, limits, amount, now)];
      expect([op, key, amount, shape(b)]).toEqual([op, key, amount, shape(a)]);
      if (!a.ok && !b.ok) {
        // Both say when the refusing window ends: within the window, never 0.
        expect(b.retryAfterMs).toBeGreaterThan(0);
        expect(b.retryAfterMs).toBeLessThanOrEqual(limits[b.limit].windowMs);
      }
    }
    // A refused consume counted nothing in any window (all or nothing).
    expect(await shared.remaining('a', limits, Date.now())).toEqual([0, 7]);
  });

  maybe("release gives back what consume took, never below 0, and keeps the window's end", async () => {
    const memory = new MemoryWindowCounters();
    const shared = new RedisWindowCounters(client(), `t5:${Date.now()}:`);
    const limits: WindowLimit[] = [
      { windowMs: 60_000, max: 3 },
      { windowMs: 3_600_000, max: 10 },
    ];
    for (const store of [memory, shared]) {
      const now = Date.now();
      expect(shape(await store.consume('r', limits, 3, now))).toBe('ok');
      expect(shape(await store.consume('r', limits, 1, now))).toBe('refused:0');
      await store.release('r', limits, 2, now);
      expect(await store.remaining('r', limits, now)).toEqual([2, 9]);
      await store.release('r', limits, 5, now);
      expect(await store.remaining('r', limits, now)).toEqual([3, 10]);
      // Releasing a key that counts nothing creates no window.
      await store.release('never', limits, 1, now);
      expect(await store.remaining('never', limits, now)).toEqual([3, 10]);
    }
    // The 400 ms window still ends when it would have: a count taken after release expires with it.
    expect(shape(await shared.consume('e', [{ windowMs: 400, max: 1 }], 1, 0))).toBe('ok');
    await shared.release('e', [{ windowMs: 400, max: 1 }], 1, 0);
    expect(shape(await shared.consume('e', [{ windowMs: 400, max: 1 }], 1, 0))).toBe('ok');
    expect(shape(await shared.consume('e', [{ windowMs: 400, max: 1 }], 1, 0))).toBe('refused:0');
    const ended = async () => (await shared.peek('e', [{ windowMs: 400, max: 1 }], 1, 0)).ok;
    await waitFor(ended, 10_000, 'the window to end');
  });

  maybe('a lockout is a window of one: peek never fills it, consume does, and it ends with its TTL', async () => {
    const shared = new RedisWindowCounters(client(), `t2:${Date.now()}:`);
    const lockout: WindowLimit[] = [{ windowMs: 300, max: 1 }];
    expect(shape(await shared.peek('lock', lockout, 1, 0))).toBe('ok');
    expect(shape(await shared.peek('lock', lockout, 1, 0))).toBe('ok');
    expect(shape(await shared.consume('lock', lockout, 1, 0))).toBe('ok');
    const locked = await shared.peek('lock', lockout, 1, 0);
    expect(shape(locked)).toBe('refused:0');
    await waitFor(async () => (await shared.peek('lock', lockout, 1, 0)).ok, 10_000, 'the lockout window to end');
  });

  maybe('two connections (two relays) racing for the last units: exactly max are counted', async () => {
    const namespace = `t3:${Date.now()}:`;
    const nodes = [new RedisWindowCounters(client(), namespace), new RedisWindowCounters(client(), namespace)];
    const limits: WindowLimit[] = [{ windowMs: 60_000, max: 25 }];
    const results = await Promise.all(
      Array.from({ length: 100 }, (_, i) => nodes[i % 2].consume('client', limits, 1, Date.now())),
    );
    expect(results.filter((r) => r.ok)).toHaveLength(25);
    expect(await nodes[0].remaining('client', limits, Date.now())).toEqual([0]);
  });

  maybe('a Redis that forgot the script (restart, SCRIPT FLUSH) gets it again', async () => {
    const connection = client();
    const shared = new RedisWindowCounters(connection, `t4:${Date.now()}:`);
    const limits: WindowLimit[] = [{ windowMs: 60_000, max: 5 }];
    expect(shape(await shared.consume('k', limits, 1, 0))).toBe('ok');
    await connection.script('FLUSH');
    expect(shape(await shared.consume('k', limits, 1, 0))).toBe('ok');
    expect(await shared.remaining('k', limits, 0)).toEqual([3]);
  });
});

describe('FallbackWindowCounters', () => {
  /** A shared store that can be switched off, as a Redis that stops answering. */
  class Switchable implements WindowCounters {
    up = true;
    readonly inner = new MemoryWindowCounters();
    consume(...args: Parameters<WindowCounters['consume']>) {
      return this.up ? this.inner.consume(...args) : Promise.reject(new Error('connect ECONNREFUSED'));
    }
    remaining(...args: Parameters<WindowCounters['remaining']>) {
      return this.up ? this.inner.remaining(...args) : Promise.reject(new Error('connect ECONNREFUSED'));
    }
    peek(...args: Parameters<WindowCounters['peek']>) {
      return this.up ? this.inner.peek(...args) : Promise.reject(new Error('connect ECONNREFUSED'));
    }
    release(...args: Parameters<WindowCounters['release']>) {
      return this.up ? this.inner.release(...args) : Promise.reject(new Error('connect ECONNREFUSED'));
    }
  }

  test("a node's share of a fleet limit is rounded up and never 0", () => {
    expect(
      localShare(
        [
          { windowMs: 1000, max: 10 },
          { windowMs: 1000, max: 1 },
          { windowMs: 5, max: 7 },
        ],
        3,
      ),
    ).toEqual([
      { windowMs: 1000, max: 4 },
      { windowMs: 1000, max: 1 },
      { windowMs: 5, max: 3 },
    ]);
  });

  test('falls back to the local share once per outage, and goes back when the probe answers', async () => {
    const shared = new Switchable();
    const changes: string[] = [];
    const health = new SharedStateHealth({
      probe: () => (shared.up ? Promise.resolve('PONG') : Promise.reject(new Error('down'))),
      probeIntervalMs: 20,
      onChange: (backend) => changes.push(backend),
    });
    const counters = new FallbackWindowCounters(shared, new MemoryWindowCounters(), health, 2);
    const limits: WindowLimit[] = [{ windowMs: 60_000, max: 6 }];
    expect(shape(await counters.consume('c', limits, 1, 0))).toBe('ok');
    shared.up = false;
    // 6 for the fleet, 2 relays: 3 each while the shared count is out of reach; nothing is refused wholesale.
    const during = await Promise.all([1, 2, 3, 4].map(() => counters.consume('c', limits, 1, 0)));
    expect(during.map(shape)).toEqual(['ok', 'ok', 'ok', 'refused:0']);
    expect(await counters.remaining('c', limits, 0)).toEqual([0]);
    expect(health.backend).toBe('local_fallback');
    expect(changes).toEqual(['local_fallback']);
    shared.up = true;
    await waitFor(() => health.backend === 'redis', 5_000, 'the probe to find the shared store again');
    expect(changes).toEqual(['local_fallback', 'redis']);
    // The shared count resumes where it was (1 of 6).
    expect(await counters.remaining('c', limits, 0)).toEqual([5]);
    health.stop();
  });

  test('a refusal under the local share names the share of the limit that refused, and only then', async () => {
    const shared = new Switchable();
    const health = new SharedStateHealth({
      probe: () => Promise.reject(new Error('down')),
      probeIntervalMs: 60_000,
      onChange: () => undefined,
    });
    const counters = new FallbackWindowCounters(shared, new MemoryWindowCounters(), health, 3);
    // Three limits; with 3 relays the shares are 34, 1 (never 0, so equal to its max) and 2.
    const limits: WindowLimit[] = [
      { windowMs: 60_000, max: 100 },
      { windowMs: 1_000, max: 1 },
      { windowMs: 3_600_000, max: 6 },
    ];
    shared.up = false;
    expect(await counters.consume('k', limits, 1, 0)).toEqual({ ok: true });
    // The 1-per-second limit refuses: its share is its own max, so nothing to name.
    expect(await counters.consume('k', limits, 1, 0)).toEqual({
      ok: false,
      limit: 1,
      retryAfterMs: expect.any(Number),
    });
    expect(await counters.consume('k', limits, 1, 1_000)).toEqual({ ok: true });
    // The hourly 6 refuses at this relay's 2.
    expect(await counters.consume('k', limits, 1, 2_000)).toEqual({
      ok: false,
      limit: 2,
      retryAfterMs: expect.any(Number),
      share: 2,
    });
    expect(await counters.peek('k', limits, 1, 2_000)).toEqual({
      ok: false,
      limit: 2,
      retryAfterMs: expect.any(Number),
      share: 2,
    });
    health.stop();
  });
});
