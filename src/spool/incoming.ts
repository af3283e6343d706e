import { createWriteStream, type WriteStream } from 'node:fs';
import { open, unlink, type FileHandle } from 'node:fs/promises';
import { encodeTrailer } from './trailer';

/**
 * A message being received into `tmp/`: DATA streams into `stream`; `seal` appends the metadata
 * and fsyncs (one fsync for message and metadata together); `discard` drops it. The file handle
 * stays open from the first byte to the seal, so the commit costs no second open.
 */
export class IncomingFile {
  private closed = false;

  private constructor(
    readonly path: string,
    private readonly handle: FileHandle,
    /** Where the session writes the message; ends without closing the file. */
    readonly stream: WriteStream,
  ) {}

  static async create(path: string): Promise<IncomingFile> {
    const handle = await open(path, 'wx');
    // A stream on the numeric fd, not handle.createWriteStream(): a stream on the handle holds a
    // reference that only its own close releases, and that close would close the file before the seal.
    return new IncomingFile(path, handle, createWriteStream('', { fd: handle.fd, autoClose: false, emitClose: false }));
  }

  /** Message bytes written so far (our Received header included). */
  get bytesWritten(): number {
    return this.stream.bytesWritten;
  }

  /** After the stream finished: metadata behind the message bytes, then fsync and close. */
  async seal(json: string): Promise<void> {
    const trailer = encodeTrailer(json);
    await this.handle.write(trailer, 0, trailer.length, this.stream.bytesWritten);
    await this.handle.sync();
    await this.close();
  }

  /** Closes (if still open) and removes the file; never throws for a file already gone. */
  async discard(): Promise<void> {
    if (!this.stream.destroyed) this.stream.destroy();
    await this.close().catch(() => undefined);
    await unlink(this.path).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') throw err;
    });
  }

  private async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.handle.close();
  }
}
