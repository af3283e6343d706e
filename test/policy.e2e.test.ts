import { readdirSync, renameSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { metricsText, metricValue, recordingLogger, relayPerDescribe, waitFor } from './helpers/harness';
import { message, openSession, type RawSmtpClient } from './helpers/smtp-client';

/** A multipart message; `parts` are complete MIME parts (headers, blank line, body). */
function mime(
  boundary: string,
  parts: string[],
  headers = 'From: app@corp.example\r\nTo: user@example.com\r\nSubject: with attachment',
): string {
  return (
    `${headers}\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="${boundary}"\r\n\r\n` +
    parts.map((p) => `--${boundary}\r\n${p}\r\n`).join('') +
    `--${boundary}--`
  );
}
const textPart = 'Content-Type: text/plain; charset=utf-8\r\n\r\nPlease find the file attached.';
const filePart = (name: string) =>
  `Content-Type: application/octet-stream; name="${name}"\r\nContent-Disposition: attachment; filename="${name}"\r\n` +
  'Content-Transfer-Encoding: base64\r\n\r\nTVqQAAMAAAAEAAAA//8AALgAAAAAAAAAQAAAAAAAAAAA';
/** An attachment two multipart levels below the top: mixed → alternative → mixed → the file. */
const nestedTwoDeep = (name: string) =>
  mime('outer', [
    textPart,
    'Content-Type: multipart/alternative; boundary="middle"\r\n\r\n' +
      `--middle\r\n${textPart}\r\n` +
      '--middle\r\nContent-Type: multipart/mixed; boundary="inner"\r\n\r\n' +
      `--inner\r\n${textPart}\r\n--inner\r\n${filePart(name)}\r\n--inner--\r\n--middle--`,
  ]);

describe('policies: what each client may send, enforced at the earliest SMTP step', () => {
  let suppressionFile = '';
  const log = recordingLogger('warn');
  const t = relayPerDescribe(
    (dir) => {
      suppressionFile = path.join(dir, 'suppressed.txt');
      writeFileSync(suppressionFile, '# hard bounces\ngone@example.com\n@dead.example\n');
      return {
        listeners: [
          { name: 'smtp', address: '127.0.0.1:0', tls: 'none', auth: 'optional' },
          { name: 'lan', address: '127.0.0.1:0', tls: 'none', auth: 'off' },
        ],
        clients: [
          { name: 'erp', networks: ['127.0.0.1/32'], policy: 'legacy' },
          { name: 'free', networks: ['127.0.0.4/32'] },
        ],
        policies: {
          legacy: {
            allowed_senders: ['*@corp.example', 'bücher.example'],
            allowed_recipients: [
              '*@example.com',
              'partner.example',
              'xn--mnchen-3ya.example',
              '*.dead.example',
              'dead.example',
            ],
            denied_recipients: ['ceo@partner.example'],
            max_message_size: '64KiB',
            max_recipients: 3,
            blocked_attachments: ['exe', '.JS'],
            header_rules: [
              { header: 'X-Mailer', match: 'PHPMailer', action: 'strip' },
              { header: 'Subject', match: 'lottery|you have won', action: 'reject' },
              // Catastrophic for a backtracking engine on `aaa…a!`; RE2 reads it in one pass.
              { header: 'X-Trap', match: '^(a+)+$', action: 'reject' },
            ],
            suppressed_recipients: 'suppressed.txt',
          },
        },
      };
    },
    { logger: log.logger },
  );

  beforeEach(() => {
    t.sink.messages.length = 0;
  });

  const received = async (client = 'erp') =>
    metricValue(await metricsText(t.running.httpPort), `smarthop_messages_received_total{client="${client}"}`) ?? 0;
  const rejected = async (reason: string, client = 'erp') =>
    metricValue(
      await metricsText(t.running.httpPort),
      `smarthop_messages_rejected_total{client="${client}",reason="${reason}"}`,
    ) ?? 0;

  async function session(options: { localAddress?: string; listener?: string } = {}): Promise<RawSmtpClient> {
    const { client, greeting } = await openSession(t.running.portOf(options.listener ?? 'smtp'), {
      localAddress: options.localAddress,
    });
    expect(greeting).toMatch(/^220 /);
    return client;
  }

  /**
   * Sends one message that policy must refuse and proves it reached nothing: no 250, no received count, no
   * delivery.
   */
  async function expectRefused(send: () => Promise<string | null>, expected: string, reason: string): Promise<void> {
    const before = { received: await received(), rejected: await rejected(reason) };
    expect(await send()).toBe(expected);
    expect(await received()).toBe(before.received);
    expect(await rejected(reason)).toBe(before.rejected + 1);
    expect(readdirSync(path.join(t.dir, 'spool', 'tmp'))).toEqual([]);
  }

  async function expectDelivered(reply: Promise<string | null>, to: string[]): Promise<string> {
    expect(await reply).toMatch(/^250 2\.0\.0 Ok: queued as /);
    await waitFor(() => t.sink.messages.length === 1, 10_000, 'delivery');
    expect(t.sink.messages[0].to).toEqual(to);
    return t.sink.messages[0].data.toString('utf8');
  }

  describe('allowed_senders: envelope MAIL FROM and every address in the header From', () => {
    test('an allowed sender with a matching From reaches the smart host', async () => {
      const client = await session();
      await expectDelivered(
        client.sendMessage('erp@corp.example', ['user@example.com'], message({ from: '"ERP" <erp@corp.example>' })),
        ['user@example.com'],
      );
      await client.quit();
    });

    test('a foreign envelope sender is refused at MAIL FROM with 550 5.7.1', async () => {
      const client = await session();
      await expectRefused(
        () => client.command('MAIL FROM:<ceo@bank.example>'),
        '550 5.7.1 Sender <ceo@bank.example> not allowed for client erp',
        'sender_not_allowed',
      );
      expect(await client.command('RCPT TO:<user@example.com>')).toMatch(/^503 /);
      await client.quit();
    });

    test.each([
      ['a foreign From', 'ceo@bank.example', 'ceo@bank.example'],
      ['a foreign address as display name', '"ceo@bank.example" <erp@corp.example>', 'ceo@bank.example'],
      ['a second, foreign mailbox', 'erp@corp.example, ceo@bank.example', 'ceo@bank.example'],
      ['a look-alike domain', 'erp@corp.example.bank.example', 'erp@corp.example.bank.example'],
      // What mailauth's DMARC and Python's email read as ceo@bank.example, while nodemailer's addressparser
      // returns erp@corp.example.
      [
        'a comment after the @ and an allowed address behind it',
        'ceo@(x)bank.example erp@corp.example',
        'ceo@bank.example',
      ],
      ['the same folded', 'ceo@()bank.example\r\n erp@corp.example', 'ceo@bank.example'],
      ['the same behind a display name', '"CEO Bank" ceo@(x)bank.example erp@corp.example', 'ceo@bank.example'],
      [
        'an address with spaces around its @ as display name',
        '"ceo @ bank.example" <erp@corp.example>',
        'ceo@bank.example',
      ],
      [
        'a fullwidth @ in an encoded display name',
        '=?utf-8?b?Y2Vv77ygYmFuay5leGFtcGxl?= <erp@corp.example>',
        'ceo@bank.example',
      ],
    ])('header From spoofing with an allowed envelope (%s) is refused at end of DATA', async (_what, from, shown) => {
      const client = await session();
      await expectRefused(
        () => client.sendMessage('erp@corp.example', ['user@example.com'], message({ from })),
        `550 5.7.1 Header From <${shown}> not allowed for client erp`,
        'sender_not_allowed',
      );
      await client.quit();
      expect(t.sink.messages).toHaveLength(0);
    });

    test('a Sender ("on behalf of") outside allowed_senders is refused too, also as a second Sender', async () => {
      const client = await session();
      const body = message({ from: 'erp@corp.example' }).replace(
        '\r\nTo:',
        '\r\nSender: erp@corp.example\r\nSender: ceo@bank.example\r\nTo:',
      );
      await expectRefused(
        () => client.sendMessage('erp@corp.example', ['user@example.com'], body),
        '550 5.7.1 Header Sender <ceo@bank.example> not allowed for client erp',
        'sender_not_allowed',
      );
      // An allowed Sender still goes.
      const allowed = message({ from: 'erp@corp.example' }).replace(
        '\r\nTo:',
        '\r\nSender: Billing <billing@corp.example>\r\nTo:',
      );
      await expectDelivered(client.sendMessage('erp@corp.example', ['user@example.com'], allowed), [
        'user@example.com',
      ]);
      await client.quit();
    });

    test('IDN: punycode envelope, UTF-8 header From and a punycode pattern all compare as one domain', async () => {
      const client = await session();
      const body = message({ from: 'Bücherei <info@bücher.example>', to: 'kunde@münchen.example' });
      expect(await client.command('MAIL FROM:<INFO@XN--BCHER-KVA.EXAMPLE>')).toMatch(/^250 /);
      expect(await client.command('RCPT TO:<kunde@münchen.example>')).toMatch(/^250 /);
      expect(await client.command('DATA')).toMatch(/^354 /);
      client.write(Buffer.from(`${body}\r\n.\r\n`, 'utf8'));
      expect(await client.reply()).toMatch(/^250 2\.0\.0 Ok: queued as /);
      await client.quit();
      await waitFor(() => t.sink.messages.length === 1, 10_000, 'delivery');
    });
  });

  describe('allowed_recipients / denied_recipients, per RCPT', () => {
    test('denied wins over allowed, an unlisted domain is refused; the allowed recipients still go', async () => {
      const client = await session();
      expect(await client.command('MAIL FROM:<erp@corp.example>')).toMatch(/^250 /);
      await expectRefused(
        () => client.command('RCPT TO:<ceo@partner.example>'),
        '550 5.7.1 Recipient <ceo@partner.example> not allowed for client erp',
        'recipient_not_allowed',
      );
      await expectRefused(
        () => client.command('RCPT TO:<someone@elsewhere.example>'),
        '550 5.7.1 Recipient <someone@elsewhere.example> not allowed for client erp',
        'recipient_not_allowed',
      );
      expect(await client.command('RCPT TO:<sales@Partner.Example>')).toMatch(/^250 /);
      expect(await client.command('DATA')).toMatch(/^354 /);
      client.write(`${message()}\r\n.\r\n`);
      await expectDelivered(client.reply(), ['sales@partner.example']);
      await client.quit();
    });
  });

  describe('envelope addresses are judged as they will go out: quoted local parts and comments are refused', () => {
    // The smart host would be sent these re-parsed (`"ceo"@x` as `ceo@x`, `ceo(@x` as a bare `ceo`),
    // past the deny and suppression lists that compared them as written.
    test.each([
      ['a quoted local part of a denied recipient', '"ceo"@partner.example'],
      ['a comment in a denied recipient', 'ceo(x)@partner.example'],
      ['a quoted suppressed recipient', '"gone"@example.com'],
      ['an unclosed comment that would leave without its domain', 'ceo(@partner.example'],
      ['a comma that would make two addresses', 'a,b@partner.example'],
    ])('RCPT: %s gets 501 5.1.3', async (_what, address) => {
      const client = await session();
      expect(await client.command('MAIL FROM:<erp@corp.example>')).toMatch(/^250 /);
      const reply = await client.command(`RCPT TO:<${address}>`);
      // smtp-server refuses some of these forms itself (501 without our text); none may get a 250.
      expect(reply).toMatch(/^501 /);
      expect(await client.command('RCPT TO:<sales@partner.example>')).toMatch(/^250 /);
      expect(await client.command('DATA')).toMatch(/^354 /);
      client.write(`${message()}\r\n.\r\n`);
      await expectDelivered(client.reply(), ['sales@partner.example']);
      await client.quit();
    });

    test('our own refusal says why, and is counted as address_syntax', async () => {
      const client = await session();
      expect(await client.command('MAIL FROM:<erp@corp.example>')).toMatch(/^250 /);
      await expectRefused(
        () => client.command('RCPT TO:<"ceo"@partner.example>'),
        '501 5.1.3 Recipient address <"ceo"@partner.example> is not relayed: ' +
          'quoted local parts and comments are not accepted',
        'address_syntax',
      );
      await client.quit();
    });

    test('MAIL: a quoted sender gets 501 5.1.7; the null sender <> and plain addresses with any atext go', async () => {
      const client = await session();
      await expectRefused(
        () => client.command('MAIL FROM:<"erp"@corp.example>'),
        '501 5.1.7 Sender address <"erp"@corp.example> is not relayed: ' +
          'quoted local parts and comments are not accepted',
        'address_syntax',
      );
      expect(await client.command("MAIL FROM:<o'neil+bills=x@corp.example>")).toMatch(/^250 /);
      expect(await client.command('RCPT TO:<first.last@example.com>')).toMatch(/^250 /);
      expect(await client.command('DATA')).toMatch(/^354 /);
      client.write(`${message({ from: "o'neil+bills=x@corp.example" })}\r\n.\r\n`);
      await expectDelivered(client.reply(), ['first.last@example.com']);
      expect(t.sink.messages[0].from).toBe("o'neil+bills=x@corp.example");
      await client.quit();
    });

    test('from outside every client the same forms are refused at connect, before any address is read', async () => {
      const { client, greeting } = await openSession(t.running.portOf('smtp'), { localAddress: '127.0.0.2' });
      expect(greeting).toBe('554 5.7.1 Access denied: [127.0.0.2] is not a permitted client');
      await waitFor(() => client.isClosed, 5000, 'the refused connection to close');
      expect(t.sink.messages).toHaveLength(0);
    });
  });

  describe('suppressed_recipients: a file, reloaded when it changes', () => {
    test('a suppressed address or domain gets 550 5.1.1; the others of the same message still go', async () => {
      const client = await session();
      expect(await client.command('MAIL FROM:<erp@corp.example>')).toMatch(/^250 /);
      await expectRefused(
        () => client.command('RCPT TO:<Gone@Example.com>'),
        '550 5.1.1 Recipient <Gone@Example.com> is on the suppression list',
        'suppressed',
      );
      await expectRefused(
        () => client.command('RCPT TO:<anyone@dead.example>'),
        '550 5.1.1 Recipient <anyone@dead.example> is on the suppression list',
        'suppressed',
      );
      expect(await client.command('RCPT TO:<anyone@sub.dead.example>')).toMatch(/^250 /);
      expect(await client.command('RCPT TO:<still@example.com>')).toMatch(/^250 /);
      expect(await client.command('DATA')).toMatch(/^354 /);
      client.write(`${message()}\r\n.\r\n`);
      await expectDelivered(client.reply(), ['anyone@sub.dead.example', 'still@example.com']);
      await client.quit();
    });

    test('the list follows the file: replaced by rename (as editors do), rewritten, briefly missing', async () => {
      const client = await session();
      const rcpt = async (address: string) => {
        expect(await client.command('RSET')).toMatch(/^250/);
        expect(await client.command('MAIL FROM:<erp@corp.example>')).toMatch(/^250 /);
        return client.command(`RCPT TO:<${address}>`);
      };
      expect(await rcpt('later@example.com')).toMatch(/^250 /);

      const next = path.join(t.dir, 'suppressed.txt.new');
      writeFileSync(next, 'gone@example.com\nlater@example.com\n');
      renameSync(next, suppressionFile);
      await waitFor(
        async () => (await rcpt('later@example.com'))?.startsWith('550 5.1.1') ?? false,
        15_000,
        'the renamed file to be reloaded',
      );
      expect(await rcpt('gone@example.com')).toMatch(/^550 5\.1\.1 /);

      writeFileSync(suppressionFile, 'gone@example.com\n# later@example.com unsubscribed by mistake\n');
      await waitFor(
        async () => (await rcpt('later@example.com'))?.startsWith('250') ?? false,
        15_000,
        'the rewritten file to be reloaded',
      );

      // A file that disappears keeps the last good list: a half-finished deploy must not unsuppress everyone.
      renameSync(suppressionFile, `${suppressionFile}.moved`);
      const missing = `suppression list ${suppressionFile} is missing; keeping the last 1 entries until it is back`;
      await waitFor(() => log.lines.some((line) => line.msg === missing), 15_000, 'the relay to see the file gone');
      expect(await rcpt('gone@example.com')).toMatch(/^550 5\.1\.1 /);
      renameSync(`${suppressionFile}.moved`, suppressionFile);
      await client.quit();
    });
  });

  describe('max_recipients and max_message_size', () => {
    test('one recipient too many gets 452 4.5.3; the first three are delivered', async () => {
      const client = await session();
      expect(await client.command('MAIL FROM:<erp@corp.example>')).toMatch(/^250 /);
      for (const to of ['a@example.com', 'b@example.com', 'c@example.com'])
        expect(await client.command(`RCPT TO:<${to}>`)).toMatch(/^250 /);
      await expectRefused(
        () => client.command('RCPT TO:<d@example.com>'),
        '452 4.5.3 Too many recipients for client erp (at most 3 per message)',
        'too_many_recipients',
      );
      expect(await client.command('DATA')).toMatch(/^354 /);
      client.write(`${message()}\r\n.\r\n`);
      await expectDelivered(client.reply(), ['a@example.com', 'b@example.com', 'c@example.com']);
      await client.quit();
    });

    test('a declared SIZE over the policy maximum is refused at MAIL; the listener still offers its own', async () => {
      const { client, ehlo } = await openSession(t.running.smtpPort);
      expect(ehlo).toMatch(/^250[- ]SIZE 1048576$/m);
      await expectRefused(
        () => client.command('MAIL FROM:<erp@corp.example> SIZE=100000'),
        '552 5.3.4 Message size exceeds maximum message size of 65536 bytes for client erp',
        'too_big',
      );
      expect(await client.command('MAIL FROM:<erp@corp.example> SIZE=1000')).toMatch(/^250 /);
      await client.quit();
    });

    test('an undeclared message over the policy maximum is refused after DATA; one without a policy goes', async () => {
      const big = message({ body: `${'x'.repeat(998)}\r\n`.repeat(100) });
      const client = await session();
      await expectRefused(
        () => client.sendMessage('erp@corp.example', ['user@example.com'], big),
        '552 5.3.4 Message size exceeds maximum message size of 65536 bytes for client erp',
        'too_big',
      );
      await client.quit();

      const free = await session({ localAddress: '127.0.0.4' });
      await expectDelivered(free.sendMessage('anyone@bank.example', ['user@example.com'], big), ['user@example.com']);
      await free.quit();
    });
  });

  describe('content: blocked_attachments and header_rules', () => {
    test('an attachment two levels deep with a blocked extension gets 550 5.7.1, nothing queued', async () => {
      const client = await session();
      await expectRefused(
        () => client.sendMessage('erp@corp.example', ['user@example.com'], nestedTwoDeep('invoice.pdf.exe')),
        '550 5.7.1 Attachment type .exe not allowed for client erp',
        'content_rule',
      );
      // RFC 2231-encoded name, an attached message/rfc822 holding the file.
      const encodedName =
        'Content-Type: application/octet-stream\r\n' +
        `Content-Disposition: attachment; filename*0*=utf-8''%E2%82%AC%20rates; filename*1=".js"\r\n\r\nx`;
      const forwarded =
        'Content-Type: message/rfc822\r\nContent-Disposition: attachment\r\n\r\n' +
        mime('fwd', [textPart, encodedName], 'From: x@elsewhere.example\r\nSubject: fwd');
      await expectRefused(
        () => client.sendMessage('erp@corp.example', ['user@example.com'], mime('top', [textPart, forwarded])),
        '550 5.7.1 Attachment type .js not allowed for client erp',
        'content_rule',
      );
      await client.quit();
      expect(t.sink.messages).toHaveLength(0);
    });

    test('an allowed attachment at the same depth is delivered byte for byte', async () => {
      const client = await session();
      const body = nestedTwoDeep('invoice.pdf');
      const data = await expectDelivered(client.sendMessage('erp@corp.example', ['user@example.com'], body), [
        'user@example.com',
      ]);
      // Re-enveloping may add Message-ID and Date to the header; the MIME body arrives byte for byte.
      const bodyPart = (text: string) => text.slice(text.indexOf('\r\n\r\n'));
      expect(bodyPart(data)).toBe(bodyPart(`${body}\r\n`));
      await client.quit();
    });

    test('header_rules: strip removes the matching header and delivers; reject refuses with 550 5.7.1', async () => {
      const client = await session();
      const stripped =
        'X-Mailer: PHPMailer 5.2.1\r\nX-Mailer-Note: PHPMailer stays (other header)\r\n' +
        message({ subject: 'monthly report' });
      const data = await expectDelivered(client.sendMessage('erp@corp.example', ['user@example.com'], stripped), [
        'user@example.com',
      ]);
      expect(data).not.toMatch(/^X-Mailer:/m);
      expect(data).toContain('X-Mailer-Note: PHPMailer stays');
      expect(data).toContain('Subject: monthly report');

      await expectRefused(
        () =>
          client.sendMessage(
            'erp@corp.example',
            ['user@example.com'],
            message({ subject: '=?utf-8?B?WW91IGhhdmUgV09OIQ==?=' }),
          ),
        '550 5.7.1 Message refused by a header rule on Subject for client erp',
        'content_rule',
      );
      await client.quit();
    });
  });

  test('a header crafted against a nested-repeat rule is judged in one pass: it and the next get answers', async () => {
    const crafted = await session();
    // 2^30000 paths for a backtracking engine: with RegExp this session, and every other, would hang.
    const trap = `X-Trap: ${'a'.repeat(30_000)}!\r\n${message({ subject: 'crafted' })}`;
    await expectDelivered(crafted.sendMessage('erp@corp.example', ['user@example.com'], trap), ['user@example.com']);
    await crafted.quit();

    const next = await session();
    await expectRefused(
      () =>
        next.sendMessage(
          'erp@corp.example',
          ['user@example.com'],
          `X-Trap: aaaa\r\n${message({ subject: 'matches' })}`,
        ),
      '550 5.7.1 Message refused by a header rule on X-Trap for client erp',
      'content_rule',
    );
    await next.quit();
  });

  test('a client without a policy keeps only the global limits', async () => {
    const client = await session({ localAddress: '127.0.0.4' });
    const body = mime(
      'b',
      [textPart, filePart('tool.exe')],
      'From: ceo@bank.example\r\nSubject: you have won the lottery',
    );
    await expectDelivered(
      client.sendMessage(
        'ceo@bank.example',
        ['ceo@partner.example', 'gone@example.com', 'x@elsewhere.example', 'y@elsewhere.example'],
        body,
      ),
      ['ceo@partner.example', 'gone@example.com', 'x@elsewhere.example', 'y@elsewhere.example'],
    );
    await client.quit();
  });

  describe('no open relay: an address outside every client gets nothing through any of it', () => {
    // Both are plaintext listeners: AUTH could not identify a stranger there, so it is refused at connect.
    test.each([
      ['the auth: optional listener', 'smtp'],
      ['the auth: off listener', 'lan'],
    ])('%s', async (_what, listener) => {
      const { client, greeting } = await openSession(t.running.portOf(listener), { localAddress: '127.0.0.2' });
      expect(greeting).toBe('554 5.7.1 Access denied: [127.0.0.2] is not a permitted client');
      await waitFor(() => client.isClosed, 5000, 'the refused connection to close');
      expect(t.sink.messages).toHaveLength(0);
      expect(await received('(unknown)')).toBe(0);
    });
  });

  test('every refusal is counted with its reason', async () => {
    const metrics = await metricsText(t.running.httpPort);
    for (const reason of [
      'sender_not_allowed',
      'recipient_not_allowed',
      'suppressed',
      'too_many_recipients',
      'too_big',
      'content_rule',
    ]) {
      expect(
        metricValue(metrics, `smarthop_messages_rejected_total{client="erp",reason="${reason}"}`),
      ).toBeGreaterThanOrEqual(1);
    }
  });
});
