import { randomBytes } from 'node:crypto';

/** A test message as a mail client or scanner writes it: a text body, maybe HTML with inline images, attachments. */

export interface TestAttachment {
  name: string;
  contentType: string;
  bytes: Buffer;
  /** Shown in the HTML body (multipart/related), referenced by Content-ID. */
  contentId?: string;
}

export interface TestMessage {
  headers: string[];
  text: string;
  html?: string;
  attachments?: TestAttachment[];
}

function base64Lines(bytes: Buffer): string {
  return bytes.toString('base64').replace(/.{76}/g, '$&\r\n').replace(/\r\n$/, '');
}

function attachmentPart(attachment: TestAttachment): string {
  const disposition = attachment.contentId ? 'inline' : 'attachment';
  return [
    `Content-Type: ${attachment.contentType}; name="${attachment.name}"`,
    'Content-Transfer-Encoding: base64',
    `Content-Disposition: ${disposition}; filename="${attachment.name}"`,
    ...(attachment.contentId ? [`Content-ID: <${attachment.contentId}>`] : []),
    '',
    base64Lines(attachment.bytes),
  ].join('\r\n');
}

const PREAMBLE = 'This is a multi-part message in MIME format.\r\n';

/** A multipart entity (its Content-Type line, then its parts between delimiters), without a final CRLF. */
function multipart(subtype: string, boundary: string, parts: string[], preamble = ''): string {
  const header = `Content-Type: multipart/${subtype}; boundary="${boundary}"\r\n\r\n${preamble}`;
  return `${header}${parts.map((part) => `--${boundary}\r\n${part}\r\n`).join('')}--${boundary}--`;
}

/** The message's bytes, CRLF line ends throughout. */
export function buildMime(message: TestMessage): Buffer {
  const files = (message.attachments ?? []).filter((a) => !a.contentId);
  const inline = (message.attachments ?? []).filter((a) => a.contentId);
  const textPart =
    'Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n' +
    quotedPrintable(message.text);
  let body = textPart;
  if (message.html !== undefined) {
    const htmlPart =
      'Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n' +
      quotedPrintable(message.html);
    const related =
      inline.length > 0 ? multipart('related', 'rel', [htmlPart, ...inline.map(attachmentPart)]) : htmlPart;
    body = multipart('alternative', 'alt', [textPart, related]);
  }
  const top =
    files.length > 0
      ? `${multipart('mixed', 'mixed', [body, ...files.map(attachmentPart)], PREAMBLE)}\r\n`
      : `${body}\r\n`;
  return Buffer.from(`${message.headers.join('\r\n')}\r\nMIME-Version: 1.0\r\n${top}`, 'utf8');
}

/** Quoted-printable as RFC 2045 writes it, lines of at most 76 characters. */
function quotedPrintable(text: string): string {
  const bytes = Buffer.from(text.replace(/\r?\n/g, '\r\n'), 'utf8');
  let out = '';
  let line = '';
  for (let i = 0; i < bytes.length; i++) {
    const byte = bytes[i];
    if (byte === 0x0d && bytes[i + 1] === 0x0a) {
      out += `${line}\r\n`;
      line = '';
      i++;
      continue;
    }
    const encoded =
      (byte >= 33 && byte <= 126 && byte !== 61) || byte === 32
        ? String.fromCharCode(byte)
        : `=${byte.toString(16).toUpperCase().padStart(2, '0')}`;
    if (line.length + encoded.length > 75) {
      out += `${line}=\r\n`;
      line = '';
    }
    line += encoded;
  }
  return out + line;
}

/** `size` random bytes standing in for a scanned PDF (random, so no encoding can shrink or hide a change). */
export function fakePdf(size: number): Buffer {
  return Buffer.concat([Buffer.from('%PDF-1.7\n', 'latin1'), randomBytes(Math.max(0, size - 9))]);
}
