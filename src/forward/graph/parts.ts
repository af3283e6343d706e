import { once } from 'node:events';
import type { Readable, Transform } from 'node:stream';
import { Splitter, type MimeNode, type SplitterChunk } from 'mailsplit';

/**
 * The MIME parts of a message too large for one Graph request, read with mailsplit in passes over
 * the same bytes (the queue file is read again for each; only one part's decoded bytes are held at
 * a time): which parts there are and how large, the message without the parts sent on their own,
 * and those parts' decoded bytes. mailsplit hands out every byte of the message exactly once, each
 * attributed to a node (a part's opening delimiter line to the part), so leaving out everything of
 * a node leaves valid MIME around it.
 */

export interface MimePart {
  /** The part's place among the message's nodes, in the order they start: the same in every pass. */
  index: number;
  /** The multipart it belongs to; -1 for the message itself. */
  parent: number;
  contentType: string;
  /** What Graph names the attachment: its file name, else one made from its type. */
  name: string;
  contentId: string | undefined;
  inline: boolean;
  /** Its bytes in the message: delimiter line, header and transfer-encoded body. */
  encodedBytes: number;
  /** Its content once decoded: what an attachment of its own would hold. */
  decodedBytes: number;
  /** A leaf that can travel as an attachment of its own: a file, not a body text, not a container. */
  attachment: boolean;
}

/** Every chunk of the message with the node it belongs to and that node's place, in order. */
async function walk(source: Readable, visit: (chunk: SplitterChunk, node: MimeNode, index: number) => Promise<void>): Promise<void> {
  // Attached messages stay single parts: they travel as they are, inside the MIME.
  const splitter = new Splitter({ ignoreEmbedded: true });
  source.on('error', (err) => splitter.destroy(err));
  source.pipe(splitter);
  const indexes = new Map<MimeNode, number>();
  try {
    for await (const chunk of splitter as AsyncIterable<SplitterChunk>) {
      const node = chunk.type === 'node' ? chunk : chunk.node;
      let index = indexes.get(node);
      if (index === undefined) {
        index = indexes.size;
        indexes.set(node, index);
      }
      await visit(chunk, node, index);
    }
  } finally {
    source.destroy();
  }
}

function bytesOf(chunk: SplitterChunk): Buffer {
  return chunk.type === 'node' ? chunk.getHeaders() : chunk.value;
}

function headerValue(node: MimeNode, name: string): string {
  return node.headers.hasHeader(name) ? node.headers.getFirst(name) : '';
}

const EXTENSIONS: Readonly<Record<string, string>> = { 'application/pdf': 'pdf', 'image/jpeg': 'jpg', 'image/png': 'png', 'image/tiff': 'tif', 'image/gif': 'gif' };

function describe(node: MimeNode, index: number, parent: number): MimePart {
  const contentType = node.contentType || 'text/plain';
  const contentId = headerValue(node, 'content-id').replace(/^<|>$/g, '') || undefined;
  const disposition = node.disposition || '';
  const leaf = !node.multipart && !node.root;
  const text = contentType.startsWith('text/');
  const attachment = leaf && contentType !== 'message/rfc822' && (disposition === 'attachment' || Boolean(node.filename) || (contentId !== undefined && !text));
  const name = node.filename || `attachment-${index}.${EXTENSIONS[contentType] ?? 'bin'}`;
  return { index, parent, contentType, name, contentId, inline: disposition === 'inline' || (disposition === '' && contentId !== undefined), encodedBytes: 0, decodedBytes: 0, attachment };
}

/** Pass one: every part with its sizes, encoded and decoded. */
export async function scanParts(source: Readable): Promise<MimePart[]> {
  const parts: MimePart[] = [];
  const indexOf = new Map<MimeNode, number>();
  // Per node: a part's delimiter line comes before its header, so bytes are summed by place first.
  const encoded = new Map<number, number>();
  let counting: { index: number; decoder: Transform } | null = null;
  const finish = async () => {
    if (!counting) return;
    const { decoder } = counting;
    counting = null;
    decoder.end();
    await once(decoder, 'end');
  };
  await walk(source, async (chunk, node, index) => {
    indexOf.set(node, index);
    encoded.set(index, (encoded.get(index) ?? 0) + bytesOf(chunk).length);
    if (counting && counting.index !== index) await finish();
    if (chunk.type === 'node') {
      const part = describe(node, index, node.parentNode ? (indexOf.get(node.parentNode) ?? -1) : -1);
      parts[index] = part;
      if (part.attachment) {
        const decoder = node.getDecoder();
        decoder.on('data', (piece: Buffer) => {
          part.decodedBytes += piece.length;
        });
        counting = { index, decoder };
      }
    } else if (chunk.type === 'body' && counting?.index === index && !counting.decoder.write(chunk.value)) {
      await once(counting.decoder, 'drain');
    }
  });
  await finish();
  for (const part of parts) if (part) part.encodedBytes = encoded.get(part.index) ?? 0;
  return parts.filter((part) => part !== undefined);
}

/** The placeholder for the only part of a multipart that is sent on its own: a multipart needs one part. */
const EMPTY_TEXT_PART = Buffer.from('Content-Type: text/plain; charset=us-ascii\r\n\r\n', 'latin1');

/**
 * Pass two: the message without the parts in `lifted`. A multipart left without any part gets an
 * empty text part in place of its first one (RFC 2046 wants one at least).
 */
export async function withoutParts(source: Readable, parts: readonly MimePart[], lifted: ReadonlySet<number>): Promise<Buffer> {
  const placeholders = new Set<number>();
  const byParent = new Map<number, MimePart[]>();
  for (const part of parts) byParent.set(part.parent, [...(byParent.get(part.parent) ?? []), part]);
  for (const [parent, children] of byParent) {
    if (parent !== -1 && children.every((child) => lifted.has(child.index))) placeholders.add(children[0].index);
  }
  const out: Buffer[] = [];
  await walk(source, async (chunk, _node, index) => {
    if (!lifted.has(index)) out.push(bytesOf(chunk));
    else if (placeholders.has(index) && chunk.type === 'data') out.push(chunk.value);
    else if (placeholders.has(index) && chunk.type === 'node') out.push(EMPTY_TEXT_PART);
  });
  return Buffer.concat(out);
}

/** Receives one part's decoded bytes: `begin`, then its bytes in order; the promise settles when the part is done. */
export type PartSink = (part: MimePart, content: AsyncIterable<Buffer>) => Promise<void>;

/**
 * Pass three: the decoded bytes of each part in `lifted`, handed to `sink` as a stream it reads at
 * its own pace (an upload it awaits holds the reading of the queue file back, so only what one
 * request carries is held in memory).
 */
export async function streamParts(source: Readable, parts: readonly MimePart[], lifted: ReadonlySet<number>, sink: PartSink): Promise<void> {
  const byIndex = new Map(parts.map((part) => [part.index, part]));
  let current: { index: number; decoder: Transform; done: Promise<void> } | null = null;
  const finish = async () => {
    if (!current) return;
    const { decoder, done } = current;
    current = null;
    if (!decoder.destroyed) decoder.end();
    await done;
  };
  try {
    await walk(source, async (chunk, node, index) => {
      if (current && current.index !== index) await finish();
      const part = byIndex.get(index);
      if (!lifted.has(index) || part === undefined) return;
      if (chunk.type === 'node') {
        const decoder = node.getDecoder();
        const done = sink(part, decoder).catch((err: unknown) => {
          decoder.destroy();
          throw err;
        });
        // Observed here; what it rejects with reaches the caller through `finish` or the race below.
        done.catch(() => undefined);
        current = { index, decoder, done };
      } else if (chunk.type === 'body' && current) {
        // A sink that gave up (a failed upload) ends the pass with its error.
        if (current.decoder.destroyed) return finish();
        if (!current.decoder.write(chunk.value)) await Promise.race([once(current.decoder, 'drain'), current.done]);
      }
    });
    await finish();
  } finally {
    // The walk failed (the queue file, the MIME): the sink still reading is told so.
    (current as { decoder: Transform } | null)?.decoder.destroy();
  }
}
