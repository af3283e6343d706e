/**
 * Envelope addresses the relay will judge and forward: `local@domain` with a plain local part (RFC
 * 5321 Dot-string; RFC 6531 adds non-ASCII letters). smtp-server also lets through quoted local parts
 * and comments (`"ceo"@x`, `ceo(x)@x`, even `ceo(@x`), which the policy would compare as written while
 * the way out re-parses them: `"ceo"@x` leaves as `ceo@x`, past a deny list or the suppression
 * list, and `ceo(@x` as a bare `ceo` with no domain at all. Refusing those few forms keeps the
 * address the policy judged and the address the smart host is sent the same one (the delivery side
 * only lower-cases and punycodes the domain of a plain address). Legacy apps do not send them.
 */

/** An atom: atext of RFC 5321, plus anything beyond ASCII (RFC 6531 UTF8-non-ascii). */
const ATOM = "[A-Za-z0-9!#$%&'*+\\-/=?^_`{|}~\\u0080-\\u{10FFFF}]+";
const PLAIN_LOCAL_PART = new RegExp(`^${ATOM}(?:\\.${ATOM})*$`, 'u');
/** A domain or an address literal, without anything a parser could read as a comment, a group or a second address. */
const PLAIN_DOMAIN = /^(?:[^\s"(),:;<>@[\\\]]+|\[[^\s[\\\]]+\])$/u;

export function isPlainAddress(address: string): boolean {
  const at = address.lastIndexOf('@');
  if (at <= 0 || at === address.length - 1) return false;
  return PLAIN_LOCAL_PART.test(address.slice(0, at)) && PLAIN_DOMAIN.test(address.slice(at + 1));
}
