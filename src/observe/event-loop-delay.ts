import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';

const NAME = 'smarthop_event_loop_delay_seconds';
const HELP =
  'How late the event loop ran a timer due every 10 ms (perf_hooks.monitorEventLoopDelay); ' +
  'every session waits on this loop';
/** How often the loop is sampled: a stall shows up within this much of its end. */
const RESOLUTION_MS = 10;
const RESOLUTION_NS = RESOLUTION_MS * 1e6;
export const EVENT_LOOP_DELAY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10] as const;

/**
 * `smarthop_event_loop_delay_seconds`: how late the event loop ran a timer due every 10 ms, as
 * perf_hooks.monitorEventLoopDelay measures it (each interval it records, less the 10 ms asked
 * for). Every session, /healthz and every reply wait on this loop, so a stall here is a stall for all.
 *
 * A Prometheus histogram, cumulative from the start: the monitor is never reset, because a reset
 * drops the interval under way, and after a stall that is the very interval the stall is in (a
 * scrape answered right after a stall would erase it). The monitor keeps an HDR histogram and
 * answers percentiles; the count under each bucket bound is found by bisecting them. prom-client
 * histograms only count values observed one by one, so this family is written out here and
 * appended to the registry's (Metrics.exposition). One monitor per relay, stopped with it.
 */
export class EventLoopDelay {
  private readonly histogram: IntervalHistogram = monitorEventLoopDelay({ resolution: RESOLUTION_MS });

  constructor() {
    this.histogram.enable();
  }

  close(): void {
    this.histogram.disable();
  }

  /** The metric family in the Prometheus text format, ending with a newline. */
  exposition(): string {
    const { histogram } = this;
    const count = histogram.count;
    const lines = [`# HELP ${NAME} ${HELP}`, `# TYPE ${NAME} histogram`];
    for (const le of EVENT_LOOP_DELAY_BUCKETS)
      lines.push(`${NAME}_bucket{le="${le}"} ${samplesAtMost(histogram, le * 1e9 + RESOLUTION_NS)}`);
    lines.push(`${NAME}_bucket{le="+Inf"} ${count}`);
    // Mean interval less the resolution: the mean delay (an interval a little short of 10 ms counts as none in the
    // buckets).
    lines.push(`${NAME}_sum ${count === 0 ? 0 : Math.max(0, (histogram.mean - RESOLUTION_NS) / 1e9) * count}`);
    lines.push(`${NAME}_count ${count}`);
    return `${lines.join('\n')}\n`;
  }
}

/**
 * How many recorded intervals are at most `boundNs`: the largest percentile whose value is within it, times the
 * count.
 */
function samplesAtMost(histogram: IntervalHistogram, boundNs: number): number {
  const count = histogram.count;
  if (count === 0 || histogram.min > boundNs) return 0;
  if (histogram.max <= boundNs) return count;
  let within = 0;
  let beyond = 100;
  // Halvings of the percentile range until one step is well under one sample of `count`.
  const steps = Math.ceil(Math.log2(100 * count)) + 4;
  for (let step = 0; step < steps; step++) {
    const middle = (within + beyond) / 2;
    if (histogram.percentile(middle) <= boundNs) within = middle;
    else beyond = middle;
  }
  return Math.round((within / 100) * count);
}
