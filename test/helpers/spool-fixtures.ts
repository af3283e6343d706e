import { readdirSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import * as path from 'node:path';
import type { MessageMeta } from '../../src/spool/message';
import { recoverSpool } from '../../src/spool/recovery';
import { SpoolStore } from '../../src/spool/store';
import { removeDir, tempDir } from './temp-dir';

/**
 * A queued message as the relay sees it: its metadata (the `.json` once its state changed, else the
 * trailer of its file) and its own bytes (without the trailer). Null while it is not in `queue/`.
 */
export async function readQueued(spoolDir: string, id: string): Promise<{ meta: MessageMeta; message: Buffer } | null> {
  const store = new SpoolStore(spoolDir);
  const meta = await store.readIn('queue', id).catch(() => null);
  if (!meta) return null;
  const file = await readFile(store.bodyPath(id)).catch(() => null);
  return file ? { meta, message: file.subarray(0, meta.size) } : null;
}

/**
 * Runs recovery over a spool as a start after everything now on disk would: returns the queued
 * messages it found (in the order it found them).
 */
export async function recoverAll(
  store: SpoolStore,
  onProblem: (id: string, problem: string) => void = () => undefined,
): Promise<MessageMeta[]> {
  const found: MessageMeta[] = [];
  await recoverSpool({ store, startedAt: Date.now() + 1, found: (meta) => found.push(meta), onProblem });
  return found;
}

/**
 * A fresh spool per test, opened before it and closed and removed after it: call inside a describe.
 * `files(folder)` lists a spool folder, sorted.
 */
export function spoolPerTest(): { readonly dir: string; readonly store: SpoolStore; files(folder: string): string[] } {
  let dir = '';
  let store: SpoolStore | null = null;
  beforeEach(async () => {
    dir = tempDir();
    store = new SpoolStore(path.join(dir, 'spool'));
    store.open();
  });
  afterEach(async () => {
    await store?.close();
    store = null;
    removeDir(dir);
  });
  return {
    get dir() {
      return dir;
    },
    get store() {
      if (!store) throw new Error('spoolPerTest: the spool exists only inside a test');
      return store;
    },
    files: (folder) => readdirSync(path.join(dir, 'spool', folder)).sort(),
  };
}
