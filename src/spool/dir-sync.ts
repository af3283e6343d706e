import { open, type FileHandle } from 'node:fs/promises';

/**
 * Group commit for directory fsyncs. A rename is durable only once its directory is fsync'd, and
 * under load many sessions commit at once: one fsync started after a caller's rename covers every
 * rename made before it started, so concurrent callers share it instead of queueing one each. Every
 * caller still returns only after an fsync that began after its own rename.
 */
export class DirectorySyncer {
  private running: Promise<void> | null = null;
  private next: Promise<void> | null = null;
  /** Kept open: an open and a close per fsync cost more main-thread time than the fsync itself. */
  private handle: Promise<FileHandle> | null = null;

  constructor(private readonly dir: string) {}

  sync(): Promise<void> {
    if (!this.running) {
      this.running = this.fsyncOnce().finally(() => {
        this.running = null;
      });
      return this.running;
    }
    // An fsync is under way, but it may have started before our rename: wait for the next one,
    // which all callers arriving meanwhile share.
    this.next ??= this.running.then(
      () => this.startQueued(),
      () => this.startQueued(),
    );
    return this.next;
  }

  private startQueued(): Promise<void> {
    this.next = null;
    return this.sync();
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
