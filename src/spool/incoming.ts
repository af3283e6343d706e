import { writevSync } from 'node:fs';
import { open, unlink, type FileHandle } from 'node:fs/promises';
import { Writable } from 'node:stream';
import { encodeTrailer } from './trailer';

/**
 * Bytes held before they are written: a message up to this size (most of what LAN applications
 * send) reaches the disk in one write together with its metadata, and no session ever holds more
 * than this of its message in memory, however large the message is.
 */
export const WRITE_BUFFER_BYTES = 64 * 1024;

/**
 * A message being received into `tmp/`: DATA streams into `stream`; `seal` appends the metadata
 * and fsyncs (one fsync for message and metadata together); `discard` drops it. Every
 * asynchronous file operation is a round trip to libuv's thread pool that wakes another thread, so
 * the file stays open from the first byte to the seal, writes go out in batches of up to
 * WRITE_BUFFER_BYTES, and the seal's last write, the one the 250 waits for, is made on the event loop.
 */
export class IncomingFile {
  private closed = false;
  private readonly writer: BatchingWriter;

  private constructor(
    readonly path: string,
    private readonly handle: FileHandle,
  ) {
    this.writer = new BatchingWriter(handle);
  }

  static async create(path: string): Promise<IncomingFile> {
    return new IncomingFile(path, await open(path, 'wx'));
  }

  /** Where the session writes the message; finishing it does not close the file. */
  get stream(): Writable {
    return this.writer;
  }

  /** Message bytes taken so far (our Received header included), whether on disk yet or not. */
  get bytesWritten(): number {
    return this.writer.bytesTaken;
  }

  /**
   * After the stream finished: what is still held, then the metadata, in one write (on the event
   * loop, see `writeLast`); fsync. The file stays open: once its bytes are on disk, closing it is not
   * part of making it durable, so the caller closes it (`close`) while the folder's fsync runs.
   * Returns the message's bytes when all of them were still held (a message up to
   * WRITE_BUFFER_BYTES): exactly what the file starts with, for a first delivery that need not read it.
   */
  async seal(json: string): Promise<Buffer | undefined> {
    const whole = this.writer.wholeMessageHeld() ? Buffer.concat(this.writer.heldChunks()) : undefined;
    await this.writer.writeLast(encodeTrailer(json));
    await this.handle.sync();
    return whole;
  }

  /** Closes (if still open) and removes the file; never throws for a file already gone. */
  async discard(): Promise<void> {
    if (!this.writer.destroyed) this.writer.destroy();
    await this.close().catch(() => undefined);
    await unlink(this.path).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') throw err;
    });
  }

  /** Releases the descriptor once no write is under way; a second call does nothing. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.writer.settled();
    await this.handle.close();
  }
}

/** Holds chunks until WRITE_BUFFER_BYTES, then writes them with one writev; the end holds the rest for the seal. */
class BatchingWriter extends Writable {
  bytesTaken = 0;
  private held: Buffer[] = [];
  private heldBytes = 0;
  private position = 0;
  private writing: Promise<void> = Promise.resolve();

  constructor(private readonly handle: FileHandle) {
    super({ highWaterMark: WRITE_BUFFER_BYTES });
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.held.push(chunk);
    this.heldBytes += chunk.length;
    this.bytesTaken += chunk.length;
    if (this.heldBytes < WRITE_BUFFER_BYTES) return callback();
    this.flush().then(() => callback(), callback);
  }

  /** Nothing of the message has been written yet: what is held is all of it. */
  wholeMessageHeld(): boolean {
    return this.held.length > 0 && this.heldBytes === this.bytesTaken && this.writableFinished;
  }

  heldChunks(): readonly Buffer[] {
    return this.held;
  }

  /** Writes what is held at the end of what is on disk, after any write still under way. */
  flush(): Promise<void> {
    const buffers = this.takeHeld();
    this.writing = this.writing.then(() => this.writeAll(buffers));
    return this.writing;
  }

  /**
   * Writes what is held and `tail` after it, on the event loop, once the writes before it are done.
   * This write is on the way to the 250 and is at most WRITE_BUFFER_BYTES plus the metadata, into
   * the page cache: a few microseconds of kernel time (p99 0.1 ms under the bench's load), where the
   * same write sent through libuv's thread pool waited 1–1.5 ms at the median for a pool thread and
   * then an event-loop turn (docs/performance.md, "the commit's trips to the thread pool").
   * The writes while DATA streams stay asynchronous: a large message must not hold the event loop.
   */
  async writeLast(tail: Buffer): Promise<void> {
    await this.writing;
    let pending = [...this.takeHeld(), tail];
    while (pending.length > 0) pending = this.advance(pending, writevSync(this.handle.fd, pending, this.position));
  }

  /** Resolves once no write is under way (failed or not), so the file can be closed. */
  settled(): Promise<void> {
    return this.writing.catch(() => undefined);
  }

  private takeHeld(): Buffer[] {
    const buffers = this.held;
    this.held = [];
    this.heldBytes = 0;
    return buffers;
  }

  private async writeAll(buffers: Buffer[]): Promise<void> {
    let pending = buffers;
    while (pending.length > 0)
      pending = this.advance(pending, (await this.handle.writev(pending, this.position)).bytesWritten);
  }

  /**
   * Moves the file position past `written` bytes; what is left is what a short write (rare on a regular file) did
   * not take.
   */
  private advance(pending: Buffer[], written: number): Buffer[] {
    // A write that takes nothing would loop for ever (on the event loop, for the last write).
    if (written === 0 && pending.some((buffer) => buffer.length > 0))
      throw new Error('the spool file took no bytes of a write');
    this.position += written;
    return skipBytes(pending, written);
  }
}

function skipBytes(buffers: Buffer[], count: number): Buffer[] {
  const rest: Buffer[] = [];
  let skip = count;
  for (const buffer of buffers) {
    if (skip >= buffer.length) {
      skip -= buffer.length;
      continue;
    }
    rest.push(skip > 0 ? buffer.subarray(skip) : buffer);
    skip = 0;
  }
  return rest;
}
