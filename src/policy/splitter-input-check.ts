const CR = 0x0d;
const LF = 0x0a;
const SP = 0x20;
const HT = 0x09;
const COLON = 0x3a;

/** A real Content-Transfer-Encoding field is a word and perhaps a short comment. */
export const MAX_TRANSFER_ENCODING_FIELD = 256;
/** Longest run of CR and LF bytes with a bare CR in it (a blank line is 2; several bare CRs in a row are not mail). */
export const MAX_LINE_BREAK_RUN = 64;

const FIELD_NAME = Buffer.from('content-transfer-encoding');

/**
 * Watches the bytes the MIME walk is about to give mailsplit (5.4.6) for the two inputs its header
 * parser takes quadratic time over, so the walk can call the message uninspectable before mailsplit
 * reads them:
 *
 * - a long Content-Transfer-Encoding field: its comments are removed with `/\(.*\)/g`, which tries
 *   every `(` against the rest of the value (32,000 of them took 1.5 s; a part's header may hold
 *   64 KiB);
 * - a long run of line-break bytes with bare CRs in it: a header block's end is trimmed with
 *   `/[\r\n]+$/`, which tries every byte of a run against the rest of it (32,000 CRs took 2 s).
 *   DATA refuses bare CRs, but a base64-encoded attached message can carry them.
 *
 * Header blocks and bodies are not told apart here (that is mailsplit's job), so a body line that
 * looks like such a field counts too: nothing a real message holds. One pass, a few bytes of state
 * between chunks.
 */
export class SplitterInputCheck {
  private atLineStart = true;
  /** Bytes of this line matched against FIELD_NAME so far; -1 once it cannot be that field. */
  private matched = -1;
  /** The current line belongs to a Content-Transfer-Encoding field (its first line or a folded one). */
  private inField = false;
  private fieldBytes = 0;
  private run = 0;
  private bareCrInRun = false;
  private lastWasCr = false;

  /** Why mailsplit must not read this chunk (and anything after it), or undefined. */
  check(chunk: Buffer): string | undefined {
    for (let i = 0; i < chunk.length; i++) {
      const byte = chunk[i];
      const why = this.lineBreaks(byte) ?? this.transferEncoding(byte);
      if (why !== undefined) return why;
    }
    return undefined;
  }

  /** The end of the input: a run of line breaks that ends it is judged too. */
  finish(): string | undefined {
    if (this.lastWasCr) this.bareCrInRun = true;
    return this.runTooLong();
  }

  private lineBreaks(byte: number): string | undefined {
    if (this.lastWasCr && byte !== LF) this.bareCrInRun = true;
    this.lastWasCr = byte === CR;
    if (byte === CR || byte === LF) {
      this.run++;
      return this.runTooLong();
    }
    const why = this.runTooLong();
    this.run = 0;
    this.bareCrInRun = false;
    return why;
  }

  private runTooLong(): string | undefined {
    if (this.run <= MAX_LINE_BREAK_RUN || !this.bareCrInRun) return undefined;
    return `a run of more than ${MAX_LINE_BREAK_RUN} line-break bytes with a bare CR`;
  }

  private transferEncoding(byte: number): string | undefined {
    if (this.atLineStart) {
      this.atLineStart = false;
      const folded = byte === SP || byte === HT;
      this.inField &&= folded;
      this.matched = folded ? -1 : 0;
    }
    if (this.matched >= 0) this.matchName(byte);
    if (byte === LF) this.atLineStart = true;
    if (!this.inField) return undefined;
    this.fieldBytes++;
    if (this.fieldBytes <= MAX_TRANSFER_ENCODING_FIELD) return undefined;
    return `a Content-Transfer-Encoding field longer than ${MAX_TRANSFER_ENCODING_FIELD} bytes`;
  }

  private matchName(byte: number): void {
    if (this.matched < FIELD_NAME.length) {
      const lower = byte >= 0x41 && byte <= 0x5a ? byte + 0x20 : byte;
      this.matched = lower === FIELD_NAME[this.matched] ? this.matched + 1 : -1;
      return;
    }
    // The whole name matched: a colon (perhaps after blanks) makes it the field.
    if (byte === SP || byte === HT) return;
    if (byte === COLON) {
      this.inField = true;
      // The name and blanks before the colon count too; this byte is counted by the caller.
      this.fieldBytes = FIELD_NAME.length;
    }
    this.matched = -1;
  }
}
