import { performance } from 'node:perf_hooks';
import type { SinkMessage } from '../../src/tools/sink';
import { waitForArrivals } from '../arrival-wait';

/**
 * What reached the sink in one phase, counted by unique recipient: smtp-source repeats its
 * Message-IDs, but with -N every message has its own recipient (`<n>rcpt@<domain>`). Each phase
 * gets its own recipient domain, so a late or repeated delivery from an earlier phase can never be
 * counted for a later one.
 */

const LOAD_LOCAL_PART = /^\d+rcpt$/;
const PROBE_LOCAL_PART = /^probe-\d+$/;

export class RecipientTally {
  /** Load recipient -> performance.now() of its first arrival. */
  readonly load = new Map<string, number>();
  readonly probes = new Set<string>();
  duplicates = 0;
  /** Recipients that belong to no part of this phase's load. */
  unexpected = 0;
  private onArrival: (() => void) | null = null;

  constructor(readonly domain: string) {}

  record(message: SinkMessage): void {
    for (const address of message.to) {
      const at = address.lastIndexOf('@');
      const local = address.slice(0, at);
      const domain = address.slice(at + 1).toLowerCase();
      if (at < 0 || domain !== this.domain) this.unexpected++;
      else if (LOAD_LOCAL_PART.test(local))
        this.note(this.load.has(address), () => this.load.set(address, performance.now()));
      else if (PROBE_LOCAL_PART.test(local)) this.note(this.probes.has(address), () => this.probes.add(address));
      else this.unexpected++;
    }
    this.onArrival?.();
  }

  /** performance.now() of the last first-arrival of a load message; null before any. */
  lastLoadArrival(): number | null {
    let last: number | null = null;
    for (const at of this.load.values()) if (last === null || at > last) last = at;
    return last;
  }

  /**
   * Resolves once `loadCount` load messages and every probe in `probes` arrived, or when nothing new
   * arrived for `noProgressMs`, or at `deadline`: a stuck queue ends the phase, it never hangs it.
   */
  waitFor(
    loadCount: number,
    probes: readonly string[],
    noProgressMs: number,
    deadline: number,
    halted: () => string | null,
  ): Promise<{ complete: boolean; reason: string }> {
    return waitForArrivals({
      done: () => this.load.size >= loadCount && probes.every((p) => this.probes.has(p)),
      onArrival: (callback) => {
        this.onArrival = callback;
      },
      noProgressMs,
      deadline,
      halted,
      deadlineReason: 'the overall time limit was reached',
    });
  }

  private note(seen: boolean, add: () => void): void {
    if (seen) this.duplicates++;
    else add();
  }
}
