import type { HeaderBlock } from './header-block';

/**
 * Bounds on a header block beyond its total size, so that no header is too large to be real and
 * nothing the relay reads from one can grow with it. Every reader here is linear in any case; the
 * bounds say what real mail looks like (Postfix discards what passes header_size_limit, 100 KiB a
 * field; these refuse instead, so the client hears why) and keep the work per message small.
 */
export const HEADER_LIMITS = {
  /** Fields in one header block (a real message has tens; a long mailing-list trace, a few hundred). */
  maxFields: 1000,
  /** Bytes of one field, folded lines included (a To listing a thousand recipients fits). */
  maxFieldBytes: 64 * 1024,
  /** Bytes of one From or Sender field: the fields the policy and rewrite_from read address by address. */
  maxAddressFieldBytes: 8 * 1024,
} as const;

const ADDRESS_FIELDS: ReadonlyMap<string, string> = new Map([
  ['from', 'From'],
  ['sender', 'Sender'],
]);
const CRLF = Buffer.from('\r\n');
const SP = 0x20;
const HT = 0x09;

/**
 * Whether header bytes hold more fields than HEADER_LIMITS.maxFields, counted on the bytes before
 * any field is built: a block of tens of thousands of tiny fields is refused without making an
 * object (and garbage) of each.
 */
export function tooManyFields(bytes: Buffer): boolean {
  if (bytes.length === 0) return false;
  let fields = 1;
  for (let at = bytes.indexOf(CRLF); at !== -1; at = bytes.indexOf(CRLF, at + 2)) {
    const next = bytes[at + 2];
    if (next !== SP && next !== HT && at + 2 < bytes.length && ++fields > HEADER_LIMITS.maxFields) return true;
  }
  return false;
}

export const TOO_MANY_FIELDS = `Message header has more than ${HEADER_LIMITS.maxFields} fields`;

/** Why the block is out of bounds (the text after `550 5.6.0`), or undefined when it is within them. */
export function headerLimitProblem(headers: HeaderBlock): string | undefined {
  if (headers.fields.length > HEADER_LIMITS.maxFields) return TOO_MANY_FIELDS;
  for (const field of headers.fields) {
    const addressField = ADDRESS_FIELDS.get(field.key);
    const max = addressField === undefined ? HEADER_LIMITS.maxFieldBytes : HEADER_LIMITS.maxAddressFieldBytes;
    // Fields are latin1 strings, one character per byte.
    if (field.raw.length > max)
      return `Header field ${addressField ?? printableName(field.key)} is longer than ${max} bytes`;
  }
  return undefined;
}

/** The name goes into a reply: printable ASCII, and not much of it. */
function printableName(key: string): string {
  const name = key.replace(/[^\x21-\x7e]/g, '').slice(0, 64);
  return name === '' ? '(unnamed)' : name;
}
