import { open } from 'node:fs/promises';

/**
 * Group commit for directory fsyncs. A rename is durable only once its directory is fsync'd, and
 * under load many sessions commit at once: one fsync started after a caller's rename covers every
 * rename made before it started, so concurrent callers share it instead of queueing one each. Every
 * caller still returns only after an fsync that began after its own rename.
 */
export class DirectorySyncer {
  private running: Promise<void> | null = null;
  private next: Promise<void> | null = null;

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

  protected async fsyncOnce(): Promise<void> {
    const handle = await open(this.dir, 'r');
    try {
      await handle.sync();
    } finally {
      await handle.close();
    }
  }
}
