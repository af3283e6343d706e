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

/**
 * The metadata at the end of an open message file, or null when the file has none (a file that
 * never finished its commit, or one written before trailers existed). A trailer whose `size` does
 * not match where it starts is not trusted either.
 */
export async function readTrailer(handle: FileHandle): Promise<MessageMeta | null> {
  const { size } = await handle.stat();
  if (size < FOOTER_BYTES) return null;
  const footer = Buffer.alloc(FOOTER_BYTES);
  await handle.read(footer, 0, FOOTER_BYTES, size - FOOTER_BYTES);
  const text = footer.toString('latin1');
  if (text[0] !== '\n' || !text.endsWith(MAGIC)) return null;
  const digits = text.slice(1, 1 + LENGTH_DIGITS);
  if (!/^\d+$/.test(digits)) return null;
  const length = Number(digits);
  const start = size - FOOTER_BYTES - length;
  if (start < 0) return null;
  const json = Buffer.alloc(length);
  await handle.read(json, 0, length, start);
  let meta: MessageMeta;
  try {
    meta = JSON.parse(json.toString('utf8')) as MessageMeta;
  } catch {
    return null;
  }
  return meta.size === start ? meta : null;
}
