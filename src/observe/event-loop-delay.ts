import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';
import { Summary, type Registry } from 'prom-client';

const NAME = 'smarthop_event_loop_delay_seconds';
/** How often the loop is sampled: a stall shows up within this much of its end. */
const RESOLUTION_MS = 10;
const QUANTILES = [0.5, 0.9, 0.99, 1] as const;

interface Sample {
  metricName?: string;
  labels: { quantile?: number };
  value: number;
}

/**
 * `smarthop_event_loop_delay_seconds`: how late the event loop ran a timer due every 10 ms, as
 * perf_hooks.monitorEventLoopDelay measures it (the interval it records less the 10 ms asked for).
 * Every session, /healthz and every reply wait on this loop, so a stall here is a stall for all.
 *
 * A summary: the quantiles (0.5, 0.9, 0.99 and 1, the longest) cover the samples since the previous
 * scrape, so a stall shows in the next scrape and then ages out (a second scraper of the same relay
 * shares the windows); `_sum` and `_count` run from the start. One monitor per relay, stopped with it.
 */
export class EventLoopDelay {
  private readonly histogram: IntervalHistogram = monitorEventLoopDelay({ resolution: RESOLUTION_MS });
  private count = 0;
  private sumSeconds = 0;
  private quantiles: number[] = QUANTILES.map(() => 0);

  constructor(registry: Registry) {
    this.histogram.enable();
    new EventLoopDelaySummary(registry, () => this.samples());
  }

  close(): void {
    this.histogram.disable();
  }

  private samples(): Sample[] {
    const { histogram } = this;
    if (histogram.count > 0) {
      this.quantiles = QUANTILES.map((q) => delaySeconds(q === 1 ? histogram.max : histogram.percentile(q * 100)));
      this.count += histogram.count;
      this.sumSeconds += histogram.count * delaySeconds(histogram.mean);
      histogram.reset();
    }
    return [
      ...QUANTILES.map((quantile, i) => ({ labels: { quantile }, value: this.quantiles[i] })),
      { metricName: `${NAME}_sum`, labels: {}, value: this.sumSeconds },
      { metricName: `${NAME}_count`, labels: {}, value: this.count },
    ];
  }
}

/** Nanoseconds between two samples, less the interval asked for, in seconds. */
function delaySeconds(intervalNs: number): number {
  return Math.max(0, intervalNs / 1e9 - RESOLUTION_MS / 1000);
}

/**
 * prom-client's Summary computes its quantiles from values observed one by one; these come from the
 * monitor's own histogram, so the summary is prom-client's (name, help, type, registration) with the
 * values read from the monitor when it is scraped.
 */
class EventLoopDelaySummary extends Summary<'quantile'> {
  constructor(
    registry: Registry,
    private readonly read: () => Sample[],
  ) {
    super({
      name: NAME,
      help: 'How late the event loop ran a timer due every 10 ms (perf_hooks.monitorEventLoopDelay); quantiles over the samples since the previous scrape, quantile 1 the longest',
      percentiles: [...QUANTILES],
      registers: [registry],
    });
  }

  override async get(): ReturnType<Summary<'quantile'>['get']> {
    const base = await super.get();
    return { ...base, values: this.read() };
  }
}
