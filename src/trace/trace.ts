import { runTrace } from './engine';
import type { TraceQuery } from './query';
import type { Story } from './story';
import type { TraceIndex } from './trace-index';

/** What `GET /api/trace` answers and `smarthop trace --json` prints. */
export interface TraceReport {
  stories: Story[];
  /** More messages match than the limit let through. */
  more: boolean;
  /** Why the index could not be kept on disk, if it could not. */
  notes: string[];
  scanned: { files: number; blocks: number; blocks_read: number; bytes_read: number };
}

/** One query over the events files, the index brought up to date first. */
export async function traceMessages(index: TraceIndex, query: TraceQuery): Promise<TraceReport> {
  const opened = await index.open();
  try {
    const result = await runTrace(opened.files, query);
    return { stories: result.stories, more: result.more, notes: opened.notes, scanned: result.scanned };
  } finally {
    await opened.close();
  }
}
