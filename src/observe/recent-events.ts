import type { EventOutput } from './event-file';

/**
 * The last events in memory, for the status page: what an admin sees first is what just happened.
 * It takes what the events file takes (outcomes, attempts, DSNs); after a restart it is filled
 * again from the end of the events file.
 */
export class RecentEvents implements EventOutput {
  readonly traceEvents = true;
  private events: Record<string, unknown>[] = [];

  constructor(readonly capacity = 50) {}

  write(event: Record<string, unknown>): void {
    this.events.push(event);
    if (this.events.length > this.capacity) this.events.shift();
  }

  async close(): Promise<void> {}

  /** Events from before this process started (oldest first), placed before those written since. */
  prepend(older: readonly Record<string, unknown>[]): void {
    this.events = [...older, ...this.events].slice(-this.capacity);
  }

  /** Newest first. */
  list(): Record<string, unknown>[] {
    return [...this.events].reverse();
  }
}
