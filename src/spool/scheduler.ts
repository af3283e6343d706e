/**
 * Decides when each queued message is attempted, keeping only a bounded window of messages in
 * memory (Postfix's active queue): the ones being attempted, the ones due now, and the ones due
 * within `horizonMs`, at most `window` of them. Every other queued message waits on disk only, and
 * the backlog (queue-scan.ts) brings it back into the window when it is due and there is room.
 * What is on disk is counted, not listed: the spool's exact count of queued messages, less the
 * window, is the number on disk.
 *
 * A message is attempted only while some smart host of its route may take a delivery (the gate):
 * while every host of a route has its breaker open or its quota spent, its messages wait on disk
 * without an attempt each, and only the breaker's probe goes out; when a host comes back, they come
 * back into the window as it has room, `concurrency` at a time, rather than all at once.
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

/** What the scheduler keeps of a message: its id, its age, and the route that decides which hosts may take it. */
export interface ScheduledMessage {
  id: string;
  receivedAt: number;
  route: string;
}

/**
 * Whether the smart hosts of a route can take a delivery now: `open` (attempt as many as concurrency
 * allows), `probe` (one attempt, the breaker's probe; the rest wait for its result) or `wait`.
 */
export type RouteState = { kind: 'open' } | { kind: 'probe' } | { kind: 'wait'; until: number };

export interface DeliveryGate {
  check(route: string, now: number): RouteState;
  /** Some route may take a delivery (or a probe) now. */
  anyOpen(now: number): boolean;
}

/** The messages on disk: told when room appears, when something may be due, and when a message went back to disk. */
export interface Backlog {
  /** `now`: something on disk may be due now (a route opened, a flush); else only room appeared. */
  wake(options?: { now?: boolean }): void;
  /** A message was deferred beyond the horizon: back to disk, due at `due`. */
  spilled(message: ScheduledMessage, due: number): void;
  /** A message waits on disk for its route; at `at` it has outlived `spool.max_queue_lifetime` and must be expired. */
  expiresAt(at: number): void;
  /** Every message on disk is due now. */
  flush(): void;
}

export interface SchedulerOptions {
  attempt: (id: string) => Promise<AttemptResult>;
  concurrency: number;
  /**
   * An attempt that throws is a bug or an unexpected I/O error; the message is tried again after the returned
   * delay.
   */
  onAttemptError: (id: string, err: unknown) => number;
  gate?: DeliveryGate;
  /** How many messages (besides those being attempted) are kept in memory. */
  window?: number;
  /** A message due further ahead than this waits on disk. */
  horizonMs?: number;
  /** The exact number of queued messages (SpoolStore.queuedCount); without it, only the window is counted. */
  queued?: () => number;
  /**
   * `spool.max_queue_lifetime`: a message that has outlived it is attempted even while its route
   * waits, so the dispatcher expires it on time (bounce and dead-letter) instead of when a host returns.
   */
  lifetimeMs?: () => number;
  now?: () => number;
}

/** About 250 bytes each: 10,000 messages in memory cost a few MB whatever the depth of the queue. */
export const DEFAULT_WINDOW = 10_000;
/** Deferred messages due within two minutes stay in memory; the queue scan runs at most about once a minute. */
export const DEFAULT_HORIZON_MS = 120_000;
const MAX_TIMER_MS = 2 ** 31 - 1;
/** Ready messages the backlog keeps ahead of the attempts (below the store's cache of 1,000 metadata). */
const READY_AHEAD = 500;

interface Entry extends ScheduledMessage {
  due: number;
}

/**
 * What the window keeps of a message: the three fields it schedules by. Callers often hand over the
 * whole queue record (recipients and all); holding only these keeps an entry small whatever the message.
 */
function entryOf(message: ScheduledMessage, due: number): Entry {
  return { id: message.id, receivedAt: message.receivedAt, route: message.route, due };
}

export class Scheduler {
  readonly window: number;
  readonly horizonMs: number;
  private readonly entries = new Map<string, Entry>();
  private readonly ready = new Set<string>();
  private readonly deferred = new Set<string>();
  private readonly active = new Map<string, { message: ScheduledMessage; run: Promise<void> }>();
  /** Ids an admin took out while they were being attempted: not scheduled again when the attempt ends. */
  private readonly withdrawn = new Set<string>();
  /** Routes whose messages wait on disk until the time given (every smart host skipped). */
  private readonly blocked = new Map<string, number>();
  /** Per route, the message that went as its breaker's probe: the route waits until its attempt ends. */
  private readonly probes = new Map<string, string>();
  /** On disk and due: an estimate (the backlog corrects it with each pass), never above what is on disk. */
  private diskDue = 0;
  /** The oldest receipt time on disk as far as known; null: nothing known on disk. */
  private diskOldest: { at: number; id: string } | null = null;
  private backlog: Backlog | null = null;
  private timer: NodeJS.Timeout | null = null;
  private timerAt = Infinity;
  private stopped = false;
  private readonly now: () => number;

  constructor(private readonly options: SchedulerOptions) {
    this.window = options.window ?? DEFAULT_WINDOW;
    this.horizonMs = options.horizonMs ?? DEFAULT_HORIZON_MS;
    this.now = options.now ?? Date.now;
  }

  /** The backlog that brings messages back from disk (set once, by whoever wires the two). */
  attachBacklog(backlog: Backlog): void {
    this.backlog = backlog;
  }

  /**
   * A message to schedule, due at `dueAt` (now by default): kept in memory when it fits, else left
   * on disk. `force`: into memory even past the window (an admin asked for this message now).
   */
  enqueue(message: ScheduledMessage, dueAt: number = this.now(), options: { force?: boolean } = {}): void {
    // An attempt under way (an admin retry raced the commit, say) reschedules the message itself.
    if (this.active.has(message.id)) return;
    const known = this.entries.get(message.id);
    if (known) this.drop(message.id);
    const entry = entryOf(known ?? message, dueAt);
    if (options.force && dueAt <= this.now()) this.insert(entry);
    else this.place(entry);
  }

  /**
   * A message read from disk: taken into the window when there is room and it is due within the
   * horizon (false: it stays where it is). Known already: nothing to do.
   */
  load(message: ScheduledMessage, due: number, options: { onDisk?: boolean } = {}): boolean {
    if (this.has(message.id)) return true;
    const now = this.now();
    if (this.entries.size >= this.window || due > now + this.horizonMs) return false;
    // Recovery hands over messages that were never counted as waiting on disk.
    if (due <= now && options.onDisk !== false) this.diskDue = Math.max(0, this.diskDue - 1);
    if (this.diskOldest?.id === message.id) this.diskOldest = null;
    this.insert(entryOf(message, due));
    return true;
  }

  has(id: string): boolean {
    return this.entries.has(id) || this.active.has(id);
  }

  /** Free places in the window. */
  room(): number {
    return this.window - this.entries.size;
  }

  /**
   * Room in the window, and fewer messages ready than READY_AHEAD: the backlog reads from disk only
   * what the next attempts will take, so the metadata it read is still cached when they do.
   */
  wantsMore(): boolean {
    return this.room() > 0 && this.ready.size < READY_AHEAD;
  }

  /** Queued messages not in memory. */
  onDisk(): number {
    return Math.max(0, this.total() - this.entries.size - this.active.size);
  }

  /** May a message of this route be attempted now (some smart host of it may take a delivery)? */
  accepts(route: string): boolean {
    return !this.blocked.has(route) && (this.options.gate?.check(route, this.now()).kind ?? 'open') !== 'wait';
  }

  anyRouteOpen(): boolean {
    return this.options.gate?.anyOpen(this.now()) ?? true;
  }

  /** Some route that had to wait may take deliveries again: its messages come back from disk. */
  routesChanged(): void {
    this.blocked.clear();
    this.probes.clear();
    this.backlog?.wake({ now: true });
    this.pump();
  }

  /** The backlog's reckoning after a whole pass over `queue/`: what it found due and oldest there. */
  diskCounted(due: number, oldest: { at: number; id: string } | null): void {
    this.diskDue = due;
    this.diskOldest = oldest;
  }

  /**
   * Runs an attempt of a message at once, outside the concurrency bound (an SMTP client is waiting
   * on it: inline delivery); from its result on the message is scheduled like any other. The
   * message is active meanwhile, so nothing else attempts it concurrently.
   */
  adopt(id: string, receivedAt: number, attempt: () => Promise<AttemptResult>, route = 'default'): boolean {
    if (this.active.has(id)) return false;
    this.drop(id);
    const message: ScheduledMessage = { id, receivedAt, route };
    this.active.set(id, { message, run: this.run(message, attempt) });
    return true;
  }

  snapshot(): SchedulerSnapshot {
    let oldest: { at: number; id: string } | null = this.onDisk() > 0 ? this.diskOldest : null;
    const consider = (message: ScheduledMessage) => {
      if (oldest === null || message.receivedAt < oldest.at) oldest = { at: message.receivedAt, id: message.id };
    };
    for (const entry of this.entries.values()) consider(entry);
    for (const { message } of this.active.values()) consider(message);
    const total = this.total();
    const ready = Math.min(total, this.ready.size + this.active.size + Math.min(this.diskDue, this.onDisk()));
    const found = oldest as { at: number; id: string } | null;
    return {
      ready,
      deferred: Math.max(0, total - ready),
      active: this.active.size,
      oldestReceivedAt: found?.at ?? null,
      oldestId: found?.id ?? null,
    };
  }

  /** The state of a message in memory; undefined for one on disk (its metadata tells) or unknown. */
  stateOf(id: string): ScheduleState | undefined {
    if (this.active.has(id)) return 'active';
    if (this.ready.has(id)) return 'ready';
    if (this.deferred.has(id)) return 'deferred';
    return undefined;
  }

  /** `postqueue -i`: a deferred message in memory is attempted now. False when it is not waiting for a retry here. */
  retryNow(id: string): boolean {
    const entry = this.entries.get(id);
    if (!entry || !this.deferred.has(id)) return false;
    this.drop(id);
    this.insert({ ...entry, due: this.now() });
    this.pump();
    return true;
  }

  /**
   * `postqueue -f`: every deferred message is attempted now (still at most `concurrency` at once);
   * the ones on disk come back as the window has room. Returns how many were deferred.
   */
  flush(): number {
    const now = this.now();
    const onDiskDeferred = Math.max(0, this.onDisk() - this.diskDue);
    let count = 0;
    for (const id of [...this.deferred]) {
      const entry = this.entries.get(id) as Entry;
      this.drop(id);
      this.insert({ ...entry, due: now });
      count++;
    }
    this.diskDue = this.onDisk();
    this.blocked.clear();
    this.probes.clear();
    this.backlog?.flush();
    this.pump();
    return count + onDiskDeferred;
  }

  /**
   * Takes a message out of the schedule so an admin may move or delete its files. An attempt under
   * way is waited for (its outcome is written to the spool first), and is not rescheduled.
   */
  async withdraw(id: string): Promise<void> {
    const running = this.active.get(id);
    if (running) {
      this.withdrawn.add(id);
      await running.run;
      return;
    }
    this.drop(id);
  }

  /** Stops starting attempts and waits for the ones under way (their outcome is already in the spool). */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    await Promise.allSettled([...this.active.values()].map((a) => a.run));
  }

  private total(): number {
    return this.options.queued ? this.options.queued() : this.entries.size + this.active.size;
  }

  /** Into the window if it is due within the horizon and fits; otherwise back to disk. */
  private place(entry: Entry): void {
    const now = this.now();
    if (entry.due > now + this.horizonMs) {
      this.spill(entry, now);
      this.backlog?.spilled(entry, entry.due);
    } else if (this.entries.size >= this.window) {
      // Found again by the backlog's next pass, once the window has room.
      this.spill(entry, now);
    } else {
      this.insert(entry);
    }
  }

  private insert(entry: Entry): void {
    this.entries.set(entry.id, entry);
    if (entry.due <= this.now()) {
      this.ready.add(entry.id);
      this.pump();
    } else {
      this.deferred.add(entry.id);
      if (entry.due < this.timerAt) this.arm(entry.due);
    }
  }

  private spill(entry: Entry, now: number): void {
    if (entry.due <= now) this.diskDue++;
    if (this.diskOldest === null || entry.receivedAt < this.diskOldest.at)
      this.diskOldest = { at: entry.receivedAt, id: entry.id };
    // Should its route still be closed then, the backlog looks for it to be expired.
    const lifetime = this.options.lifetimeMs?.();
    if (lifetime !== undefined) this.backlog?.expiresAt(entry.receivedAt + lifetime);
  }

  private drop(id: string): void {
    this.entries.delete(id);
    this.ready.delete(id);
    this.deferred.delete(id);
  }

  private arm(at: number): void {
    if (this.stopped) return;
    if (this.timer) clearTimeout(this.timer);
    this.timerAt = at;
    this.timer = setTimeout(() => this.wake(), Math.min(MAX_TIMER_MS, Math.max(0, at - this.now())));
    this.timer.unref();
  }

  /** Deferred messages whose time came become ready; routes whose wait is over may take deliveries again. */
  private wake(): void {
    this.timer = null;
    this.timerAt = Infinity;
    const now = this.now();
    let next = Infinity;
    for (const id of this.deferred) {
      const entry = this.entries.get(id) as Entry;
      if (entry.due <= now) {
        this.deferred.delete(id);
        this.ready.add(id);
      } else if (entry.due < next) {
        next = entry.due;
      }
    }
    let reopened = false;
    for (const [route, until] of this.blocked) {
      if (until <= now) {
        this.blocked.delete(route);
        reopened = true;
      } else if (until < next) {
        next = until;
      }
    }
    if (next !== Infinity) this.arm(next);
    if (reopened) this.backlog?.wake({ now: true });
    this.pump();
  }

  private pump(): void {
    const now = this.now();
    while (!this.stopped && this.active.size < this.options.concurrency && this.ready.size > 0) {
      const id = this.ready.values().next().value as string;
      const entry = this.entries.get(id) as Entry;
      this.drop(id);
      const state: RouteState = this.blocked.has(entry.route)
        ? { kind: 'wait', until: this.blocked.get(entry.route) as number }
        : (this.options.gate?.check(entry.route, now) ?? { kind: 'open' });
      if (state.kind === 'wait' && !this.outlived(entry, now)) {
        // Every host of its route is skipped for now: the message waits on disk (deferred, waiting for
        // a smart host), not attempted.
        this.spill({ ...entry, due: state.until }, now);
        this.block(entry.route, state.until);
        continue;
      }
      // A probe goes alone: the route's other messages wait for its result (see run).
      if (state.kind === 'probe') {
        this.probes.set(entry.route, entry.id);
        this.block(entry.route, Infinity);
      }
      const message: ScheduledMessage = { id: entry.id, receivedAt: entry.receivedAt, route: entry.route };
      this.active.set(id, { message, run: this.run(message) });
    }
    if (!this.stopped && this.wantsMore() && this.onDisk() > 0) this.backlog?.wake();
  }

  /** Older than `spool.max_queue_lifetime`: attempted whatever its route, to be expired. */
  outlived(message: ScheduledMessage, now: number = this.now()): boolean {
    const lifetime = this.options.lifetimeMs?.();
    return lifetime !== undefined && now - message.receivedAt >= lifetime;
  }

  private block(route: string, until: number): void {
    this.blocked.set(route, until);
    if (until < this.timerAt) this.arm(until);
  }

  private async run(
    message: ScheduledMessage,
    attempt: (id: string) => Promise<AttemptResult> = this.options.attempt,
  ): Promise<void> {
    let result: AttemptResult;
    try {
      result = await attempt(message.id);
    } catch (err) {
      result = { kind: 'retry', at: this.now() + this.options.onAttemptError(message.id, err) };
    }
    this.active.delete(message.id);
    if (this.probes.get(message.route) === message.id) {
      // The probe's attempt is over, whatever it did: the route is asked again.
      this.probes.delete(message.route);
      if (this.blocked.get(message.route) === Infinity) this.blocked.delete(message.route);
      this.backlog?.wake({ now: true });
    }
    const withdrawn = this.withdrawn.delete(message.id);
    if (result.kind === 'retry' && !withdrawn && !this.stopped) this.place({ ...message, due: result.at });
    this.reopenRoutes();
    this.pump();
  }

  /**
   * After an attempt (a probe that got through closes its host's breaker; one that failed opens it
   * for another cooldown), the routes that waited are asked again.
   */
  private reopenRoutes(): void {
    if (this.blocked.size === 0) return;
    const now = this.now();
    let reopened = false;
    for (const route of [...this.blocked.keys()]) {
      const state = this.options.gate?.check(route, now) ?? { kind: 'open' };
      if (state.kind === 'open') {
        this.blocked.delete(route);
        reopened = true;
      } else if (state.kind === 'wait') {
        this.block(route, state.until);
      } else if (this.blocked.get(route) !== Infinity) {
        // Another probe may go (its wait is over); one under way keeps the route blocked until it reports.
        this.blocked.delete(route);
        reopened = true;
      }
    }
    if (reopened) this.backlog?.wake({ now: true });
  }
}
