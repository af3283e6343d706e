/**
 * A relay-wide bound on password checks running at once, with a bounded line of checks waiting.
 *
 * Each check is an scrypt run (~30-50 ms, 16 MiB) on libuv's thread pool, four threads by default,
 * which also serves every file system call of the relay: the free-space check at MAIL, the spool
 * file's open, write, fsync and rename before each 250. The per-address and per-username budgets
 * bound the checks of one address or username, not their sum: 100 addresses with 10 wrong AUTHs
 * each queued ~1000 scrypt runs ahead of a trusted client's fsync, whose 250 then came 22 s late.
 * With at most `concurrent` checks (default 2) at once, at least two threads stay free for the spool.
 *
 * Checks from trusted addresses (in some client's networks, or where the username authenticated
 * before) go first, and strangers' checks may use only `concurrent - 1` of the running places (one
 * when there is only one) and half of the waiting line, so a storm of strangers' AUTHs never stands
 * between an application and its own AUTH. A check that finds the line full is not run (the client
 * gets a temporary refusal); a waiting check whose session closed leaves the line.
 */

export interface PasswordCheckLimits {
  concurrent: number;
  queue: number;
}

/** What a check that asked for a place got: its place (give it back with `release`), or why none. */
export type CheckPlace = { kind: 'go'; release: () => void } | { kind: 'full' } | { kind: 'abandoned' };

interface Waiter {
  trusted: boolean;
  grant: (place: CheckPlace) => void;
  detach: () => void;
}

export class PasswordCheckGate {
  private running = 0;
  private strangersRunning = 0;
  private readonly trustedLine: Waiter[] = [];
  private readonly strangerLine: Waiter[] = [];

  constructor(private readonly limits: PasswordCheckLimits) {}

  /** A place to run one check now or after those ahead of it; `closed` aborts when the session leaves. */
  acquire(trusted: boolean, closed?: AbortSignal): Promise<CheckPlace> {
    if (closed?.aborted) return Promise.resolve({ kind: 'abandoned' });
    if (this.mayRun(trusted)) return Promise.resolve(this.start(trusted));
    const line = trusted ? this.trustedLine : this.strangerLine;
    if (this.waiting() >= this.limits.queue || line.length >= this.lineLimit(trusted)) {
      return Promise.resolve({ kind: 'full' });
    }
    return new Promise((resolve) => {
      const onClose = () => {
        const index = line.indexOf(waiter);
        if (index !== -1) line.splice(index, 1);
        resolve({ kind: 'abandoned' });
      };
      const waiter: Waiter = {
        trusted,
        grant: resolve,
        detach: () => closed?.removeEventListener('abort', onClose),
      };
      closed?.addEventListener('abort', onClose, { once: true });
      line.push(waiter);
    });
  }

  /** Checks running now and waiting now (the `smarthop_password_checks` gauge). */
  get counts(): { running: number; waiting: number } {
    return { running: this.running, waiting: this.waiting() };
  }

  private mayRun(trusted: boolean): boolean {
    if (this.running >= this.limits.concurrent) return false;
    return trusted || this.strangersRunning < this.strangerPlaces();
  }

  private strangerPlaces(): number {
    return Math.max(1, this.limits.concurrent - 1);
  }

  private lineLimit(trusted: boolean): number {
    return trusted ? this.limits.queue : Math.max(1, Math.floor(this.limits.queue / 2));
  }

  private waiting(): number {
    return this.trustedLine.length + this.strangerLine.length;
  }

  private start(trusted: boolean): CheckPlace {
    this.running++;
    if (!trusted) this.strangersRunning++;
    let released = false;
    return {
      kind: 'go',
      release: () => {
        if (released) return;
        released = true;
        this.running--;
        if (!trusted) this.strangersRunning--;
        this.next();
      },
    };
  }

  /** Hands free places to the waiting checks, trusted ones first. */
  private next(): void {
    for (;;) {
      const line =
        this.trustedLine.length > 0 && this.mayRun(true)
          ? this.trustedLine
          : this.strangerLine.length > 0 && this.mayRun(false)
            ? this.strangerLine
            : null;
      const waiter = line?.shift();
      if (!waiter) return;
      waiter.detach();
      waiter.grant(this.start(waiter.trusted));
    }
  }
}
