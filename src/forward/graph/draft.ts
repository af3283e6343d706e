import { GraphRefusal, userPath, type GraphCalls } from './api';
import type { GraphCopy } from './copy';
import { HttpFailure, type HttpAnswer, type HttpsClient } from './http';
import type { MimePart } from './parts';

/**
 * A message larger than one Graph request, sent as Microsoft documents for large attachments: a
 * draft created from the message's MIME without its large parts, each of those attached on its own
 * (a POST under 3 MB, an upload session in byte ranges above), then the draft sent.
 *
 * What the recipient sees is the same message: its header fields, its body texts and its
 * attachments (name, type, inline or not, Content-ID, and every byte of the content). What
 * Exchange Online chooses itself is the MIME around them (boundaries, transfer encodings, the
 * order of the attachments), as it does for any message it sends.
 */

/** Graph takes about 4 MB per request; the MIME goes base64-encoded, so about 3 MB of message. */
export const REQUEST_LIMIT = 4_000_000;
/** From this size an attachment goes through an upload session, below it in one POST (Microsoft's 3 MB). */
export const UPLOAD_SESSION_MIN = 3_000_000;
/** An upload session takes attachments up to 150 MB. */
const UPLOAD_SESSION_MAX = 150_000_000;
/** Each uploaded range: a multiple of 320 KiB under Microsoft's 4 MB per request. */
export const UPLOAD_RANGE = 10 * 320 * 1024;
/** Room for what the draft's MIME gains (a placeholder part) and the JSON around an attachment. */
const MARGIN = 4096;

export function base64Length(bytes: number): number {
  return Math.ceil(bytes / 3) * 4;
}

/** Too large for this host whichever way it is cut: the route's next host may take it. */
export class TooLargeForGraph extends Error {}

/**
 * The attachments to send on their own: the largest first, until the rest fits one request. Null
 * when even all of them do not make it fit (a body text of several MB).
 */
export function partsToLift(parts: readonly MimePart[], total: number): Set<number> | null {
  const lifted = new Set<number>();
  let rest = total;
  // A part's bytes in the message: its delimiter line, header and encoded body.
  const encoded = (part: MimePart) => part.end - part.start;
  for (const part of [...parts].filter((p) => p.attachment).sort((a, b) => encoded(b) - encoded(a))) {
    if (base64Length(rest + MARGIN) <= REQUEST_LIMIT) break;
    if (part.decodedBytes > UPLOAD_SESSION_MAX) return null;
    lifted.add(part.index);
    rest -= encoded(part);
  }
  return base64Length(rest + MARGIN) <= REQUEST_LIMIT ? lifted : null;
}

function jsonOf(answer: HttpAnswer): Record<string, unknown> {
  try {
    const value: unknown = JSON.parse(answer.body.toString('utf8'));
    return typeof value === 'object' && value !== null ? (value as Record<string, unknown>) : {};
  } catch {
    return {};
  }
}

/** The attachment's properties as Graph's fileAttachment and attachmentItem name them. */
function attachmentProperties(part: MimePart): Record<string, unknown> {
  return {
    name: part.name,
    contentType: part.contentType,
    isInline: part.inline,
    ...(part.contentId !== undefined ? { contentId: part.contentId } : {}),
  };
}

/** Reads `content` to its end, handing on ranges of `range` bytes (the last may be shorter). */
async function* ranges(content: AsyncIterable<Buffer>, range: number): AsyncGenerator<Buffer> {
  let held: Buffer[] = [];
  let length = 0;
  for await (const piece of content) {
    held.push(piece);
    length += piece.length;
    while (length >= range) {
      const all = Buffer.concat(held);
      yield all.subarray(0, range);
      held = [all.subarray(range)];
      length -= range;
    }
  }
  if (length > 0) yield Buffer.concat(held);
}

export class DraftSender {
  constructor(
    private readonly calls: GraphCalls,
    private readonly http: HttpsClient,
    private readonly mailbox: string,
  ) {}

  /** Sends `copy` through a draft: the answer to its send (202). Throws GraphRefusal, TooLargeForGraph, HttpFailure. */
  async send(copy: GraphCopy): Promise<HttpAnswer> {
    // mailsplit (about 11 MB resident) is loaded by the first message too large for one request, not
    // by every relay with a Graph host: most mail fits in one sendMail.
    const { scanParts, streamParts, withoutParts } = await import('./parts.js');
    const parts = await scanParts(copy.stream());
    const lifted = partsToLift(parts, copy.byteLength);
    if (lifted === null) {
      throw new TooLargeForGraph(
        `its body (without attachments) is more than one Graph request of ${REQUEST_LIMIT} bytes takes`,
      );
    }
    const rest = await withoutParts(copy.stream(), parts, lifted);
    const created = await this.calls.call('POST', `${userPath(this.mailbox)}/messages`, 201, {
      contentType: 'text/plain',
      data: rest.toString('base64'),
    });
    const id = jsonOf(created).id;
    if (typeof id !== 'string' || id === '') {
      throw new HttpFailure('answer', 'Microsoft Graph created a draft without an id');
    }
    const draft = `${userPath(this.mailbox)}/messages/${encodeURIComponent(id)}`;
    try {
      await streamParts(copy.stream(), parts, lifted, (part, content) => this.attach(draft, part, content));
      return await this.calls.call('POST', `${draft}/send`, 202);
    } catch (err) {
      // A draft left behind would sit in the mailbox's Drafts folder; unless Graph is out of reach, it goes.
      const unreachable = err instanceof HttpFailure && err.kind !== 'answer';
      if (!unreachable) await this.calls.call('DELETE', draft, 204).catch(() => undefined);
      throw err;
    }
  }

  private async attach(draft: string, part: MimePart, content: AsyncIterable<Buffer>): Promise<void> {
    if (part.decodedBytes < UPLOAD_SESSION_MIN) {
      const bytes: Buffer[] = [];
      for await (const piece of content) bytes.push(piece);
      const attachment = {
        '@odata.type': '#microsoft.graph.fileAttachment',
        ...attachmentProperties(part),
        contentBytes: Buffer.concat(bytes).toString('base64'),
      };
      await this.calls.call('POST', `${draft}/attachments`, 201, {
        contentType: 'application/json',
        data: JSON.stringify(attachment),
      });
      return;
    }
    const session = await this.calls.call('POST', `${draft}/attachments/createUploadSession`, 201, {
      contentType: 'application/json',
      data: JSON.stringify({
        AttachmentItem: { attachmentType: 'file', ...attachmentProperties(part), size: part.decodedBytes },
      }),
    });
    const uploadUrl = jsonOf(session).uploadUrl;
    if (typeof uploadUrl !== 'string' || !URL.canParse(uploadUrl) || new URL(uploadUrl).protocol !== 'https:') {
      throw new HttpFailure('answer', 'Microsoft Graph created an upload session without an https uploadUrl');
    }
    await this.upload(uploadUrl, part, content);
  }

  /** The ranges in order (Microsoft: "You must upload bytes in a file in order"); the last answers 201. */
  private async upload(uploadUrl: string, part: MimePart, content: AsyncIterable<Buffer>): Promise<void> {
    const total = part.decodedBytes;
    let offset = 0;
    for await (const range of ranges(content, UPLOAD_RANGE)) {
      const end = offset + range.length;
      if (end > total) {
        throw new Error(`attachment ${part.name} decodes to more than the ${total} bytes counted before`);
      }
      // The upload URL carries its own credential: no Authorization header goes with it.
      const answer = await this.http.send(uploadUrl, {
        method: 'PUT',
        headers: { 'content-type': 'application/octet-stream', 'content-range': `bytes ${offset}-${end - 1}/${total}` },
        body: range,
      });
      const expected = end === total ? 201 : 200;
      if (answer.status !== expected) throw new GraphRefusal(answer);
      if (end < total) {
        const next = jsonOf(answer).nextExpectedRanges;
        const start = Array.isArray(next) && typeof next[0] === 'string' ? Number(next[0].split('-')[0]) : end;
        if (start !== end) {
          throw new HttpFailure('answer', `the upload session of ${part.name} expects byte ${start} next, not ${end}`);
        }
      }
      offset = end;
    }
    if (offset !== total) {
      throw new Error(`attachment ${part.name} decodes to ${offset} bytes, not the ${total} counted before`);
    }
  }
}
