import { Transform, type TransformCallback } from 'node:stream';
import { streamedGarbage } from '../memory/streamed-garbage';

const CR = 0x0d;
const LF = 0x0a;
const NUL = 0x00;

export type LineEndingMode = 'normalize' | 'strict';

/** Why a message is refused as smuggling-shaped: a bare CR, a bare LF under `strict`, or a NUL byte. */
export type DataViolation = 'bare_cr' | 'bare_lf' | 'nul';

/**
 * Sits between smtp-server's DATA stream and the spool file. smtp-server ends DATA only on
 * CRLF.CRLF but hands bare CR and bare LF through untouched; deciding about them is ours:
 * - a bare CR is never legitimate and is how smuggling payloads hide: the message is refused;
 * - a bare LF is read as CRLF (`normalize`) or refused (`strict`);
 * - a NUL byte is refused in either mode: SMTP data (7bit or 8BITMIME; BINARYMIME is not offered)
 *   never carries one, and a smart host that drops NULs before it looks for the end of data would
 *   read `\r\n\0.\r\n` as the end of this message and what follows as another one.
 * So the stored (and forwarded) copy is CRLF throughout and nothing in it can end DATA early at the
 * smart host. It also stops writing once the message is over the size limit or already refused,
 * while still draining the client's data, so a refused message never fills the disk.
 */
export class DataGuard extends Transform {
  bytesIn = 0;
  normalizedLineEndings = 0;
  violation: DataViolation | null = null;
  oversize = false;
  private pendingCR = false;

  constructor(
    private readonly maxBytes: number,
    private readonly mode: LineEndingMode,
  ) {
    super();
  }

  get refused(): boolean {
    return this.violation !== null || this.oversize;
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.bytesIn += chunk.length;
    // The chunk and smtp-server's copies behind it are garbage once written: see StreamedGarbage.
    streamedGarbage().streamed(chunk.length);
    if (this.refused) return callback();
    if (this.bytesIn > this.maxBytes) {
      this.oversize = true;
      return callback();
    }
    const out = this.checkLineEndings(chunk);
    callback(null, out ?? undefined);
  }

  override _flush(callback: TransformCallback): void {
    if (this.pendingCR && !this.refused) this.violation = 'bare_cr';
    callback();
  }

  /** The chunk to store (with bare LFs made CRLF), or null once the message is refused. */
  private checkLineEndings(chunk: Buffer): Buffer | null {
    if (chunk.indexOf(NUL) !== -1) {
      this.violation = 'nul';
      return null;
    }
    const crBefore = this.pendingCR;
    if (crBefore && chunk.length > 0 && chunk[0] !== LF) {
      this.violation = 'bare_cr';
      return null;
    }
    for (let pos = chunk.indexOf(CR); pos !== -1; pos = chunk.indexOf(CR, pos + 1)) {
      if (pos + 1 < chunk.length && chunk[pos + 1] !== LF) {
        this.violation = 'bare_cr';
        return null;
      }
    }
    if (chunk.length > 0) this.pendingCR = chunk[chunk.length - 1] === CR;

    const bareLf: number[] = [];
    for (let pos = chunk.indexOf(LF); pos !== -1; pos = chunk.indexOf(LF, pos + 1)) {
      const precededByCR = pos === 0 ? crBefore : chunk[pos - 1] === CR;
      if (!precededByCR) bareLf.push(pos);
    }
    if (bareLf.length === 0) return chunk;
    if (this.mode === 'strict') {
      this.violation = 'bare_lf';
      return null;
    }
    this.normalizedLineEndings += bareLf.length;
    const out = Buffer.allocUnsafe(chunk.length + bareLf.length);
    let from = 0;
    let to = 0;
    for (const pos of bareLf) {
      to += chunk.copy(out, to, from, pos);
      out[to++] = CR;
      from = pos;
    }
    chunk.copy(out, to, from);
    return out;
  }
}
