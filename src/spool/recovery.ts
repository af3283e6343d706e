import { existsSync, renameSync, statSync, unlinkSync } from 'node:fs';
import * as path from 'node:path';
import type { MessageMeta } from './message';
import { forEachName } from './queue-walk';
import { idTime, type SpoolStore } from './store';
import type { TrailerRead } from './trailer';

/**
 * Recovery after a start, in the background: the relay listens first and recovers while it takes
 * and delivers new mail. It finishes interrupted moves to `hold/` and `dead/` and back from `hold/`,
 * removes what an interrupted removal or a never-acknowledged receipt left, sets aside what cannot
 * be read, counts the folders, and hands every queued message it finds to `found` (the scheduler
 * keeps it in memory or leaves it on disk). Each step is one a crash may interrupt and the next
 * start repeat: a kill -9 during recovery loses nothing.
 *
 * What this run made itself is left alone: message files whose id is at least `startedAt` (ids are
 * time-ordered) and state files written since `startedAt`. Such a message is already known to the
 * scheduler; its state file exists only because recovery had found the message before.
 */

export interface RecoveryDeps {
  store: SpoolStore;
  /** When this run started: ids made and state files written since are its own. */
  startedAt: number;
  /** `stateFile`: the metadata came from a `.json` (else from the message file's trailer). */
  found: (meta: MessageMeta, stateFile: boolean) => void;
  onProblem: (id: string, problem: string) => void;
  /** Progress for the log and /readyz: messages checked so far in `queue/`. */
  onProgress?: (checked: number) => void;
  stopped?: () => boolean;
}

export interface RecoveryResult {
  queued: number;
  held: number;
  dead: number;
}

export async function recoverSpool(deps: RecoveryDeps): Promise<RecoveryResult> {
  const { store } = deps;
  await store.removeStaleTmp();
  await finishReleases(deps);
  // Only this run's own moves can add to hold/ and dead/ meanwhile (admin changes wait for recovery):
  // they are counted as they happen, so the walk counts the rest.
  const isOwn = (id: string) => idTime(id) >= deps.startedAt;
  const held = await store.count('hold', isOwn);
  store.heldCount += held;
  const dead = await store.count('dead', isOwn);
  store.deadCount += dead;
  const queued = await recoverQueue(deps);
  // After the queue: a hold interrupted after its message file moved finishes there (its metadata follows).
  await removeHoldOrphans(deps);
  await store.syncDir('queue');
  await store.syncDir('hold');
  await store.syncDir('dead');
  return { queued, held: store.heldCount, dead: store.deadCount };
}

/** Metadata in `hold/` without its `held` mark is a release a crash interrupted: finish it. */
async function finishReleases({ store, onProblem, stopped }: RecoveryDeps): Promise<void> {
  await forEachName(
    store.holdDir,
    (name) => {
      if (!name.endsWith('.json')) return;
      const id = name.slice(0, -5);
      let meta: MessageMeta;
      try {
        meta = store.readInSync('hold', id);
      } catch {
        return; // left for a human; a held message is never delivered by mistake
      }
      if (meta.held) return;
      if (existsSync(store.path('hold', id, '.eml')))
        renameSync(store.path('hold', id, '.eml'), store.path('queue', id, '.eml'));
      renameSync(store.path('hold', id, '.json'), store.path('queue', id, '.json'));
      onProblem(id, 'finished an interrupted release from hold/');
    },
    stopped,
  );
  await store.syncDir('queue');
}

/** A message file in `hold/` whose metadata is nowhere is what an interrupted delete left. */
async function removeHoldOrphans({ store, onProblem, stopped }: RecoveryDeps): Promise<void> {
  await forEachName(
    store.holdDir,
    (name) => {
      if (!name.endsWith('.eml')) return;
      const id = name.slice(0, -4);
      if (existsSync(store.path('hold', id, '.json'))) return;
      unlinkSync(path.join(store.holdDir, name));
      onProblem(id, 'removed a held message file without metadata (an interrupted delete)');
    },
    stopped,
  );
}

/** Walks `queue/`: every message is seen once, through its `.json` if it has one, else its `.eml`. */
async function recoverQueue(deps: RecoveryDeps): Promise<number> {
  const { store, startedAt } = deps;
  let queued = 0;
  let checked = 0;
  const found = (meta: MessageMeta, stateFile: boolean) => {
    queued++;
    store.queuedCount++;
    deps.found(meta, stateFile);
  };
  await forEachName(
    store.queueDir,
    (name) => {
      if (name.endsWith('.json')) {
        const id = name.slice(0, -5);
        if (!ownStateFile(store.path('queue', id, '.json'), startedAt)) recoverStateFile(deps, id, found);
      } else if (name.endsWith('.eml')) {
        const id = name.slice(0, -4);
        if (idTime(id) >= startedAt || existsSync(store.path('queue', id, '.json'))) return;
        recoverMessageFile(deps, id, found);
      } else {
        return;
      }
      if (++checked % 10_000 === 0) deps.onProgress?.(checked);
    },
    deps.stopped,
  );
  deps.onProgress?.(checked);
  return queued;
}

/** Written by this run (or gone): the message it belongs to was found already. */
function ownStateFile(file: string, startedAt: number): boolean {
  try {
    return statSync(file).mtimeMs >= startedAt;
  } catch {
    return true;
  }
}

function recoverStateFile(
  { store, onProblem }: RecoveryDeps,
  id: string,
  found: (meta: MessageMeta, stateFile: boolean) => void,
): void {
  let meta: MessageMeta;
  try {
    meta = store.readInSync('queue', id);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    setAsideCorrupt(store, id);
    onProblem(id, `unreadable metadata moved to corrupt/: ${(err as Error).message}`);
    return;
  }
  const hasMessage = existsSync(store.path('queue', id, '.eml'));
  if (meta.dead) {
    if (hasMessage) renameSync(store.path('queue', id, '.eml'), store.path('dead', id, '.eml'));
    renameSync(store.path('queue', id, '.json'), store.path('dead', id, '.json'));
    store.deadCount++;
    onProblem(id, 'finished an interrupted move to dead/');
    return;
  }
  if (meta.held) {
    if (hasMessage) renameSync(store.path('queue', id, '.eml'), store.path('hold', id, '.eml'));
    renameSync(store.path('queue', id, '.json'), store.path('hold', id, '.json'));
    store.heldCount++;
    onProblem(id, 'finished an interrupted move to hold/');
    return;
  }
  if (!hasMessage) {
    // The message file goes first when a message is removed or deleted: this is what a removal
    // interrupted between its two steps leaves.
    unlinkSync(store.path('queue', id, '.json'));
    onProblem(id, 'removed metadata whose message file was already removed (an interrupted removal)');
    return;
  }
  found(meta, true);
}

function recoverMessageFile(
  { store, onProblem }: RecoveryDeps,
  id: string,
  found: (meta: MessageMeta, stateFile: boolean) => void,
): void {
  const file = store.path('queue', id, '.eml');
  let read: TrailerRead;
  try {
    read = store.readCommittedSync(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    // Unreadable is not unacknowledged: a permission or I/O problem must never delete mail.
    setAsideCorrupt(store, id);
    onProblem(id, `unreadable message file moved to corrupt/: ${(err as Error).message}`);
    return;
  }
  if (read.kind === 'committed' && read.meta.id === id) {
    found(read.meta, false);
  } else if (read.kind === 'none') {
    unlinkSync(file);
    onProblem(id, 'removed message file without metadata (never acknowledged)');
  } else {
    setAsideCorrupt(store, id);
    const why = read.kind === 'damaged' ? read.reason : `it names message ${read.meta.id}`;
    onProblem(id, `message file with damaged metadata moved to corrupt/: ${why}`);
  }
}

function setAsideCorrupt(store: SpoolStore, id: string): void {
  // The .eml first: left alone in queue/ after a crash, a .eml with a trailer would be delivered.
  for (const ext of ['.eml', '.json']) {
    const from = store.path('queue', id, ext);
    if (existsSync(from)) renameSync(from, path.join(store.corruptDir, `${id}${ext}`));
  }
}
