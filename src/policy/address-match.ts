import picomatch from 'picomatch';
import { normalizeAddress, normalizeDomain, type NormalizedAddress } from './address';

/**
 * Address and domain globs, compiled once per config.
 *
 *   `*`                        every address, the null sender included
 *   `<>`                       the null sender (bounces) only
 *   `*@corp.example`           a pattern with `@` matches the whole address
 *   `corp.example`, `@corp.example`, `*.corp.example`   without a local part it matches the domain
 *
 * Matching is case-insensitive and IDN-aware: patterns and addresses go through the same
 * normalisation (see address.ts). picomatch does the glob work; it is a path matcher, so `/` (legal
 * in a local part) is swapped for a control character on both sides: a `*` must not stop at it, or
 * `a/b@competitor.example` would slip past `*@competitor.example`.
 */

const SLASH_STAND_IN = '\u001f';
const GLOB_CHARS = /[*?[\]{}()!+|]/;

export interface PatternError {
  index: number;
  message: string;
}

export type CompileResult = { ok: true; matcher: AddressMatcher } | { ok: false; errors: PatternError[] };

export class AddressMatcher {
  private constructor(
    readonly patterns: readonly string[],
    private readonly any: boolean,
    private readonly nullSender: boolean,
    private readonly exactAddresses: ReadonlySet<string>,
    private readonly exactDomains: ReadonlySet<string>,
    private readonly addressGlob: ((subject: string) => boolean) | null,
    private readonly domainGlob: ((subject: string) => boolean) | null,
  ) {}

  static compile(patterns: readonly string[]): CompileResult {
    const errors: PatternError[] = [];
    let any = false;
    let nullSender = false;
    const exactAddresses = new Set<string>();
    const exactDomains = new Set<string>();
    const addressGlobs: string[] = [];
    const domainGlobs: string[] = [];
    patterns.forEach((pattern, index) => {
      const parsed = parsePattern(pattern);
      if ('error' in parsed) return errors.push({ index, message: parsed.error });
      switch (parsed.kind) {
        case 'any': any = true; break;
        case 'null': nullSender = true; break;
        case 'address':
          if (parsed.glob) addressGlobs.push(parsed.value);
          else exactAddresses.add(parsed.value);
          break;
        case 'domain':
          if (parsed.glob) domainGlobs.push(parsed.value);
          else exactDomains.add(parsed.value);
          break;
      }
    });
    if (errors.length > 0) return { ok: false, errors };
    return {
      ok: true,
      matcher: new AddressMatcher(patterns, any, nullSender, exactAddresses, exactDomains, globMatcher(addressGlobs), globMatcher(domainGlobs)),
    };
  }

  /** Compiles patterns that are known to be valid (already checked by the config schema). */
  static of(patterns: readonly string[]): AddressMatcher {
    const result = AddressMatcher.compile(patterns);
    if (!result.ok) throw new Error(`invalid address pattern ${JSON.stringify(patterns[result.errors[0].index])}: ${result.errors[0].message}`);
    return result.matcher;
  }

  /** True for a list holding `*`: nothing is restricted. */
  get matchesEverything(): boolean {
    return this.any;
  }

  matches(address: NormalizedAddress): boolean {
    if (this.any) return true;
    if (address.address === '') return this.nullSender;
    if (this.exactAddresses.has(address.address)) return true;
    if (address.domain !== '' && this.exactDomains.has(address.domain)) return true;
    if (this.addressGlob?.(address.address.replaceAll('/', SLASH_STAND_IN))) return true;
    return address.domain !== '' && this.domainGlob !== null && this.domainGlob(address.domain);
  }
}

type ParsedPattern =
  | { kind: 'any' }
  | { kind: 'null' }
  | { kind: 'address' | 'domain'; value: string; glob: boolean }
  | { error: string };

function parsePattern(raw: string): ParsedPattern {
  const pattern = raw.trim();
  if (pattern === '*') return { kind: 'any' };
  if (pattern === '<>') return { kind: 'null' };
  if (pattern === '') return { error: 'an empty pattern matches nothing; use "<>" for the null sender' };
  if (pattern.startsWith('!')) return { error: 'negated patterns are not supported (use denied_recipients)' };
  if (/[\u0000-\u001f\s]/.test(pattern)) return { error: 'patterns cannot contain spaces or control characters' };
  const at = pattern.lastIndexOf('@');
  const domain = domainPattern(at === -1 ? pattern : pattern.slice(at + 1));
  if ('error' in domain) return domain;
  if (at <= 0) {
    if (domain.value === '') return { error: 'expected an address or a domain' };
    return { kind: 'domain', value: domain.value, glob: domain.glob };
  }
  if (domain.value === '') return { error: 'expected a domain after "@"' };
  const local = pattern.slice(0, at).normalize('NFC').toLowerCase();
  const glob = domain.glob || GLOB_CHARS.test(local);
  const value = `${glob ? local.replaceAll('/', SLASH_STAND_IN) : local}@${domain.value}`;
  // An exact pattern is compared with the normalised address, so it goes through the same normalisation.
  return { kind: 'address', value: glob ? value : normalizeAddress(value).address, glob };
}

/** Each label to punycode unless it holds glob characters; a glob inside a non-ASCII label has no single ASCII form. */
function domainPattern(raw: string): { value: string; glob: boolean } | { error: string } {
  const labels = raw.replace(/\.$/, '').split('.');
  let glob = false;
  const out: string[] = [];
  for (const label of labels) {
    if (GLOB_CHARS.test(label)) {
      if (/[^\x00-\x7f]/.test(label)) return { error: `a glob inside the non-ASCII label ${JSON.stringify(label)} cannot be matched consistently; write the label in full or in punycode` };
      glob = true;
      out.push(label.toLowerCase());
      continue;
    }
    if (label === '') return raw === '' ? { value: '', glob: false } : { error: `${JSON.stringify(raw)} has an empty domain label` };
    out.push(normalizeDomain(label));
  }
  return { value: out.join('.'), glob };
}

function globMatcher(globs: string[]): ((subject: string) => boolean) | null {
  if (globs.length === 0) return null;
  // bash: a single `*` crosses every character; dot: a leading `.` is nothing special in an address.
  return picomatch(globs, { bash: true, dot: true, nocase: true });
}
