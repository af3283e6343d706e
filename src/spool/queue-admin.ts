import {
  listSpool,
  showMessage,
  walkSpool,
  type MessageDetail,
  type QueueEntry,
  type QueueFilter,
  type QueueListing,
} from './inspect';
import type { Scheduler } from './scheduler';
import type { SpoolFolder, SpoolStore } from './store';

/**
 * What an admin may do to the queue (`postqueue -f/-i`, `postsuper -h/-H/-d`). In a running relay
 * every change to a message's files is made with the message out of the scheduler (an attempt under
 * way is waited for), and changes to one message are serialised, so an admin never races a delivery.
 * Without a scheduler (`scheduler: null`) it works on a stopped relay's spool, whose lock the caller
 * holds (spool/lock.ts): hold, release and delete move files exactly as they do in a running relay.
 */

export type AdminResult<T> = { ok: true; value: T } | { ok: false; error: 'not_found' | 'conflict'; message: string };

export interface QueueAdminDeps {
  store: SpoolStore;
  /** null: the relay is not running (offline commands). */
  scheduler: Scheduler | null;
  /**
   * Recovery after the start has not finished: messages it has not reached yet are not counted, so
   * moves that change the counts (hold, release, delete) wait until it has.
   */
  recovering?: () => boolean;
  /** A flush or retry tries the smart hosts at once, without waiting for their breakers' cooldowns. */
  probeSmartHosts?: () => void;
  /** One log line per admin action, with the queue id. */
  log: (id: string, line: string) => void;
  now?: () => number;
}

export interface ActionDone {
  id: string;
  /** Where the message is now; null once deleted. */
  folder: SpoolFolder | null;
}

export class QueueAdmin {
  private readonly now: () => number;
  private readonly locks = new Map<string, Promise<unknown>>();

  constructor(private readonly deps: QueueAdminDeps) {
    this.now = deps.now ?? Date.now;
  }

  list(filter: QueueFilter): Promise<QueueListing> {
    return listSpool(this.deps.store, filter, this.now(), (id) => this.deps.scheduler?.stateOf(id));
  }

  /** The same as `list`, as it is found (a search of a deep queue sends its first rows at once). */
  walk(filter: QueueFilter): AsyncGenerator<QueueEntry> {
    return walkSpool(this.deps.store, filter, this.now(), (id) => this.deps.scheduler?.stateOf(id));
  }

  show(id: string): Promise<MessageDetail | null> {
    return showMessage(this.deps.store, id, this.now(), this.deps.scheduler?.stateOf(id));
  }

  /** Attempts a deferred message now; a message already due or under way is left as it is. */
  retry(id: string): Promise<AdminResult<ActionDone>> {
    return this.exclusive(id, async () => {
      const folder = await this.deps.store.locate(id);
      if (folder !== 'queue') return notIn(id, folder, 'retried');
      const { scheduler } = this.deps;
      if (!scheduler)
        return {
          ok: false,
          error: 'conflict',
          message: `${id} cannot be retried: the relay is not running (it attempts due messages when it starts)`,
        };
      this.deps.probeSmartHosts?.();
      if (scheduler.stateOf(id) === undefined) {
        // Waiting on disk (outside the scheduler's window): brought into it, due now.
        const meta = await this.deps.store.read(id);
        scheduler.enqueue({ id, receivedAt: meta.receivedAt, route: meta.route }, this.now(), { force: true });
      } else {
        scheduler.retryNow(id);
      }
      this.deps.log(id, `${id}: retry requested by admin`);
      return { ok: true, value: { id, folder } };
    });
  }

  /** Every deferred message is attempted now; returns how many. */
  flush(): number {
    if (!this.deps.scheduler) return 0;
    this.deps.probeSmartHosts?.();
    const count = this.deps.scheduler.flush();
    this.deps.log('', `queue flush requested by admin: ${count} deferred message(s) due now`);
    return count;
  }

  hold(id: string): Promise<AdminResult<ActionDone>> {
    return this.exclusive(id, async () => {
      const { store, scheduler } = this.deps;
      if (this.deps.recovering?.()) return stillRecovering(id, 'held');
      const folder = await store.locate(id);
      if (folder !== 'queue') return notIn(id, folder, 'held');
      await scheduler?.withdraw(id);
      // The attempt we waited for may have finished the message.
      if ((await store.locate(id)) !== 'queue')
        return {
          ok: false,
          error: 'not_found',
          message: `${id} was delivered or dead-lettered before it could be held`,
        };
      await store.moveToHold(await store.read(id), this.now());
      this.deps.log(id, `${id}: placed on hold by admin`);
      return { ok: true, value: { id, folder: 'hold' } };
    });
  }

  release(id: string): Promise<AdminResult<ActionDone>> {
    return this.exclusive(id, async () => {
      const { store, scheduler } = this.deps;
      if (this.deps.recovering?.()) return stillRecovering(id, 'released');
      const folder = await store.locate(id);
      if (folder !== 'hold') {
        if (folder === null) return notFound(id);
        return { ok: false, error: 'conflict', message: `${id} is not held (it is in ${folder}/)` };
      }
      const meta = await store.readIn('hold', id);
      const now = this.now();
      await store.release(meta, now);
      scheduler?.enqueue({ id, receivedAt: meta.receivedAt, route: meta.route }, now, { force: true });
      this.deps.log(id, `${id}: released from hold by admin`);
      return { ok: true, value: { id, folder: 'queue' } };
    });
  }

  /** Deletes a message from whichever folder it is in (`postsuper -d`): it will never be delivered. */
  delete(id: string): Promise<AdminResult<ActionDone>> {
    return this.exclusive(id, async () => {
      const { store, scheduler } = this.deps;
      if (this.deps.recovering?.()) return stillRecovering(id, 'deleted');
      let folder = await store.locate(id);
      if (folder === 'queue') {
        await scheduler?.withdraw(id);
        folder = await store.locate(id);
      }
      if (folder === null) return notFound(id);
      await store.delete(folder, id);
      this.deps.log(id, `${id}: removed from ${folder}/ by admin`);
      return { ok: true, value: { id, folder: null } };
    });
  }

  /** Runs `task` after any other admin action on the same message has finished. */
  private async exclusive<T>(id: string, task: () => Promise<T>): Promise<T> {
    const previous = this.locks.get(id) ?? Promise.resolve();
    const run = previous.then(task, task);
    const settled = run.then(
      () => undefined,
      () => undefined,
    );
    this.locks.set(id, settled);
    try {
      return await run;
    } finally {
      if (this.locks.get(id) === settled) this.locks.delete(id);
    }
  }
}

function notFound(id: string): AdminResult<never> {
  return { ok: false, error: 'not_found', message: `no message ${id} in the spool` };
}

function stillRecovering(id: string, action: string): AdminResult<never> {
  return {
    ok: false,
    error: 'conflict',
    message:
      `${id} cannot be ${action} yet: ` +
      'the relay is still recovering its queue after the start (see /readyz); try again shortly',
  };
}

function notIn(id: string, folder: SpoolFolder | null, action: string): AdminResult<never> {
  if (folder === null) return notFound(id);
  const why = folder === 'hold' ? 'it is held (release it first)' : 'it is dead-lettered';
  return { ok: false, error: 'conflict', message: `${id} cannot be ${action}: ${why}` };
}
