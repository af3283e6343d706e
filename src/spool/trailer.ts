import { fstatSync, readSync } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import type { MessageMeta } from './message';

/**
 * A committed message is one file: the message bytes, then its metadata at commit as JSON, then a
 * fixed-size footer naming the JSON's length. One file means one inode, one fsync and one rename
 * per accepted message instead of two of each (the spool's largest cost per message). Later state
 * changes go to a `<id>.json` beside it, which then wins over the trailer.
 *
 *   <message: meta.size bytes> <JSON> "\n" <10-digit JSON length> " smarthop-meta\n"
 */

const MAGIC = ' smarthop-meta\n';
const LENGTH_DIGITS = 10;
export const FOOTER_BYTES = 1 + LENGTH_DIGITS + MAGIC.length;

/** The bytes appended after a message's own bytes. */
export function encodeTrailer(json: string): Buffer {
  const body = Buffer.from(json, 'utf8');
  const footer = `\n${String(body.length).padStart(LENGTH_DIGITS, '0')}${MAGIC}`;
  return Buffer.concat([body, Buffer.from(footer, 'latin1')]);
}

/** What the end of a message file holds. */
export type TrailerRead =
  | { kind: 'committed'; meta: MessageMeta }
  /** No footer: a file that was never committed (or was written before trailers existed). */
  | { kind: 'none' }
  /** A footer whose metadata cannot be trusted: damage, not a commit that did not happen. */
  | { kind: 'damaged'; reason: string };

/**
 * The metadata at the end of an open message file. A trailer is trusted only when its JSON parses
 * and its `size` is exactly where the trailer starts.
 */
export async function readTrailer(handle: FileHandle): Promise<TrailerRead> {
  const { size } = await handle.stat();
  if (size < FOOTER_BYTES) return { kind: 'none' };
  const footer = Buffer.alloc(FOOTER_BYTES);
  await handle.read(footer, 0, FOOTER_BYTES, size - FOOTER_BYTES);
  const found = parseFooter(footer, size);
  if (found.kind !== 'located') return found;
  const json = Buffer.alloc(found.length);
  await handle.read(json, 0, found.length, found.start);
  return decodeMeta(json, found.start);
}

/**
 * The same as readTrailer on a file descriptor opened for reading, with synchronous reads: recovery
 * and the queue scan read one small trailer per file, where a trip through libuv's thread pool per
 * read costs the event loop more than the read itself (see spool/queue-walk.ts).
 */
export function readTrailerSync(fd: number): TrailerRead {
  const { size } = fstatSync(fd);
  if (size < FOOTER_BYTES) return { kind: 'none' };
  // allocUnsafe: small buffers come from Node's shared pool, not one allocation each (a walk reads a
  // million of them); every byte used is read first.
  const footer = Buffer.allocUnsafe(FOOTER_BYTES);
  if (readSync(fd, footer, 0, FOOTER_BYTES, size - FOOTER_BYTES) !== FOOTER_BYTES)
    return { kind: 'damaged', reason: 'short read of the footer' };
  const found = parseFooter(footer, size);
  if (found.kind !== 'located') return found;
  const json = Buffer.allocUnsafe(found.length);
  if (readSync(fd, json, 0, found.length, found.start) !== found.length)
    return { kind: 'damaged', reason: 'short read of the metadata' };
  return decodeMeta(json, found.start);
}

/** Where the footer says the metadata is, or why there is none to read. */
function parseFooter(footer: Buffer, size: number): TrailerRead | { kind: 'located'; length: number; start: number } {
  const text = footer.toString('latin1');
  if (!text.endsWith(MAGIC)) return { kind: 'none' };
  const digits = text.slice(1, 1 + LENGTH_DIGITS);
  if (text[0] !== '\n' || !/^\d+$/.test(digits)) return { kind: 'damaged', reason: 'unreadable footer' };
  const length = Number(digits);
  const start = size - FOOTER_BYTES - length;
  if (start < 0) return { kind: 'damaged', reason: `footer names ${length} bytes of metadata in a file of ${size}` };
  return { kind: 'located', length, start };
}

function decodeMeta(json: Buffer, start: number): TrailerRead {
  let meta: MessageMeta;
  try {
    meta = JSON.parse(json.toString('utf8')) as MessageMeta;
  } catch (err) {
    return { kind: 'damaged', reason: `metadata is not JSON: ${(err as Error).message}` };
  }
  if (meta.size !== start)
    return { kind: 'damaged', reason: `metadata says ${String(meta.size)} message bytes, the file holds ${start}` };
  return { kind: 'committed', meta };
}
