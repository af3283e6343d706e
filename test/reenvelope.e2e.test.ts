import * as path from 'node:path';
import type { DNSResolver } from 'mailauth';
import { Relay } from '../src/relay';
import type { SinkMessage, SmtpSink } from '../src/tools/sink';
import { makeDkimKey, verifyDkim, zoneResolver, type TestKey } from './helpers/dkim';
import {
  baseConfig,
  buildConfig,
  freePort,
  readQueued,
  removeDir,
  startRelay,
  startSink,
  tempDir,
  waitFor,
  type RunningRelay,
} from './helpers/harness';
import { openSession } from './helpers/smtp-client';

/** What a legacy app on the LAN sends: its own Received trail, an internal address, no Message-ID, no Date. */
function legacyMessage(extra: string[] = [], from = '"Scanner 3F" <scanner@printer.local>'): string {
  return [
    'Received: from erp.lan (erp.lan [10.20.1.5])',
    '\tby mail.lan (Postfix) with ESMTP id 4F1; Mon, 23 Nov 2026 09:59:58 +0000',
    'X-Originating-IP: [10.20.1.5]',
    'X-Mailer: ScanToMail 2.1',
    `From: ${from}`,
    'To: Someone <user@example.com>',
    'Subject: Scan from 3F',
    ...extra,
    '',
    'Page 1 of 1.',
    '.. a line that starts with a dot',
    '',
  ].join('\r\n');
}

function headerOf(message: SinkMessage): string {
  const data = message.data.toString('latin1');
  return data.slice(0, data.indexOf('\r\n\r\n') + 2);
}

function bodyOf(message: SinkMessage): string {
  const data = message.data.toString('latin1');
  return data.slice(data.indexOf('\r\n\r\n') + 4);
}

function fields(header: string, name: string): string[] {
  return header.split(/\r\n(?![ \t])/).filter((line) => line.toLowerCase().startsWith(`${name.toLowerCase()}:`));
}

describe('re-enveloping: what leaves the LAN, as the smart host receives it', () => {
  let dir: string;
  let running: RunningRelay | null;
  let sinks: SmtpSink[];
  let rsa: TestKey;
  let ed: TestKey;
  let shopKey: TestKey;
  let resolver: DNSResolver;

  beforeAll(() => {
    const keysDir = tempDir('smarthop-keys-');
    rsa = makeDkimKey(keysDir, 'rsa');
    ed = makeDkimKey(keysDir, 'ed25519');
    shopKey = makeDkimKey(keysDir, 'rsa', 'shop');
    resolver = zoneResolver({
      's1._domainkey.corp.example': { TXT: [rsa.record] },
      'e1._domainkey.corp.example': { TXT: [ed.record] },
      'k1._domainkey.shop.example': { TXT: [shopKey.record] },
    });
  });

  beforeEach(() => {
    dir = tempDir();
    running = null;
    sinks = [];
  });

  afterEach(async () => {
    await running?.stop();
    await Promise.all(sinks.map((s) => s.close()));
    removeDir(dir);
  });

  async function sink(port?: number): Promise<SmtpSink> {
    const s = await startSink(port === undefined ? {} : { port });
    sinks.push(s);
    return s;
  }

  const corpRoute = () => ({
    envelope_from: 'bounces@corp.example',
    rewrite_from: { unless: ['*@corp.example'], to: 'noreply@corp.example' },
    strip_headers: ['X-Mailer'],
    dkim: [
      { domain: 'corp.example', selector: 's1', private_key: rsa.file },
      { domain: 'corp.example', selector: 'e1', private_key: ed.file, algorithm: 'ed25519-sha256' },
    ],
  });

  async function relayWith(
    port: number,
    route: Record<string, unknown>,
    overrides: Record<string, unknown> = {},
  ): Promise<RunningRelay> {
    running = await startRelay(
      buildConfig(
        baseConfig(dir, [{ name: 'primary', port }], {
          routes: { default: { smarthosts: ['primary'], ...route } },
          ...overrides,
        }),
        dir,
      ),
    );
    return running;
  }

  async function send(from: string, body: string, to = ['user@example.com']): Promise<string> {
    const { client } = await openSession((running as RunningRelay).smtpPort);
    const reply = await client.sendMessage(from, to, body);
    await client.quit();
    expect(reply).toMatch(/^250 2\.0\.0 Ok: queued as /);
    return (reply as string).split(' ').pop() as string;
  }

  test('every rewrite: envelope, From with Reply-To, topology, Message-ID, Date, two DKIM signatures', async () => {
    const primary = await sink();
    await relayWith(primary.port, corpRoute());
    const id = await send('scanner@printer.local', legacyMessage());
    await waitFor(() => primary.messages.length === 1, 10_000, 'delivery');
    const [message] = primary.messages;

    expect(message.from).toBe('bounces@corp.example');
    const header = headerOf(message);
    expect(fields(header, 'From')).toEqual(['From: Scanner 3F <noreply@corp.example>']);
    expect(fields(header, 'Reply-To')).toEqual(['Reply-To: Scanner 3F <scanner@printer.local>']);
    expect(fields(header, 'X-Originating-IP')).toEqual([]);
    expect(fields(header, 'X-Mailer')).toEqual([]);
    // Only our own Received line is left, and it names the client, not its address.
    const received = fields(header, 'Received');
    expect(received).toHaveLength(1);
    expect(received[0]).toMatch(
      new RegExp(
        `^Received: from app\\.test \\(client lan\\)\\r\\n\\tby relay\\.test \\(smarthop\\) with ESMTP id ${id}`,
      ),
    );
    expect(header).not.toMatch(/10\.20\.1\.5|127\.0\.0\.1|erp\.lan|mail\.lan/);
    expect(fields(header, 'Message-ID')).toEqual([`Message-ID: <${id}@relay.test>`]);
    expect(fields(header, 'Date')[0]).toMatch(/^Date: \w{3}, \d{1,2} \w{3} \d{4} \d\d:\d\d:\d\d \+0000$/);
    expect(header.startsWith('DKIM-Signature: ')).toBe(true);
    expect(fields(header, 'DKIM-Signature')).toHaveLength(2);
    // The client dot-stuffed the line on the wire; the content (and what the smart host reads) has one dot.
    expect(bodyOf(message)).toBe('Page 1 of 1.\r\n. a line that starts with a dot\r\n\r\n');

    expect(await verifyDkim(message.data, resolver)).toEqual([
      'corp.example/s1 rsa-sha256 pass',
      'corp.example/e1 ed25519-sha256 pass',
    ]);
  });

  test('the rewrite is stored at ingest: the spool file has the new header, metadata signatures, senders', async () => {
    const port = await freePort();
    await relayWith(port, corpRoute());
    const id = await send('scanner@printer.local', legacyMessage());
    const spool = path.join(dir, 'spool');
    await waitFor(async () => (await readQueued(spool, id)) !== null, 5000, 'queued');
    const queued = await readQueued(spool, id);
    if (!queued) throw new Error(`${id} left the queue`);
    const stored = queued.message.toString('latin1');
    expect(stored.startsWith('Received: from app.test (client lan)')).toBe(true);
    expect(stored).toContain('From: Scanner 3F <noreply@corp.example>\r\n');
    expect(stored).not.toContain('DKIM-Signature');
    const { meta } = queued;
    expect(meta.from).toBe('bounces@corp.example');
    expect(meta.clientFrom).toBe('scanner@printer.local');
    expect(meta.prependHeaders?.match(/^DKIM-Signature:/gm)).toHaveLength(2);

    // Deferred first (smart host down), delivered on a later attempt: the same signed bytes go out.
    await waitFor(async () => ((await readQueued(spool, id))?.meta.attempts ?? 0) >= 1, 10_000, 'a failed attempt');
    const primary = await sink(port);
    await waitFor(() => primary.messages.length === 1, 15_000, 'delivery after the smart host returns');
    expect(primary.messages[0].data.toString('latin1')).toBe(`${meta.prependHeaders}${stored}`);
    expect(await verifyDkim(primary.messages[0].data, resolver)).toEqual([
      'corp.example/s1 rsa-sha256 pass',
      'corp.example/e1 ed25519-sha256 pass',
    ]);
  });

  test('the null sender stays null, whatever envelope_from says', async () => {
    const primary = await sink();
    await relayWith(primary.port, corpRoute());
    await send('', legacyMessage([], 'MAILER-DAEMON@printer.local'));
    await waitFor(() => primary.messages.length === 1, 10_000, 'delivery');
    expect(primary.messages[0].from).toBe('');
    expect(fields(headerOf(primary.messages[0]), 'From')).toEqual(['From: <noreply@corp.example>']);
    expect(await verifyDkim(primary.messages[0].data, resolver)).toEqual([
      'corp.example/s1 rsa-sha256 pass',
      'corp.example/e1 ed25519-sha256 pass',
    ]);
  });

  test('an existing Reply-To is kept (only it); an allowed From, Message-ID and Date are left as is', async () => {
    const primary = await sink();
    await relayWith(primary.port, corpRoute());
    await send(
      'erp@printer.local',
      legacyMessage([
        'Reply-To: Sales <sales@corp.example>',
        'Message-ID: <42@erp.lan>',
        'Date: Mon, 23 Nov 2026 10:00:00 +0100',
      ]),
    );
    await send('app@corp.example', legacyMessage([], 'ERP <app@corp.example>'));
    await waitFor(() => primary.messages.length === 2, 10_000, 'delivery');
    const [withReplyTo, allowed] = [...primary.messages].sort((a, b) =>
      headerOf(a).includes('sales@') ? -1 : headerOf(b).includes('sales@') ? 1 : 0,
    );
    const header = headerOf(withReplyTo);
    expect(fields(header, 'Reply-To')).toEqual(['Reply-To: Sales <sales@corp.example>']);
    expect(fields(header, 'From')).toEqual(['From: Scanner 3F <noreply@corp.example>']);
    expect(fields(header, 'Message-ID')).toEqual(['Message-ID: <42@erp.lan>']);
    expect(fields(header, 'Date')).toEqual(['Date: Mon, 23 Nov 2026 10:00:00 +0100']);
    expect(fields(headerOf(allowed), 'From')).toEqual(['From: ERP <app@corp.example>']);
    expect(fields(headerOf(allowed), 'Reply-To')).toEqual([]);
    for (const message of primary.messages)
      expect(await verifyDkim(message.data, resolver)).toEqual([
        'corp.example/s1 rsa-sha256 pass',
        'corp.example/e1 ed25519-sha256 pass',
      ]);
  });

  test('an RFC 2047 encoded display name and a Sender survive the rewrite; the signature still verifies', async () => {
    const primary = await sink();
    await relayWith(primary.port, corpRoute());
    await send(
      'scanner@printer.local',
      legacyMessage(
        ['Sender: Scan Service <scan@printer.local>'],
        '=?UTF-8?B?w5xiZXJzZXR6dW5n?= <scanner@printer.local>',
      ),
    );
    await waitFor(() => primary.messages.length === 1, 10_000, 'delivery');
    const header = headerOf(primary.messages[0]);
    expect(fields(header, 'From')).toEqual(['From: =?UTF-8?B?w5xiZXJzZXR6dW5n?= <noreply@corp.example>']);
    expect(fields(header, 'Sender')).toEqual([]);
    expect(fields(header, 'Reply-To')).toEqual(['Reply-To: =?UTF-8?B?w5xiZXJzZXR6dW5n?= <scanner@printer.local>']);
    expect(await verifyDkim(primary.messages[0].data, resolver)).toEqual([
      'corp.example/s1 rsa-sha256 pass',
      'corp.example/e1 ed25519-sha256 pass',
    ]);
  });

  test('a raw UTF-8 display name and subject (RFC 6532) are kept byte for byte and signed as sent', async () => {
    const primary = await sink();
    await relayWith(primary.port, corpRoute());
    await send('hans@erp.lan', legacyMessage(['Subject: Grüße aus der Buchhaltung'], 'Müller, Hans <hans@erp.lan>'));
    await waitFor(() => primary.messages.length === 1, 10_000, 'delivery');
    const header = primary.messages[0].data.toString('utf8');
    expect(header).toContain('\r\nFrom: "Müller, Hans" <noreply@corp.example>\r\n');
    expect(header).toContain('\r\nReply-To: "Müller, Hans" <hans@erp.lan>\r\n');
    expect(await verifyDkim(primary.messages[0].data, resolver)).toEqual([
      'corp.example/s1 rsa-sha256 pass',
      'corp.example/e1 ed25519-sha256 pass',
    ]);
  });

  test('a route without rewrites keeps envelope and From, still strips topology and adds what is missing', async () => {
    const primary = await sink();
    await relayWith(primary.port, {});
    await send('scanner@printer.local', legacyMessage());
    await waitFor(() => primary.messages.length === 1, 10_000, 'delivery');
    const header = headerOf(primary.messages[0]);
    expect(primary.messages[0].from).toBe('scanner@printer.local');
    expect(fields(header, 'From')).toEqual(['From: "Scanner 3F" <scanner@printer.local>']);
    expect(fields(header, 'X-Mailer')).toEqual(['X-Mailer: ScanToMail 2.1']);
    expect(fields(header, 'X-Originating-IP')).toEqual([]);
    expect(fields(header, 'Received')).toHaveLength(1);
    expect(fields(header, 'DKIM-Signature')).toEqual([]);
    expect(fields(header, 'Message-ID')).toHaveLength(1);
  });

  test("received_include_address names the client's address in our Received line", async () => {
    const primary = await sink();
    await relayWith(primary.port, { received_include_address: true });
    await send('app@corp.example', legacyMessage());
    await waitFor(() => primary.messages.length === 1, 10_000, 'delivery');
    expect(fields(headerOf(primary.messages[0]), 'Received')[0]).toMatch(
      /^Received: from app\.test \(client lan \[127\.0\.0\.1\]\)/,
    );
  });

  test('routing by envelope-sender domain: own smart host and DKIM key; other senders keep policy routes', async () => {
    const corp = await sink();
    const shop = await sink();
    running = await startRelay(
      buildConfig(
        baseConfig(
          dir,
          [
            { name: 'corp-host', port: corp.port },
            { name: 'shop-host', port: shop.port },
          ],
          {
            clients: [{ name: 'lan', networks: ['127.0.0.1/32'], policy: 'legacy' }],
            policies: { legacy: { route: 'default' } },
            routes: {
              default: { smarthosts: ['corp-host'], ...corpRoute() },
              shop: {
                smarthosts: ['shop-host'],
                sender_domains: ['shop.example'],
                dkim: { domain: 'shop.example', selector: 'k1', private_key: shopKey.file },
              },
            },
          },
        ),
        dir,
      ),
    );
    await send('orders@Shop.Example', legacyMessage([], 'Shop <orders@shop.example>'));
    await send('scanner@printer.local', legacyMessage());
    await waitFor(() => corp.messages.length === 1 && shop.messages.length === 1, 10_000, 'both deliveries');
    expect(shop.messages[0].from.toLowerCase()).toBe('orders@shop.example');
    expect(fields(headerOf(shop.messages[0]), 'From')).toEqual(['From: Shop <orders@shop.example>']);
    expect(await verifyDkim(shop.messages[0].data, resolver)).toEqual(['shop.example/k1 rsa-sha256 pass']);
    expect(corp.messages[0].from).toBe('bounces@corp.example');
    expect(await verifyDkim(corp.messages[0].data, resolver)).toEqual([
      'corp.example/s1 rsa-sha256 pass',
      'corp.example/e1 ed25519-sha256 pass',
    ]);
  });

  test('a missing or mismatched key stops the relay from starting, naming the config path', () => {
    const config = (dkim: Record<string, unknown>) =>
      buildConfig(
        baseConfig(dir, [{ name: 'primary', port: 25 }], { routes: { default: { smarthosts: ['primary'], dkim } } }),
        dir,
      );
    expect(() => new Relay(config({ domain: 'corp.example', selector: 's1', private_key: './nope.pem' }))).toThrow(
      `DKIM keys: routes.default.dkim[0].private_key: cannot read ${path.join(dir, 'nope.pem')} (ENOENT)`,
    );
    expect(
      () =>
        new Relay(
          config({ domain: 'corp.example', selector: 's1', private_key: rsa.file, algorithm: 'ed25519-sha256' }),
        ),
    ).toThrow('algorithm ed25519-sha256 needs a ed25519 key, the file holds a rsa key');
  });
});
