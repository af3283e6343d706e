import { hashPassword } from '../src/ingress/password';
import { metricsText, metricValue, relayPerDescribe, makeCertificate, waitFor } from './helpers/harness';
import { message, openSession, plainAuth, RawSmtpClient } from './helpers/smtp-client';

/**
 * Slowloris over real sockets: connections that trickle bytes, or never identify themselves, cannot
 * keep their places, and strangers cannot take the places of trusted networks. The trusted client's
 * one-second bound is the safety property the relay promises a bystander (SECURITY.md), kept loose
 * on purpose: an unloaded relay answers in milliseconds.
 */
jest.setTimeout(120_000);

const password = 'slow but honest';

describe('slowloris', () => {
  const t = relayPerDescribe(async (dir) => ({
    tls: makeCertificate(dir),
    listeners: [
      // Defaults for everything that matters here: max_clients 500, half of it for unidentified sessions.
      { name: 'submission', address: '127.0.0.1:0', tls: 'starttls', auth: 'optional' },
      { name: 'quick', address: '127.0.0.1:0', tls: 'starttls', auth: 'optional', command_deadline: '2s' },
      { name: 'identify', address: '127.0.0.1:0', tls: 'starttls', auth: 'optional', identify_timeout: '3s' },
    ],
    clients: [
      { name: 'lan', networks: ['127.0.0.1/32'] },
      { name: 'shop', username: 'shop', password_hash: await hashPassword(password) },
    ],
  }));
  const metric = async (sample: string) => metricValue(await metricsText(t.running.httpPort), sample) ?? 0;

  type Opened = { client: RawSmtpClient; greeting: string | null };

  /** Opens `count` connections from the given addresses (round robin), 50 at a time; each with its greeting. */
  async function open(count: number, addresses: string[]): Promise<Opened[]> {
    const opened: Opened[] = [];
    for (let i = 0; i < count; i += 50) {
      opened.push(
        ...(await Promise.all(
          Array.from({ length: Math.min(50, count - i) }, async (_, j) => {
            const client = await RawSmtpClient.connect(t.running.portOf('submission'), {
              localAddress: addresses[(i + j) % addresses.length],
            });
            return { client, greeting: await client.reply(30_000) };
          }),
        )),
      );
    }
    return opened;
  }

  /** One byte a second to every connection still open, cycling through an EHLO line that never ends. */
  function trickle(clients: RawSmtpClient[]): () => void {
    const line = 'EHLO trickling.example.';
    let at = 0;
    const send = () => {
      const byte = line[at++ % line.length];
      for (const client of clients) if (!client.isClosed) client.write(byte);
    };
    send();
    const timer = setInterval(send, 1000);
    return () => clearInterval(timer);
  }

  /** A trusted client's greeting and EHLO, each timed. */
  async function trustedClient(): Promise<{ greetingMs: number; ehloMs: number }> {
    const started = performance.now();
    const client = await RawSmtpClient.connect(t.running.portOf('submission'), { localAddress: '127.0.0.1' });
    expect(await client.reply()).toMatch(/^220 /);
    const greetingMs = performance.now() - started;
    const ehloStarted = performance.now();
    expect(await client.command('EHLO app.test')).toMatch(/^250/);
    const ehloMs = performance.now() - ehloStarted;
    expect(await client.sendMessage('app@corp.example', ['user@example.com'], message())).toMatch(
      /^250 2\.0\.0 Ok: queued as /,
    );
    await client.quit();
    return { greetingMs, ehloMs };
  }

  async function closeAll(clients: RawSmtpClient[]): Promise<void> {
    for (const client of clients) client.destroy();
    await waitFor(
      async () => (await metric('smarthop_connections_active{listener="submission"}')) === 0,
      30_000,
      'every connection to be closed',
    );
  }

  /**
   * With the accepted ones trickling, a trusted client gets its 220 and 250 within a second; then
   * `check` looks at who was let in. Every connection is closed after, whatever happened.
   */
  async function whileTheyTrickle(opened: Opened[], check: (accepted: Opened[]) => Promise<void>): Promise<void> {
    const accepted = opened.filter((o) => o.greeting?.startsWith('220'));
    const stop = trickle(accepted.map((o) => o.client));
    try {
      const { greetingMs, ehloMs } = await trustedClient();
      expect(greetingMs).toBeLessThan(1000);
      expect(ehloMs).toBeLessThan(1000);
      await check(accepted);
    } finally {
      stop();
      await closeAll(opened.map((o) => o.client));
    }
  }

  test('500 trickling connections from one stranger: it keeps 10; a trusted client is served in 1 s', async () => {
    const opened = await open(500, ['127.0.0.2']);
    await whileTheyTrickle(opened, async (accepted) => {
      expect(accepted).toHaveLength(10);
      const capped = '421 4.7.0 Too many connections from [127.0.0.2] (at most 10 at once); try again later';
      expect(opened.filter((o) => o.greeting === capped)).toHaveLength(490);
    });
  });

  test('500 trickling connections from 60 strangers get half of max_clients; a trusted client is served', async () => {
    const strangers = Array.from({ length: 60 }, (_, i) => `127.0.0.${2 + i}`);
    const refusals = () => metric('smarthop_rate_limited_total{client="(unknown)",limit="unidentified_clients"}');
    const before = await refusals();
    const opened = await open(500, strangers);
    await whileTheyTrickle(opened, async (accepted) => {
      expect(accepted).toHaveLength(250);
      const full = '421 4.7.0 Too many unidentified connections on listener submission (at most 250 at once)';
      expect(opened.filter((o) => o.greeting?.startsWith(full))).toHaveLength(250);
      expect((await refusals()) - before).toBe(250);
    });
  });

  test('a command line trickled a byte a second gets 421 4.4.2 at command_deadline; message lines do not', async () => {
    const before = await metric('smarthop_messages_rejected_total{client="(unknown)",reason="timeout"}');
    // A trusted client in the middle of DATA, sending its message as slowly.
    const sending = (await openSession(t.running.portOf('quick'))).client;
    expect(await sending.command('MAIL FROM:<app@corp.example>')).toMatch(/^250 /);
    expect(await sending.command('RCPT TO:<user@example.com>')).toMatch(/^250 /);
    expect(await sending.command('DATA')).toMatch(/^354 /);
    sending.write('Subject: slowly\r\n\r\nThis line ');

    const stranger = await RawSmtpClient.connect(t.running.portOf('quick'), { localAddress: '127.0.0.2' });
    const trusted = await RawSmtpClient.connect(t.running.portOf('quick'));
    expect(await stranger.reply()).toMatch(/^220 /);
    expect(await trusted.reply()).toMatch(/^220 /);
    const stop = trickle([stranger, trusted, sending]);
    try {
      expect(await stranger.reply(15_000)).toBe('421 4.4.2 Command line not completed within 2s; closing connection');
      expect(await trusted.reply(15_000)).toBe('421 4.4.2 Command line not completed within 2s; closing connection');
      await waitFor(() => stranger.isClosed && trusted.isClosed, 10_000, 'both connections to close');
    } finally {
      stop();
    }
    // Both deadlines have passed while the message line was just as slow: the message is still taken.
    sending.write('ends here.\r\n.\r\n');
    expect(await sending.reply()).toMatch(/^250 2\.0\.0 Ok: queued as /);
    await sending.quit();
    expect((await metric('smarthop_messages_rejected_total{client="(unknown)",reason="timeout"}')) - before).toBe(1);
    expect(await metric('smarthop_messages_rejected_total{client="lan",reason="timeout"}')).toBe(1);
  });

  test('a stranger not authenticated within identify_timeout gets 421 4.7.0; the identified stay', async () => {
    const trusted = (await openSession(t.running.portOf('identify'))).client;
    const authenticated = (await openSession(t.running.portOf('identify'), { localAddress: '127.0.0.3' })).client;
    expect(await authenticated.startTls()).toMatch(/^220 /);
    expect(await authenticated.command('EHLO shop.test')).toMatch(/^250/);
    expect(await authenticated.command(plainAuth('shop', password))).toBe('235 Authentication successful');
    const idle = await openSession(t.running.portOf('identify'), { localAddress: '127.0.0.4' });
    expect(idle.greeting).toMatch(/^220 /);
    // Busy without identifying itself is no better than idle.
    expect(await idle.client.command('NOOP')).toMatch(/^250/);
    expect(await idle.client.reply(15_000)).toBe('421 4.7.0 Not authenticated within 3s; closing connection');
    await waitFor(() => idle.client.isClosed, 10_000, 'the stranger to be disconnected');
    // Connected before it, past the same deadline: still served.
    expect(await trusted.command('NOOP')).toMatch(/^250/);
    expect(await authenticated.sendMessage('shop@corp.example', ['user@example.com'], message())).toMatch(
      /^250 2\.0\.0 Ok: queued as /,
    );
    await trusted.quit();
    await authenticated.quit();
  });
});
