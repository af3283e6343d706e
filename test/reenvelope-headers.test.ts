import { parseConfig } from '../src/config/load';
import { chooseRoute } from '../src/ingress/router';
import { HeaderBlock } from '../src/message/header-block';
import { buildReceivedHeader } from '../src/ingress/received-header';
import { formatDisplayName, parseMailboxes } from '../src/message/mailbox';
import { keepsFrom } from '../src/forward/reenvelope/filter';
import {
  ensureDate,
  ensureMessageId,
  rewriteEnvelopeFrom,
  rewriteFrom,
  stripHeaders,
} from '../src/forward/reenvelope/header-rewrites';

const block = (...lines: string[]) => HeaderBlock.parse(Buffer.from(lines.join('\r\n'), 'utf8'));
const text = (headers: HeaderBlock) => headers.toBuffer().toString('utf8').trimEnd().split('\r\n');

describe('rewriteFrom: the address changes, the display name stays, replies still reach the person', () => {
  const rule = { allowed: keepsFrom(['*@corp.example']), to: 'noreply@corp.example' };

  test.each<[string, string[], string[]]>([
    [
      'a bare address outside `unless`',
      ['From: scanner@printer.local', 'Subject: scan'],
      ['From: <noreply@corp.example>', 'Subject: scan', 'Reply-To: <scanner@printer.local>'],
    ],
    [
      'a plain display name',
      ['From: Scanner 3F <scanner@printer.local>'],
      ['From: Scanner 3F <noreply@corp.example>', 'Reply-To: Scanner 3F <scanner@printer.local>'],
    ],
    [
      'a quoted name with specials',
      ['From: "Doe, John (ERP)" <john@erp.lan>'],
      ['From: "Doe, John (ERP)" <noreply@corp.example>', 'Reply-To: "Doe, John (ERP)" <john@erp.lan>'],
    ],
    [
      'an RFC 2047 encoded name stays encoded and unquoted',
      ['From: =?UTF-8?B?w5xuaWNvZGUgU2Nhbm5lcg==?= <scanner@printer.local>'],
      [
        'From: =?UTF-8?B?w5xuaWNvZGUgU2Nhbm5lcg==?= <noreply@corp.example>',
        'Reply-To: =?UTF-8?B?w5xuaWNvZGUgU2Nhbm5lcg==?= <scanner@printer.local>',
      ],
    ],
    [
      'an encoded word wrongly quoted by the app is unquoted (decoders ignore it inside quotes)',
      ['From: "=?ISO-8859-1?Q?M=FCller?=" <m@erp.lan>'],
      ['From: =?ISO-8859-1?Q?M=FCller?= <noreply@corp.example>', 'Reply-To: =?ISO-8859-1?Q?M=FCller?= <m@erp.lan>'],
    ],
    [
      'a raw UTF-8 name (RFC 6532) stays UTF-8',
      ['From: Müller, Hans <hans@erp.lan>'],
      ['From: "Müller, Hans" <noreply@corp.example>', 'Reply-To: "Müller, Hans" <hans@erp.lan>'],
    ],
    [
      'an allowed From is left alone, byte for byte',
      ['From:   "App"   <app@corp.example>', 'Sender: app@corp.example'],
      ['From:   "App"   <app@corp.example>', 'Sender: app@corp.example'],
    ],
    ['`unless` matches case-insensitively', ['From: App@CORP.Example'], ['From: App@CORP.Example']],
    [
      'an existing Reply-To is kept and no second one is added',
      ['From: erp@erp.lan', 'Reply-To: Sales <sales@corp.example>'],
      ['From: <noreply@corp.example>', 'Reply-To: Sales <sales@corp.example>'],
    ],
    ['a name without an address keeps the name', ['From: ERP System'], ['From: ERP System <noreply@corp.example>']],
    ['a missing From is supplied', ['Subject: no from'], ['Subject: no from', 'From: <noreply@corp.example>']],
    [
      'a disallowed Sender is rewritten too',
      ['From: boss@corp.example', 'Sender: Scanner <scanner@printer.local>'],
      ['From: boss@corp.example', 'Sender: Scanner <noreply@corp.example>'],
    ],
    [
      'a Sender that would only repeat the rewritten From is dropped',
      ['From: Scanner <scanner@printer.local>', 'Sender: scanner@printer.local'],
      ['From: Scanner <noreply@corp.example>', 'Reply-To: Scanner <scanner@printer.local>'],
    ],
    [
      'several From mailboxes: only the disallowed ones change, and a Sender is added as RFC 5322 requires',
      ['From: a@corp.example, b@erp.lan'],
      ['From: <a@corp.example>, <noreply@corp.example>', 'Reply-To: <b@erp.lan>', 'Sender: <noreply@corp.example>'],
    ],
    [
      'several disallowed From mailboxes collapse into one',
      ['From: a@erp.lan, B <b@erp.lan>'],
      ['From: <noreply@corp.example>', 'Reply-To: <a@erp.lan>, B <b@erp.lan>'],
    ],
    // mailauth's DMARC and Python read ceo@bank.example here; the rewrite's parser returns only the allowed address.
    [
      'an address hidden from the parser by a comment after its @ replaces the whole From',
      ['From: ceo@(x)bank.example erp@corp.example', 'Subject: s'],
      ['From: <noreply@corp.example>', 'Subject: s'],
    ],
    [
      "a disallowed address in an allowed mailbox's display name replaces the whole From",
      ['From: "ceo@bank.example" <erp@corp.example>'],
      ['From: <noreply@corp.example>'],
    ],
    [
      'an allowed address in the display name leaves the From alone',
      ['From: "erp@corp.example" <erp@corp.example>'],
      ['From: "erp@corp.example" <erp@corp.example>'],
    ],
  ])('%s', (_case, input, expected) => {
    const headers = block(...input);
    rewriteFrom(headers, rule);
    expect(text(headers)).toEqual(expected);
  });

  test('a folded From is rewritten in place (position kept)', () => {
    const headers = block('Subject: s', 'From: "Long Name"', '\t<long@erp.lan>', 'To: x@example.com');
    expect(rewriteFrom(headers, rule)).toBe(true);
    expect(text(headers)).toEqual([
      'Subject: s',
      'From: Long Name <noreply@corp.example>',
      'To: x@example.com',
      'Reply-To: Long Name <long@erp.lan>',
    ]);
  });
  test('an empty unless list rewrites every From', () => {
    const headers = block('From: app@corp.example');
    rewriteFrom(headers, { allowed: keepsFrom([]), to: 'noreply@corp.example' });
    expect(headers.value('from')).toBe('<noreply@corp.example>');
  });
});

describe('stripHeaders: the LAN topology never leaves', () => {
  test('Received, X-Originating-IP and the route list go, case-insensitively; the rest stays in order', () => {
    const headers = block(
      'Received: from erp.lan (10.20.1.5)',
      '\tby mail.lan',
      'From: a@corp.example',
      'x-originating-ip: [10.20.1.5]',
      'X-Mailer: ERP 4.2',
      'RECEIVED: from x',
      'Subject: s',
    );
    expect(stripHeaders(headers, ['x-mailer'])).toBe(4);
    expect(text(headers)).toEqual(['From: a@corp.example', 'Subject: s']);
  });
});

describe('Message-ID and Date are added only when the app left them out', () => {
  const now = new Date(Date.UTC(2026, 10, 23, 10, 0, 0));
  test.each<[string, string[], string[]]>([
    [
      'both missing',
      ['From: a@corp.example'],
      ['From: a@corp.example', 'Message-ID: <Q1@relay.test>', 'Date: Mon, 23 Nov 2026 10:00:00 +0000'],
    ],
    [
      'both present',
      ['Message-ID: <x@app>', 'Date: Sun, 1 Nov 2026 00:00:00 +0100'],
      ['Message-ID: <x@app>', 'Date: Sun, 1 Nov 2026 00:00:00 +0100'],
    ],
    [
      'present but empty',
      ['Message-ID:', 'Date: '],
      ['Message-ID: <Q1@relay.test>', 'Date: Mon, 23 Nov 2026 10:00:00 +0000'],
    ],
  ])('%s', (_case, input, expected) => {
    const headers = block(...input);
    ensureMessageId(headers, 'Q1', 'relay.test');
    ensureDate(headers, now);
    expect(text(headers)).toEqual(expected);
  });
});

describe('envelope sender', () => {
  test.each<[string, string | undefined, string]>([
    ['scanner@printer.local', 'bounces@corp.example', 'bounces@corp.example'],
    ['', 'bounces@corp.example', ''],
    ['app@corp.example', undefined, 'app@corp.example'],
    ['', undefined, ''],
  ])('client %p with envelope_from %p → %p', (client, configured, expected) =>
    expect(rewriteEnvelopeFrom(client, configured)).toBe(expected),
  );
});

describe('route choice: sender domain, then policy, then default', () => {
  const parsed = parseConfig(
    {
      hostname: 'relay.test',
      spool: { dir: './spool' },
      listeners: [{ name: 'smtp', address: '127.0.0.1:2525' }],
      clients: [{ name: 'lan', networks: ['10.0.0.0/8'] }],
      policies: { legacy: { route: 'legacy' } },
      routes: {
        default: { smarthosts: ['p'] },
        legacy: { smarthosts: ['p'] },
        shop: { smarthosts: ['p'], sender_domains: ['Shop.Example'] },
      },
      smarthosts: [{ name: 'p', host: 'smtp.example', port: 587 }],
    },
    '/etc',
    {},
  );
  if (!parsed.ok) throw new Error(parsed.errors.join('\n'));
  const config = parsed.config;
  test.each<[string | undefined, string, string]>([
    [undefined, 'app@shop.example', 'shop'],
    ['legacy', 'app@SHOP.example', 'shop'],
    ['legacy', 'app@corp.example', 'legacy'],
    [undefined, 'app@corp.example', 'default'],
    ['legacy', '', 'legacy'],
    [undefined, 'app@sub.shop.example', 'default'],
  ])('policy %p, MAIL FROM %p → %p', (policy, from, route) => expect(chooseRoute(config, policy, from)).toBe(route));

  test('a sender domain claimed by two routes is a config error', () => {
    const result = parseConfig(
      {
        hostname: 'relay.test',
        spool: { dir: './spool' },
        listeners: [{ name: 'smtp', address: '127.0.0.1:2525' }],
        clients: [{ name: 'lan', networks: ['10.0.0.0/8'] }],
        routes: {
          default: { smarthosts: ['p'], sender_domains: ['corp.example'] },
          other: { smarthosts: ['p'], sender_domains: ['CORP.example'] },
        },
        smarthosts: [{ name: 'p', host: 'smtp.example', port: 587 }],
      },
      '/etc',
      {},
    );
    expect(result.ok).toBe(false);
    if (!result.ok)
      expect(result.errors).toContain(
        'routes.other.sender_domains[0]: corp.example is already routed by routes.default.sender_domains',
      );
  });
});

describe('address helpers', () => {
  test.each([
    ['Scanner 3F', 'Scanner 3F'],
    ['Joe Q. Public', '"Joe Q. Public"'],
    ['=?UTF-8?Q?J=C3=B6rg?= Meier', '=?UTF-8?Q?J=C3=B6rg?= Meier'],
    ['say "hi"', '"say \\"hi\\""'],
  ])('display name %p is written %p', (name, written) => expect(formatDisplayName(name)).toBe(written));
  test('groups are flattened and empty entries dropped', () => {
    expect(parseMailboxes('Team: a@x.example, B <b@x.example>;')).toEqual([
      { name: '', address: 'a@x.example' },
      { name: 'B', address: 'b@x.example' },
    ]);
    expect(parseMailboxes('undisclosed-recipients:;')).toEqual([]);
  });
  test('our Received header names the client, and its address only when the route asks', () => {
    const base = {
      heloName: 'erp',
      clientName: 'erp',
      hostname: 'relay.test',
      queueId: 'Q1',
      secure: false,
      authenticated: false,
      esmtp: true,
      recipients: [],
      date: new Date(0),
    };
    expect(buildReceivedHeader(base)).toMatch(/^Received: from erp \(client erp\)\r\n/);
    expect(buildReceivedHeader({ ...base, remoteAddress: '::ffff:10.20.1.5' })).toMatch(
      /^Received: from erp \(client erp \[10\.20\.1\.5\]\)\r\n/,
    );
  });
});
