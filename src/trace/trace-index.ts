import * as path from 'node:path';
import type { BlockSummary } from './block';
import { closeEventFiles, openEventFiles, type EventFile } from './event-files';
import type { IndexedFile } from './engine';
import { TraceIndexStore } from './index-store';
import { indexRange } from './indexer';

export interface OpenedIndex {
  files: IndexedFile[];
  /** Why the index could not be kept on disk this time, if it could not (the query still answers). */
  notes: string[];
  close(): Promise<void>;
}

export interface TraceIndexOptions {
  /** false: never write the index (a stored one is still read); what it lacks is summarised in memory for each use. */
  persist: boolean;
}

/**
 * The events files of one `events.file` with their block summaries, brought up to date before each
 * use: what the stored index covers is read from it, the rest is summarised from the events and
 * appended to it. Uses run one at a time per instance, so the relay never indexes the same bytes
 * twice at once (another process doing so costs a duplicate line the next load skips).
 */
export class TraceIndex {
  private readonly store: TraceIndexStore;
  private writable: boolean;
  private readonly notes: string[] = [];
  /** Where the stored chain of each file ends, so a background refresh need not reload it. */
  private readonly storedEnds = new Map<string, { head: string; end: number }>();
  private queue: Promise<unknown> = Promise.resolve();
  private readonly livePath: string;

  constructor(
    readonly eventsFile: string,
    options: TraceIndexOptions,
  ) {
    this.store = TraceIndexStore.besideEvents(eventsFile);
    this.livePath = path.resolve(eventsFile);
    this.writable = options.persist;
  }

  /** Every file with all its blocks, for a query; close() the result when done. */
  open(): Promise<OpenedIndex> {
    return this.serially(async () => {
      const files = await openEventFiles(this.eventsFile);
      try {
        const indexed: IndexedFile[] = [];
        for (const file of files) indexed.push({ file, blocks: await this.bringUpToDate(file, true) });
        await this.removeStale(files);
        return { files: indexed, notes: [...this.notes], close: () => closeEventFiles(files) };
      } catch (err) {
        await closeEventFiles(files);
        throw err;
      }
    });
  }

  /** Summarises and stores what was appended since the last use, holding nothing (the relay's background pass). */
  refresh(): Promise<void> {
    return this.serially(async () => {
      // Summaries that cannot be kept would only be thrown away again.
      if (!this.writable) return;
      const files = await openEventFiles(this.eventsFile);
      try {
        for (const file of files) await this.bringUpToDate(file, false);
        await this.removeStale(files);
      } finally {
        await closeEventFiles(files);
      }
    });
  }

  private serially<T>(run: () => Promise<T>): Promise<T> {
    const next = this.queue.then(run);
    this.queue = next.catch(() => undefined);
    return next;
  }

  /** The file's blocks (only when `collect`), after storing the complete blocks the index lacked. */
  private async bringUpToDate(file: EventFile, collect: boolean): Promise<BlockSummary[]> {
    if (file.head === null) {
      const range = await indexRange(file, 0);
      return range.tail ? [range.tail] : [];
    }
    const remembered = this.storedEnds.get(file.identity);
    let stored: BlockSummary[] = [];
    let end = 0;
    let rewrite = false;
    if (collect || !remembered || remembered.head !== file.head || remembered.end > file.size) {
      // A stored index is used even where it cannot be written (an admin reading the relay's files).
      const chain = await this.store.load(file).catch(() => null);
      if (chain) {
        stored = chain.blocks;
        end = chain.end;
        rewrite = chain.rewrite;
      } else {
        rewrite = true;
      }
    } else {
      end = remembered.end;
    }
    // Only the live file grows; a rotated one is complete, its last short block included.
    const range = await indexRange(file, end, path.resolve(file.path) !== this.livePath);
    if (this.writable) {
      try {
        if (rewrite) await this.store.rewrite(file, [...stored, ...range.complete]);
        else await this.store.append(file, range.complete);
        const last = range.complete[range.complete.length - 1];
        this.storedEnds.set(file.identity, { head: file.head, end: last ? last.end : end });
      } catch (err) {
        this.stopWriting(err);
      }
    }
    if (!collect) return [];
    return range.tail ? [...stored, ...range.complete, range.tail] : [...stored, ...range.complete];
  }

  private async removeStale(files: readonly EventFile[]): Promise<void> {
    if (!this.writable) return;
    try {
      await this.store.removeStale(files);
    } catch (err) {
      this.stopWriting(err);
    }
  }

  /** An index that cannot be written is no reason to fail a query: it is built in memory from now on. */
  private stopWriting(err: unknown): void {
    this.writable = false;
    const code = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
    this.notes.push(
      `the trace index in ${this.store.dir} cannot be written (${code}): new events are summarised again by each query`,
    );
  }
}
