import type { RelayEvent } from './events';
import { toJsonEvent } from './observer';

/** An event as it was emitted (made JSON only when the page asks), or one read back from the events file. */
type RecentEvent = { event: RelayEvent; at: number } | { json: Record<string, unknown> };

/**
 * The last events in memory, for the status page: what an admin sees first is what just happened.
 * It takes what the events file takes (outcomes, attempts, DSNs); after a restart it is filled
 * again from the end of the events file. Events are kept as emitted and made JSON when the page is
 * read: every message emits several, the page is read now and then.
 */
export class RecentEvents {
  private events: RecentEvent[] = [];

  constructor(readonly capacity = 50) {}

  record(event: RelayEvent): void {
    this.events.push({ event, at: Date.now() });
    if (this.events.length > this.capacity) this.events.shift();
  }

  /** Events from before this process started (oldest first), placed before those written since. */
  prepend(older: readonly Record<string, unknown>[]): void {
    this.events = [...older.map((json) => ({ json })), ...this.events].slice(-this.capacity);
  }

  /** Newest first. */
  list(): Record<string, unknown>[] {
    return this.events.map((entry) => ('json' in entry ? entry.json : toJsonEvent(entry.event, entry.at))).reverse();
  }
}
