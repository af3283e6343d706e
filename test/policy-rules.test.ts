import { HeaderBlock } from '../src/message/header-block';
import { MemoryWindowCounters } from '../src/limits/window-counters';
import { normalizeAddress } from '../src/message/address';
import { addressKey } from '../src/policy/address-guard';
import { AddressMatcher } from '../src/message/address-pattern';
import { compileHeaderPattern, type HeaderPattern } from '../src/message/header-pattern';
import { formatWindow, planRateLimits, rateLimitText } from '../src/policy/rate-limits';
import {
  applyHeaderRules,
  blockedExtension,
  headerFromRefusal,
  recipientRefusal,
  senderRefusal,
  type PolicyRules,
} from '../src/policy/rules';
import { isSuppressed, parseSuppressionList } from '../src/policy/suppression';

function headers(...lines: string[]): HeaderBlock {
  return HeaderBlock.parse(Buffer.from(lines.join('\r\n'), 'utf8'));
}

function pattern(source: string): HeaderPattern {
  const compiled = compileHeaderPattern(source);
  if (!compiled.ok) throw new Error(compiled.error);
  return compiled.pattern;
}

function rules(overrides: Partial<PolicyRules> = {}): PolicyRules {
  return { headerRules: [], blockedExtensions: new Set(), ...overrides };
}

describe('normalizeAddress: one form for every way an address can be written', () => {
  test.each([
    ['App@Corp.Example', 'app@corp.example', 'corp.example'],
    ['app@corp.example.', 'app@corp.example', 'corp.example'],
    ['<app@corp.example>', 'app@corp.example', 'corp.example'],
    ['jürgen@bücher.example', 'jürgen@xn--bcher-kva.example', 'xn--bcher-kva.example'],
    ['JÜRGEN@XN--BCHER-KVA.EXAMPLE', 'jürgen@xn--bcher-kva.example', 'xn--bcher-kva.example'],
    ['a@[10.0.0.1]', 'a@[10.0.0.1]', '[10.0.0.1]'],
    ['"odd@local"@corp.example', '"odd@local"@corp.example', 'corp.example'],
    ['postmaster', 'postmaster', ''],
    ['', '', ''],
  ])('%p → %p', (raw, address, domain) => {
    expect(normalizeAddress(raw)).toMatchObject({ address, domain });
  });
});

describe('AddressMatcher: globs over addresses and domains', () => {
  const table: [string[], string, boolean][] = [
    [['*@corp.example'], 'app@corp.example', true],
    [['*@corp.example'], 'APP@CORP.EXAMPLE', true],
    [['*@corp.example'], 'app@corp.example.evil', false],
    [['*@corp.example'], 'app@sub.corp.example', false],
    [['*@corp.example'], 'a/b@corp.example', true],
    [['*@corp.example'], '', false],
    [['corp.example'], 'x@corp.example', true],
    [['@corp.example'], 'x@corp.example', true],
    [['corp.example'], 'x@sub.corp.example', false],
    [['*.corp.example'], 'x@sub.corp.example', true],
    [['*.corp.example'], 'x@corp.example', false],
    [['billing@corp.example'], 'Billing@Corp.Example', true],
    [['billing@corp.example'], 'billing2@corp.example', false],
    [['bücher.example'], 'a@xn--bcher-kva.example', true],
    [['xn--bcher-kva.example'], 'a@bücher.example', true],
    [['*@*.bücher.example'], 'a@shop.xn--bcher-kva.example', true],
    [['{erp,crm}@corp.example'], 'crm@corp.example', true],
    [['ap?@corp.example'], 'app@corp.example', true],
    [['*'], '', true],
    [['*'], 'anyone@anywhere.example', true],
    [['<>'], '', true],
    [['<>'], 'x@corp.example', false],
    [['*@competitor.example'], 'a/b@competitor.example', true],
    [[], 'x@corp.example', false],
  ];
  test.each(table)('%p matches %p: %p', (patterns, address, expected) => {
    expect(AddressMatcher.of(patterns).matches(normalizeAddress(address))).toBe(expected);
  });

  test('bad patterns are errors at their index', () => {
    const result = AddressMatcher.compile(['*@corp.example', 'bü*.example', '!x@y', 'user@', '']);
    expect(result.ok).toBe(false);
    if (result.ok) return;
    expect(result.errors.map((e) => e.index)).toEqual([1, 2, 3, 4]);
    expect(result.errors[0].message).toMatch(/non-ASCII label/);
  });
});

describe('sender and recipient rules', () => {
  const policy = rules({
    allowedSenders: AddressMatcher.of(['*@corp.example']),
    allowedRecipients: AddressMatcher.of(['*@partner.example', 'customers.example']),
    deniedRecipients: AddressMatcher.of(['ceo@partner.example']),
    maxRecipients: 2,
  });
  const suppressed = { has: (a: { address: string }) => a.address === 'gone@customers.example' };

  test.each([
    ['app@corp.example', undefined],
    ['APP@corp.EXAMPLE', undefined],
    ['app@bank.example', '550 5.7.1 Sender <app@bank.example> not allowed for client erp'],
    ['', '550 5.7.1 Sender <> not allowed for client erp'],
  ])('MAIL FROM %p → %p', (from, reply) => {
    const refusal = senderRefusal(policy, 'erp', from);
    expect(refusal && `${refusal.code} ${refusal.message}`).toBe(reply);
  });

  test.each([
    ['a@partner.example', 0, undefined],
    ['ceo@partner.example', 0, '550 5.7.1 Recipient <ceo@partner.example> not allowed for client erp'],
    ['x@elsewhere.example', 0, '550 5.7.1 Recipient <x@elsewhere.example> not allowed for client erp'],
    ['gone@customers.example', 0, '550 5.1.1 Recipient <gone@customers.example> is on the suppression list'],
    ['b@customers.example', 2, '452 4.5.3 Too many recipients for client erp (at most 2 per message)'],
    ['b@customers.example', 1, undefined],
  ] as const)('RCPT TO %p after %p → %p', (to, accepted, reply) => {
    const refusal = recipientRefusal(policy, 'erp', to, accepted, suppressed);
    expect(refusal && `${refusal.code} ${refusal.message}`).toBe(reply);
  });

  test('a policy without recipient lists allows every recipient', () => {
    expect(recipientRefusal(rules(), 'erp', 'anyone@anywhere.example', 999)).toBeUndefined();
  });
});

describe('header From: every address in it, display names and encodings included', () => {
  const policy = rules({ allowedSenders: AddressMatcher.of(['*@corp.example', 'bücher.example']) });
  test.each([
    [['From: app@corp.example'], undefined],
    [['From: "ERP System" <erp@corp.example>'], undefined],
    [['From: =?utf-8?q?J=C3=BCrgen?= <j@xn--bcher-kva.example>'], undefined],
    [['From: Jürgen <jürgen@bücher.example>'], undefined],
    [['From: ceo@bank.example'], 'Header From <ceo@bank.example>'],
    [['From: "ceo@bank.example" <app@corp.example>'], 'Header From <ceo@bank.example>'],
    [['From: app@corp.example <x@corp.example> <ceo@bank.example>'], 'Header From <ceo@bank.example>'],
    [['From: app@corp.example, ceo@bank.example'], 'Header From <ceo@bank.example>'],
    [['From: =?utf-8?b?Y2VvQGJhbmsuZXhhbXBsZQ==?= <app@corp.example>'], 'Header From <ceo@bank.example>'],
    [['From: app@corp.example', 'From: ceo@bank.example'], 'Header From <ceo@bank.example>'],
    [['From: app@corp.example (sent for ceo@bank.example)'], 'Header From <ceo@bank.example>'],
    [['From: Joe'], 'Header From without an address'],
    [['From: undisclosed:;'], 'Header From without an address'],
    [['Subject: no from'], 'Message without a From header'],
  ])('%p → %p', (lines, refused) => {
    const refusal = headerFromRefusal(policy, 'erp', headers(...lines));
    expect(refusal?.message).toBe(refused === undefined ? undefined : `5.7.1 ${refused} not allowed for client erp`);
    if (refusal) expect(refusal).toMatchObject({ code: 550, reason: 'sender_not_allowed' });
  });

  test('a policy without allowed_senders, or with "*", does not look at From', () => {
    expect(headerFromRefusal(rules(), 'erp', headers('Subject: x'))).toBeUndefined();
    expect(
      headerFromRefusal(rules({ allowedSenders: AddressMatcher.of(['*']) }), 'erp', headers('Subject: x')),
    ).toBeUndefined();
  });
});

describe('header rules', () => {
  const policy = rules({
    headerRules: [
      { header: 'X-Mailer', match: pattern('PHPMailer'), action: 'strip' },
      { header: 'Subject', match: pattern('lottery'), action: 'reject' },
    ],
  });

  test('strip removes only the matching fields and the message goes on', () => {
    const block = headers('From: a@corp.example', 'X-Mailer: PHPMailer 5.2', 'X-Mailer: in-house', 'Subject: invoice');
    expect(applyHeaderRules(policy, 'erp', block)).toBeUndefined();
    expect(block.toBuffer().toString()).toBe('From: a@corp.example\r\nX-Mailer: in-house\r\nSubject: invoice\r\n');
  });

  test.each([
    'Subject: You won the LOTTERY',
    'Subject: =?utf-8?b?WW91IHdvbiB0aGUgbG90dGVyeQ==?=',
    'Subject: You won\r\n the lottery',
  ])('reject matches %p (case-insensitive, RFC 2047 decoded, unfolded)', (line) => {
    expect(applyHeaderRules(policy, 'erp', headers('From: a@corp.example', line))).toEqual({
      code: 550,
      message: '5.7.1 Message refused by a header rule on Subject for client erp',
      reason: 'content_rule',
    });
  });
});

describe('header rule patterns: RE2, linear in the header', () => {
  // Each of these takes a backtracking engine 2^n steps (or n^2 for the last) on its value: with
  // RegExp the test would not finish before jest's timeout; RE2 answers as it reads.
  test.each([
    ['^(a+)+$', `${'a'.repeat(20_000)}!`],
    ['^(a|a)*$', `${'a'.repeat(20_000)}!`],
    ['^(\\w|\\d)+$', `${'a1'.repeat(10_000)}!`],
    ['^(\\w+\\s?)*$', `${'word '.repeat(4_000)}!`],
    ['\\s*x\\s*y', ' '.repeat(30_000)],
  ])('%p against a crafted value of %#', (source, value) => {
    const policy = rules({ headerRules: [{ header: 'Subject', match: pattern(source), action: 'reject' }] });
    expect(applyHeaderRules(policy, 'erp', headers(`Subject: ${value}`))).toBeUndefined();
  });

  test('case-insensitive and anywhere in the value, like a RegExp with the i flag', () => {
    expect(pattern('you have won').test('Re: YOU HAVE WON!')).toBe(true);
    expect(pattern('^won$').test('you won')).toBe(false);
    expect(pattern('ünïcode').test('ÜNÏCODE')).toBe(true);
  });

  test.each([
    ['(?<=x)y', /no lookaround/],
    ['(a)\\1', /no backreferences/],
    ['(unclosed', /invalid regular expression/],
  ])('%p is refused with what RE2 cannot read', (source, message) => {
    const compiled = compileHeaderPattern(source);
    expect(compiled.ok).toBe(false);
    if (!compiled.ok) expect(compiled.error).toMatch(message);
  });
});

describe('blocked attachment names', () => {
  const blocked = new Set(['exe', 'js']);
  test.each([
    ['report.pdf', undefined],
    ['setup.EXE', 'exe'],
    ['invoice.pdf.exe', 'exe'],
    ['invoice.exe.pdf', undefined],
    ['invoice.exe.', 'exe'],
    ['invoice.exe  ', 'exe'],
    ['=?utf-8?B?ZXZpbC5leGU=?=', 'exe'],
    ['evil.exe\u0000.pdf', 'exe'],
    ['noextension', undefined],
    ['script.js', 'js'],
  ])('%p → %p', (name, ext) => {
    expect(blockedExtension([name], blocked)).toBe(ext);
  });
});

describe('rate limit plans', () => {
  test('one WindowLimit per dimension named, with bounded labels and reply words', () => {
    const plan = planRateLimits([
      { window: 60_000, messages: 60 },
      { window: 3_600_000, recipients: 2000, messages: 500 },
      { window: 86_400_000, bytes: 1024 },
    ]);
    expect(plan.messages).toEqual({
      limits: [
        { windowMs: 60_000, max: 60 },
        { windowMs: 3_600_000, max: 500 },
      ],
      labels: ['messages_1m', 'messages_1h'],
      descriptions: ['60 messages per 1m', '500 messages per 1h'],
    });
    expect(plan.recipients.labels).toEqual(['recipients_1h']);
    expect(plan.bytes.descriptions).toEqual(['1024 bytes per 1d']);
  });
  test.each([
    [60_000, '1m'],
    [90_000, '90s'],
    [1500, '1500ms'],
    [7_200_000, '2h'],
    [2000, '2s'],
  ])('formatWindow(%p) = %p', (ms, text) => {
    expect(formatWindow(ms)).toBe(text);
  });
  test('the reply says how long to wait, in whole seconds, never 0', () => {
    expect(rateLimitText('erp', '60 messages per 1m', 36_200)).toBe(
      '4.7.1 Rate limit for client erp: 60 messages per 1m; try again in 37s',
    );
    expect(rateLimitText('erp', '60 messages per 1m', 1)).toMatch(/try again in 1s$/);
    expect(rateLimitText('erp', '60 messages per 1m', 36_200, 30)).toBe(
      "4.7.1 Rate limit for client erp: 30 of the fleet's 60 messages per 1m on this relay " +
        'while shared limits are unreachable; try again in 37s',
    );
  });
});

describe('suppression list file format', () => {
  const entries = parseSuppressionList(
    '# bounced\ngone@Example.com\n\n  @dead.example  # whole domain\nbücher.example\r\n',
  );
  test.each([
    ['gone@example.com', true],
    ['GONE@EXAMPLE.COM', true],
    ['other@example.com', false],
    ['anyone@dead.example', true],
    ['x@sub.dead.example', false],
    ['x@xn--bcher-kva.example', true],
  ])('%p suppressed: %p', (address, expected) => {
    expect(isSuppressed(entries, normalizeAddress(address))).toBe(expected);
  });
});

describe('address keys for the guards', () => {
  test.each([
    ['192.0.2.7', '192.0.2.7'],
    ['::ffff:192.0.2.7', '192.0.2.7'],
    ['2001:db8:1:2:3:4:5:6', '2001:db8:1:2::/64'],
    ['2001:db8:1:2:ffff::1', '2001:db8:1:2::/64'],
    ['fe80::1%eth0', 'fe80::/64'],
  ])('%p counts as %p', (address, key) => {
    expect(addressKey(address, 64)).toBe(key);
  });
});

describe('WindowCounters.peek', () => {
  test('answers what consume would, without counting', async () => {
    const counters = new MemoryWindowCounters();
    const lock = [{ windowMs: 1000, max: 1 }];
    expect(await counters.peek('a', lock, 1, 0)).toEqual({ ok: true });
    expect(await counters.peek('a', lock, 1, 0)).toEqual({ ok: true });
    await counters.consume('a', lock, 1, 0);
    expect(await counters.peek('a', lock, 1, 400)).toEqual({ ok: false, limit: 0, retryAfterMs: 600 });
    expect(await counters.peek('a', lock, 1, 1000)).toEqual({ ok: true });
  });
});
