import { Metrics } from '../src/observe/metrics';
import { metricValue } from './helpers/metrics-text';
import { waitFor } from './helpers/wait-for';

/**
 * smarthop_event_loop_delay_seconds: a histogram of the loop's delay, per relay instance, cumulative from
 * its start.
 */
describe('smarthop_event_loop_delay_seconds', () => {
  const sample = (text: string, name: string) =>
    metricValue(text, `smarthop_event_loop_delay_seconds${name}`) ?? Number.NaN;
  /** Samples later than `le` seconds. */
  const over = (text: string, le: string) => sample(text, '_count') - sample(text, `_bucket{le="${le}"}`);

  function stall(ms: number): void {
    const until = Date.now() + ms;
    while (Date.now() < until);
  }

  test('a 300 ms stall is one sample over 0.25 s, even with a scrape right after it; it stays counted', async () => {
    const metrics = new Metrics();
    try {
      // The monitor measures from its first tick on: wait for it before stalling the loop.
      await waitFor(async () => sample(await metrics.exposition(), '_count') > 0, 5000, 'the first sample');
      expect(over(await metrics.exposition(), '0.25')).toBe(0);
      stall(300);
      // Answered before the monitor's timer has run again: a monitor reset here would lose the stall.
      expect(over(await metrics.exposition(), '0.25')).toBe(0);
      let text = '';
      await waitFor(
        async () => {
          text = await metrics.exposition();
          return over(text, '0.25') > 0;
        },
        5000,
        'the stall in a scrape',
      );
      // One sample for the stall (a loaded machine may add one of its own, never a second 300 ms here).
      expect(over(text, '0.25')).toBeGreaterThanOrEqual(1);
      expect(over(text, '5')).toBe(0);
      expect(sample(text, '_sum')).toBeGreaterThanOrEqual(0.25);
      expect(text).toMatch(/^# TYPE smarthop_event_loop_delay_seconds histogram$/m);
      const buckets = [...text.matchAll(/^smarthop_event_loop_delay_seconds_bucket\{le="([^"]+)"\} (\d+)$/gm)].map(
        (m) => Number(m[2]),
      );
      expect(buckets).toHaveLength(12);
      expect(buckets).toEqual([...buckets].sort((a, b) => a - b));
      await waitFor(
        async () => sample(await metrics.exposition(), '_count') > sample(text, '_count'),
        5000,
        'more samples',
      );
      expect(over(await metrics.exposition(), '0.25')).toBeGreaterThanOrEqual(over(text, '0.25'));
    } finally {
      metrics.close();
    }
  });

  test('each relay has its own monitor: one closed stops counting, the other goes on', async () => {
    const [a, b] = [new Metrics(), new Metrics()];
    try {
      await waitFor(
        async () => sample(await a.exposition(), '_count') > 0 && sample(await b.exposition(), '_count') > 0,
        5000,
        'both monitors',
      );
      a.close();
      const closedAt = sample(await a.exposition(), '_count');
      const before = sample(await b.exposition(), '_count');
      await waitFor(
        async () => sample(await b.exposition(), '_count') > before + 2,
        5000,
        'the open monitor to count on',
      );
      expect(sample(await a.exposition(), '_count')).toBe(closedAt);
    } finally {
      a.close();
      b.close();
    }
  });
});
