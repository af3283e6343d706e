import { runTrace } from './engine';
import type { TraceAnswer } from './format';
import type { TraceQuery } from './query';
import type { TraceIndex } from './trace-index';

/** What `GET /api/trace` answers and `smarthop trace --json` prints. */
export interface TraceReport extends TraceAnswer {
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
