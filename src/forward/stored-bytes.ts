import { createReadStream } from 'node:fs';
import { PassThrough, Readable } from 'node:stream';
import { streamedGarbage } from '../memory/streamed-garbage';

/**
 * Reading a queued message for a smart host, whatever it speaks: a module of its own, so a
 * transport that is not SMTP reads the queue file the same way without loading nodemailer.
 */

/**
 * The queued message could not be read as its metadata describes it: the spool's problem, never
 * the smart host's, so it defers the message without counting against the host's breaker.
 */
export class QueueFileError extends Error {}

/**
 * `head`, then the first `size` bytes of the file (from byte `start`, when only the message's body
 * is wanted): the message's own bytes, never the metadata behind them. The read stops there by
 * itself (no stream cut short, which costs an error object).
 * A file that ends before `size` (damaged, or cut by hand) fails the stream before its end, so the
 * smart host never gets the final "." of a message sent short. Each chunk read is garbage once
 * sent; counting them lets a large message's reads be collected as they go (StreamedGarbage).
 */
export function storedBytes(path: string, size: number | undefined, head: Buffer | null, start = 0): Readable {
  const file =
    size === undefined
      ? createReadStream(path, { start })
      : size > start
        ? createReadStream(path, { start, end: size - 1 })
        : Readable.from([]);
  const garbage = streamedGarbage();
  const out = new PassThrough();
  if (head) {
    garbage.streamed(head.length);
    out.write(head);
  }
  // The consumer (nodemailer's connection, the Graph upload) listens for errors while it sends; a stream it was handed
  // but never read must not turn a damaged file into an uncaught exception that ends the thread.
  out.on('error', () => undefined);
  let read = 0;
  // One count per chunk read serves both: the short-file check and the collection of read Buffers.
  file.on('data', (chunk: Buffer) => {
    read += chunk.length;
    garbage.streamed(chunk.length);
  });
  file.on('error', (err: Error) => out.destroy(new QueueFileError(`cannot read the queued message: ${err.message}`)));
  file.on('end', () => {
    if (size !== undefined && read < size - start)
      out.destroy(
        new QueueFileError(`the queue file holds ${start + read} of the message's ${size} bytes; not sent short`),
      );
    else out.end();
  });
  // A consumer that gives up (a dropped connection) must not leave the file open.
  out.on('close', () => file.destroy());
  file.pipe(out, { end: false });
  return out;
}
