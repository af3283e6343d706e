import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { Splitter, type MimeNode, type SplitterChunk } from 'mailsplit';
import addressparser, { type Address } from 'nodemailer/lib/addressparser';

/**
 * What a recipient sees of a message, as a mail client shows it: the header fields (not the MIME
 * plumbing, not Bcc), the body texts, and the attachments with their names and decoded bytes. Two
 * messages with the same view are "the same message" however their MIME was cut and encoded.
 */
export interface MessageView {
  /** Top-level fields in order: lower-cased name, unfolded value. Bcc and the MIME structure fields are left out. */
  headers: [string, string][];
  /** Body texts in order: their type and their decoded bytes (latin1, so any charset compares byte for byte). */
  texts: { contentType: string; text: string }[];
  /** Attachments, sorted by name and content: Exchange chooses their order. */
  attachments: ViewAttachment[];
}

export interface ViewAttachment {
  name: string;
  contentType: string;
  inline: boolean;
  contentId: string | null;
  size: number;
  sha256: string;
}

/** Fields a sender's MIME library and Exchange choose, not the person who wrote the message. */
const STRUCTURE = new Set(['bcc', 'content-type', 'content-transfer-encoding', 'mime-version']);

/** The top-level header fields of `mime` (unfolded), all of them. */
export function topHeaders(mime: Buffer): [string, string][] {
  const text = mime.toString('latin1');
  const end = text.startsWith('\r\n') ? 0 : text.indexOf('\r\n\r\n');
  const block = end === -1 ? text : text.slice(0, end);
  const fields: [string, string][] = [];
  for (const line of block.split('\r\n')) {
    if ((line.startsWith(' ') || line.startsWith('\t')) && fields.length > 0) fields[fields.length - 1][1] += line;
    else if (line.includes(':')) {
      fields.push([line.slice(0, line.indexOf(':')).trim().toLowerCase(), line.slice(line.indexOf(':') + 1).trim()]);
    }
  }
  return fields;
}

/** Every address of the To, Cc and Bcc fields of `mime`, as a MIME reader (Exchange) would mail them. */
export function headerRecipients(mime: Buffer): string[] {
  const flat = (entries: Address[]): string[] =>
    entries.flatMap((entry) =>
      'group' in entry && entry.group ? flat(entry.group) : 'address' in entry && entry.address ? [entry.address] : [],
    );
  return topHeaders(mime)
    .filter(([name]) => name === 'to' || name === 'cc' || name === 'bcc')
    .flatMap(([, value]) => flat(addressparser(Buffer.from(value, 'latin1').toString('utf8'))));
}

export interface DecodedPart {
  contentType: string;
  filename: string | null;
  disposition: string | null;
  contentId: string | null;
  bytes: Buffer;
}

/** Every leaf of `mime`, decoded. */
export async function decodedParts(mime: Buffer): Promise<DecodedPart[]> {
  const splitter = new Splitter({ ignoreEmbedded: true });
  Readable.from([mime]).pipe(splitter);
  const parts: DecodedPart[] = [];
  let current: { part: DecodedPart; chunks: Buffer[]; decoder: NodeJS.ReadWriteStream; ended: Promise<void> } | null =
    null;
  const finish = async () => {
    if (!current) return;
    const open = current;
    current = null;
    open.decoder.end();
    await open.ended;
    open.part.bytes = Buffer.concat(open.chunks);
    parts.push(open.part);
  };
  for await (const chunk of splitter as AsyncIterable<SplitterChunk>) {
    if (chunk.type !== 'node') {
      if (chunk.type === 'body' && current) current.decoder.write(chunk.value);
      continue;
    }
    await finish();
    const node: MimeNode = chunk;
    if (node.multipart) continue;
    const decoder = node.getDecoder();
    const chunks: Buffer[] = [];
    decoder.on('data', (piece: Buffer) => chunks.push(piece));
    const contentId = node.headers.hasHeader('content-id')
      ? node.headers.getFirst('content-id').replace(/^<|>$/g, '')
      : null;
    current = {
      part: {
        contentType: node.contentType || 'text/plain',
        filename: node.filename || null,
        disposition: node.disposition || null,
        contentId,
        bytes: Buffer.alloc(0),
      },
      chunks,
      decoder,
      ended: new Promise((resolve) => decoder.on('end', () => resolve())),
    };
  }
  await finish();
  return parts;
}

function isText(part: DecodedPart): boolean {
  return part.contentType.startsWith('text/') && part.filename === null && part.disposition !== 'attachment';
}

export function attachmentOf(
  name: string,
  contentType: string,
  inline: boolean,
  contentId: string | null,
  bytes: Buffer,
): ViewAttachment {
  return {
    name,
    contentType,
    inline,
    contentId,
    size: bytes.length,
    sha256: createHash('sha256').update(bytes).digest('hex'),
  };
}

export function sortAttachments(attachments: ViewAttachment[]): ViewAttachment[] {
  return [...attachments].sort((a, b) => `${a.name}\0${a.sha256}`.localeCompare(`${b.name}\0${b.sha256}`));
}

/** The view of one MIME message, plus attachments that travelled beside it (a draft's). */
export async function messageView(mime: Buffer, extra: ViewAttachment[] = []): Promise<MessageView> {
  const parts = await decodedParts(mime);
  return {
    headers: topHeaders(mime).filter(([name]) => !STRUCTURE.has(name)),
    texts: parts.filter(isText).map((part) => ({ contentType: part.contentType, text: part.bytes.toString('latin1') })),
    attachments: sortAttachments([
      ...parts
        .filter((part) => !isText(part))
        .map((part) =>
          attachmentOf(
            part.filename ?? '',
            part.contentType,
            part.disposition === 'inline' || (part.disposition === null && part.contentId !== null),
            part.contentId,
            part.bytes,
          ),
        ),
      ...extra,
    ]),
  };
}
