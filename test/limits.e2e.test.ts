import { readdirSync } from 'node:fs';
import * as path from 'node:path';
import { hashPassword } from '../src/ingress/password';
import type { SmtpSink } from '../src/tools/sink';
import {
  baseConfig,
  buildConfig,
  freePort,
  makeCertificate,
  metricsText,
  metricValue,
  relayPerDescribe,
  removeDir,
  startRelay,
  startSink,
  tempDir,
  waitFor,
  type RunningRelay,
} from './helpers/harness';
import { findBinary } from './helpers/prometheus';
import { TestRedis } from './helpers/redis';
import { testUnless } from './helpers/skip';
import { message, openSession, openTlsSession, plainAuth, RawSmtpClient } from './helpers/smtp-client';

const QUEUED = /^250 2\.0\.0 Ok: queued as /;

describe('per-client rate limits: counted per client, refused with 451 4.7.1 at the stage that knows', () => {
  const t = relayPerDescribe(() => ({
    clients: [
      { name: 'erp', networks: ['127.0.0.1/32'], policy: 'limited' },
      { name: 'other', networks: ['127.0.0.3/32'], policy: 'limited' },
      { name: 'bulk', networks: ['127.0.0.5/32'], policy: 'few_recipients' },
      { name: 'big', networks: ['127.0.0.6/32'], policy: 'few_bytes' },
    ],
    policies: {
      limited: { rate_limits: [{ window: '3s', messages: 2 }] },
      few_recipients: { rate_limits: [{ window: '1h', recipients: 3 }] },
      few_bytes: { rate_limits: [{ window: '1h', bytes: '24KiB' }] },
    },
  }));

  const metric = async (sample: string) => metricValue(await metricsText(t.running.httpPort), sample);
  const tmpFiles = () => readdirSync(path.join(t.dir, 'spool', 'tmp'));

  test('messages count at MAIL: the third in a window gets the wait, others are not slowed; it resets', async () => {
    const erp = (await openSession(t.running.smtpPort)).client;
    for (let i = 0; i < 2; i++) {
      expect(await erp.command('MAIL FROM:<erp@corp.example>')).toMatch(/^250 /);
      expect(await erp.command('RSET')).toMatch(/^250 /);
    }
    expect(await erp.command('MAIL FROM:<erp@corp.example>')).toMatch(
      /^451 4\.7\.1 Rate limit for client erp: 2 messages per 3s; try again in [1-3]s$/,
    );

    // Same policy, its own count: accepted at once while erp waits.
    const other = (await openSession(t.running.smtpPort, { localAddress: '127.0.0.3' })).client;
    expect(
      await other.sendMessage('other@corp.example', ['user@example.com'], message({ subject: 'from other' })),
    ).toMatch(QUEUED);
    await other.quit();

    // The window ends and erp may send again (a refused MAIL counts nothing, so polling does not extend it).
    await waitFor(
      async () => (await erp.command('MAIL FROM:<erp@corp.example>'))?.startsWith('250') ?? false,
      15_000,
      'the 3s window to reset',
    );
    expect(await erp.command('RCPT TO:<user@example.com>')).toMatch(/^250 /);
    expect(await erp.command('DATA')).toMatch(/^354 /);
    erp.write(`${message({ subject: 'after the window' })}\r\n.\r\n`);
    expect(await erp.reply()).toMatch(QUEUED);
    await erp.quit();
    await waitFor(() => t.sink.messages.length === 2, 10_000, 'both deliveries');

    expect(await metric('smarthop_rate_limited_total{client="erp",limit="messages_3s"}')).toBeGreaterThanOrEqual(1);
    expect(await metric('smarthop_rate_limited_total{client="other",limit="messages_3s"}')).toBe(0);
    expect(await metric('smarthop_messages_rejected_total{client="erp",reason="rate_limited"}')).toBeGreaterThanOrEqual(
      1,
    );
  });

  test('recipients count at RCPT: the one over the limit is refused, the accepted ones are delivered', async () => {
    const { client } = await openSession(t.running.smtpPort, { localAddress: '127.0.0.5' });
    expect(await client.command('MAIL FROM:<bulk@corp.example>')).toMatch(/^250 /);
    for (const to of ['a@example.com', 'b@example.com', 'c@example.com'])
      expect(await client.command(`RCPT TO:<${to}>`)).toMatch(/^250 /);
    expect(await client.command('RCPT TO:<d@example.com>')).toMatch(
      /^451 4\.7\.1 Rate limit for client bulk: 3 recipients per 1h; try again in 3\d{3}s$/,
    );
    expect(await client.command('DATA')).toMatch(/^354 /);
    client.write(`${message()}\r\n.\r\n`);
    expect(await client.reply()).toMatch(QUEUED);
    await waitFor(() => t.sink.recipients().includes('c@example.com'), 10_000, 'delivery');
    expect(t.sink.recipients()).not.toContain('d@example.com');
    expect(await client.command('MAIL FROM:<bulk@corp.example>')).toMatch(/^250 /);
    expect(await client.command('RCPT TO:<e@example.com>')).toMatch(/^451 4\.7\.1 /);
    await client.quit();
    expect(await metric('smarthop_rate_limited_total{client="bulk",limit="recipients_1h"}')).toBe(2);
  });

  test('bytes count at end of DATA: over the limit is 451, nothing queued; larger than any window is 552', async () => {
    const { client } = await openSession(t.running.smtpPort, { localAddress: '127.0.0.6' });
    const tenKiB = message({ body: `${'b'.repeat(1022)}\r\n`.repeat(10) });
    const before = await metric('smarthop_messages_received_total{client="big"}');
    expect(await client.sendMessage('big@corp.example', ['user@example.com'], tenKiB)).toMatch(QUEUED);
    expect(await client.sendMessage('big@corp.example', ['user@example.com'], tenKiB)).toMatch(QUEUED);
    expect(await client.sendMessage('big@corp.example', ['user@example.com'], tenKiB)).toMatch(
      /^451 4\.7\.1 Rate limit for client big: 24576 bytes per 1h; try again in 3\d{3}s$/,
    );
    expect(
      await client.sendMessage('big@corp.example', ['user@example.com'], message({ body: 'x'.repeat(30_000) })),
    ).toMatch(/^552 5\.3\.4 Message of \d+ bytes is over the rate limit for client big: 24576 bytes per 1h$/);
    await client.quit();
    expect(await metric('smarthop_messages_received_total{client="big"}')).toBe((before ?? 0) + 2);
    expect(tmpFiles()).toEqual([]);
  });

  test("no open relay: an address outside every client cannot use anyone's quota", async () => {
    const { client, greeting } = await openSession(t.running.smtpPort, { localAddress: '127.0.0.2' });
    expect(greeting).toBe('554 5.7.1 Access denied: [127.0.0.2] is not a permitted client');
    await waitFor(() => client.isClosed, 5000, 'the refused connection to close');
  });
});

describe('guards per source address: connections and AUTH brute force', () => {
  const password = 'correct horse battery staple';
  const t = relayPerDescribe(async (dir) => ({
    tls: makeCertificate(dir),
    listeners: [
      { name: 'smtp', address: '127.0.0.1:0', tls: 'none', auth: 'optional', allow_insecure_auth: true },
      { name: 'submission', address: '127.0.0.1:0', tls: 'starttls', require_tls: true, auth: 'required' },
    ],
    clients: [
      { name: 'lan', networks: ['127.0.0.1/32'] },
      { name: 'printers', networks: ['127.0.0.8/32'] },
      { name: 'webshop', username: 'webshop', password_hash: await hashPassword(password) },
    ],
    limits: {
      connections_per_address: 2,
      connection_rate: { window: '3s', max: 4 },
      auth_failures: { max: 3, window: '10s', lockout: '2s', delay: '200ms' },
    },
  }));

  const metric = async (sample: string) => metricValue(await metricsText(t.running.httpPort), sample);
  // Strangers are refused at once on the plaintext listener (AUTH could not identify them there), so
  // the guards are exercised where they may still connect: the STARTTLS submission listener.
  const greet = async (localAddress: string, listener = 'submission') => {
    const client = await RawSmtpClient.connect(t.running.portOf(listener), { localAddress });
    return { client, greeting: await client.reply() };
  };

  test('connections from one address: one over the limit gets 421 4.7.0 at connect; a close frees a slot', async () => {
    const a = await greet('127.0.0.5');
    const b = await greet('127.0.0.5');
    expect([a.greeting, b.greeting]).toEqual([expect.stringMatching(/^220 /), expect.stringMatching(/^220 /)]);
    const c = await greet('127.0.0.5');
    expect(c.greeting).toBe('421 4.7.0 Too many connections from [127.0.0.5] (at most 2 at once); try again later');
    await waitFor(() => c.client.isClosed, 5000, 'the refused connection to close');
    // Another address is not affected.
    const elsewhere = await greet('127.0.0.7');
    expect(elsewhere.greeting).toMatch(/^220 /);
    await elsewhere.client.quit();

    await a.client.quit();
    let d: Awaited<ReturnType<typeof greet>> | undefined;
    await waitFor(
      async () => {
        d = await greet('127.0.0.5');
        if (d.greeting?.startsWith('220')) return true;
        await d.client.quit();
        return false;
      },
      10_000,
      'the slot to be given back',
    );
    await d?.client.quit();
    await b.client.quit();
    expect(
      await metric('smarthop_rate_limited_total{client="(unknown)",limit="connections_concurrent"}'),
    ).toBeGreaterThanOrEqual(1);
  });

  test('connections per window from one address: over the rate gets 421 4.7.0 with the wait; it resets', async () => {
    for (let i = 0; i < 4; i++) {
      const { client, greeting } = await greet('127.0.0.6');
      expect(greeting).toMatch(/^220 /);
      await client.quit();
      await waitFor(() => client.isClosed, 5000, 'close');
    }
    const over = await greet('127.0.0.6');
    expect(over.greeting).toMatch(
      /^421 4\.7\.0 Connection rate limit for \[127\.0\.0\.6\]: 4 connections per 3s; try again in [1-3]s$/,
    );
    await waitFor(
      async () => {
        const next = await greet('127.0.0.6');
        await next.client.quit();
        return next.greeting?.startsWith('220') ?? false;
      },
      15_000,
      'the 3s window to reset',
    );
    expect(
      await metric('smarthop_rate_limited_total{client="(unknown)",limit="connections_3s"}'),
    ).toBeGreaterThanOrEqual(1);
  });

  test('AUTH failures lock an address out (421 4.7.0) for the cool-down; nobody else, no success slowed', async () => {
    const attacker = () =>
      openTlsSession(t.running.portOf('submission'), { localAddress: '127.0.0.2' }, 'attacker.test');
    const waiting = await attacker();
    const guessing = await attacker();
    expect(await guessing.command(plainAuth('webshop', 'guess1'))).toBe('535 5.7.8 Authentication credentials invalid');
    expect(await guessing.command(plainAuth('webshop', 'guess2'))).toBe('535 5.7.8 Authentication credentials invalid');
    expect(await guessing.command(plainAuth('webshop', 'guess3'))).toBe(
      '421 4.7.0 Too many failed authentications from [127.0.0.2]; try again in 2s',
    );
    await waitFor(() => guessing.isClosed, 5000, 'the locked-out connection to close');

    // An open session from the locked address gets no verdict on any password, even the right one.
    expect(await waiting.command(plainAuth('webshop', password))).toMatch(
      /^421 4\.7\.0 Too many failed authentications from \[127\.0\.0\.2\]; try again in [12]s$/,
    );
    // A new connection is refused at once.
    const refused = await greet('127.0.0.2', 'submission');
    expect(refused.greeting).toMatch(
      /^421 4\.7\.0 Too many failed authentications from \[127\.0\.0\.2\]; try again in [12]s$/,
    );

    // The right credentials from another address are not slowed or refused meanwhile.
    const { client: legit } = await openSession(t.running.smtpPort);
    expect(await legit.command(plainAuth('webshop', password))).toBe('235 Authentication successful');
    expect(await legit.sendMessage('shop@corp.example', ['user@example.com'], message())).toMatch(QUEUED);
    await legit.quit();

    // The cool-down ends: the same address may authenticate and relay again.
    await waitFor(
      async () => {
        const probe = await greet('127.0.0.2', 'submission');
        await probe.client.quit();
        return probe.greeting?.startsWith('220') ?? false;
      },
      15_000,
      'the 2s lockout to end',
    );
    const back = await attacker();
    expect(await back.command(plainAuth('webshop', password))).toBe('235 Authentication successful');
    expect(
      await back.sendMessage('shop@corp.example', ['user@example.com'], message({ subject: 'after lockout' })),
    ).toMatch(QUEUED);
    await back.quit();
    await waitFor(() => t.sink.messages.length === 2, 10_000, 'deliveries');

    expect(await metric('smarthop_rate_limited_total{client="(unknown)",limit="auth_lockout"}')).toBeGreaterThanOrEqual(
      2,
    );
    expect(await metric('smarthop_auth_attempts_total{result="failure"}')).toBeGreaterThanOrEqual(3);
  });

  test("a locked-out address inside a client's networks still sends its own mail; only AUTH is refused", async () => {
    const { client } = await openSession(t.running.smtpPort, { localAddress: '127.0.0.8' });
    for (let i = 0; i < 2; i++)
      expect(await client.command(plainAuth('webshop', `wrong${i}`))).toBe(
        '535 5.7.8 Authentication credentials invalid',
      );
    expect(await client.command(plainAuth('webshop', 'wrong2'))).toMatch(
      /^421 4\.7\.0 Too many failed authentications from \[127\.0\.0\.8\]/,
    );
    const again = await openSession(t.running.smtpPort, { localAddress: '127.0.0.8' });
    expect(again.greeting).toMatch(/^220 /);
    expect(await again.client.command(plainAuth('webshop', password))).toMatch(
      /^421 4\.7\.0 Too many failed authentications/,
    );
    const fresh = await openSession(t.running.smtpPort, { localAddress: '127.0.0.8' });
    expect(
      await fresh.client.sendMessage('printer@corp.example', ['user@example.com'], message({ subject: 'scan' })),
    ).toMatch(QUEUED);
    await fresh.client.quit();
    expect(await metric('smarthop_messages_received_total{client="printers"}')).toBe(1);
  });
});

describe('while the shared counters are unreachable, each refusal names the share this relay enforces', () => {
  const t = relayPerDescribe(async () => {
    // Nothing listens on this port: the relay starts on its local fallback, each limit divided by the fleet of 2.
    const redisPort = await freePort();
    return {
      clients: [{ name: 'lan', networks: ['127.0.0.1/32'], policy: 'counted' }],
      policies: { counted: { rate_limits: [{ window: '1m', messages: 4 }] } },
      limits: { connection_rate: { window: '1m', max: 4 } },
      state: {
        store: 'redis',
        redis: { url: `redis://127.0.0.1:${redisPort}`, connect_timeout: '200ms', command_timeout: '200ms' },
        fleet_size: 2,
      },
    };
  });

  test("the per-client 451 and connection-rate 421 say '2 of the fleet's 4'; a stranger is still refused", async () => {
    const { client, greeting } = await openSession(t.running.portOf('smtp'));
    expect(greeting).toMatch(/^220 /);
    expect(await client.sendMessage('app@corp.example', ['user@example.com'], message())).toMatch(QUEUED);
    expect(await client.sendMessage('app@corp.example', ['user@example.com'], message())).toMatch(QUEUED);
    expect(await client.command('MAIL FROM:<app@corp.example>')).toMatch(
      new RegExp(
        /^451 4\.7\.1 Rate limit for client lan: 2 of the fleet's 4 messages per 1m on this relay /.source +
          /while shared limits are unreachable; try again in \d+s$/.source,
      ),
    );
    await client.quit();

    const second = await openSession(t.running.portOf('smtp'));
    expect(second.greeting).toMatch(/^220 /);
    await second.client.quit();
    const third = await RawSmtpClient.connect(t.running.portOf('smtp'), { localAddress: '127.0.0.1' });
    expect(await third.reply()).toMatch(
      new RegExp(
        /^421 4\.7\.0 Connection rate limit for \[127\.0\.0\.1\]: 2 of the fleet's 4 connections per 1m /.source +
          /on this relay while shared limits are unreachable; try again in \d+s$/.source,
      ),
    );
    third.destroy();

    const stranger = await openSession(t.running.portOf('smtp'), { localAddress: '127.0.0.2' });
    expect(stranger.greeting).toBe('554 5.7.1 Access denied: [127.0.0.2] is not a permitted client');
    await waitFor(() => stranger.client.isClosed, 5000, 'the refused connection to close');
    expect(
      await metricValue(await metricsText(t.running.httpPort), 'smarthop_state_backend{backend="local_fallback"}'),
    ).toBe(1);
  });
});

describe('an AUTH lockout this relay set holds when the shared counters become unreachable', () => {
  // test/state-counters.test.ts makes CI fail without redis-server; here its absence only skips.
  const REDIS = findBinary('redis-server');
  const maybe = testUnless(REDIS ? null : '`redis-server` is not on PATH (apt-get install redis-server)');
  let dir: string;
  let sink: SmtpSink;
  let redis: TestRedis;
  let running: RunningRelay | undefined;
  const password = 'correct horse battery staple';

  beforeAll(async () => {
    if (!REDIS) return;
    dir = tempDir();
    sink = await startSink();
    redis = new TestRedis(REDIS, dir, await freePort());
    await redis.start();
    running = await startRelay(
      buildConfig(
        baseConfig(dir, [{ name: 'primary', port: sink.port }], {
          tls: makeCertificate(dir),
          listeners: [
            { name: 'submission', address: '127.0.0.1:0', tls: 'starttls', require_tls: true, auth: 'required' },
          ],
          clients: [{ name: 'webshop', username: 'webshop', password_hash: await hashPassword(password) }],
          limits: { auth_failures: { max: 2, window: '1m', lockout: '1m', delay: '0s' } },
          state: {
            store: 'redis',
            // A command slower than this counts locally: generous, so a busy test machine still counts in Redis.
            redis: { url: redis.url, connect_timeout: '200ms', command_timeout: '2s' },
            fleet_size: 2,
          },
        }),
        dir,
      ),
    );
  });

  afterAll(async () => {
    await running?.stop();
    await sink?.close();
    await redis?.stop();
    if (dir) removeDir(dir);
  });

  const greet = async (localAddress: string) => {
    const client = await RawSmtpClient.connect((running as RunningRelay).portOf('submission'), { localAddress });
    return { client, greeting: await client.reply() };
  };
  const metric = async (sample: string) => metricValue(await metricsText((running as RunningRelay).httpPort), sample);

  maybe('locked out while Redis answers, still locked out once it stops; another address may still try', async () => {
    const submission = (running as RunningRelay).portOf('submission');
    const client = await openTlsSession(submission, { localAddress: '127.0.0.2' }, 'attacker.test');
    expect(await client.command(plainAuth('webshop', 'guess1'))).toBe('535 5.7.8 Authentication credentials invalid');
    expect(await client.command(plainAuth('webshop', 'guess2'))).toMatch(
      /^421 4\.7\.0 Too many failed authentications from \[127\.0\.0\.2\]; try again in \d+s$/,
    );
    expect(await metric('smarthop_state_backend{backend="redis"}')).toBe(1);

    // Redis goes away: the relay counts locally from now on, and its local counters never saw the lockout.
    await redis.stop();
    const refused = await greet('127.0.0.2');
    expect(refused.greeting).toMatch(
      /^421 4\.7\.0 Too many failed authentications from \[127\.0\.0\.2\]; try again in \d+s$/,
    );
    await waitFor(() => refused.client.isClosed, 5000, 'the refused connection to close');
    expect(await metric('smarthop_state_backend{backend="local_fallback"}')).toBe(1);

    const other = await greet('127.0.0.3');
    expect(other.greeting).toMatch(/^220 /);
    await other.client.quit();
  });
});
