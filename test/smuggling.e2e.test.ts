import { metricsText, metricValue, relayPerDescribe, waitFor } from './helpers/harness';
import { openSession } from './helpers/smtp-client';

/**
 * SMTP smuggling (SEC Consult, 2023): a client ends DATA with something a lenient server reads as
 * the end of data, follows it with a second MAIL/RCPT/DATA, and hopes one server (us) sees one
 * message where the next hop (the smart host) sees two — the second with a sender the client was
 * never allowed to use. smtp-server ends DATA only on CRLF.CRLF and passes bare CR/LF through;
 * DataGuard refuses bare CR always, and bare LF under `strict` or rewrites it to CRLF under
 * `normalize`, after which nodemailer dot-stuffs the lone "." on the way out.
 */
const VARIANTS: [string, string][] = [
  ['\\n.\\n', '\n.\n'],
  ['\\r.\\r', '\r.\r'],
  ['\\r\\n.\\r', '\r\n.\r'],
  ['\\n.\\r\\n', '\n.\r\n'],
  ['\\r\\n.\\n', '\r\n.\n'],
];

const EXPECTED: Record<'normalize' | 'strict', Record<string, string>> = {
  normalize: {
    '\\n.\\n': 'queued',
    '\\r.\\r': '550 5.6.0 Message contains a bare CR line ending; lines must end with CRLF',
    '\\r\\n.\\r': '550 5.6.0 Message contains a bare CR line ending; lines must end with CRLF',
    '\\n.\\r\\n': 'queued',
    '\\r\\n.\\n': 'queued',
  },
  strict: {
    '\\n.\\n': '550 5.6.0 Message contains a bare LF line ending; lines must end with CRLF',
    '\\r.\\r': '550 5.6.0 Message contains a bare CR line ending; lines must end with CRLF',
    '\\r\\n.\\r': '550 5.6.0 Message contains a bare CR line ending; lines must end with CRLF',
    '\\n.\\r\\n': '550 5.6.0 Message contains a bare LF line ending; lines must end with CRLF',
    '\\r\\n.\\n': '550 5.6.0 Message contains a bare LF line ending; lines must end with CRLF',
  },
};

describe('SMTP smuggling: one DATA is never two messages downstream, for trusted clients too', () => {
  const t = relayPerDescribe(() => ({
    listeners: [
      { name: 'normalize', address: '127.0.0.1:0', tls: 'none', auth: 'off', line_endings: 'normalize' },
      { name: 'strict', address: '127.0.0.1:0', tls: 'none', auth: 'off', line_endings: 'strict' },
    ],
    // The client is trusted (a LAN network) and its policy only lets it send as itself.
    clients: [{ name: 'erp', networks: ['127.0.0.1/32'], policy: 'own_domain' }],
    policies: { own_domain: { allowed_senders: ['*@corp.example'] } },
  }));

  const cases = (['normalize', 'strict'] as const).flatMap((mode) =>
    VARIANTS.map(([name, ending]) => [mode, name, ending] as const),
  );

  test.each(cases)('%s: %s followed by a smuggled MAIL/RCPT/DATA', async (mode, name, ending) => {
    const before = t.sink.messages.length;
    const { client } = await openSession(t.running.portOf(mode));
    expect(await client.command('MAIL FROM:<erp@corp.example>')).toMatch(/^250 /);
    expect(await client.command('RCPT TO:<user@example.com>')).toMatch(/^250 /);
    expect(await client.command('DATA')).toMatch(/^354 /);
    const smuggled =
      'MAIL FROM:<ceo@bank.example>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\n' +
      'From: ceo@bank.example\r\nSubject: smuggled\r\n\r\nwire the money\r\n';
    client.write(
      Buffer.from(
        `From: erp@corp.example\r\nTo: user@example.com\r\nSubject: smuggling ${mode} ${name}\r\n\r\n` +
          `legitimate body${ending}${smuggled}\r\n.\r\n`,
        'latin1',
      ),
    );
    const reply = await client.reply();
    const expected = EXPECTED[mode][name];
    if (expected === 'queued') expect(reply).toMatch(/^250 2\.0\.0 Ok: queued as /);
    else expect(reply).toBe(expected);
    // Exactly one reply for the whole DATA: nothing in it was run as a command.
    expect(await client.command('NOOP')).toMatch(/^250 /);
    await client.quit();

    if (expected !== 'queued') {
      expect(t.sink.messages.length).toBe(before);
      return;
    }
    await waitFor(() => t.sink.messages.length === before + 1, 10_000, 'delivery');
    const delivered = t.sink.messages[before];
    expect(delivered.from).toBe('erp@corp.example');
    expect(delivered.to).toEqual(['user@example.com']);
    const data = delivered.data.toString('latin1');
    // CRLF throughout: no bare CR, no bare LF left in what went out.
    expect(data.replace(/\r\n/g, '')).not.toMatch(/[\r\n]/);
    // The lone "." line arrived as content (nodemailer dot-stuffed it), so the smuggled commands are text of
    // this one message.
    expect(data).toContain('legitimate body\r\n.\r\nMAIL FROM:<ceo@bank.example>\r\n');
  });

  test('the smart host never received a message from the smuggled sender', async () => {
    await waitFor(() => t.sink.messages.length === 3, 10_000, 'the three normalised messages');
    expect(t.sink.messages.map((m) => m.from)).toEqual(['erp@corp.example', 'erp@corp.example', 'erp@corp.example']);
    expect(t.sink.recipients()).not.toContain('victim@example.com');
    const metrics = await metricsText(t.running.httpPort);
    expect(metricValue(metrics, 'smarthop_messages_rejected_total{client="erp",reason="smuggling"}')).toBe(7);
    expect(metricValue(metrics, 'smarthop_line_endings_normalized_total{client="erp"}')).toBe(3);
  });

  test('an address outside every client cannot even start the attempt', async () => {
    const { greeting } = await openSession(t.running.portOf('normalize'), { localAddress: '127.0.0.2' });
    expect(greeting).toBe('554 5.7.1 Access denied: [127.0.0.2] is not a permitted client');
  });
});
