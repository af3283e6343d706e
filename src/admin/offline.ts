import { existsSync } from 'node:fs';
import { SpoolLock } from '../spool/lock';
import { QueueAdmin, type ActionDone, type AdminResult } from '../spool/queue-admin';
import { SpoolStore } from '../spool/store';
import { RelayUnreachable } from './client';

/** What `smarthop queue hold|release|delete` can do to a stopped relay's spool. */
export type OfflineAction = 'hold' | 'release' | 'delete';

/**
 * Hold, release or delete messages in a spool whose relay is not running, under the spool's lock
 * (spool/lock.ts): a relay running on it, or another queue command, refuses this one (SpoolInUse),
 * and a relay started meanwhile waits for nothing but refuses to start until this is done. The files
 * move exactly as the running relay moves them, so its next start's recovery sees ordinary states.
 */
export async function actOffline(
  spoolDir: string,
  action: OfflineAction,
  ids: readonly string[],
): Promise<{ id: string; result: AdminResult<ActionDone> }[]> {
  if (!existsSync(spoolDir)) throw new RelayUnreachable(`spool directory ${spoolDir} does not exist`);
  const lock = await SpoolLock.acquire(spoolDir, 'cli');
  const store = new SpoolStore(spoolDir);
  try {
    const admin = new QueueAdmin({ store, scheduler: null, log: () => undefined });
    const results: { id: string; result: AdminResult<ActionDone> }[] = [];
    for (const id of ids) results.push({ id, result: await admin[action](id) });
    return results;
  } finally {
    await store.close();
    await lock.release();
  }
}
