import { open, type FileHandle } from 'node:fs/promises';

/**
 * At most this many fsyncs of one directory run at once. A caller that finds one running cannot
 * share it (it may have started before the caller's rename), so it starts a second at once instead
 * of waiting for the first to end: the kernel then starts the second's journal commit the moment
 * the first's ends, where waiting cost an event-loop turn and a thread-pool trip (~1–1.5 ms under
 * load) between the two. Callers arriving while both run share the one that starts when either ends.
 */
const MAX_FSYNCS_IN_FLIGHT = 2;

/**
 * Group commit for directory fsyncs. A rename is durable only once its directory is fsync'd, and
 * under load many sessions commit at once: one fsync started after a caller's rename covers every
 * rename made before it started, so concurrent callers share it instead of queueing one each. Every
 * caller still returns only after an fsync that began after its own rename.
 */
export class DirectorySyncer {
  private inFlight = 0;
  /** The fsync that the callers arriving while MAX_FSYNCS_IN_FLIGHT run will share; it starts when one of them ends. */
  private queued: { shared: Promise<void>; start: () => void } | null = null;
  /** Kept open: an open and a close per fsync cost more main-thread time than the fsync itself. */
  private handle: Promise<FileHandle> | null = null;

  constructor(private readonly dir: string) {}

  sync(): Promise<void> {
    if (this.inFlight < MAX_FSYNCS_IN_FLIGHT) return this.fsyncNow();
    if (!this.queued) {
      let start = (): void => undefined;
      const shared = new Promise<void>((resolve, reject) => {
        start = () => this.fsyncNow().then(resolve, reject);
      });
      this.queued = { shared, start };
    }
    return this.queued.shared;
  }

  private fsyncNow(): Promise<void> {
    this.inFlight++;
    // Made a promise however fsyncOnce fails, so the count always comes down again.
    return Promise.resolve()
      .then(() => this.fsyncOnce())
      .finally(() => {
        this.inFlight--;
        const queued = this.queued;
        this.queued = null;
        queued?.start();
      });
  }

  /** Closes the kept directory handle (a later sync opens it again). */
  async close(): Promise<void> {
    const handle = this.handle;
    this.handle = null;
    await (await handle?.catch(() => null))?.close();
  }

  protected async fsyncOnce(): Promise<void> {
    this.handle ??= open(this.dir, 'r');
    try {
      await (await this.handle).sync();
    } catch (err) {
      // A failed open or sync must not stick: the next caller starts from a fresh handle.
      await this.close().catch(() => undefined);
      throw err;
    }
  }
}
