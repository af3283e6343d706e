import libmime from 'libmime';

/**
 * Every text in a header value that a reader could take for an address. Mail apps show display
 * names, and parsers differ on odd headers (mailauth's DMARC From, Python's email, Gmail's), so a
 * value passes a sender rule only if everything in it that looks like an address is allowed, not
 * just what one parser returned.
 */

/** `x@y` with nothing between the parts that a parser would read as a separator. */
const ADDRESS_LIKE = /[^\s<>()[\]\\,;:"@]+@[^\s<>()[\]\\,;:"'@]+/gu;

/**
 * Every `x@y` in the value: as written, with RFC 2047 encoded words decoded, and each of those
 * loosened the way a lenient parser reads it: compatibility forms folded (a fullwidth `＠` is an
 * `@`), comments removed (`ceo@(x)bank.example` is `ceo@bank.example` to mailauth and Python, while
 * nodemailer's addressparser may return another address of the same field), and whitespace around
 * `@` and `.` dropped.
 */
export function addressesMentioned(value: string): string[] {
  const found = new Set<string>();
  for (const text of new Set([value, decodeWords(value)])) {
    for (const form of new Set([text, loosened(text)])) for (const match of form.match(ADDRESS_LIKE) ?? []) found.add(match);
  }
  return [...found];
}

function loosened(text: string): string {
  let value = text.normalize('NFKC');
  // Innermost comments first, until none is left; an unclosed one runs to the end, as in RFC 5322.
  for (let previous = ''; previous !== value; ) {
    previous = value;
    value = value.replace(/\([^()]*\)/gu, ' ');
  }
  value = value.replace(/\([^)]*$/u, ' ').replace(/\)/gu, ' ');
  return value.replace(/\s*@\s*/gu, '@').replace(/\s*\.\s*/gu, '.');
}

export function decodeWords(value: string): string {
  if (!value.includes('=?')) return value;
  try {
    return libmime.decodeWords(value);
  } catch {
    return value;
  }
}
