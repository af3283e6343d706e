import type { HeaderField } from '../../message/header-block';

/**
 * The header half of a DKIM signature (RFC 6376 §3.4.2, §3.5, §3.7) with relaxed canonicalisation:
 * which fields are signed, their canonical form, and the `DKIM-Signature:` field itself.
 *
 * Written here rather than taken from mailauth, whose header canonicalisation collapses JavaScript's
 * `\s` where the RFC says WSP (space and tab only). Header fields travel as latin1 strings, so the
 * byte 0xA0 reads as a no-break space to `\s`: a raw UTF-8 header (RFC 6532) holding "à" (C3 A0) or
 * the Cyrillic "Р" (D0 A0) was signed over a different text than every RFC-conforming verifier
 * computes, and its signature failed there (dkimpy; mailauth's own verifier shares the mistake and
 * passed it). The module it lived in also loads Joi, tldts and https (~5 MiB of heap) for a few
 * string functions. The body hash is dkim-signer.ts's RelaxedBodyHash, streamed in linear time.
 */

/**
 * The fields signed when present: mailauth's default list, which is RFC 6376 §5.4.1's recommended
 * set plus the MIME and List-* fields. Every instance present is signed, bottom-up, as §5.4.2 lets a
 * verifier find them. Received and the other trace fields are not signed: relays add them.
 */
const SIGNED_FIELDS: ReadonlySet<string> = new Set([
  'from',
  'sender',
  'reply-to',
  'subject',
  'date',
  'message-id',
  'to',
  'cc',
  'mime-version',
  'content-type',
  'content-transfer-encoding',
  'content-id',
  'content-description',
  'resent-date',
  'resent-from',
  'resent-sender',
  'resent-to',
  'resent-cc',
  'resent-message-id',
  'in-reply-to',
  'references',
  'list-id',
  'list-help',
  'list-unsubscribe',
  'list-subscribe',
  'list-post',
  'list-owner',
  'list-archive',
  'bimi-selector',
]);

/** A well-formed field name (RFC 5322 ftext); a field spelled otherwise is not signed (see fieldsToSign). */
const FIELD_NAME = /^[\x21-\x39\x3b-\x7e]+$/;
/** RFC 5322's folding: a CRLF followed by WSP; unfolding removes the CRLF. */
const FOLD = /\r\n(?=[ \t])/g;
/**
 * WSP is space and horizontal tab (RFC 5234), nothing else: not NBSP, not a vertical tab or a form
 * feed. (dkimpy also strips those two at the ends of a value, OpenDKIM does not; the RFC is the bar.)
 */
const WSP_RUN = /[ \t]+/g;
/** A field's lines are kept under this many characters, RFC 5322's recommended 78 less a margin. */
const LINE_WIDTH = 76;
/** Characters of the base64 signature per folded line. */
const B_CHUNK = 72;
/** Room left for the signature after `b=`: with less, `b=` starts a new line. */
const B_MIN_ROOM = 24;

/** One field in relaxed canonical form (RFC 6376 §3.4.2), with its CRLF. */
export function relaxedField(raw: string): string {
  const colon = raw.indexOf(':');
  const name = raw.slice(0, colon).replace(WSP_RUN, '').toLowerCase();
  const value = raw
    .slice(colon + 1)
    .replace(FOLD, '')
    .replace(WSP_RUN, ' ');
  const start = value.startsWith(' ') ? 1 : 0;
  const end = value.endsWith(' ') ? value.length - 1 : value.length;
  return `${name}:${value.slice(start, Math.max(start, end))}\r\n`;
}

/**
 * The fields a signature covers, bottom-up (the order of `h=`). A field whose name is not well formed
 * (`From\xA0:`; HeaderBlock trims it to `from` so that policy judges it as a From) is not signed:
 * its name could not be written in `h=`, and receivers need not read it as a From at all.
 */
export function fieldsToSign(fields: readonly HeaderField[]): HeaderField[] {
  const signed: HeaderField[] = [];
  for (let i = fields.length - 1; i >= 0; i--) {
    if (SIGNED_FIELDS.has(fields[i].key) && FIELD_NAME.test(fieldName(fields[i]))) signed.push(fields[i]);
  }
  return signed;
}

/**
 * `h=` names From once more than the message has From fields: a name beyond the fields present
 * signs an empty field (RFC 6376 §5.4.2), so a From added on the way fails the signature (§8.15),
 * and a message without a From still names it, as §5.4 requires of every signature.
 */
const OVERSIGNED = 'From';

/** What every signature of one message shares: the `h=` names and the signed fields' relaxed text. */
export interface SignedFields {
  names: readonly string[];
  canonical: string;
}

/** The fields to sign (fieldsToSign), named for `h=` with From over-signed, and relaxed once for all keys. */
export function signedFields(fields: readonly HeaderField[]): SignedFields {
  const chosen = fieldsToSign(fields);
  return {
    names: [...chosen.map(fieldName), OVERSIGNED],
    canonical: chosen.map((field) => relaxedField(field.raw)).join(''),
  };
}

/** A field's name as the message spells it (`h=` keeps the sender's case; verifiers compare without it). */
function fieldName(field: HeaderField): string {
  return field.raw.slice(0, field.raw.indexOf(':')).replace(WSP_RUN, '');
}

export interface SignatureTags {
  algorithm: 'rsa-sha256' | 'ed25519-sha256';
  domain: string;
  selector: string;
  signTime: Date;
  /** `bh=`, base64. */
  bodyHash: string;
  /** The signed fields, from signedFields(): the same for every key of a message. */
  signed: SignedFields;
}

export interface UnsignedSignature {
  /** `DKIM-Signature: v=1; …; b=`, folded: the signature value goes right after it. */
  field: string;
  /** What the key signs: the signed fields, then this field with `b=` empty, relaxed, without its final CRLF. */
  data: string;
}

/** The signature field up to its empty `b=`, and the text to sign (RFC 6376 §3.7). */
export function unsignedSignature(tags: SignatureTags): UnsignedSignature {
  const { names } = tags.signed;
  const words = [
    // The config accepts only ASCII domains and selectors, so d= and s= need no A-label conversion.
    'v=1;',
    `a=${tags.algorithm};`,
    'c=relaxed/relaxed;',
    `d=${tags.domain};`,
    `s=${tags.selector};`,
    `t=${Math.floor(tags.signTime.getTime() / 1000)};`,
    `bh=${tags.bodyHash};`,
    // A long h= list folds after a colon, where RFC 6376 §3.5 allows FWS.
    ...names.map((name, i) => `${i === 0 ? 'h=' : ''}${name}${i === names.length - 1 ? ';' : ':'}`),
    'b=',
  ];
  const field = fold('DKIM-Signature:', words, B_MIN_ROOM);
  return { field, data: tags.signed.canonical + relaxedField(field).slice(0, -2) };
}

/** The whole field, CRLF-terminated: the base64 signature folded after the unsigned part. */
export function signedField(unsigned: UnsignedSignature, signature: Buffer): string {
  const b64 = signature.toString('base64');
  // FWS may fall anywhere inside the base64 (RFC 6376 §2.4), and the verifier deletes it with the value.
  const room = Math.max(LINE_WIDTH - (unsigned.field.length - unsigned.field.lastIndexOf('\n') - 1), 1);
  const chunks = [b64.slice(0, room)];
  for (let i = room; i < b64.length; i += B_CHUNK) chunks.push(b64.slice(i, i + B_CHUNK));
  return `${unsigned.field}${chunks.join('\r\n ')}\r\n`;
}

/**
 * Joins words with single spaces (none after an h= name that ends in a colon), folding onto a new
 * line when the current one would pass LINE_WIDTH, or leave the last word less than `lastRoom`
 * after it. Relaxed canonicalisation reads a fold as one space, so the signed text does not depend
 * on where the folds fall.
 */
function fold(head: string, words: readonly string[], lastRoom: number): string {
  const lines: string[] = [];
  let line = head;
  let glue = ' ';
  for (const [i, word] of words.entries()) {
    const room = i === words.length - 1 ? lastRoom : 0;
    if (line.length + glue.length + word.length + room > LINE_WIDTH) {
      lines.push(line);
      line = ` ${word}`;
    } else {
      line += glue + word;
    }
    glue = word.endsWith(':') ? '' : ' ';
  }
  lines.push(line);
  return lines.join('\r\n');
}
