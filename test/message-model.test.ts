import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import picomatch from 'picomatch';
import { prng } from '../bench/prng';
import { normalizeAddress } from '../src/message/address';
import { AddressMatcher, validateAddressPatterns } from '../src/message/address-pattern';
import { globToRe2 } from '../src/message/glob';
import { HeaderBlock } from '../src/message/header-block';
import { HEADER_LIMITS, headerLimitProblem } from '../src/message/header-limits';
import { HeaderSplitter } from '../src/message/header-splitter';
import { readAddressField } from '../src/message/mailbox';
import { addressesMentioned, addressLike, loosened } from '../src/message/mentions';
import { parseSuppressionList, isSuppressed } from '../src/policy/suppression';
import { keepsFrom } from '../src/forward/reenvelope/filter';

/**
 * The message model (src/message/) against the behaviour it replaced: the regular expressions of
 * the old From scan and picomatch's globs are kept here as oracles, and random inputs built from the
 * characters that matter must get the same answers from the single-pass code.
 */

const oracle = {
  ADDRESS_LIKE: /[^\s<>()[\]\\,;:"@]+@[^\s<>()[\]\\,;:"'@]+/gu,
  addressLike(text: string): string[] {
    return text.match(oracle.ADDRESS_LIKE) ?? [];
  },
  loosened(text: string): string {
    let value = text.normalize('NFKC');
    for (let previous = ''; previous !== value;) {
      previous = value;
      value = value.replace(/\([^()]*\)/gu, ' ');
    }
    value = value.replace(/\([^)]*$/u, ' ').replace(/\)/gu, ' ');
    return value.replace(/\s*@\s*/gu, '@').replace(/\s*\.\s*/gu, '.');
  },
};

function randomText(random: () => number, alphabet: string[], maxLength: number): string {
  const length = Math.floor(random() * maxLength);
  let text = '';
  for (let i = 0; i < length; i++) text += alphabet[Math.floor(random() * alphabet.length)];
  return text;
}

/**
 * The inputs on which `ours` and the oracle disagree, each with both answers. One assertion over the
 * whole list instead of one per input: jest's expect() costs more than the functions compared here.
 */
function disagreements<T, R>(inputs: T[], ours: (input: T) => R, theirs: (input: T) => R) {
  const same = (a: R, b: R) => JSON.stringify(a) === JSON.stringify(b);
  return inputs
    .map((input) => ({ input, ours: ours(input), theirs: theirs(input) }))
    .filter((answer) => !same(answer.ours, answer.theirs));
}

describe('mentions: the lenient address scan gives the old answers in one pass', () => {
  const alphabet = [
    'a',
    'b',
    '.',
    '@',
    ' ',
    '\t',
    '(',
    ')',
    '<',
    '>',
    '"',
    "'",
    ',',
    ';',
    ':',
    '[',
    ']',
    '\\',
    '＠',
    '\u00a0',
    '\u3000',
    'é',
    '\ud83d\ude00',
  ];

  test('addressLike finds exactly what the global regular expression finds (5000 random values)', () => {
    const random = prng(21);
    const texts = Array.from({ length: 5000 }, () => randomText(random, alphabet, 40));
    expect(disagreements(texts, addressLike, oracle.addressLike)).toEqual([]);
  });

  test('loosened reads comments, NFKC and spaces around @ and . as the old passes did (5000 random values)', () => {
    const random = prng(2021);
    const texts = Array.from({ length: 5000 }, () => randomText(random, alphabet, 40));
    expect(disagreements(texts, loosened, oracle.loosened)).toEqual([]);
  });

  test.each<[string, string[]]>([
    ['<app@corp.example>', ['app@corp.example']],
    ['"ceo@bank.example" <app@corp.example>', ['ceo@bank.example', 'app@corp.example']],
    ['ceo@(x)bank.example app@corp.example', ['app@corp.example', 'ceo@bank.example']],
    ['ceo＠bank.example <app@corp.example>', ['app@corp.example', 'ceo@bank.example']],
    ['"ceo @ bank . example" <app@corp.example>', ['app@corp.example', 'ceo@bank.example']],
    ['=?utf-8?Q?ceo=40bank=2Eexample?= <app@corp.example>', ['app@corp.example', 'ceo@bank.example']],
    ['((((nested)))) app@corp.example (unclosed ceo@bank.example', ['app@corp.example', 'ceo@bank.example']],
  ])('%p mentions %p', (value, expected) => {
    expect(new Set(addressesMentioned(value))).toEqual(new Set(expected));
  });

  test('the From of the issue: a long run of address characters after the mailbox is read, not an address', () => {
    const value = `<app@corp.example> ${'a'.repeat(50_000)}`;
    expect(addressesMentioned(value)).toEqual(['app@corp.example']);
    expect(readAddressField(value).mailboxes.map((mailbox) => mailbox.address)).toContain('app@corp.example');
  });

  test('deep comment nesting costs a counter, not a pass per level', () => {
    const value = `${'('.repeat(20_000)}ceo@bank.example${')'.repeat(20_000)} <app@corp.example>`;
    expect(loosened(value)).toBe('  <app@corp.example>');
    expect(addressesMentioned(value)).toEqual(expect.arrayContaining(['app@corp.example', 'ceo@bank.example']));
  });
});

describe("address globs on RE2 give picomatch's answers for the documented syntax", () => {
  // `*` alone is no glob but "everything, the null sender included" (table tests in policy-rules).
  const globs = [
    '*@corp.example',
    '*@*.corp.example',
    'noreply@*',
    '{erp,crm}@corp.example',
    '{a,{b,c}}@x.example',
    'ap?@corp.example',
    '[a-c]*@corp.example',
    '[^a]*@x.example',
    'a\\*b@x.example',
    'billing+*@corp.example',
    'a|b@x.example',
    '{a}@x.example',
    'a[@x.example',
    '*a*a*a*@x.example',
    '*.example',
    'x*y@*',
    '.*@x.example',
    '[[:alpha:]]*@x.example',
    'a^b$@x.example',
  ];
  const alphabet = [
    'a',
    'b',
    'c',
    'x',
    'y',
    '.',
    '@',
    '*',
    '{',
    '}',
    '|',
    '+',
    '^',
    '$',
    '[',
    'e',
    'crm',
    'erp',
    '.example',
    '@x.example',
    '@corp.example',
    '@s.corp.example',
  ];

  // Subjects each glob above matches, so that both verdicts are compared for every one of them.
  const known = [
    'app@corp.example',
    'app@s.corp.example',
    'noreply@any.example',
    'crm@corp.example',
    'c@x.example',
    'app@corp.example',
    'b@x.example',
    'a*b@x.example',
    'billing+erp@corp.example',
    'a|b@x.example',
    '{a}@x.example',
    'a[@x.example',
    'aaa@x.example',
    'q@x.example',
    'xay@q.example',
    '.a@x.example',
    'z@x.example',
    'a^b$@x.example',
  ];

  test.each(globs)('%p: same verdict as picomatch on known and 2000 random subjects', (glob) => {
    const translated = globToRe2(glob);
    if (!translated.ok) throw new Error(translated.error);
    const pattern = glob.includes('@') ? glob : `*@${glob}`;
    const ours = AddressMatcher.of([pattern]);
    const theirs = picomatch(pattern, { bash: true, dot: true, nocase: true });
    const random = prng(glob.length * 7919);
    const subjects = [...known, ...Array.from({ length: 2000 }, () => randomText(random, alphabet, 8).toLowerCase())]
      .filter((subject) => subject.includes('@') && subject.lastIndexOf('@') < subject.length - 1)
      .map(normalizeAddress);
    // The old matcher compared the normalised address; picomatch sees the same text here.
    const verdicts = disagreements(
      subjects,
      (subject) => ours.matches(subject),
      (subject) => theirs(subject.address),
    );
    expect({ glob, verdicts }).toEqual({ glob, verdicts: [] });
  });

  test('a class negated with ! excludes its characters (picomatch in bash mode reads [!a] otherwise)', () => {
    expect(AddressMatcher.of(['[!a]@x.example']).matches(normalizeAddress('b@x.example'))).toBe(true);
    expect(AddressMatcher.of(['[!a]@x.example']).matches(normalizeAddress('a@x.example'))).toBe(false);
  });

  test.each<[string, RegExp]>([
    ['(erp|crm)@corp.example', /parentheses are not part of an address pattern/],
    ['+(a)@corp.example', /parentheses/],
    ['{1..3}@corp.example', /brace ranges like \{1\.\.3\} are not supported/],
    ['[[:bogus:]]@corp.example', /unknown character class \[:bogus:\]/],
    ['[z-a]@corp.example', /cannot be read as a glob/],
  ])('%p is refused at load: %p', (pattern, message) => {
    const errors = validateAddressPatterns([pattern]);
    expect(errors).toHaveLength(1);
    expect(errors[0].message).toMatch(message);
  });

  test('many patterns share one RE2 program, and an exact one stays a set lookup', () => {
    const patterns = Array.from({ length: 500 }, (_, i) => `app${i}*@corp${i}.example`).concat(['exact@corp.example']);
    const matcher = AddressMatcher.of(patterns);
    expect(matcher.size).toBe(501);
    expect(matcher.matches(normalizeAddress('app499-x@corp499.example'))).toBe(true);
    expect(matcher.matches(normalizeAddress('app499-x@corp498.example'))).toBe(false);
    expect(matcher.matches(normalizeAddress('EXACT@corp.example'))).toBe(true);
  });
});

describe('one matcher everywhere: rewrite_from.unless and suppression lists', () => {
  test('rewrite_from.unless reads patterns as allowed_senders does (bare domains, IDN, no empty address)', () => {
    const allowed = keepsFrom(['corp.example', '*@bücher.example']);
    expect(allowed('app@corp.example')).toBe(true);
    expect(allowed('app@xn--bcher-kva.example')).toBe(true);
    expect(allowed('app@other.example')).toBe(false);
    expect(keepsFrom(['*'])('')).toBe(false);
  });

  test('a suppression list is literal: a * in it is part of an address; lines that are no address are skipped', () => {
    const list = parseSuppressionList(
      'a*b@x.example\n*\nnot an address\n@Customers.Example\nGone@X.example\ngone@x.example\n',
    );
    expect(list.skipped).toBe(1);
    expect(list.size).toBe(4);
    expect(isSuppressed(list, normalizeAddress('a*b@x.example'))).toBe(true);
    expect(isSuppressed(list, normalizeAddress('ab@x.example'))).toBe(false);
    expect(isSuppressed(list, normalizeAddress('anyone@customers.example'))).toBe(true);
    expect(isSuppressed(list, normalizeAddress('gone@x.example'))).toBe(true);
    expect(isSuppressed(list, normalizeAddress('other@x.example'))).toBe(false);
  });
});

describe('header limits', () => {
  const block = (...lines: string[]) => HeaderBlock.parse(Buffer.from(lines.join('\r\n'), 'latin1'));

  test.each<[string, HeaderBlock, string | undefined]>([
    ['an ordinary header', block('From: <app@corp.example>', 'Subject: hello'), undefined],
    [
      'a From at the bound',
      block(`From: <app@corp.example> ${'a'.repeat(HEADER_LIMITS.maxAddressFieldBytes - 25)}`),
      undefined,
    ],
    [
      'a From over it',
      block(`From: <app@corp.example> ${'a'.repeat(HEADER_LIMITS.maxAddressFieldBytes)}`),
      'Header field From is longer than 8192 bytes',
    ],
    [
      'a folded Sender over it',
      block('Sender: <app@corp.example>', ...Array.from({ length: 100 }, () => ` ${'b'.repeat(100)}`)),
      'Header field Sender is longer than 8192 bytes',
    ],
    ['a Subject of 60 KiB', block(`Subject: ${'s'.repeat(60 * 1024)}`), undefined],
    [
      'a Subject over 64 KiB',
      block(`Subject: ${'s'.repeat(64 * 1024)}`),
      'Header field subject is longer than 65536 bytes',
    ],
    [
      'a field name that is no name',
      block(`\u00ff\u0001X: ${'s'.repeat(64 * 1024)}`),
      'Header field x is longer than 65536 bytes',
    ],
    ['1000 fields', block(...Array.from({ length: 1000 }, (_, i) => `X-${i}: y`)), undefined],
    [
      '1001 fields',
      block(...Array.from({ length: 1001 }, (_, i) => `X-${i}: y`)),
      'Message header has more than 1000 fields',
    ],
  ])('%s', (_name, headers, problem) => {
    expect(headerLimitProblem(headers)).toBe(problem);
  });
});

describe('HeaderSplitter: the end of the header is found whatever the chunking', () => {
  async function split(chunks: Buffer[]): Promise<{ out: string; splitter: HeaderSplitter }> {
    const splitter = new HeaderSplitter(256 * 1024, async () => undefined);
    const out: Buffer[] = [];
    await pipeline(
      Readable.from(chunks),
      splitter,
      new Writable({
        write: (chunk: Buffer, _e, done) => {
          out.push(chunk);
          done();
        },
      }),
    );
    return { out: Buffer.concat(out).toString('latin1'), splitter };
  }

  test('random cuts, the CRLFCRLF split every way across chunks (300 messages)', async () => {
    const random = prng(5322);
    for (let i = 0; i < 300; i++) {
      const header = Array.from(
        { length: 1 + Math.floor(random() * 5) },
        (_, k) => `X-${k}: ${'v'.repeat(Math.floor(random() * 20))}`,
      ).join('\r\n');
      const message = Buffer.from(`${header}\r\n\r\nbody\r\n\r\nmore\r\n`, 'latin1');
      const chunks: Buffer[] = [];
      for (let at = 0; at < message.length;) {
        const size = 1 + Math.floor(random() * 6);
        chunks.push(message.subarray(at, at + size));
        at += size;
      }
      const { out, splitter } = await split(chunks);
      expect(out).toBe(message.toString('latin1'));
      expect(splitter.original?.fields.length).toBe(header.split('\r\n').length);
    }
  });

  test('a header out of bounds is not handed on: nothing is written and the reason is kept', async () => {
    const { out, splitter } = await split([Buffer.from(`From: <a@b.example> ${'a'.repeat(10_000)}\r\n\r\nbody\r\n`)]);
    expect(out).toBe('');
    expect(splitter.headerOutOfBounds).toBe('Header field From is longer than 8192 bytes');
  });
});
