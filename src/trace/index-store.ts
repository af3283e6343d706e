import { mkdir, open, readdir, readFile, rename, unlink, writeFile } from 'node:fs/promises';
import * as path from 'node:path';
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import { parseBlock, serializeBlock, type BlockSummary } from './block';
import type { EventFile } from './event-files';

/**
 * The trace index on disk: one file per events file in `<events.file>.index/`, named after the
 * events file's inode (a rotation renames the events file, never its inode). Line 1 is a header
 * naming the events file by a digest of its first line; each further line summarises one block.
 *
 * It is a cache, rebuilt from the events whenever it does not fit them: lines are only appended,
 * a reader uses the chain of blocks that starts at byte 0 and runs on without a gap, and skips
 * whatever else it finds (a line torn by a crash, a block two writers both appended). An index
 * whose header names another first line (the events file was truncated or replaced) is started
 * afresh. Its size follows the events it covers (a few % of them); an index holding much it does
 * not use is rewritten, and one whose events file is gone is deleted.
 */

/** 2: a block's addresses follow its summary after a tab (read only when a query needs them). */
const VERSION = 2;

interface Header {
  v: number;
  head: string;
}

export interface StoredChain {
  /** Contiguous blocks from byte 0. */
  blocks: BlockSummary[];
  /** Byte offset where the chain ends (0 when empty). */
  end: number;
  /** The file on disk does not fit the events file, or carries much that is unused: rewrite it rather than append. */
  rewrite: boolean;
}

/** Lines parsed before the loop is let go to others once: loading a large index never holds it long. */
const LINES_PER_TURN = 64;

export class TraceIndexStore {
  constructor(readonly dir: string) {}

  static besideEvents(eventsFile: string): TraceIndexStore {
    return new TraceIndexStore(`${eventsFile}.index`);
  }

  fileFor(events: EventFile): string {
    return path.join(this.dir, `${events.ino}.idx`);
  }

  /** The usable chain for this events file; an empty one when there is no index or it does not fit. */
  async load(events: EventFile): Promise<StoredChain> {
    let text: string;
    try {
      text = await readFile(this.fileFor(events), 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { blocks: [], end: 0, rewrite: true };
      throw err;
    }
    const lines = text.split('\n');
    // The last piece has no newline: empty, or a line whose write did not finish.
    lines.pop();
    if (lines.length === 0 || !headerFits(lines[0], events)) return { blocks: [], end: 0, rewrite: true };
    const byStart = new Map<number, BlockSummary>();
    for (let i = 1; i < lines.length; i++) {
      if (i % LINES_PER_TURN === 0) await yieldToLoop();
      const block = parseBlock(lines[i]);
      if (block && block.end <= events.size && !byStart.has(block.start)) byStart.set(block.start, block);
    }
    const blocks: BlockSummary[] = [];
    let end = 0;
    for (let block = byStart.get(0); block; block = byStart.get(end)) {
      blocks.push(block);
      end = block.end;
    }
    const unused = lines.length - 1 - blocks.length;
    return { blocks, end, rewrite: unused > 8 && unused > blocks.length / 4 };
  }

  /** Adds blocks that continue the stored chain. */
  async append(events: EventFile, blocks: readonly BlockSummary[]): Promise<void> {
    if (blocks.length === 0) return;
    const handle = await open(this.fileFor(events), 'a+');
    try {
      const { size } = await handle.stat();
      // A line torn by a crash is ended here, so the new lines are not glued onto it.
      let prefix = '';
      if (size > 0) {
        const last = Buffer.alloc(1);
        await handle.read(last, 0, 1, size - 1);
        if (last[0] !== 0x0a) prefix = '\n';
      }
      await handle.appendFile(prefix + blocks.map((block) => `${serializeBlock(block)}\n`).join(''));
    } finally {
      await handle.close();
    }
  }

  /** Replaces the index of this events file with exactly these blocks (written aside, then renamed over). */
  async rewrite(events: EventFile, blocks: readonly BlockSummary[]): Promise<void> {
    if (events.head === null) return;
    await mkdir(this.dir, { recursive: true });
    const target = this.fileFor(events);
    const temp = `${target}.${process.pid}.tmp`;
    const header: Header = { v: VERSION, head: events.head };
    try {
      await writeFile(
        temp,
        `${JSON.stringify(header)}\n${blocks.map((block) => `${serializeBlock(block)}\n`).join('')}`,
      );
      await rename(temp, target);
    } catch (err) {
      await unlink(temp).catch(() => undefined);
      throw err;
    }
  }

  /** Deletes the index of each events file that is gone (rotated out, replaced) and leftovers of rewrites. */
  async removeStale(current: readonly EventFile[]): Promise<void> {
    let names: string[];
    try {
      names = await readdir(this.dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw err;
    }
    const wanted = new Set(current.map((events) => path.basename(this.fileFor(events))));
    const otherWriters = new Set(current.map((events) => `${events.ino}.idx.`));
    for (const name of names) {
      if (wanted.has(name)) continue;
      const isIndex = /^\d+\.idx$/.test(name);
      // A temp file of a rewrite under way in another process (same inode prefix, other pid) is left alone.
      const isOldTemp =
        /^\d+\.idx\.\d+\.tmp$/.test(name) && ![...otherWriters].some((prefix) => name.startsWith(prefix));
      if (isIndex || isOldTemp) await unlink(path.join(this.dir, name)).catch(() => undefined);
    }
  }
}

function headerFits(line: string, events: EventFile): boolean {
  try {
    const header = JSON.parse(line) as Partial<Header>;
    return header.v === VERSION && typeof header.head === 'string' && header.head === events.head;
  } catch {
    return false;
  }
}
