/**
 * Decides when each queued message is attempted. It holds only ids and times (the state itself lives
 * in the spool), runs a bounded number of deliveries at once, and wakes deferred messages when due.
 */

export type AttemptResult = { kind: 'done' } | { kind: 'retry'; at: number };

export interface SchedulerSnapshot {
  ready: number;
  deferred: number;
  active: number;
  oldestReceivedAt: number | null;
  oldestId: string | null;
}

/** Where the scheduler has a message: waiting its turn, being attempted, or waiting for its retry time. */
export type ScheduleState = 'ready' | 'active' | 'deferred';

const MAX_TIMER_MS = 2 ** 31 - 1;

export class Scheduler {
  private readonly ready = new Set<string>();
  private readonly deferred = new Map<string, number>();
  private readonly active = new Map<string, Promise<void>>();
  private readonly receivedAt = new Map<string, number>();
  /** Ids an admin took out while they were being attempted: not scheduled again when the attempt ends. */
  private readonly withdrawn = new Set<string>();
  private timer: NodeJS.Timeout | null = null;
  private timerAt = Infinity;
  private stopped = false;

  constructor(
    private readonly attempt: (id: string) => Promise<AttemptResult>,
    private readonly concurrency: number,
    /** An attempt that throws is a bug or an unexpected I/O error; the message is tried again later. */
    private readonly onAttemptError: (id: string, err: unknown) => number,
  ) {}

  enqueue(id: string, receivedAt: number, dueAt: number = Date.now()): void {
    this.receivedAt.set(id, receivedAt);
    // An attempt under way (an admin retry raced the commit, say) reschedules the message itself.
    if (this.active.has(id)) return;
    if (dueAt <= Date.now()) {
      this.deferred.delete(id);
      this.ready.add(id);
      this.pump();
    } else {
      this.defer(id, dueAt);
    }
  }

  /**
   * Runs an attempt of a message at once, outside the concurrency bound (an SMTP client is waiting
   * on it: inline delivery); from its result on the message is scheduled like any other. The
   * message is active meanwhile, so nothing else attempts it concurrently.
   */
  adopt(id: string, receivedAt: number, attempt: () => Promise<AttemptResult>): boolean {
    this.receivedAt.set(id, receivedAt);
    if (this.active.has(id)) return false;
    this.ready.delete(id);
    this.deferred.delete(id);
    this.active.set(id, this.run(id, attempt));
    return true;
  }

  snapshot(): SchedulerSnapshot {
    let oldest: number | null = null;
    let oldestId: string | null = null;
    for (const [id, at] of this.receivedAt) {
      if (oldest === null || at < oldest) {
        oldest = at;
        oldestId = id;
      }
    }
    return { ready: this.ready.size + this.active.size, deferred: this.deferred.size, active: this.active.size, oldestReceivedAt: oldest, oldestId };
  }

  stateOf(id: string): ScheduleState | undefined {
    if (this.active.has(id)) return 'active';
    if (this.ready.has(id)) return 'ready';
    if (this.deferred.has(id)) return 'deferred';
    return undefined;
  }

  /** `postqueue -i`: a deferred message is attempted now. False when it is not waiting for a retry. */
  retryNow(id: string): boolean {
    if (!this.deferred.has(id)) return false;
    this.deferred.delete(id);
    this.ready.add(id);
    this.pump();
    return true;
  }

  /** `postqueue -f`: every deferred message is attempted now (still at most `concurrency` at once). */
  flush(): number {
    const ids = [...this.deferred.keys()];
    for (const id of ids) this.ready.add(id);
    this.deferred.clear();
    this.pump();
    return ids.length;
  }

  /**
   * Takes a message out of the schedule so an admin may move or delete its files. An attempt under
   * way is waited for (its outcome is written to the spool first), and is not rescheduled.
   */
  async withdraw(id: string): Promise<void> {
    const running = this.active.get(id);
    if (running) {
      this.withdrawn.add(id);
      await running;
      return;
    }
    this.ready.delete(id);
    this.deferred.delete(id);
    this.receivedAt.delete(id);
  }

  /** Stops starting attempts and waits for the ones under way (their outcome is already in the spool). */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    await Promise.allSettled([...this.active.values()]);
  }

  private defer(id: string, at: number): void {
    this.ready.delete(id);
    this.deferred.set(id, at);
    if (at < this.timerAt) this.arm(at);
  }

  private arm(at: number): void {
    if (this.stopped) return;
    if (this.timer) clearTimeout(this.timer);
    this.timerAt = at;
    this.timer = setTimeout(() => this.wake(), Math.min(MAX_TIMER_MS, Math.max(0, at - Date.now())));
    this.timer.unref();
  }

  private wake(): void {
    this.timer = null;
    this.timerAt = Infinity;
    const now = Date.now();
    let next = Infinity;
    for (const [id, at] of this.deferred) {
      if (at <= now) {
        this.deferred.delete(id);
        this.ready.add(id);
      } else if (at < next) {
        next = at;
      }
    }
    if (next !== Infinity) this.arm(next);
    this.pump();
  }

  private pump(): void {
    while (!this.stopped && this.active.size < this.concurrency && this.ready.size > 0) {
      const id = this.ready.values().next().value as string;
      this.ready.delete(id);
      this.active.set(id, this.run(id));
    }
  }

  private async run(id: string, attempt: (id: string) => Promise<AttemptResult> = this.attempt): Promise<void> {
    let result: AttemptResult;
    try {
      result = await attempt(id);
    } catch (err) {
      result = { kind: 'retry', at: Date.now() + this.onAttemptError(id, err) };
    }
    this.active.delete(id);
    const withdrawn = this.withdrawn.delete(id);
    if (result.kind === 'done' || withdrawn) this.receivedAt.delete(id);
    else if (!this.stopped) this.defer(id, result.at);
    this.pump();
  }
}
