import { rfc5322Date } from '../message/date';

/**
 * Delivery status notifications (RFC 3464) as pure functions: the report is built from values, so
 * its exact bytes are table-tested; reading the original and queueing the result is bounce.ts.
 *
 *   multipart/report; report-type=delivery-status   (RFC 6522)
 *     text/plain                 what happened, for the human
 *     message/delivery-status    Reporting-MTA, Arrival-Date, then per recipient Final-Recipient,
 *                                Action: failed, Status, Remote-MTA, Diagnostic-Code
 *     text/rfc822-headers        the original header block (not the body: it may be large, or private)
 */

export interface FailedRecipient {
  address: string;
  /** The last reply or error for it, as the spool recorded it (`550 5.1.1 No such user`). */
  response: string | undefined;
  /** The smart host that gave that reply (`smtp.provider.example`), if any did. */
  remoteMta: string | undefined;
  reason: 'rejected' | 'expired';
}

export interface DsnInput {
  /** Our hostname: Reporting-MTA, From domain, Message-ID domain. */
  hostname: string;
  /** Queue id of the message reported on. */
  originalId: string;
  arrivalDate: Date;
  date: Date;
  /** Header To: the original envelope sender, or the copy address when there is none. */
  to: string;
  failures: readonly FailedRecipient[];
  /** The original header block, CRLF line ends, ending with CRLF. */
  originalHeaders: Buffer;
  /** Unique per DSN (the DSN's own queue id does). */
  uniqueId: string;
}

/**
 * The RFC 3463 status for a recipient: the enhanced code of the reply when there is one, else one
 * of its class; an expiry is 4.4.7 (delivery time expired) whatever was said last.
 */
export function dsnStatus(failure: Pick<FailedRecipient, 'response' | 'reason'>): string {
  if (failure.reason === 'expired') return '4.4.7';
  const match = /^([245])\d\d[ -][245](\.\d{1,3}\.\d{1,3})\b/.exec(failure.response ?? '');
  // The class is the reply's (as Postfix does): `550 4.7.1 …` was a refusal for good, so 5.7.1.
  if (match) return `${match[1]}${match[2]}`;
  const code = /^([45])\d\d\b/.exec(failure.response ?? '');
  return code ? `${code[1]}.0.0` : '5.0.0';
}

/** `smtp; 550 5.1.1 …` for an SMTP reply; anything else (a connection error) is our own diagnostic type. */
export function diagnosticCode(response: string | undefined): string {
  const text = printable(response ?? 'no smart host accepted the message');
  return /^\d{3}\b/.test(text) ? `smtp; ${text}` : `X-smarthop; ${text}`;
}

/**
 * A recipient for `Final-Recipient`: `rfc822` for an ASCII address, else RFC 6533's `utf-8` type in
 * its ASCII form (utf-8-addr-xtext: each non-ASCII character, and `\`, as `\x{HEX}`).
 */
export function finalRecipient(address: string): string {
  if (/^[\x21-\x7e]+$/.test(address)) return `rfc822; ${address}`;
  let xtext = '';
  for (const char of address) {
    const code = char.codePointAt(0) ?? 0;
    xtext += code > 0x7e || code < 0x21 || char === '\\' ? `\\x{${code.toString(16).toUpperCase()}}` : char;
  }
  return `utf-8; ${xtext}`;
}

/** A header's address as the bytes it goes out as: UTF-8 (RFC 6532), in this latin1-built text. */
function utf8Bytes(text: string): string {
  return Buffer.from(text, 'utf8').toString('latin1');
}

/** One header line's worth of US-ASCII (DSN fields are ASCII; provider replies may be anything). */
function printable(text: string, max = 900): string {
  const clean = text
    .replace(/\r?\n/g, ' ')
    .replace(/[^\x20-\x7e]/g, '?')
    .replace(/\s+/g, ' ')
    .trim();
  return clean.length > max ? `${clean.slice(0, max)}...` : clean;
}

export function buildDsn(input: DsnInput): Buffer {
  const { hostname, failures } = input;
  const boundary = `${input.uniqueId}/${hostname}`;
  const expired = failures.every((f) => f.reason === 'expired');
  const headers = [
    `From: Mail Delivery System <MAILER-DAEMON@${hostname}>`,
    `To: <${utf8Bytes(input.to)}>`,
    `Subject: Undelivered Mail Returned to Sender${expired ? ' (delivery time expired)' : ''}`,
    `Date: ${rfc5322Date(input.date)}`,
    `Message-ID: <${input.uniqueId}.dsn@${hostname}>`,
    'Auto-Submitted: auto-replied',
    'MIME-Version: 1.0',
    `Content-Type: multipart/report; report-type=delivery-status; boundary="${boundary}"`,
  ];
  const human = [
    `This is the mail system at host ${hostname}.`,
    '',
    expired
      ? 'Your message could not be delivered before the time allowed for delivery ran out.'
      : 'Your message could not be delivered to one or more recipients.',
    'It is attached below (headers only). The mail system said:',
    '',
    ...failures.map(
      (f) => `<${printable(f.address, 300)}>: ${printable(f.response ?? 'no smart host accepted the message')}`,
    ),
  ];
  const perMessage = [
    `Reporting-MTA: dns; ${hostname}`,
    `X-Smarthop-Queue-ID: ${input.originalId}`,
    `Arrival-Date: ${rfc5322Date(input.arrivalDate)}`,
  ];
  const perRecipient = failures.map((f) =>
    [
      `Final-Recipient: ${printable(finalRecipient(f.address), 900)}`,
      'Action: failed',
      `Status: ${dsnStatus(f)}`,
      ...(f.remoteMta !== undefined ? [`Remote-MTA: dns; ${printable(f.remoteMta, 255)}`] : []),
      `Diagnostic-Code: ${diagnosticCode(f.response)}`,
    ].join('\r\n'),
  );
  const eightBit = input.originalHeaders.some((byte) => byte > 0x7e);

  const text = [
    ...headers,
    '',
    'This is a MIME-encapsulated message.',
    '',
    `--${boundary}`,
    'Content-Type: text/plain; charset=us-ascii',
    'Content-Description: Notification',
    '',
    ...human,
    '',
    `--${boundary}`,
    'Content-Type: message/delivery-status',
    'Content-Description: Delivery report',
    '',
    [perMessage.join('\r\n'), ...perRecipient].join('\r\n\r\n'),
    '',
    `--${boundary}`,
    'Content-Type: text/rfc822-headers',
    'Content-Description: Undelivered Message Headers',
    ...(eightBit ? ['Content-Transfer-Encoding: 8bit'] : []),
    '',
    '',
  ].join('\r\n');
  return Buffer.concat([
    Buffer.from(text, 'latin1'),
    input.originalHeaders,
    Buffer.from(`\r\n--${boundary}--\r\n`, 'latin1'),
  ]);
}
