import type { TraceQuery } from './query';
import { traceMessages, type TraceReport } from './trace';
import { TraceIndex } from './trace-index';

/** How often the running relay summarises what it appended to its events file. */
export const INDEX_REFRESH_MS = 30_000;

/**
 * Message trace inside the relay: `GET /api/trace` and the status page's search box. Queries run
 * one at a time (a second waits), and the index is kept up to date in the background, so a query
 * only summarises the last few seconds of events itself. Work is done a block at a time between
 * SMTP sessions' turns on the event loop.
 */
export class TraceService {
  private readonly index: TraceIndex;
  private timer: NodeJS.Timeout | null = null;
  private last: Promise<unknown> = Promise.resolve();

  constructor(
    eventsFile: string,
    private readonly onRefreshError: (err: Error) => void,
    private readonly refreshMs = INDEX_REFRESH_MS,
  ) {
    this.index = new TraceIndex(eventsFile, { persist: true });
  }

  /** The first pass comes one interval after start: recovery and the first deliveries go first. */
  start(): void {
    this.timer = setInterval(() => this.refreshSoon(), this.refreshMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.last;
  }

  query(query: TraceQuery): Promise<TraceReport> {
    return this.serially(() => traceMessages(this.index, query));
  }

  private refreshSoon(): void {
    void this.serially(() => this.index.refresh()).catch((err: Error) => this.onRefreshError(err));
  }

  private serially<T>(run: () => Promise<T>): Promise<T> {
    const next = this.last.then(run);
    this.last = next.catch(() => undefined);
    return next;
  }
}
