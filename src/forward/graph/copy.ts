import { open, stat } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { HeaderBlock } from '../../message/header-block';
import type { MessageBody } from '../smarthost';
import { QueueFileError, storedBytes } from '../stored-bytes';
import { fromAddress, sendOnlyToEnvelope, type RecipientEdit } from './recipients';

/**
 * The message as one Graph send gets it: exactly the bytes an SMTP smart host is sent (the DKIM
 * lines kept beside the queue file, then the file's first `size` bytes), except the header's
 * recipient fields, which name this send's envelope recipients (recipients.ts). Only the header
 * block is held in memory; the body is read from the queue file (or the copy the spool still had)
 * each time it is needed.
 */
export interface GraphCopy {
  /** How many bytes the copy has. */
  readonly byteLength: number;
  readonly edit: RecipientEdit;
  /** The header From address (the sending mailbox with `send_as: from`). */
  readonly from: string | undefined;
  /** The whole copy in memory: for a copy small enough for one request. */
  bytes(): Promise<Buffer>;
  /** The copy as a stream, as many times as asked. */
  stream(): Readable;
}

/** Ingest takes at most 256 KiB of header; a blank line not found by here is no header this relay wrote. */
const MAX_HEADER_BYTES = 1024 * 1024;
const READ_CHUNK = 64 * 1024;
const BLANK_LINE = Buffer.from('\r\n\r\n', 'latin1');

/** Where the header ends (before its last CRLF) and the body starts, in `bytes`; null when no blank line is in them. */
function headerEnd(bytes: Buffer): { end: number; bodyStart: number } | null {
  if (bytes.length >= 2 && bytes[0] === 0x0d && bytes[1] === 0x0a) return { end: 0, bodyStart: 2 };
  const at = bytes.indexOf(BLANK_LINE);
  return at === -1 ? null : { end: at, bodyStart: at + 4 };
}

/** The stored message's header bytes (without the CRLF that ends its last field) and where its body starts. */
async function storedHeader(body: MessageBody, size: number): Promise<{ header: Buffer; bodyStart: number }> {
  if (body.message) {
    const message = Buffer.from(body.message.buffer, body.message.byteOffset, Math.min(size, body.message.byteLength));
    const found = headerEnd(message.subarray(0, MAX_HEADER_BYTES));
    if (found) return { header: message.subarray(0, found.end), bodyStart: found.bodyStart };
    if (message.length <= MAX_HEADER_BYTES) return { header: withoutFinalCrlf(message), bodyStart: message.length };
    throw new Error(`no end of header within the message's first ${MAX_HEADER_BYTES} bytes`);
  }
  const file = await open(body.path, 'r').catch((err: Error) => {
    throw new QueueFileError(`cannot read the queued message: ${err.message}`);
  });
  try {
    let held = Buffer.alloc(0);
    while (held.length < Math.min(size, MAX_HEADER_BYTES)) {
      const chunk = Buffer.alloc(Math.min(READ_CHUNK, size - held.length));
      const { bytesRead } = await file.read(chunk, 0, chunk.length, held.length);
      if (bytesRead === 0) {
        throw new QueueFileError(`the queue file holds ${held.length} of the message's ${size} bytes; not sent short`);
      }
      held = Buffer.concat([held, chunk.subarray(0, bytesRead)]);
      // The blank line may straddle two reads, so the whole (bounded) header read so far is searched again.
      const found = headerEnd(held);
      if (found) return { header: held.subarray(0, found.end), bodyStart: found.bodyStart };
    }
    if (held.length === size) return { header: withoutFinalCrlf(held), bodyStart: size };
    throw new Error(`no end of header within the message's first ${MAX_HEADER_BYTES} bytes`);
  } finally {
    await file.close();
  }
}

function withoutFinalCrlf(bytes: Buffer): Buffer {
  return bytes.length >= 2 && bytes[bytes.length - 2] === 0x0d && bytes[bytes.length - 1] === 0x0a
    ? bytes.subarray(0, bytes.length - 2)
    : bytes;
}

async function storedSize(body: MessageBody): Promise<number> {
  if (body.size !== undefined) return body.size;
  if (body.message) return body.message.byteLength;
  // A message queued before trailers existed: the whole file is the message.
  return (
    await stat(body.path).catch((err: Error) => {
      throw new QueueFileError(`cannot read the queued message: ${err.message}`);
    })
  ).size;
}

/** The copy of `body` for a Graph send to `recipients`. Throws QueueFileError when the queue file cannot be read. */
export async function graphCopy(body: MessageBody, recipients: readonly string[]): Promise<GraphCopy> {
  const size = await storedSize(body);
  const { header, bodyStart } = await storedHeader(body, size);
  const prepend = body.prependHeaders ? Buffer.from(body.prependHeaders, 'latin1') : Buffer.alloc(0);
  const headers = HeaderBlock.parse(Buffer.concat([prepend, header]));
  const edit = sendOnlyToEnvelope(headers, recipients);
  const head = Buffer.concat([headers.toBuffer(), Buffer.from('\r\n', 'latin1')]);
  const bodyLength = size - bodyStart;
  return {
    byteLength: head.length + bodyLength,
    edit,
    from: fromAddress(headers),
    async bytes() {
      if (body.message) {
        return Buffer.concat([head, Buffer.from(body.message.buffer, body.message.byteOffset + bodyStart, bodyLength)]);
      }
      const out = Buffer.alloc(head.length + bodyLength);
      head.copy(out);
      const file = await open(body.path, 'r').catch((err: Error) => {
        throw new QueueFileError(`cannot read the queued message: ${err.message}`);
      });
      try {
        let read = 0;
        while (read < bodyLength) {
          const { bytesRead } = await file.read(out, head.length + read, bodyLength - read, bodyStart + read);
          if (bytesRead === 0) {
            throw new QueueFileError(
              `the queue file holds ${bodyStart + read} of the message's ${size} bytes; not sent short`,
            );
          }
          read += bytesRead;
        }
      } finally {
        await file.close();
      }
      return out;
    },
    stream() {
      if (!body.message) return storedBytes(body.path, size, head, bodyStart);
      return Readable.from([head, Buffer.from(body.message.buffer, body.message.byteOffset + bodyStart, bodyLength)], {
        objectMode: false,
      });
    },
  };
}
