import { RE2JS } from 're2js';
import { normalizeAddress, normalizeDomain, type NormalizedAddress } from './address';
import { globToRe2 } from './glob';

/**
 * The one address matcher: `allowed_senders`, `allowed_recipients`, `denied_recipients`,
 * `rewrite_from.unless` and suppression lists all go through it, so a pattern means the same
 * everywhere and is validated the same way when the config (or the list) is read.
 *
 *   `*`                        every address, the null sender included
 *   `<>`                       the null sender (bounces) only
 *   `*@corp.example`           a pattern with `@` matches the whole address
 *   `corp.example`, `@corp.example`, `*.corp.example`   without a local part it matches the domain
 *
 * Matching is case-insensitive and IDN-aware: patterns and addresses go through the same
 * normalisation (address.ts). Exact patterns are set lookups; globs (glob.ts) run on RE2, so a
 * match costs time linear in the address whatever the patterns are.
 */

export interface PatternError {
  index: number;
  message: string;
}

export type CompileResult = { ok: true; matcher: AddressMatcher } | { ok: false; errors: PatternError[] };

export interface PatternOptions {
  /**
   * Every entry is an exact address or domain (suppression lists: a `*` or `{` there is part of an
   * address, never a wildcard, and `*`/`<>` are not special).
   */
  literal?: boolean;
}

const GLOB_CHARS = /[*?[\]{}]/;

export class AddressMatcher {
  private constructor(
    readonly patterns: readonly string[],
    private readonly any: boolean,
    private readonly nullSender: boolean,
    private readonly exactAddresses: ReadonlySet<string>,
    private readonly exactDomains: ReadonlySet<string>,
    private readonly addressGlob: RE2JS | null,
    private readonly domainGlob: RE2JS | null,
    private readonly globCount: number,
  ) {}

  static compile(patterns: readonly string[], options: PatternOptions = {}): CompileResult {
    const errors: PatternError[] = [];
    let any = false;
    let nullSender = false;
    const exactAddresses = new Set<string>();
    const exactDomains = new Set<string>();
    const addressGlobs: string[] = [];
    const domainGlobs: string[] = [];
    patterns.forEach((pattern, index) => {
      const parsed = parsePattern(pattern, options.literal === true);
      if ('error' in parsed) return errors.push({ index, message: parsed.error });
      switch (parsed.kind) {
        case 'any':
          any = true;
          break;
        case 'null':
          nullSender = true;
          break;
        case 'address':
          if (parsed.glob !== undefined) addressGlobs.push(parsed.glob);
          else exactAddresses.add(parsed.value);
          break;
        case 'domain':
          if (parsed.glob !== undefined) domainGlobs.push(parsed.glob);
          else exactDomains.add(parsed.value);
          break;
      }
    });
    if (errors.length > 0) return { ok: false, errors };
    const matcher = new AddressMatcher(
      patterns,
      any,
      nullSender,
      exactAddresses,
      exactDomains,
      globUnion(addressGlobs),
      globUnion(domainGlobs),
      addressGlobs.length + domainGlobs.length,
    );
    return { ok: true, matcher };
  }

  /** Compiles patterns that are known to be valid (the config schema checked them with validateAddressPatterns). */
  static of(patterns: readonly string[]): AddressMatcher {
    const result = AddressMatcher.compile(patterns);
    if (result.ok) return result.matcher;
    const [first] = result.errors;
    throw new Error(`invalid address pattern ${JSON.stringify(patterns[first.index])}: ${first.message}`);
  }

  /** Distinct entries: exact addresses and domains count once however often they are listed. */
  get size(): number {
    return (
      this.exactAddresses.size +
      this.exactDomains.size +
      this.globCount +
      (this.any ? 1 : 0) +
      (this.nullSender ? 1 : 0)
    );
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
    if (this.addressGlob?.testExact(address.address)) return true;
    return address.domain !== '' && this.domainGlob !== null && this.domainGlob.testExact(address.domain);
  }
}

/** What the config schema reports for a list of patterns: each error with the index of its pattern. */
export function validateAddressPatterns(patterns: readonly string[]): PatternError[] {
  const result = AddressMatcher.compile(patterns);
  return result.ok ? [] : result.errors;
}

type ParsedPattern =
  | { kind: 'any' }
  | { kind: 'null' }
  /** `glob` is the RE2 source when the pattern has glob characters; `value` the exact normalised form otherwise. */
  | { kind: 'address' | 'domain'; value: string; glob?: string }
  | { error: string };

function parsePattern(raw: string, literal: boolean): ParsedPattern {
  const pattern = raw.trim();
  if (!literal && pattern === '*') return { kind: 'any' };
  if (!literal && pattern === '<>') return { kind: 'null' };
  if (pattern === '') return { error: 'an empty pattern matches nothing; use "<>" for the null sender' };
  if (!literal && pattern.startsWith('!'))
    return { error: 'negated patterns are not supported (use denied_recipients)' };
  if (/[\u0000-\u001f\s]/.test(pattern)) return { error: 'patterns cannot contain spaces or control characters' };
  // No envelope or header address the relay judges can hold one (picomatch read them as extglobs).
  if (!literal && /[()]/.test(pattern))
    return { error: 'parentheses are not part of an address pattern (write alternatives as {a,b})' };
  const at = pattern.lastIndexOf('@');
  const domain = domainPattern(at === -1 ? pattern : pattern.slice(at + 1), literal);
  if ('error' in domain) return domain;
  if (at <= 0) {
    if (domain.value === '') return { error: 'expected an address or a domain' };
    return domain.glob ? globPattern('domain', domain.value) : { kind: 'domain', value: domain.value };
  }
  if (domain.value === '') return { error: 'expected a domain after "@"' };
  const local = pattern.slice(0, at).normalize('NFC').toLowerCase();
  const value = `${local}@${domain.value}`;
  if (domain.glob || (!literal && GLOB_CHARS.test(local))) return globPattern('address', value);
  // An exact pattern is compared with the normalised address, so it goes through the same normalisation.
  return { kind: 'address', value: normalizeAddress(value).address };
}

function globPattern(kind: 'address' | 'domain', value: string): ParsedPattern {
  const translated = globToRe2(value);
  return translated.ok ? { kind, value, glob: translated.source } : { error: translated.error };
}

/** Each label to punycode unless it holds glob characters; a glob inside a non-ASCII label has no single ASCII form. */
function domainPattern(raw: string, literal: boolean): { value: string; glob: boolean } | { error: string } {
  if (raw === '') return { value: '', glob: false };
  const trimmed = raw.endsWith('.') ? raw.slice(0, -1) : raw;
  const labels = trimmed.split('.');
  if (labels.includes('')) return { error: `${JSON.stringify(raw)} has an empty domain label` };
  if (literal || !GLOB_CHARS.test(trimmed)) return { value: normalizeDomain(trimmed), glob: false };
  const out: string[] = [];
  for (const label of labels) {
    if (!GLOB_CHARS.test(label)) {
      out.push(normalizeDomain(label));
      continue;
    }
    if (/[^\x00-\x7f]/.test(label))
      return {
        error:
          `a glob inside the non-ASCII label ${JSON.stringify(label)} cannot be matched consistently; ` +
          'write the label in full or in punycode',
      };
    out.push(label.toLowerCase());
  }
  return { value: out.join('.'), glob: true };
}

/** One RE2 program for every glob of a kind: one linear pass per address, however many globs. */
function globUnion(sources: string[]): RE2JS | null {
  if (sources.length === 0) return null;
  // DOTALL: `*` crosses every character; CASE_INSENSITIVE: classes like [A-Z] match lower-cased addresses too.
  return RE2JS.compile(sources.map((source) => `(?:${source})`).join('|'), RE2JS.CASE_INSENSITIVE | RE2JS.DOTALL);
}
