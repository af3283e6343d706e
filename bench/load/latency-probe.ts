import { buildMessage, sendOne, type ConnectionRegistry, type Timeouts } from '../smtp-client';

/**
 * smtp-source reports no latencies, so while it runs a probe sends a few extra messages on a fixed
 * schedule (open loop: a slow reply does not delay the next probe) with the bench's raw client and
 * times each from the final "." reaching the kernel to the 250. Both relays get the same probe, so
 * its small extra load is part of the identical load, and the latencies are those of a client
 * arriving while 20 sessions keep the relay busy.
 */

export interface ProbeOptions {
  port: number;
  /** Probe messages started per second. */
  ratePerSecond: number;
  /** At most this many probes in flight; a tick that finds them all busy is skipped and counted. */
  maxInFlight: number;
  size: number;
  /** Recipients are probe-N@<domain>, so the sink tells them from the generator's messages. */
  domain: string;
  runId: string;
  timeouts: Timeouts;
}

export interface ProbeResult {
  /** Recipients that got a 250. */
  accepted: string[];
  latenciesMs: number[];
  failures: number;
  skipped: number;
}

export class LatencyProbe {
  private readonly result: ProbeResult = { accepted: [], latenciesMs: [], failures: 0, skipped: 0 };
  private readonly live: ConnectionRegistry = new Set();
  private readonly inFlight = new Set<Promise<void>>();
  private timer: NodeJS.Timeout | null = null;
  private next = 0;

  constructor(private readonly options: ProbeOptions) {}

  start(): void {
    this.timer = setInterval(() => this.tick(), 1000 / this.options.ratePerSecond);
  }

  /** Stops starting probes and waits for the ones in flight (each is bounded by the client timeouts). */
  async stop(): Promise<ProbeResult> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await Promise.all([...this.inFlight]);
    return this.result;
  }

  private tick(): void {
    if (this.inFlight.size >= this.options.maxInFlight) {
      this.result.skipped++;
      return;
    }
    const n = this.next++;
    const to = `probe-${n}@${this.options.domain}`;
    const message = { ...buildMessage(this.options.runId, n, this.options.size), to };
    const send = sendOne('127.0.0.1', this.options.port, message, this.options.timeouts, this.live).then((outcome) => {
      if (outcome.kind === 'accepted') {
        this.result.accepted.push(to);
        this.result.latenciesMs.push(outcome.latencyMs);
      } else {
        this.result.failures++;
      }
    });
    const tracked = send.finally(() => this.inFlight.delete(tracked));
    this.inFlight.add(tracked);
  }
}
