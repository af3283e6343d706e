/**
 * The mechanism a Content-Transfer-Encoding value names, as mail apps read it: the first token, with
 * RFC 822 comments (nested, with quoted pairs) and double quotes ignored. `quoted-printable (legacy
 * mailer)`, `(by x) base64` and `BASE64` all name an encoding a mail app decodes; mailsplit compares
 * the value without its comments as a whole, so `quoted-printable foo` is no encoding to it.
 * Lower-cased; '' when the value names nothing. One pass over the value.
 */
export function transferMechanism(value: string): string {
  let depth = 0;
  let start = -1;
  for (let i = 0; i < value.length; i++) {
    const c = value[i];
    if (depth > 0) {
      if (c === '\\') i++;
      else if (c === '(') depth++;
      else if (c === ')') depth--;
      continue;
    }
    const ends = c === '(' || c === ';' || c === '"' || c === ' ' || c === '\t' || c === '\r' || c === '\n';
    if (start !== -1 && ends) return value.slice(start, i).toLowerCase();
    if (c === '(') depth = 1;
    else if (start === -1 && !ends) start = i;
  }
  return start === -1 ? '' : value.slice(start).toLowerCase();
}
