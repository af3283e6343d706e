import { BlockBuilder, type BlockSummary } from './block';
import { readRange, type EventFile } from './event-files';
import { parseTraceEvent } from './trace-event';

/** A line longer than this is no event the relay wrote (its lines hold envelopes and replies): it is skipped unread. */
const MAX_LINE_BYTES = 8 * 1024 * 1024;

/** Read this much at a time: a chunk's lines are parsed in one go, so this bounds how long the event loop is held. */
const CHUNK_BYTES = 256 * 1024;

export interface IndexedRange {
  /** Blocks that reached their full size: never change again, so they may be written to the index. */
  complete: BlockSummary[];
  /** What is left after the last complete block (whole lines only), summarised but not to be kept. */
  tail: BlockSummary | null;
}

/**
 * Summarises the lines of `file` from byte `from` (a line boundary) to its size at open, in
 * blocks. A last line without its newline (being appended right now, or torn by a crash) is left
 * for a later pass. A `sealed` file (a rotated one: nothing is appended to it any more) has no
 * tail: its last, shorter block is complete too.
 */
export async function indexRange(file: EventFile, from: number, sealed = false): Promise<IndexedRange> {
  const complete: BlockSummary[] = [];
  let builder = new BlockBuilder(from);
  let position = from;
  let carry: Buffer | null = null;
  /** Bytes of an over-long line seen so far (its content is not kept). */
  let skipped = 0;
  while (position < file.size) {
    const read = await readRange(file.handle, position, Math.min(file.size, position + CHUNK_BYTES));
    if (read.length === 0) break;
    position += read.length;
    const chunk: Buffer = carry ? Buffer.concat([carry, read]) : read;
    let lineStart = 0;
    let newline = chunk.indexOf(0x0a, lineStart);
    while (newline !== -1) {
      const event = skipped > 0 ? null : parseTraceEvent(chunk.toString('utf8', lineStart, newline));
      builder.add(skipped + newline + 1 - lineStart, event, event ? Date.parse(event.ts) : Number.NaN);
      skipped = 0;
      if (builder.full) {
        const block = builder.finish();
        complete.push(block);
        builder = new BlockBuilder(block.end);
      }
      lineStart = newline + 1;
      newline = chunk.indexOf(0x0a, lineStart);
    }
    carry = lineStart < chunk.length ? chunk.subarray(lineStart) : null;
    if (carry && carry.length > MAX_LINE_BYTES) {
      skipped += carry.length;
      carry = null;
    }
  }
  if (builder.empty) return { complete, tail: null };
  if (sealed) return { complete: [...complete, builder.finish()], tail: null };
  return { complete, tail: builder.finish() };
}
