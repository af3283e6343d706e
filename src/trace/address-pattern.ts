import { normalizeAddress, type NormalizedAddress } from '../message/address';
import { AddressMatcher } from '../message/address-pattern';

/**
 * A sender or recipient pattern of a trace query, with the same meaning as in a policy's
 * `allowed_recipients` (`*@example.com`, `example.com`, `bob*@*.example`, `<>`): one matcher for
 * both, case-insensitive and IDN-aware. Verdicts on non-ASCII addresses (which need the WHATWG host
 * parser) are remembered, because the same addresses come back in block after block.
 */
export class AddressPattern {
  private readonly seen = new Map<string, boolean>();

  private constructor(
    readonly source: string,
    private readonly matcher: AddressMatcher,
    /** For a plain ASCII address pattern: its length, since an ASCII address only changes case when normalised. */
    private readonly exactLength: number | null,
  ) {}

  static compile(pattern: string): { ok: true; pattern: AddressPattern } | { ok: false; error: string } {
    const result = AddressMatcher.compile([pattern]);
    if (!result.ok) return { ok: false, error: result.errors[0].message };
    const plain = pattern.trim();
    const exact = /^[!-~]+@[!-~]+$/.test(plain) && !/[*?[\]{}<>%]/.test(plain);
    return {
      ok: true,
      pattern: new AddressPattern(pattern, result.matcher, exact ? plain.replace(/\.$/, '').length : null),
    };
  }

  matches(address: string): boolean {
    const ascii = asciiNormalized(address);
    if (ascii) {
      // Normalising an ASCII address drops at most `<`, `>` and a final dot: a length outside that cannot match.
      if (this.exactLength !== null && (address.length < this.exactLength || address.length > this.exactLength + 3))
        return false;
      return this.matcher.matches(ascii);
    }
    let verdict = this.seen.get(address);
    if (verdict === undefined) {
      verdict = this.matcher.matches(normalizeAddress(address));
      // Bounded: a query over millions of distinct addresses forgets and recomputes rather than grow.
      if (this.seen.size >= 200_000) this.seen.clear();
      this.seen.set(address, verdict);
    }
    return verdict;
  }
}

/**
 * normalizeAddress for the common case, printable ASCII with a plain host name: there it only
 * lower-cases (punycode and NFC change nothing), and skipping the WHATWG host parser makes a glob
 * over a million distinct recipients several times faster.
 */
function asciiNormalized(raw: string): NormalizedAddress | null {
  if (!/^[!-~]*$/.test(raw)) return null;
  const address = raw.startsWith('<') && raw.endsWith('>') ? raw.slice(1, -1) : raw;
  const at = address.lastIndexOf('@');
  const domain = at === -1 ? '' : address.slice(at + 1);
  // Only a plain host name: anything the WHATWG host parser treats specially (%, /, :, [) takes the full path.
  if (!/^[A-Za-z0-9.-]*$/.test(domain)) return null;
  const local = (at === -1 ? address : address.slice(0, at)).toLowerCase();
  const host = domain.toLowerCase().replace(/\.$/, '');
  return { address: host === '' ? local : `${local}@${host}`, local, domain: host };
}
