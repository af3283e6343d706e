import { closeEventFiles, openEventFiles, readRange } from './event-files';
import { parseTraceEvent, recipientsOf, type TraceEvent } from './trace-event';

/** Read this much at a time from the end: bounded event-loop time per read. */
const CHUNK_BYTES = 256 * 1024;

/**
 * Visits events newest first, from the end of the live events file back through the rotated ones,
 * until `visit` answers false. Lines are parsed one chunk at a time between reads.
 */
export async function readBackwards(eventsFile: string, visit: (event: TraceEvent) => boolean): Promise<void> {
  const files = await openEventFiles(eventsFile);
  try {
    for (let f = files.length - 1; f >= 0; f--) {
      const { handle, size } = files[f];
      let end = size;
      let carry: Buffer | null = null;
      while (end > 0) {
        const start = Math.max(0, end - CHUNK_BYTES);
        const read = await readRange(handle, start, end);
        end = start;
        const chunk: Buffer = carry ? Buffer.concat([read, carry]) : read;
        // The first line of a chunk may begin in the chunk before it, unless this is the file's start.
        const firstNewline = start === 0 ? -1 : chunk.indexOf(0x0a);
        if (start > 0 && firstNewline === -1) {
          carry = chunk;
          continue;
        }
        carry = start > 0 ? chunk.subarray(0, firstNewline + 1) : null;
        const lines = chunk.toString('utf8', firstNewline + 1).split('\n');
        for (let i = lines.length - 1; i >= 0; i--) {
          if (lines[i] === '') continue;
          const event = parseTraceEvent(lines[i]);
          if (event && !visit(event)) return;
        }
      }
    }
  } finally {
    await closeEventFiles(files);
  }
}

export interface ReplayTargets {
  /** Each message received in the window: who sent it, to how many, when. */
  received(client: string, recipients: number, at: number): void;
  /** The last events before `before`, oldest first. */
  recent(events: TraceEvent[]): void;
}

/**
 * After a restart: the last hour's received messages (top clients of `smarthop status`) and the
 * last events (the status page) from what the previous process wrote. Only events before `before`
 * (this process's start) are taken: what came after is counted live. Older events than `since`
 * end the walk, with a minute's slack for lines written slightly out of time order.
 */
export async function replayRecent(
  eventsFile: string,
  options: { since: number; before: number; keep: number },
  targets: ReplayTargets,
): Promise<void> {
  const recent: TraceEvent[] = [];
  await readBackwards(eventsFile, (event) => {
    const at = Date.parse(event.ts);
    if (!Number.isFinite(at) || at >= options.before) return true;
    if (recent.length < options.keep) recent.push(event);
    if (at < options.since - 60_000) return recent.length < options.keep;
    if (event.type === 'received' && event.client !== null && at >= options.since)
      targets.received(event.client, recipientsOf(event).length, at);
    return true;
  });
  targets.recent(recent.reverse());
}
