const LF = 0x0a;
const LOWER_B = 0x62;

/** Only the start of a line can be a `begin` line; this much of it is kept (a file name is at most 255 bytes). */
const MAX_LINE_START = 1024;

/** `begin 644 invoice.exe`, and `begin-base64 644 invoice.exe` of `uuencode -m`; the name is the rest of the line. */
const BEGIN_LINE = /^begin(?:-base64)? +[0-7]{1,4} +(\S.*)$/;

/**
 * Finds uuencoded files in text: mail apps (Outlook, Thunderbird, many webmails) show a `begin 644
 * name` block in a text body as an attachment named `name`, so for `blocked_attachments` it is one.
 * Fed text in chunks of any size; linear in its input (one scan for line feeds, and only lines
 * starting with `b` are looked at) and bounded (at most MAX_LINE_START bytes of a line are kept).
 */
export class UuencodeFinder {
  private lineStart: Buffer[] = [];
  private lineStartBytes = 0;
  /** The current line cannot be a `begin` line (wrong first byte, or longer than MAX_LINE_START). */
  private skipping = false;
  private atLineStart = true;

  /** `found` gets each file name, in order. */
  constructor(private readonly found: (name: string) => void) {}

  write(chunk: Buffer): void {
    let from = 0;
    while (from < chunk.length) {
      const lf = chunk.indexOf(LF, from);
      const end = lf === -1 ? chunk.length : lf;
      this.take(chunk, from, end);
      if (lf === -1) return;
      this.endLine();
      from = lf + 1;
    }
  }

  end(): void {
    this.endLine();
  }

  private take(chunk: Buffer, from: number, end: number): void {
    if (from === end) return;
    if (this.atLineStart) {
      this.atLineStart = false;
      this.skipping = chunk[from] !== LOWER_B;
    }
    if (this.skipping) return;
    if (this.lineStartBytes + (end - from) > MAX_LINE_START) {
      this.skipping = true;
      this.lineStart = [];
      return;
    }
    this.lineStart.push(chunk.subarray(from, end));
    this.lineStartBytes += end - from;
  }

  private endLine(): void {
    if (!this.skipping && this.lineStartBytes > 0) {
      const bytes = this.lineStart.length === 1 ? this.lineStart[0] : Buffer.concat(this.lineStart);
      const line = bytes.toString('latin1').replace(/\r$/, '');
      const match = BEGIN_LINE.exec(line);
      if (match) this.found(Buffer.from(match[1].trimEnd(), 'latin1').toString('utf8'));
    }
    this.lineStart = [];
    this.lineStartBytes = 0;
    this.skipping = false;
    this.atLineStart = true;
  }
}
