import { createHash } from 'node:crypto';
import { open, readdir, type FileHandle } from 'node:fs/promises';
import * as path from 'node:path';

/**
 * The events file and its rotated predecessors (`events.jsonl.1` newest … `.N` oldest, as
 * observe/event-file.ts rotates them), opened once per query so a rotation while it runs cannot
 * make it read one file twice or skip one.
 */
export interface EventFile {
  path: string;
  handle: FileHandle;
  /** `dev:ino`: a file keeps it when it is renamed by a rotation, so the index follows it. */
  identity: string;
  ino: number;
  /** Size when it was opened: the query reads this much and no more, whatever is appended meanwhile. */
  size: number;
  /** A digest of its first line (stable once written); null while the file has no complete line. */
  head: string | null;
}

/** How much of the first line identifies a file (a first line longer than this is cut here). */
const HEAD_BYTES = 4096;

/** Oldest first: `events.jsonl.N` … `.1`, then `events.jsonl`. Files that vanish meanwhile are left out. */
export async function openEventFiles(file: string): Promise<EventFile[]> {
  const dir = path.dirname(file);
  const base = path.basename(file);
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
  const ranked: { name: string; rank: number }[] = [];
  for (const name of names) {
    if (name === base) ranked.push({ name, rank: 0 });
    else if (name.startsWith(`${base}.`) && /^\d+$/.test(name.slice(base.length + 1)))
      ranked.push({ name, rank: Number(name.slice(base.length + 1)) });
  }
  ranked.sort((a, b) => b.rank - a.rank);
  const files: EventFile[] = [];
  const seen = new Set<string>();
  for (const { name } of ranked) {
    const opened = await openOne(path.join(dir, name));
    if (!opened) continue;
    if (seen.has(opened.identity)) {
      await opened.handle.close();
      continue;
    }
    seen.add(opened.identity);
    files.push(opened);
  }
  return files;
}

export async function closeEventFiles(files: readonly EventFile[]): Promise<void> {
  await Promise.all(files.map((file) => file.handle.close().catch(() => undefined)));
}

/** Reads [start, end) of a file whole. */
export async function readRange(handle: FileHandle, start: number, end: number): Promise<Buffer> {
  const buffer = Buffer.allocUnsafe(end - start);
  let done = 0;
  while (done < buffer.length) {
    const { bytesRead } = await handle.read(buffer, done, buffer.length - done, start + done);
    if (bytesRead === 0) break;
    done += bytesRead;
  }
  return done === buffer.length ? buffer : buffer.subarray(0, done);
}

async function openOne(file: string): Promise<EventFile | null> {
  let handle: FileHandle;
  try {
    handle = await open(file, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
  try {
    const stat = await handle.stat();
    const first = await readRange(handle, 0, Math.min(stat.size, HEAD_BYTES));
    const newline = first.indexOf(0x0a);
    const headBytes = newline !== -1 ? first.subarray(0, newline) : first.length === HEAD_BYTES ? first : null;
    return {
      path: file,
      handle,
      identity: `${stat.dev}:${stat.ino}`,
      ino: stat.ino,
      size: stat.size,
      head: headBytes ? createHash('sha256').update(headBytes).digest('hex').slice(0, 32) : null,
    };
  } catch (err) {
    await handle.close().catch(() => undefined);
    throw err;
  }
}
