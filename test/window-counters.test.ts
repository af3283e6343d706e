import { MemoryWindowCounters } from '../src/limits/window-counters';

describe('MemoryWindowCounters', () => {
  const limits = [
    { windowMs: 1000, max: 3 },
    { windowMs: 10_000, max: 5 },
  ];

  test('counts within every window and refuses, without counting, what would exceed one', async () => {
    const counters = new MemoryWindowCounters();
    expect(await counters.consume('erp', limits, 2, 0)).toEqual({ ok: true });
    expect(await counters.consume('erp', limits, 2, 100)).toEqual({ ok: false, limit: 0, retryAfterMs: 900 });
    expect(await counters.remaining('erp', limits, 100)).toEqual([1, 3]);
    expect(await counters.consume('erp', limits, 1, 200)).toEqual({ ok: true });
  });

  test('a window frees once it has passed; the longer window still holds', async () => {
    const counters = new MemoryWindowCounters();
    await counters.consume('erp', limits, 3, 0);
    expect(await counters.consume('erp', limits, 2, 1000)).toEqual({ ok: true });
    expect(await counters.consume('erp', limits, 1, 2500)).toEqual({ ok: false, limit: 1, retryAfterMs: 7500 });
  });

  test('keys are independent: one client at its limit never affects another', async () => {
    const counters = new MemoryWindowCounters();
    await counters.consume('erp', limits, 3, 0);
    expect(await counters.consume('webshop', limits, 3, 0)).toEqual({ ok: true });
  });

  test('memory is bounded by maxKeys', async () => {
    const counters = new MemoryWindowCounters(100);
    for (let i = 0; i < 10_000; i++) await counters.consume(`addr-${i}`, limits, 1, 0);
    expect(await counters.remaining('addr-0', limits, 0)).toEqual([3, 5]);
  });

  test('memory grows with the keys held, not with maxKeys', () => {
    // lru-cache's `max` would allocate typed arrays for every key up front: 10 million keys would be ~120 MB
    // of ArrayBuffers here.
    const before = process.memoryUsage().arrayBuffers;
    const counters = new MemoryWindowCounters(10_000_000);
    expect(process.memoryUsage().arrayBuffers - before).toBeLessThan(1024 * 1024);
    expect(counters).toBeDefined();
  });
});
