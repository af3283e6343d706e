import { existsSync, readFileSync, statSync, truncateSync } from 'node:fs';
import * as path from 'node:path';
import type { SmtpSink } from '../src/tools/sink';
import {
  freePort,
  relayPerTest,
  makeCertificateAuthority,
  metricsText,
  metricValue,
  TokenEndpoint,
  waitFor,
  type RunningRelay,
} from './helpers/harness';
import { message, openSession } from './helpers/smtp-client';

/** Selection (priority, weight, breaker, quota) and transport (TLS, XOAUTH2) against real sinks. */
describe('smart hosts: selection and transport', () => {
  const t = relayPerTest();
  const { sink, relayWith } = t;

  async function send(subject = 'smart host test'): Promise<string> {
    const { client } = await openSession((t.running as RunningRelay).smtpPort);
    const reply = await client.sendMessage('app@corp.example', ['user@example.com'], message({ subject }));
    await client.quit();
    expect(reply).toMatch(/^250 2\.0\.0 Ok: queued as /);
    return (reply as string).split(' ').pop() as string;
  }

  const metric = async (sample: string) => metricValue(await metricsText((t.running as RunningRelay).httpPort), sample);
  const delivered = (...s: SmtpSink[]) => s.reduce((sum, x) => sum + x.messages.length, 0);
  const subjectOf = (data: Buffer) => /^Subject: (.*)$/m.exec(data.toString('latin1'))?.[1]?.trim();
  // The events file is written behind the outcomes: until its first line it may not exist.
  const events = (file: string) =>
    (existsSync(file) ? readFileSync(file, 'utf8') : '')
      .trim()
      .split('\n')
      .filter(Boolean)
      .map((line) => JSON.parse(line) as Record<string, unknown>);

  test('equal priorities share by weight, exactly (smooth weighted round robin); lower priorities: none', async () => {
    const heavy = await sink();
    const light = await sink();
    const backup = await sink();
    await relayWith([
      { name: 'heavy', port: heavy.port, priority: 10, weight: 3 },
      { name: 'light', port: light.port, priority: 10, weight: 1 },
      { name: 'backup', port: backup.port, priority: 20 },
    ]);
    for (let i = 0; i < 8; i++) await send(`weighted ${i}`);
    await waitFor(() => delivered(heavy, light, backup) === 8, 15_000, 'eight deliveries');
    expect([heavy.messages.length, light.messages.length, backup.messages.length]).toEqual([6, 2, 0]);
  });

  test('failover follows priority: the first host down, the second deferring → the third receives it', async () => {
    const second = await sink({ behaviour: { mode: 'defer' } });
    const third = await sink();
    await relayWith([
      { name: 'third', port: third.port, priority: 30 },
      { name: 'first', port: await freePort(), priority: 10 },
      { name: 'second', port: second.port, priority: 20 },
    ]);
    await send();
    await waitFor(() => third.messages.length === 1, 10_000, 'delivery by the third host');
    expect(await metric('smarthop_failovers_total{from="first",to="second"}')).toBe(1);
    expect(await metric('smarthop_failovers_total{from="second",to="third"}')).toBe(1);
    expect(second.mailCommands).toBe(1);
  });

  test('breaker: connection failures open it (skipped, up=0); after cooldown a probe closes it (up=1)', async () => {
    const primaryPort = await freePort();
    const backup = await sink();
    await relayWith([
      { name: 'primary', port: primaryPort, priority: 10, breaker: { failures: 2, cooldown: '1s' } },
      { name: 'backup', port: backup.port, priority: 20 },
    ]);
    expect(await metric('smarthop_smarthost_up{smarthost="primary"}')).toBe(1);
    for (let i = 1; i <= 2; i++) {
      await send();
      await waitFor(() => backup.messages.length === i, 10_000, `failover delivery ${i}`);
    }
    expect(await metric('smarthop_smarthost_up{smarthost="primary"}')).toBe(0);
    expect(await metric('smarthop_delivery_attempts_total{smarthost="primary",outcome="unreachable"}')).toBe(2);

    // Open: the primary is not even tried.
    await send();
    await waitFor(() => backup.messages.length === 3, 10_000, 'delivery while the breaker is open');
    expect(await metric('smarthop_delivery_attempts_total{smarthost="primary",outcome="unreachable"}')).toBe(2);
    expect(await metric('smarthop_failovers_total{from="primary",to="backup"}')).toBe(2);

    // The primary comes back; once the cooldown is over the next message is the probe, and it closes the breaker.
    const primary = await sink({ port: primaryPort });
    let sent = 3;
    await waitFor(
      async () => {
        if (primary.messages.length > 0) return true;
        if (delivered(primary, backup) === sent) {
          await send();
          sent++;
        }
        return false;
      },
      15_000,
      'a probe delivery to the primary',
    );
    await waitFor(
      async () => (await metric('smarthop_smarthost_up{smarthost="primary"}')) === 1,
      5000,
      'breaker closed',
    );
    await send();
    await waitFor(() => primary.messages.length === 2, 10_000, 'delivery to the primary after the breaker closed');
    expect(await metric('smarthop_delivery_attempts_total{smarthost="primary",outcome="unreachable"}')).toBe(2);
  });

  test('a queue file shorter than its metadata is never sent short, not failed over; held against spool', async () => {
    const primary = await sink({ behaviour: { mode: 'defer' } });
    const backup = await sink({ behaviour: { mode: 'defer' } });
    const eventsFile = path.join(t.dir, 'events.jsonl');
    await relayWith(
      [
        { name: 'primary', port: primary.port, priority: 10, breaker: { failures: 1, cooldown: '1h' } },
        { name: 'backup', port: backup.port, priority: 20 },
      ],
      { events: { file: eventsFile } },
    );
    const id = await send('cut short on disk');
    // The first attempt is deferred by both, which writes the state beside the file: from then on the file
    // is only the message.
    const stateFile = path.join(t.dir, 'spool', 'queue', `${id}.json`);
    await waitFor(() => existsSync(stateFile), 10_000, 'the deferral written to the spool');
    const file = path.join(t.dir, 'spool', 'queue', `${id}.eml`);
    const { size } = JSON.parse(readFileSync(stateFile, 'utf8')) as { size: number };
    expect(statSync(file).size).toBeGreaterThan(size);
    truncateSync(file, 40);
    const backupTransactions = backup.mailCommands;
    primary.behaviour = { mode: 'accept' };
    backup.behaviour = { mode: 'accept' };
    const shortAttempt = () =>
      events(eventsFile).find((e) => e.type === 'deferred' && String(e.response).includes('not sent short'));
    await waitFor(() => shortAttempt() !== undefined, 10_000, 'an attempt from the short file');

    expect(shortAttempt()).toMatchObject({
      smarthost: 'primary',
      response: `the queue file holds 40 of the message's ${size} bytes; not sent short`,
    });
    // The smart host got a transaction that never ended with its final ".", so nothing was delivered,
    expect(primary.messages).toHaveLength(0);
    // and the backup was not offered the same damaged file.
    expect(backup.mailCommands).toBe(backupTransactions);
    expect(backup.messages).toHaveLength(0);
    // One connection failure would have opened the primary's breaker; a damaged queue file is not one.
    expect(await metric('smarthop_smarthost_up{smarthost="primary"}')).toBe(1);
    expect((await metric('smarthop_delivery_attempts_total{smarthost="primary",outcome="unreachable"}')) ?? 0).toBe(0);
    expect(existsSync(file)).toBe(true);
  });

  test("a message over a host's EHLO SIZE is not sent to it: the next host takes it; breaker untouched", async () => {
    const small = await sink({ maxSize: 4096 });
    const large = await sink();
    await relayWith([
      { name: 'small', port: small.port, priority: 10, breaker: { failures: 1, cooldown: '1h' } },
      { name: 'large', port: large.port, priority: 20 },
    ]);
    const { client } = await openSession((t.running as RunningRelay).smtpPort);
    expect(
      await client.sendMessage(
        'app@corp.example',
        ['user@example.com'],
        message({ subject: 'too big for small', body: 'x'.repeat(8000) }),
      ),
    ).toMatch(/^250 /);
    // Under the limit, and its size is declared: the small host takes it.
    expect(await client.sendMessage('app@corp.example', ['user@example.com'], message({ subject: 'fits' }))).toMatch(
      /^250 /,
    );
    await client.quit();

    await waitFor(() => delivered(small, large) === 2, 10_000, 'both delivered');
    expect(large.messages.map((m) => subjectOf(m.data))).toEqual(['too big for small']);
    expect(small.messages.map((m) => subjectOf(m.data))).toEqual(['fits']);
    // The big one never got as far as a MAIL FROM at the small host.
    expect(small.mailCommands).toBe(1);
    expect(await metric('smarthop_smarthost_up{smarthost="small"}')).toBe(1);
    expect(await metric('smarthop_delivery_attempts_total{smarthost="small",outcome="failed"}')).toBe(1);
    expect(await metric('smarthop_delivery_attempts_total{smarthost="small",outcome="unreachable"}')).toBeUndefined();
  });

  test('BODY=8BITMIME is declared to a host that offers it, and a raw 8-bit body arrives byte for byte', async () => {
    const primary = await sink();
    await relayWith([{ name: 'primary', port: primary.port }]);
    const body = 'Grüße aus Köln, Москва\r\n';
    const { client } = await openSession((t.running as RunningRelay).smtpPort);
    expect(
      await client.sendMessage(
        'app@corp.example',
        ['user@example.com'],
        Buffer.from(message({ subject: 'eight bit', body }), 'utf8'),
      ),
    ).toMatch(/^250 /);
    await client.quit();
    await waitFor(() => primary.messages.length === 1, 10_000, 'the delivery');
    expect(primary.messages[0].bodyType).toBe('8bitmime');
    expect(primary.messages[0].data.includes(Buffer.from(body, 'utf8'))).toBe(true);
  });

  test('a message larger than every host takes bounces at once (552 5.3.4); no host was sent its bytes', async () => {
    const small = await sink({ maxSize: 4096 });
    const eventsFile = path.join(t.dir, 'events.jsonl');
    await relayWith([{ name: 'small', port: small.port }], { events: { file: eventsFile } });
    await send();
    const { client } = await openSession((t.running as RunningRelay).smtpPort);
    expect(
      await client.sendMessage(
        'app@corp.example',
        ['user@example.com'],
        message({ subject: 'too big everywhere', body: 'x'.repeat(8000) }),
      ),
    ).toMatch(/^250 /);
    await client.quit();

    const bounced = () => events(eventsFile).find((e) => e.type === 'bounced');
    await waitFor(() => bounced() !== undefined, 10_000, 'the bounce');
    expect(bounced()).toMatchObject({ smarthost: 'small', attempt: 1 });
    expect(String(bounced()?.response)).toMatch(
      /^552 5\.3\.4 Message of \d+ bytes is larger than the smart host takes \(its EHLO SIZE is 4096\)$/,
    );
    // The DSN (small) reaches the same host; the big message's bytes never did.
    await waitFor(() => small.messages.some((m) => m.from === ''), 10_000, 'the DSN');
    expect(small.messages.filter((m) => m.from !== '').map((m) => subjectOf(m.data))).toEqual(['smart host test']);
  });

  test('quota: an exhausted host is skipped for the next one until its window frees, then takes traffic', async () => {
    const primary = await sink();
    const backup = await sink();
    await relayWith([
      {
        name: 'primary',
        port: primary.port,
        priority: 10,
        rate_limits: [
          { window: '3s', messages: 2 },
          { window: '1d', recipients: 1000 },
        ],
      },
      { name: 'backup', port: backup.port, priority: 20 },
    ]);
    const remaining = (window: string, unit: string) =>
      metric(`smarthop_smarthost_quota_remaining{smarthost="primary",window="${window}",unit="${unit}"}`);
    expect(await remaining('3s', 'messages')).toBe(2);
    for (let i = 1; i <= 3; i++) {
      await send(`quota ${i}`);
      await waitFor(() => delivered(primary, backup) === i, 10_000, `delivery ${i}`);
    }
    expect([primary.messages.length, backup.messages.length]).toEqual([2, 1]);
    expect(await remaining('3s', 'messages')).toBe(0);
    expect(await remaining('1d', 'recipients')).toBe(998);
    // Skipping for quota is not a failure: no attempt, no breaker.
    expect(await metric('smarthop_smarthost_up{smarthost="primary"}')).toBe(1);

    await waitFor(async () => (await remaining('3s', 'messages')) === 2, 10_000, 'the quota window to free');
    await send('quota 4');
    await waitFor(() => primary.messages.length === 3, 10_000, 'the primary taking traffic again');
    expect(backup.messages).toHaveLength(1);
  });

  test('quota: every host exhausted, the message waits (no attempt, no failure), goes when one frees', async () => {
    const primary = await sink();
    const eventsFile = path.join(t.dir, 'events.jsonl');
    await relayWith([{ name: 'primary', port: primary.port, rate_limits: [{ window: '2s', messages: 1 }] }], {
      events: { file: eventsFile },
    });
    const first = await send('first');
    const second = await send('second');
    await waitFor(() => primary.messages.length === 2, 15_000, 'both deliveries');
    expect(primary.messages.map((m) => m.from)).toEqual(['app@corp.example', 'app@corp.example']);
    await (t.running as RunningRelay).stop();
    t.running = null;
    const log = events(eventsFile);
    const waited = [first, second].find((id) => log.some((e) => e.type === 'deferred' && e.queue_id === id)) as string;
    expect(waited).toBeDefined();
    const deferral = log.find((e) => e.type === 'deferred' && e.queue_id === waited) as Record<string, unknown>;
    expect(String(deferral.response)).toMatch(
      /^no smart host available: primary quota exhausted \(1 messages per 2s\) until \d{4}-/,
    );
    expect(deferral.attempt).toBe(0);
    expect(log.find((e) => e.type === 'delivered' && e.queue_id === waited)).toMatchObject({
      attempt: 1,
      smarthost: 'primary',
    });
    expect(log.some((e) => e.type === 'bounced' || e.type === 'expired')).toBe(false);
  });

  test('starttls required: a smart host that does not offer it gets nothing in clear, not even MAIL FROM', async () => {
    const plain = await sink();
    await relayWith([{ name: 'primary', port: plain.port, tls: 'starttls' }]);
    const id = await send();
    await waitFor(
      async () => (await metric('smarthop_delivery_attempts_total{smarthost="primary",outcome="unreachable"}')) === 1,
      10_000,
      'the failed attempt',
    );
    await waitFor(async () => (await metric('smarthop_queue_messages{state="deferred"}')) === 1, 5000, 'deferral');
    expect(plain.mailCommands).toBe(0);
    expect(plain.messages).toHaveLength(0);
    const meta = JSON.parse(readFileSync(path.join(t.dir, 'spool', 'queue', `${id}.json`), 'utf8')) as {
      recipients: { status: string; response: string }[];
    };
    expect(meta.recipients[0]).toMatchObject({ status: 'pending' });
    expect(meta.recipients[0].response).toMatch(/^ETLS: .*STARTTLS/);
  });

  test('TLS, private CA: verified with `ca`, else refused (nothing sent); tls_verify: false if written', async () => {
    const pki = makeCertificateAuthority(t.dir);
    const tls = { key: readFileSync(pki.key), cert: readFileSync(pki.cert) };
    const trusted = await sink({ tls });
    const untrusted = await sink({ tls });
    const unverified = await sink({ tls });
    const implicit = await sink({ tls: { ...tls, implicit: true } });
    const onlyUntrusted = await sink({ tls });
    await relayWith(
      [
        { name: 'untrusted', port: untrusted.port, tls: 'starttls', priority: 10 },
        { name: 'trusted', port: trusted.port, tls: 'starttls', ca: path.relative(t.dir, pki.ca), priority: 20 },
        { name: 'unverified', port: unverified.port, tls: 'starttls', tls_verify: false },
        { name: 'implicit', port: implicit.port, tls: 'implicit', ca: pki.ca },
        { name: 'only-untrusted', port: onlyUntrusted.port, tls: 'starttls' },
      ],
      {
        routes: {
          default: { smarthosts: ['untrusted', 'trusted'] },
          unverified: { smarthosts: ['unverified'] },
          implicit: { smarthosts: ['implicit'] },
          untrusted: { smarthosts: ['only-untrusted'] },
        },
        clients: [
          { name: 'lan', networks: ['127.0.0.1/32'] },
          { name: 'lan2', networks: ['127.0.0.2/32'], policy: 'p2' },
          { name: 'lan3', networks: ['127.0.0.3/32'], policy: 'p3' },
          { name: 'lan4', networks: ['127.0.0.4/32'], policy: 'p4' },
        ],
        policies: { p2: { route: 'unverified' }, p3: { route: 'implicit' }, p4: { route: 'untrusted' } },
      },
    );
    await send();
    await waitFor(() => trusted.messages.length === 1, 10_000, 'delivery over verified STARTTLS');
    expect(trusted.messages[0].secure).toBe(true);
    expect(untrusted.mailCommands).toBe(0);
    expect(await metric('smarthop_failovers_total{from="untrusted",to="trusted"}')).toBe(1);

    const sendFrom = async (address: string) => {
      const { client } = await openSession((t.running as RunningRelay).smtpPort, { localAddress: address });
      const reply = await client.sendMessage('app@corp.example', ['user@example.com'], message());
      await client.quit();
      expect(reply).toMatch(/^250 2\.0\.0 Ok: queued as /);
      return (reply as string).split(' ').pop() as string;
    };
    for (const [address, target] of [
      ['127.0.0.2', unverified],
      ['127.0.0.3', implicit],
    ] as const) {
      await sendFrom(address);
      await waitFor(() => target.messages.length === 1, 10_000, `delivery via ${address}`);
      expect(target.messages[0].secure).toBe(true);
    }

    // With no other host, the unverifiable certificate leaves the message deferred, and it says why.
    const id = await sendFrom('127.0.0.4');
    await waitFor(
      async () =>
        (await metric('smarthop_delivery_attempts_total{smarthost="only-untrusted",outcome="unreachable"}')) === 1,
      10_000,
      'the refused handshake',
    );
    await waitFor(async () => (await metric('smarthop_queue_messages{state="deferred"}')) === 1, 5000, 'deferral');
    const meta = JSON.parse(readFileSync(path.join(t.dir, 'spool', 'queue', `${id}.json`), 'utf8')) as {
      recipients: { status: string; response: string }[];
    };
    expect(meta.recipients[0].status).toBe('pending');
    expect(meta.recipients[0].response).toBe('UNABLE_TO_VERIFY_LEAF_SIGNATURE: unable to verify the first certificate');
    expect(onlyUntrusted.mailCommands).toBe(0);
  });

  test('XOAUTH2 client credentials: secret from ${ENV}, token fetched once, cached, renewed when refused', async () => {
    const pki = makeCertificateAuthority(t.dir);
    const endpoint = new TokenEndpoint({
      clientId: 'relay-app',
      clientSecret: 'from-the-env',
      scope: 'https://outlook.office365.com/.default',
    });
    await endpoint.listen();
    try {
      // token-1 was revoked at the provider before its expiry: the relay must ask for a new one.
      const provider = await sink({
        tls: { key: readFileSync(pki.key), cert: readFileSync(pki.cert) },
        xoauth2: { user: 'relay@corp.example', validToken: (t) => endpoint.issued.has(t) && t !== 'token-1' },
      });
      await relayWith(
        [
          {
            name: 'm365',
            port: provider.port,
            tls: 'starttls',
            ca: pki.ca,
            auth: {
              type: 'oauth2',
              user: 'relay@corp.example',
              token_url: endpoint.url,
              client_id: 'relay-app',
              client_secret: '${M365_CLIENT_SECRET}',
              scope: 'https://outlook.office365.com/.default',
            },
          },
        ],
        {},
        { M365_CLIENT_SECRET: 'from-the-env' },
      );
      await send('first');
      await waitFor(() => provider.messages.length === 1, 10_000, 'first delivery');
      await send('second');
      await waitFor(() => provider.messages.length === 2, 10_000, 'second delivery');
      expect(provider.messages.map((m) => m.authUser)).toEqual(['relay@corp.example', 'relay@corp.example']);
      expect(provider.tokensSeen.slice(0, 2)).toEqual(['token-1', 'token-2']);
      expect(new Set(provider.tokensSeen.slice(1))).toEqual(new Set(['token-2']));
      expect(endpoint.requests).toHaveLength(2);
      expect(endpoint.requests[0].get('client_secret')).toBe('from-the-env');
    } finally {
      await endpoint.close();
    }
  });
});
