import { opendirSync, type Dir } from 'node:fs';
import { setImmediate as nextTurn } from 'node:timers/promises';

/**
 * Walking a spool folder that may hold a million files, without holding its listing: `readdir`
 * returns every name at once (about 50 MB of strings for a million), so folders are read with
 * opendir, a batch of entries at a time.
 *
 * Walks run on the event loop in slices of at most SLICE_MS, with synchronous file calls inside a
 * slice: a walk makes a few small calls per file (a stat, a read of a few hundred bytes), and each
 * such call through libuv's thread pool costs the event loop a submission, a wake-up and a promise
 * (tens of µs) where the call itself takes a few. Between slices every session and delivery gets
 * its turn, so a walk adds at most about a slice to anyone's latency.
 */

export const SLICE_MS = 8;
const DIR_BUFFER_ENTRIES = 512;

/** The names of one folder, a batch at a time; `null` at the end. */
export class FolderWalk {
  private dir: Dir | null;

  constructor(folder: string) {
    this.dir = opendirSync(folder, { bufferSize: DIR_BUFFER_ENTRIES });
  }

  next(): string | null {
    if (!this.dir) return null;
    const entry = this.dir.readSync();
    if (entry === null) this.close();
    return entry?.name ?? null;
  }

  close(): void {
    const dir = this.dir;
    this.dir = null;
    dir?.closeSync();
  }
}

/**
 * Calls `step` until it returns false, yielding to the event loop every SLICE_MS; `stopped` ends
 * the loop early between two steps.
 */
export async function runSliced(step: () => boolean, stopped: () => boolean = () => false): Promise<void> {
  for (;;) {
    const sliceEnd = performance.now() + SLICE_MS;
    while (performance.now() < sliceEnd) {
      if (stopped() || !step()) return;
    }
    await nextTurn();
  }
}

/** Every name in `folder`, walked in slices. */
export async function forEachName(
  folder: string,
  visit: (name: string) => void,
  stopped?: () => boolean,
): Promise<void> {
  const walk = new FolderWalk(folder);
  try {
    await runSliced(() => {
      const name = walk.next();
      if (name === null) return false;
      visit(name);
      return true;
    }, stopped);
  } finally {
    walk.close();
  }
}
