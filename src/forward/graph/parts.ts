import { once } from 'node:events';
import { Readable, type Transform } from 'node:stream';
import { Splitter, type MimeNode, type SplitterChunk } from 'mailsplit';

/**
 * The MIME parts of a message too large for one Graph request. mailsplit reads the message once,
 * and hands out every byte of it exactly once, each attributed to a node (a part's opening
 * delimiter line to that part): so each part is known with its sizes and where its bytes are.
 * The later passes over the same bytes (the queue file read again) need no parser: they leave
 * byte ranges out, or decode one. Only one part's decoded bytes are held at a time.
 */

export interface MimePart {
  /** The part's place among the message's nodes, in the order they start. */
  index: number;
  /** The multipart it belongs to; -1 for the message itself. */
  parent: number;
  contentType: string;
  /** What Graph names the attachment: its file name, else one made from its type. */
  name: string;
  contentId: string | undefined;
  inline: boolean;
  /**
   * Where its bytes are in the message: its delimiter line from `start`, its header from
   * `headerStart`, its body from `bodyStart` to `end`.
   */
  start: number;
  headerStart: number;
  bodyStart: number;
  end: number;
  /** Its content once decoded: what an attachment of its own holds. */
  decodedBytes: number;
  /** A leaf that can travel as an attachment of its own: a file, not a body text, not a container. */
  attachment: boolean;
  /** A decoder of its Content-Transfer-Encoding. */
  decoder(): Transform;
}

function headerValue(node: MimeNode, name: string): string {
  return node.headers.hasHeader(name) ? node.headers.getFirst(name) : '';
}

const EXTENSIONS: Readonly<Record<string, string>> = {
  'application/pdf': 'pdf',
  'image/jpeg': 'jpg',
  'image/png': 'png',
  'image/tiff': 'tif',
  'image/gif': 'gif',
};

function partOf(
  node: MimeNode,
  index: number,
  parent: number,
  start: number,
  headerStart: number,
  bodyStart: number,
): MimePart {
  const contentType = node.contentType || 'text/plain';
  const contentId = headerValue(node, 'content-id').replace(/^<|>$/g, '') || undefined;
  const disposition = node.disposition || '';
  const leaf = !node.multipart && !node.root;
  const text = contentType.startsWith('text/');
  const attachment =
    leaf &&
    contentType !== 'message/rfc822' &&
    (disposition === 'attachment' || Boolean(node.filename) || (contentId !== undefined && !text));
  return {
    index,
    parent,
    contentType,
    contentId,
    start,
    headerStart,
    bodyStart,
    end: bodyStart,
    decodedBytes: 0,
    attachment,
    name: node.filename || `attachment-${index}.${EXTENSIONS[contentType] ?? 'bin'}`,
    inline: disposition === 'inline' || (disposition === '' && contentId !== undefined),
    decoder: () => node.getDecoder(),
  };
}

/** A line longer than this (RFC 5322 allows 998 bytes) goes to the parser in pieces after all. */
const MAX_HELD_LINE = 1024 * 1024;

/**
 * `source` cut at line ends. mailsplit 5.4.6 loses bytes of a line that straddles two writes at
 * some offsets (a delimiter line among them, and the structure with it); whole lines never take
 * that path (policy/mime-scan.ts feeds it the same way).
 */
async function* wholeLines(source: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
  let held: Buffer[] = [];
  let heldBytes = 0;
  for await (const chunk of source) {
    const lastLf = chunk.lastIndexOf(0x0a);
    if (lastLf === -1 && heldBytes + chunk.length <= MAX_HELD_LINE) {
      held.push(chunk);
      heldBytes += chunk.length;
      continue;
    }
    const cut = lastLf === -1 ? chunk.length : lastLf + 1;
    yield held.length === 0 ? chunk.subarray(0, cut) : Buffer.concat([...held, chunk.subarray(0, cut)]);
    held = cut < chunk.length ? [chunk.subarray(cut)] : [];
    heldBytes = chunk.length - cut;
  }
  if (heldBytes > 0) yield Buffer.concat(held);
}

/** The one parsing pass: every part, where its bytes are, and how large its content is decoded. */
export async function scanParts(source: Readable): Promise<MimePart[]> {
  // Attached messages stay single parts: they travel as they are, inside the MIME.
  const splitter = new Splitter({ ignoreEmbedded: true });
  const lines = Readable.from(wholeLines(source as AsyncIterable<Buffer>), { objectMode: false });
  lines.on('error', (err) => splitter.destroy(err));
  lines.pipe(splitter);
  const indexes = new Map<MimeNode, number>();
  /** Where each node's first byte (its delimiter line, for a part) is. */
  const starts = new Map<number, number>();
  const parts: MimePart[] = [];
  let offset = 0;
  let counting: { part: MimePart; decoder: Transform } | null = null;
  const finishCounting = async () => {
    if (!counting) return;
    const { decoder } = counting;
    counting = null;
    decoder.end();
    await once(decoder, 'end');
  };
  try {
    for await (const chunk of splitter as AsyncIterable<SplitterChunk>) {
      const node = chunk.type === 'node' ? chunk : chunk.node;
      const bytes = chunk.type === 'node' ? chunk.getHeaders() : chunk.value;
      let index = indexes.get(node);
      if (index === undefined) {
        index = indexes.size;
        indexes.set(node, index);
        starts.set(index, offset);
      }
      if (counting && counting.part.index !== index) await finishCounting();
      const part: MimePart | undefined = parts[index];
      if (chunk.type === 'node') {
        const parent = node.parentNode ? (indexes.get(node.parentNode) ?? -1) : -1;
        const described = partOf(node, index, parent, starts.get(index) ?? offset, offset, offset + bytes.length);
        parts[index] = described;
        if (described.attachment) {
          const decoder = described.decoder();
          decoder.on('data', (piece: Buffer) => {
            described.decodedBytes += piece.length;
          });
          counting = { part: described, decoder };
        }
      } else if (part && part.end !== offset) {
        // Not one run of bytes (a multipart's epilogue after its children): this node cannot be cut out.
        part.attachment = false;
      } else if (part) {
        part.end = offset + bytes.length;
        const decoder: Transform | undefined = counting?.part === part ? counting.decoder : undefined;
        if (chunk.type === 'body' && decoder && !decoder.write(chunk.value)) await once(decoder, 'drain');
      }
      offset += bytes.length;
    }
    await finishCounting();
  } finally {
    source.destroy();
  }
  return parts.filter((part) => part !== undefined);
}

/** The placeholder for the only part of a multipart that is sent on its own: a multipart needs one part. */
const EMPTY_TEXT_PART = Buffer.from('Content-Type: text/plain; charset=us-ascii\r\n\r\n', 'latin1');

/** Hands each chunk of `source` to `visit` with the offset of its first byte. */
async function eachChunk(
  source: Readable,
  visit: (chunk: Buffer, offset: number) => Promise<void> | void,
): Promise<void> {
  let offset = 0;
  try {
    for await (const chunk of source as AsyncIterable<Buffer>) {
      await visit(chunk, offset);
      offset += chunk.length;
    }
  } finally {
    source.destroy();
  }
}

/** The bytes of `chunk` (at `offset`) that fall in [from, to). */
function slice(chunk: Buffer, offset: number, from: number, to: number): Buffer | null {
  const start = Math.max(from, offset) - offset;
  const end = Math.min(to, offset + chunk.length) - offset;
  return end > start ? chunk.subarray(start, end) : null;
}

/**
 * The message without the parts in `lifted`. A multipart left without any part gets an empty text
 * part in place of its first one (RFC 2046 wants one at least).
 */
export async function withoutParts(
  source: Readable,
  parts: readonly MimePart[],
  lifted: ReadonlySet<number>,
): Promise<Buffer> {
  const byParent = new Map<number, MimePart[]>();
  for (const part of parts) byParent.set(part.parent, [...(byParent.get(part.parent) ?? []), part]);
  const placeholders = new Set<number>();
  for (const [parent, children] of byParent) {
    if (parent !== -1 && children.every((child) => lifted.has(child.index))) placeholders.add(children[0].index);
  }
  // What is left out: every lifted part but a placeholder's delimiter line, which then opens the empty part.
  const gaps = parts
    .filter((part) => lifted.has(part.index))
    .map((part) =>
      placeholders.has(part.index)
        ? { from: part.headerStart, to: part.end, insert: EMPTY_TEXT_PART }
        : { from: part.start, to: part.end, insert: null },
    )
    .sort((a, b) => a.from - b.from);
  const out: Buffer[] = [];
  let kept = 0;
  await eachChunk(source, (chunk, offset) => {
    for (const gap of gaps) {
      const before = slice(chunk, offset, kept, gap.from);
      if (before) out.push(before);
      if (gap.from >= offset && gap.from < offset + chunk.length && gap.insert) out.push(gap.insert);
      kept = Math.max(kept, Math.min(gap.to, offset + chunk.length));
      if (kept < gap.to) return;
    }
    const rest = slice(chunk, offset, kept, Infinity);
    if (rest) out.push(rest);
    kept = offset + chunk.length;
  });
  return Buffer.concat(out);
}

/** Receives one part's decoded bytes as a stream it reads at its own pace; settles when the part is done with. */
export type PartSink = (part: MimePart, content: AsyncIterable<Buffer>) => Promise<void>;

/**
 * The decoded bytes of each part in `lifted`, in the order they come, each handed to `sink` (an
 * upload it awaits holds the reading of the queue file back: only what one request carries is
 * held in memory).
 */
export async function streamParts(
  source: Readable,
  parts: readonly MimePart[],
  lifted: ReadonlySet<number>,
  sink: PartSink,
): Promise<void> {
  const queue = parts.filter((part) => lifted.has(part.index)).sort((a, b) => a.bodyStart - b.bodyStart);
  let current: { part: MimePart; decoder: Transform; done: Promise<void> } | null = null;
  const finish = async () => {
    if (!current) return;
    const { decoder, done } = current;
    current = null;
    if (!decoder.destroyed) decoder.end();
    await done;
  };
  try {
    await eachChunk(source, async (chunk, offset) => {
      for (;;) {
        const part: MimePart | undefined = current?.part ?? queue[0];
        if (part === undefined || part.bodyStart >= offset + chunk.length) return;
        if (!current) {
          queue.shift();
          const decoder = part.decoder();
          const done = sink(part, decoder).catch((err: unknown) => {
            decoder.destroy();
            throw err;
          });
          // Observed here; what it rejects with reaches the caller through `finish` or the race below.
          done.catch(() => undefined);
          current = { part, decoder, done };
        }
        const body = slice(chunk, offset, part.bodyStart, part.end);
        // A sink that gave up (a failed upload) ends the pass with its error.
        if (current.decoder.destroyed) return finish();
        if (body && !current.decoder.write(body)) await Promise.race([once(current.decoder, 'drain'), current.done]);
        if (part.end > offset + chunk.length) return;
        await finish();
      }
    });
    await finish();
  } finally {
    // The read failed (the queue file): the sink still reading is told so.
    (current as { decoder: Transform } | null)?.decoder.destroy();
  }
}
