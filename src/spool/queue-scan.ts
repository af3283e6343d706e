import { statSync } from 'node:fs';
import type { MessageMeta } from './message';
import { FolderWalk, runSliced } from './queue-walk';
import type { Backlog, ScheduledMessage, Scheduler } from './scheduler';
import { idTime, type SpoolStore } from './store';

/**
 * The queued messages that wait on disk (Postfix's deferred queue), brought back into the
 * scheduler's window by passes over `queue/`. A pass reads one stat per message: the message file's
 * modification time is its next attempt (store.ts), so the metadata is read only of messages due
 * within the scheduler's horizon. A pass stops while the window is full or no route can take a
 * delivery, and goes on from where it stopped when that changes.
 *
 * Passes run when the window has room and something on disk is, or may be, due: right after a
 * route opens again or a flush; otherwise when the earliest message left on disk comes within half
 * the horizon of its time, and at least every `maxIntervalMs` as a safety net.
 */

export interface QueueScanDeps {
  store: SpoolStore;
  scheduler: Scheduler;
  maxIntervalMs?: number;
  /** A message whose metadata cannot be read is left for the next start's recovery to set aside. */
  onUnreadable?: (id: string, err: Error) => void;
  now?: () => number;
}

interface Pass {
  /** A flush asked for it: every message is taken as due now. */
  flushing: boolean;
  loaded: number;
  /** Left on disk in this pass: due, or due soonest. */
  dueLeft: number;
  earliestLeft: number;
  oldestLeft: { at: number; id: string } | null;
  /** The window filled or the routes closed before the pass ended: what it missed comes next pass. */
  interrupted: boolean;
  /** No route can take a delivery: the pass only looks for messages to expire (by their ids' time, no reads). */
  expiryOnly: boolean;
}

const DEFAULT_MAX_INTERVAL_MS = 5 * 60_000;

export class QueueScanner implements Backlog {
  private walk: FolderWalk | null = null;
  private pass: Pass | null = null;
  private running = false;
  /** A wake that came while a run was ending: the run goes again instead of losing it. */
  private wokenWhileRunning = false;
  private enabled = false;
  private stopped = false;
  private nextPassAt = 0;
  private lastPassEnd = 0;
  /** When a message waiting on disk for a closed route outlives the queue lifetime. */
  private nextExpiryAt = Infinity;
  /** A flush: the next pass takes every message as due now. */
  private flushRequested = false;
  private timer: NodeJS.Timeout | null = null;
  private timerAt = Infinity;
  private readonly now: () => number;
  private readonly maxIntervalMs: number;

  constructor(private readonly deps: QueueScanDeps) {
    this.now = deps.now ?? Date.now;
    this.maxIntervalMs = deps.maxIntervalMs ?? DEFAULT_MAX_INTERVAL_MS;
  }

  /** Recovery has handed over what it found: from now on the passes bring the rest back. */
  start(): void {
    this.enabled = true;
    this.nextPassAt = 0;
    this.wake();
  }

  wake(options: { now?: boolean } = {}): void {
    if (options.now) this.nextPassAt = 0;
    if (!this.enabled || this.stopped) return;
    if (this.running) {
      this.wokenWhileRunning = true;
      return;
    }
    this.running = true;
    setImmediate(() => void this.run());
  }

  spilled(_message: ScheduledMessage, due: number): void {
    // Brought back when it comes within half the horizon of its time.
    const at = due - this.deps.scheduler.horizonMs / 2;
    if (at < this.nextPassAt) this.nextPassAt = at;
    this.arm(at);
  }

  expiresAt(at: number): void {
    if (at >= this.nextExpiryAt) return;
    this.nextExpiryAt = at;
    this.arm(at);
  }

  /** A flush: every message on disk is due now, from the beginning of the folder. */
  flush(): void {
    this.flushRequested = true;
    this.walk?.close();
    this.walk = null;
    this.pass = null;
    this.wake({ now: true });
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.walk?.close();
    this.walk = null;
  }

  private async run(): Promise<void> {
    try {
      do {
        this.wokenWhileRunning = false;
        await runSliced(
          () => this.step(),
          () => this.stopped,
        );
      } while (this.wokenWhileRunning && !this.stopped);
    } finally {
      this.running = false;
    }
  }

  /** One message of the pass; false: nothing more to do now. */
  private step(): boolean {
    const { scheduler } = this.deps;
    // Paused while the window is full or enough is ready for the next attempts (what is read now is
    // attempted soon, its metadata still in the store's cache), or while no route can take a
    // delivery (an outage costs no reads), except to expire what has outlived the queue lifetime.
    if (!scheduler.wantsMore()) return false;
    const open = scheduler.anyRouteOpen();
    if (open && this.pass?.expiryOnly) this.dropPass();
    if (!open && !this.pass?.expiryOnly) {
      const now = this.now();
      if (now < this.nextExpiryAt) {
        this.arm(this.nextExpiryAt);
        return false;
      }
      // A pass paused for the closed routes starts again when they open (they wake the scan).
      this.dropPass();
      this.nextExpiryAt = Infinity;
      this.startPass(now, true);
    }
    if (!this.walk) {
      const now = this.now();
      // Nothing counted on disk: only the safety pass (the count is exact by design; the pass is cheap
      // on a queue that is all in memory) runs, every maxIntervalMs.
      if (scheduler.onDisk() === 0 && now < this.lastPassEnd + this.maxIntervalMs) {
        this.arm(this.lastPassEnd + this.maxIntervalMs);
        return false;
      }
      if (now < this.nextPassAt) {
        this.arm(this.nextPassAt);
        return false;
      }
      this.startPass(now);
    }
    const pass = this.pass as Pass;
    const name = (this.walk as FolderWalk).next();
    if (name === null) {
      this.endPass(pass);
      return true;
    }
    const id = this.deps.store.idOfName('queue', name);
    // A message a session is still handing to the scheduler is the session's (store.ts, `arriving`).
    if (id === null || scheduler.has(id) || this.deps.store.isArriving(id)) return true;
    const now = this.now();
    if (pass.expiryOnly && !scheduler.outlived({ id, receivedAt: idTime(id), route: '' }, now)) return true;
    let hint: number;
    try {
      hint = statSync(this.deps.store.messagePath('queue', id)).mtimeMs;
    } catch {
      return true; // delivered, held or deleted since the folder was read
    }
    const limit = now + scheduler.horizonMs;
    if (hint > limit && !pass.flushing) return this.leave(pass, { at: idTime(id), id }, hint, now);
    let meta: MessageMeta;
    let stateFile: boolean;
    try {
      ({ meta, stateFile } = this.deps.store.readSourcedSync('queue', id));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') this.deps.onUnreadable?.(id, err as Error);
      return true;
    }
    const due = pass.flushing ? Math.min(meta.nextAttemptAt, now) : meta.nextAttemptAt;
    const message: ScheduledMessage = { id, receivedAt: meta.receivedAt, route: meta.route };
    if (due > limit) return this.leave(pass, { at: meta.receivedAt, id }, due, now);
    // Waiting for a smart host (counted as deferred); its route reopening wakes the scan again. One
    // that has outlived the queue lifetime is loaded all the same, to be expired.
    if (!scheduler.accepts(meta.route) && !scheduler.outlived(message, now))
      return this.leave(pass, { at: meta.receivedAt, id }, Infinity, now);
    if (!scheduler.load(message, due)) {
      pass.interrupted = true;
      this.leave(pass, { at: meta.receivedAt, id }, due, now);
      return false;
    }
    if (due <= now) this.deps.store.rememberForDelivery(meta, stateFile);
    pass.loaded++;
    return true;
  }

  private dropPass(): void {
    this.walk?.close();
    this.walk = null;
    this.pass = null;
  }

  private startPass(now: number, expiryOnly = false): void {
    this.walk = new FolderWalk(this.deps.store.queueDir);
    this.pass = {
      flushing: this.flushRequested,
      loaded: 0,
      dueLeft: 0,
      earliestLeft: Infinity,
      oldestLeft: null,
      interrupted: false,
      expiryOnly,
    };
    this.flushRequested = false;
    this.nextPassAt = now + this.maxIntervalMs;
  }

  private leave(pass: Pass, age: { at: number; id: string }, due: number, now: number): boolean {
    if (due <= now) pass.dueLeft++;
    if (due < pass.earliestLeft && due !== Infinity) pass.earliestLeft = due;
    if (pass.oldestLeft === null || age.at < pass.oldestLeft.at) pass.oldestLeft = age;
    return true;
  }

  private endPass(pass: Pass): void {
    this.walk = null;
    this.pass = null;
    const now = this.now();
    this.lastPassEnd = now;
    const { scheduler } = this.deps;
    // An expiry-only pass read nothing but names: it knows nothing to count.
    if (!pass.expiryOnly) scheduler.diskCounted(pass.dueLeft, pass.oldestLeft);
    // A pass that was cut short goes again at once; a whole one comes back when the earliest message
    // it left comes within half the horizon (not sooner than a tenth of it, however many are due).
    const soonest = pass.interrupted
      ? now
      : Math.max(now + scheduler.horizonMs / 10, pass.earliestLeft - scheduler.horizonMs / 2);
    this.nextPassAt = Math.min(this.nextPassAt, soonest, now + this.maxIntervalMs);
    this.arm(this.nextPassAt);
  }

  private arm(at: number): void {
    if (this.stopped || !this.enabled || at >= this.timerAt) return;
    if (this.timer) clearTimeout(this.timer);
    this.timerAt = at;
    this.timer = setTimeout(
      () => {
        this.timer = null;
        this.timerAt = Infinity;
        this.wake();
      },
      Math.max(0, Math.min(2 ** 31 - 1, at - this.now())),
    );
    this.timer.unref();
  }
}
