import { Transform, type TransformCallback } from 'node:stream';
import { HeaderBlock } from './header-block';

const END_OF_HEADER = Buffer.from('\r\n\r\n');
const CRLF = Buffer.from('\r\n');
const CR = 0x0d;
const LF = 0x0a;

/**
 * Holds back the header block of a streaming message (bounded), hands it to `onHeaders` to inspect
 * and edit, writes the edited block, then passes the body through untouched. Only the header is
 * ever in memory; the body streams. Expects CRLF line endings (it runs after DataGuard).
 */
export class HeaderSplitter extends Transform {
  /** The header block as received, once it is complete (edits go to the copy `onHeaders` gets). */
  original: HeaderBlock | null = null;
  /** The header block was larger than `maxHeaderBytes`: nothing more is written. */
  headerTooLarge = false;
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private inBody = false;

  constructor(
    private readonly maxHeaderBytes: number,
    private readonly onHeaders: (headers: HeaderBlock) => Promise<void>,
    /** Sees every body chunk as it passes (inspections such as a MIME walk); a returned promise holds the stream until it settles. */
    private readonly onBody: (chunk: Buffer) => unknown = () => undefined,
  ) {
    super();
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    if (this.headerTooLarge) return callback();
    if (this.inBody) {
      const inspected = this.onBody(chunk);
      if (!(inspected instanceof Promise)) return callback(null, chunk);
      inspected.then(() => callback(null, chunk), callback);
      return;
    }
    this.pending.push(chunk);
    this.pendingBytes += chunk.length;
    const buffered = Buffer.concat(this.pending);
    this.pending = [buffered];
    let headerBytes: Buffer;
    let rest: Buffer;
    if (buffered.length >= 2 && buffered[0] === CR && buffered[1] === LF) {
      // A message that starts with the blank line has an empty header.
      headerBytes = Buffer.alloc(0);
      rest = buffered.subarray(2);
    } else {
      const end = buffered.indexOf(END_OF_HEADER);
      if (end === -1) {
        if (this.pendingBytes > this.maxHeaderBytes) this.tooLarge();
        return callback();
      }
      headerBytes = buffered.subarray(0, end);
      rest = buffered.subarray(end + END_OF_HEADER.length);
    }
    if (headerBytes.length > this.maxHeaderBytes) {
      this.tooLarge();
      return callback();
    }
    this.pending = [];
    this.inBody = true;
    this.emitHeaders(headerBytes, rest, true).then(() => callback(), callback);
  }

  override _flush(callback: TransformCallback): void {
    if (this.inBody || this.headerTooLarge) return callback();
    // No blank line at all: the whole (small) message is header.
    let all = Buffer.concat(this.pending);
    this.pending = [];
    if (all.length >= 2 && all[all.length - 2] === CR && all[all.length - 1] === LF) all = all.subarray(0, -2);
    this.emitHeaders(all, Buffer.alloc(0), false).then(() => callback(), callback);
  }

  private tooLarge(): void {
    this.headerTooLarge = true;
    this.pending = [];
  }

  private async emitHeaders(headerBytes: Buffer, rest: Buffer, hasBody: boolean): Promise<void> {
    this.original = HeaderBlock.parse(headerBytes);
    const editable = HeaderBlock.parse(headerBytes);
    await this.onHeaders(editable);
    this.push(editable.toBuffer());
    if (hasBody) this.push(CRLF);
    if (rest.length > 0) {
      await this.onBody(rest);
      this.push(rest);
    }
  }
}
