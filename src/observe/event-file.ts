import { mkdirSync } from 'node:fs';
import { appendFile, rename, stat, unlink } from 'node:fs/promises';
import * as path from 'node:path';

/** Where outcome events go: the JSONL file, a webhook. write() must never block or throw. */
export interface EventOutput {
  /** True: also takes the `attempt` and `dsn` events that `smarthop trace` reads (observer.ts). */
  readonly traceEvents?: boolean;
  write(event: Record<string, unknown>): void;
  /** Finishes what it can within its own bound, then stops. */
  close(): Promise<void>;
}

export interface RotatingFileOptions {
  file: string;
  /** Rotate once the next line would take the file past this many bytes. */
  maxSize: number;
  /** Rotated files kept (`events.jsonl.1` is the newest); 0 keeps none. */
  keep: number;
  /** Lines waiting for the disk beyond this are dropped (and reported): memory stays bounded if the disk stalls. */
  maxPending?: number;
  onDrop: (count: number) => void;
  onError: (err: Error) => void;
}

/**
 * `events.jsonl`, rotated by size like logrotate's `size` + `rotate N`: writes are queued and appended
 * in batches by one writer at a time, so the order of events is kept and an emitting stage never waits.
 */
export class RotatingEventFile implements EventOutput {
  readonly traceEvents = true;
  private pending: string[] = [];
  private size: number | null = null;
  private writing: Promise<void> | null = null;
  private readonly maxPending: number;

  constructor(private readonly options: RotatingFileOptions) {
    mkdirSync(path.dirname(options.file), { recursive: true });
    this.maxPending = options.maxPending ?? 100_000;
  }

  write(event: Record<string, unknown>): void {
    if (this.pending.length >= this.maxPending) {
      this.options.onDrop(1);
      return;
    }
    this.pending.push(`${JSON.stringify(event)}\n`);
    this.writing ??= this.drain().finally(() => {
      this.writing = null;
    });
  }

  async close(): Promise<void> {
    while (this.writing) await this.writing;
  }

  private async drain(): Promise<void> {
    while (this.pending.length > 0) {
      const lines = this.pending;
      this.pending = [];
      try {
        await this.append(lines);
      } catch (err) {
        this.options.onDrop(lines.length);
        this.options.onError(err as Error);
        this.size = null; // re-read after an error: the file may have been moved or truncated
      }
    }
  }

  private async append(lines: string[]): Promise<void> {
    this.size ??= await stat(this.options.file).then(
      (s) => s.size,
      () => 0,
    );
    let chunk = '';
    let chunkBytes = 0;
    for (const line of lines) {
      const bytes = Buffer.byteLength(line);
      if (this.size + chunkBytes + bytes > this.options.maxSize && this.size + chunkBytes > 0) {
        if (chunk !== '') await appendFile(this.options.file, chunk);
        await this.rotate();
        chunk = '';
        chunkBytes = 0;
      }
      chunk += line;
      chunkBytes += bytes;
    }
    if (chunk !== '') await appendFile(this.options.file, chunk);
    this.size += chunkBytes;
  }

  /** events.jsonl → .1 → .2 … → .keep, the oldest dropped. */
  private async rotate(): Promise<void> {
    const { file, keep } = this.options;
    const ignoreMissing = (err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') throw err;
    };
    if (keep === 0) {
      await unlink(file).catch(ignoreMissing);
    } else {
      await unlink(`${file}.${keep}`).catch(ignoreMissing);
      for (let i = keep - 1; i >= 1; i--) await rename(`${file}.${i}`, `${file}.${i + 1}`).catch(ignoreMissing);
      await rename(file, `${file}.1`).catch(ignoreMissing);
    }
    this.size = 0;
  }
}
