const LF = 0x0a;

/**
 * A deadline for one whole command line: from its first byte to its line feed. The idle timeout is
 * reset by every byte, so a client trickling one byte a second (slowloris) would otherwise hold its
 * connection, and a place under max_clients, for as long as it likes. Real clients send a command
 * line in one write; no honest one takes seconds over it.
 *
 * It reads the client's bytes as they arrive (linear: one scan for the last line feed per chunk)
 * and knows nothing of SMTP beyond lines: between DATA and its reply it is paused, since message
 * lines are not commands and a large message is allowed its time.
 */
export class CommandLineDeadline {
  /** When the line still open began (performance.now()), or null when every line so far has ended. */
  private lineStartedAt: number | null = null;
  private timer: NodeJS.Timeout | null = null;
  private paused = false;
  private stopped = false;

  constructor(
    private readonly deadlineMs: number,
    private readonly expired: () => void,
    private readonly now: () => number = () => performance.now(),
  ) {}

  /** A chunk the client sent. */
  bytes(chunk: Buffer): void {
    if (this.stopped || this.paused || chunk.length === 0) return;
    const lastLf = chunk.lastIndexOf(LF);
    if (lastLf === chunk.length - 1) {
      this.lineStartedAt = null;
      return;
    }
    // Bytes after a line feed begin a new line; without one, the open line goes on (or one begins).
    if (lastLf !== -1 || this.lineStartedAt === null) this.lineStartedAt = this.now();
    this.arm(this.deadlineMs - (this.now() - this.lineStartedAt));
  }

  /** DATA was accepted: message lines follow until the relay answers the end of data. */
  pause(): void {
    this.paused = true;
    this.lineStartedAt = null;
    this.clear();
  }

  /** The relay answered the end of data: command lines again. */
  resume(): void {
    this.paused = false;
  }

  stop(): void {
    this.stopped = true;
    this.clear();
  }

  private arm(inMs: number): void {
    if (this.timer) return;
    this.timer = setTimeout(() => this.check(), Math.max(0, inMs));
    this.timer.unref();
  }

  private check(): void {
    this.timer = null;
    if (this.stopped || this.paused || this.lineStartedAt === null) return;
    const left = this.deadlineMs - (this.now() - this.lineStartedAt);
    if (left > 0) return this.arm(left);
    this.stop();
    this.expired();
  }

  private clear(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }
}
