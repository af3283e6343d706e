import { Transform, type TransformCallback } from 'node:stream';
import { HeaderBlock } from './header-block';
import { headerLimitProblem, TOO_MANY_FIELDS, tooManyFields } from './header-limits';

const END_OF_HEADER = Buffer.from('\r\n\r\n');
const CRLF = Buffer.from('\r\n');
const CR = 0x0d;
const LF = 0x0a;

/**
 * Holds back the header block of a streaming message (bounded), hands it to `onHeaders` to inspect
 * and edit, writes the edited block, then passes the body through untouched. Only the header is
 * ever in memory; the body streams. Expects CRLF line endings (it runs after DataGuard).
 *
 * A header larger than `maxHeaderBytes`, or out of the bounds of header-limits.ts, is never handed
 * on: nothing more is written and the caller refuses the message. Each chunk is searched once for
 * the blank line, so the time spent grows with the header's size whatever sizes the chunks come in.
 */
export class HeaderSplitter extends Transform {
  /** The header block as received, once it is complete (edits go to the copy `onHeaders` gets). */
  original: HeaderBlock | null = null;
  /** The header block was larger than `maxHeaderBytes`: nothing more is written. */
  headerTooLarge = false;
  /** Why the header block is out of bounds (a field too long, too many fields): nothing more is written. */
  headerOutOfBounds: string | null = null;
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  /** The last bytes held (fewer than the end-of-header marker) and the first two. */
  private tail = Buffer.alloc(0);
  private head = Buffer.alloc(0);
  private inBody = false;

  constructor(
    private readonly maxHeaderBytes: number,
    private readonly onHeaders: (headers: HeaderBlock) => Promise<void>,
    /**
     * Sees every body chunk as it passes (inspections such as a MIME walk); a returned promise holds the stream until
     * it settles.
     */
    private readonly onBody: (chunk: Buffer) => unknown = () => undefined,
  ) {
    super();
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    if (this.refused) return callback();
    if (this.inBody) {
      const inspected = this.onBody(chunk);
      if (!(inspected instanceof Promise)) return callback(null, chunk);
      inspected.then(() => callback(null, chunk), callback);
      return;
    }
    const end = this.findEndOfHeader(chunk);
    this.pending.push(chunk);
    this.pendingBytes += chunk.length;
    let headerEnd: number;
    let bodyStart: number;
    if (this.head.length === 2 && this.head[0] === CR && this.head[1] === LF) {
      // A message that starts with the blank line has an empty header.
      headerEnd = 0;
      bodyStart = CRLF.length;
    } else if (end === -1) {
      if (this.pendingBytes > this.maxHeaderBytes) this.tooLarge();
      return callback();
    } else {
      headerEnd = end;
      bodyStart = end + END_OF_HEADER.length;
    }
    if (headerEnd > this.maxHeaderBytes) {
      this.tooLarge();
      return callback();
    }
    const buffered = this.pending.length === 1 ? chunk : Buffer.concat(this.pending, this.pendingBytes);
    this.pending = [];
    this.inBody = true;
    this.emitHeaders(buffered.subarray(0, headerEnd), buffered.subarray(bodyStart), true).then(
      () => callback(),
      callback,
    );
  }

  override _flush(callback: TransformCallback): void {
    if (this.inBody || this.refused) return callback();
    // No blank line at all: the whole (small) message is header.
    let all = Buffer.concat(this.pending, this.pendingBytes);
    this.pending = [];
    if (all.length >= 2 && all[all.length - 2] === CR && all[all.length - 1] === LF) all = all.subarray(0, -2);
    this.emitHeaders(all, Buffer.alloc(0), false).then(() => callback(), callback);
  }

  private get refused(): boolean {
    return this.headerTooLarge || this.headerOutOfBounds !== null;
  }

  /**
   * Where CRLFCRLF starts in the held bytes with `chunk` added, or -1. Only the chunk and the three
   * bytes held before it are searched (a marker the network split starts there at the earliest);
   * the first two bytes are kept to recognise an empty header.
   */
  private findEndOfHeader(chunk: Buffer): number {
    const window = this.tail.length === 0 ? chunk : Buffer.concat([this.tail, chunk]);
    const found = window.indexOf(END_OF_HEADER);
    if (this.head.length < 2) this.head = Buffer.concat([this.head, chunk.subarray(0, 2 - this.head.length)]);
    const windowStart = this.pendingBytes - this.tail.length;
    this.tail = Buffer.from(window.subarray(Math.max(0, window.length - (END_OF_HEADER.length - 1))));
    return found === -1 ? -1 : windowStart + found;
  }

  private tooLarge(): void {
    this.headerTooLarge = true;
    this.pending = [];
    this.tail = Buffer.alloc(0);
  }

  private async emitHeaders(headerBytes: Buffer, rest: Buffer, hasBody: boolean): Promise<void> {
    if (tooManyFields(headerBytes)) {
      this.headerOutOfBounds = TOO_MANY_FIELDS;
      return;
    }
    this.original = HeaderBlock.parse(headerBytes);
    const problem = headerLimitProblem(this.original);
    if (problem !== undefined) {
      this.headerOutOfBounds = problem;
      return;
    }
    const editable = this.original.copy();
    await this.onHeaders(editable);
    if (!editable.sameFieldsAs(this.original)) this.push(editable.toBuffer());
    else if (headerBytes.length > 0) {
      // Unedited: the bytes as they came are what toBuffer() would rebuild from them.
      this.push(headerBytes);
      this.push(CRLF);
    }
    if (hasBody) this.push(CRLF);
    if (rest.length > 0) {
      await this.onBody(rest);
      this.push(rest);
    }
  }
}
