import { decodeWords } from './encoded-words';

/**
 * Every text in a header value that a reader could take for an address. Mail apps show display
 * names, and parsers differ on odd headers (mailauth's DMARC From, Python's email, Gmail's), so a
 * value passes a sender rule only if everything in it that looks like an address is allowed, not
 * just what one parser returned.
 *
 * Each step is one left-to-right pass with constant work per character: the text is the client's,
 * and the regular expressions this replaces took time quadratic in a run of address characters
 * without an `@` (250 KB of them held the event loop for 40 s) and peeled comments one nesting
 * level per pass.
 */

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
    for (const form of new Set([text, loosened(text)])) for (const match of addressLike(form)) found.add(match);
  }
  return [...found];
}

/** Separators a parser reads between addresses: whitespace and `<>()[]\,;:"@` end a local part. */
function endsLocal(code: number): boolean {
  switch (code) {
    case 0x3c:
    case 0x3e:
    case 0x28:
    case 0x29:
    case 0x5b:
    case 0x5d:
    case 0x5c:
    case 0x2c:
    case 0x3b:
    case 0x3a:
    case 0x22:
    case 0x40:
      return true;
    default:
      return isSpace(code);
  }
}

/** A domain also ends at `'` (`'ceo@bank.example'` names bank.example). */
function endsDomain(code: number): boolean {
  return code === 0x27 || endsLocal(code);
}

/** JavaScript's `\s`: the separators a regular expression would have used. */
function isSpace(code: number): boolean {
  if (code === 0x20 || (code >= 0x09 && code <= 0x0d) || code === 0xa0) return true;
  if (code < 0x1680) return false;
  return (
    code === 0x1680 ||
    (code >= 0x2000 && code <= 0x200a) ||
    code === 0x2028 ||
    code === 0x2029 ||
    code === 0x202f ||
    code === 0x205f ||
    code === 0x3000 ||
    code === 0xfeff
  );
}

/**
 * The runs `local@domain` a global match of /[^\s<>()[\]\\,;:"@]+@[^\s<>()[\]\\,;:"'@]+/ finds, in
 * one pass: a local part can only be a whole run of local characters (an `@` ends it), so a run not
 * followed by `@` and a domain character is skipped at once instead of retried from each position.
 */
export function addressLike(text: string): string[] {
  const found: string[] = [];
  let i = 0;
  while (i < text.length) {
    if (endsLocal(text.charCodeAt(i))) {
      i++;
      continue;
    }
    const start = i;
    while (i < text.length && !endsLocal(text.charCodeAt(i))) i++;
    const at = i;
    if (text.charCodeAt(at) !== 0x40 || at + 1 >= text.length || endsDomain(text.charCodeAt(at + 1))) continue;
    i = at + 1;
    while (i < text.length && !endsDomain(text.charCodeAt(i))) i++;
    found.push(text.slice(start, i));
  }
  return found;
}

/**
 * The text as a lenient parser reads it: NFKC, each comment (nested ones whole) one space, an
 * unclosed comment running to the end (RFC 5322), a stray `)` a space, and no whitespace around
 * `@` or `.`. Comments are tracked with a depth counter, so nesting costs nothing extra.
 */
export function loosened(text: string): string {
  const value = text.normalize('NFKC');
  // Pass 1: comments out.
  let uncommented = '';
  let depth = 0;
  let runStart = 0;
  for (let i = 0; i < value.length; i++) {
    const code = value.charCodeAt(i);
    if (code === 0x28) {
      if (depth === 0) uncommented += value.slice(runStart, i);
      depth++;
    } else if (code === 0x29) {
      if (depth === 0) {
        uncommented += `${value.slice(runStart, i)} `;
      } else if (--depth === 0) {
        uncommented += ' ';
      }
      runStart = i + 1;
    }
  }
  uncommented += depth === 0 ? value.slice(runStart) : ' ';
  // Pass 2: whitespace runs that touch an `@` or a `.` go.
  let out = '';
  let i = 0;
  while (i < uncommented.length) {
    if (!isSpace(uncommented.charCodeAt(i))) {
      const start = i;
      while (i < uncommented.length && !isSpace(uncommented.charCodeAt(i))) i++;
      out += uncommented.slice(start, i);
      continue;
    }
    const start = i;
    while (i < uncommented.length && isSpace(uncommented.charCodeAt(i))) i++;
    const before = start === 0 ? 0 : uncommented.charCodeAt(start - 1);
    const after = i < uncommented.length ? uncommented.charCodeAt(i) : 0;
    if (before !== 0x40 && before !== 0x2e && after !== 0x40 && after !== 0x2e) out += uncommented.slice(start, i);
  }
  return out;
}
