import { domainToASCII } from 'node:url';

/**
 * One form for every address the relay compares, whatever form it arrived in: smtp-server hands
 * envelope domains over in Unicode (it runs punycode.toUnicode), header From may carry either
 * `bücher.example` or `xn--bcher-kva.example`, and patterns are written by hand. Domains become
 * lower-case ASCII (punycode), local parts lower-case NFC, so the same mailbox always compares equal.
 * Every function here is linear in its input.
 */
export interface NormalizedAddress {
  /** `local@domain` in normalised form; '' for the null sender. */
  readonly address: string;
  readonly local: string;
  /** ASCII (punycode) lower-case domain; '' when the address has none (`postmaster`, `<>`). */
  readonly domain: string;
}

/** Lower-case ASCII form of a domain: IDN labels to punycode, a trailing root dot dropped. */
export function normalizeDomain(domain: string): string {
  let trimmed = domain.trim();
  if (trimmed.endsWith('.')) trimmed = trimmed.slice(0, -1);
  if (trimmed === '') return '';
  // Address literals ([10.0.0.1], [IPv6:…]) are not names: compared as written, lower-cased.
  if (trimmed.startsWith('[')) return trimmed.toLowerCase();
  const ascii = domainToASCII(trimmed);
  // domainToASCII answers '' for what is no valid domain; keep it comparable rather than equal to every other
  // invalid one.
  return ascii === '' ? trimmed.normalize('NFC').toLowerCase() : ascii;
}

/** Splits at the last `@` (a quoted local part may contain one) and normalises both halves. */
export function normalizeAddress(raw: string): NormalizedAddress {
  let address = raw.trim();
  if (address.startsWith('<') && address.endsWith('>')) address = address.slice(1, -1);
  const at = address.lastIndexOf('@');
  const local = (at === -1 ? address : address.slice(0, at)).normalize('NFC').toLowerCase();
  const domain = at === -1 ? '' : normalizeDomain(address.slice(at + 1));
  return { address: domain === '' ? local : `${local}@${domain}`, local, domain };
}

/** The domain of an address as written, lower-cased ('' without an `@`): for routing and naming, not for policy. */
export function domainOf(address: string): string {
  const at = address.lastIndexOf('@');
  return at === -1 ? '' : address.slice(at + 1).toLowerCase();
}
