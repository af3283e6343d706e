import { existsSync, readdirSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import type { SinkMessage, SmtpSink } from '../src/tools/sink';
import {
  baseConfig,
  buildConfig,
  relayPerTest,
  metricsText,
  metricValue,
  startRelay,
  waitFor,
  type RunningRelay,
} from './helpers/harness';
import { message, openSession } from './helpers/smtp-client';

/** Per-recipient outcomes and what a sender hears about a failure: an RFC 3464 DSN through the route. */
describe('per-recipient outcomes and DSNs', () => {
  const t = relayPerTest();
  const { sink, relayWith } = t;

  async function send(from: string, to: string[], subject: string): Promise<string> {
    const { client } = await openSession((t.running as RunningRelay).smtpPort);
    const reply = await client.sendMessage(from, to, message({ from: from || 'app@corp.example', subject }));
    await client.quit();
    expect(reply).toMatch(/^250 2\.0\.0 Ok: queued as /);
    return (reply as string).split(' ').pop() as string;
  }

  const spoolFiles = (state: string) => readdirSync(path.join(t.dir, 'spool', state));
  const dsns = (s: SmtpSink) => s.messages.filter((m) => m.from === '');
  const text = (m: SinkMessage) => m.data.toString('latin1');
  /** The body of the MIME part with this Content-Type (the DSN's boundary is known from its header). */
  function part(m: SinkMessage, contentType: string): string {
    const boundary = /boundary="([^"]+)"/.exec(text(m))?.[1] as string;
    const found = text(m)
      .split(`--${boundary}`)
      .find((p) => p.startsWith(`\r\nContent-Type: ${contentType}`));
    if (found === undefined) throw new Error(`no ${contentType} part`);
    return found.slice(found.indexOf('\r\n\r\n') + 4);
  }

  const nobody = (address: string) =>
    address.startsWith('gone@')
      ? { code: 550, message: '5.1.1 <gone@example.com>: Recipient address rejected: User unknown' }
      : null;

  test('only host refuses one recipient: the other gets one copy, the sender (and bounce_copy_to) a DSN', async () => {
    const provider = await sink({ rcptReply: nobody });
    const relay = await relayWith([{ name: 'provider', port: provider.port }], {
      bounce_copy_to: 'postmaster@corp.example',
    });
    const id = await send('app@corp.example', ['ok@example.com', 'gone@example.com'], 'Invoice 42');
    await waitFor(() => dsns(provider).length === 1 && spoolFiles('queue').length === 0, 10_000, 'the DSN delivered');
    // The queue is empty: every attempt is over, so no second copy can still be on its way.
    expect(provider.messages.filter((m) => m.from !== '').map((m) => m.to)).toEqual([['ok@example.com']]);

    const [dsn] = dsns(provider);
    expect(dsn.to).toEqual(['app@corp.example', 'postmaster@corp.example']);
    expect(text(dsn)).toMatch(
      new RegExp(
        /^From: Mail Delivery System <MAILER-DAEMON@relay\.test>\r\nTo: <app@corp\.example>\r\n/.source +
          /Subject: Undelivered Mail Returned to Sender\r\n/.source,
      ),
    );
    expect(text(dsn)).toMatch(/\r\nContent-Type: multipart\/report; report-type=delivery-status; boundary="[^"]+"\r\n/);
    expect(part(dsn, 'message/delivery-status').split('\r\n')).toEqual([
      'Reporting-MTA: dns; relay.test',
      `X-Smarthop-Queue-ID: ${id}`,
      expect.stringMatching(/^Arrival-Date: \w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d \+0000$/),
      '',
      'Final-Recipient: rfc822; gone@example.com',
      'Action: failed',
      'Status: 5.1.1',
      'Remote-MTA: dns; 127.0.0.1',
      'Diagnostic-Code: smtp; 550 5.1.1 <gone@example.com>: Recipient address rejected: User unknown',
      '',
      '',
    ]);
    const headers = part(dsn, 'text/rfc822-headers');
    expect(headers).toMatch(/^Received: from app\.test \(client lan\)\r\n/);
    expect(headers).toContain('Subject: Invoice 42\r\n');
    expect(headers).not.toContain('Hello from a legacy app.');
    expect(part(dsn, 'text/plain')).toContain(
      '<gone@example.com>: 550 5.1.1 <gone@example.com>: Recipient address rejected: User unknown',
    );

    // The original is in dead/ with the reason; the DSN itself was delivered and removed.
    const dead = JSON.parse(readFileSync(path.join(t.dir, 'spool', 'dead', `${id}.json`), 'utf8')) as {
      dead: { reason: string };
      recipients: { address: string; status: string }[];
    };
    expect(dead.dead.reason).toBe('rejected');
    expect(dead.recipients.map((r) => [r.address, r.status])).toEqual([
      ['ok@example.com', 'delivered'],
      ['gone@example.com', 'failed'],
    ]);
    expect(spoolFiles('dead')).toHaveLength(2);
    const metrics = await metricsText(relay.httpPort);
    expect(metricValue(metrics, 'smarthop_messages_bounced_total{reason="rejected"}')).toBe(1);
  });

  test("a DSN's own outcome events name the message it reports on (dsn_of)", async () => {
    const provider = await sink({ rcptReply: nobody });
    const eventsFile = path.join(t.dir, 'events.jsonl');
    await relayWith([{ name: 'provider', port: provider.port }], { events: { file: eventsFile } });
    const id = await send('app@corp.example', ['gone@example.com'], 'linked');
    // The events file is written behind the outcomes; it may not exist yet at the first look.
    const events = () =>
      (existsSync(eventsFile) ? readFileSync(eventsFile, 'utf8') : '')
        .trim()
        .split('\n')
        .filter(Boolean)
        .map((line) => JSON.parse(line) as Record<string, unknown>);
    await waitFor(() => events().some((e) => e.type === 'delivered' && e.from === ''), 10_000, "the DSN's delivery");
    const dsnDelivered = events().find((e) => e.type === 'delivered' && e.from === '');
    expect(dsnDelivered).toMatchObject({ dsn_of: id, to: 'app@corp.example' });
    expect(dsnDelivered?.queue_id).not.toBe(id);
    // The original's own lines carry no dsn_of.
    expect(
      events()
        .filter((e) => e.queue_id === id)
        .every((e) => !('dsn_of' in e)),
    ).toBe(true);
  });

  test('5xx from one host goes to the next once; a recipient the next host accepts is not bounced', async () => {
    const primary = await sink({ rcptReply: nobody });
    const backup = await sink();
    await relayWith([
      { name: 'primary', port: primary.port, priority: 10 },
      { name: 'backup', port: backup.port, priority: 20 },
    ]);
    await send('app@corp.example', ['gone@example.com'], 'policy differs');
    await waitFor(() => backup.messages.length === 1, 10_000, 'the backup accepting it');
    expect(backup.messages[0].to).toEqual(['gone@example.com']);
    await waitFor(() => spoolFiles('queue').length === 0, 5000, 'queue to empty');
    expect(spoolFiles('dead')).toHaveLength(0);
    expect(dsns(primary)).toHaveLength(0);
  });

  test('a message from the null sender <> that fails gets no DSN (nobody to send it to)', async () => {
    const provider = await sink({ behaviour: { mode: 'reject' } });
    const relay = await relayWith([{ name: 'provider', port: provider.port }]);
    const id = await send('', ['user@example.com'], 'from nobody');
    await waitFor(() => spoolFiles('dead').includes(`${id}.json`), 10_000, 'dead-letter');
    await waitFor(
      async () => metricValue(await metricsText(relay.httpPort), 'smarthop_queue_messages{state="dead"}') === 1,
      5000,
      'dead count',
    );
    expect(spoolFiles('queue')).toHaveLength(0);
    expect(provider.mailCommands).toBe(1);
  });

  test('a failed message from <> gets no DSN even with bounce_copy_to set (no bounce loops, no copies)', async () => {
    const provider = await sink({ behaviour: { mode: 'reject' } });
    await relayWith([{ name: 'provider', port: provider.port }], { bounce_copy_to: 'postmaster@corp.example' });
    const id = await send('', ['user@example.com'], 'from nobody, with a copy address');
    await waitFor(() => spoolFiles('dead').includes(`${id}.json`), 10_000, 'dead-letter');
    // A DSN or a copy would be on disk in queue/ before the original moves to dead/.
    expect(spoolFiles('queue')).toHaveLength(0);
    expect(provider.mailCommands).toBe(1);
  });

  test('max_queue_lifetime holds when the next attempt is later (a 1h breaker cooldown): expired on time', async () => {
    const provider = await sink({ behaviour: { mode: 'defer' } });
    const relay = await relayWith(
      [{ name: 'provider', port: provider.port, breaker: { failures: 1, cooldown: '1h' } }],
      {
        spool: {
          dir: path.join(t.dir, 'spool'),
          max_queue_lifetime: '1s',
          retry: { initial: '1h', max: '1h', factor: 2 },
          min_free_disk: 0,
        },
      },
    );
    const id = await send('app@corp.example', ['user@example.com'], 'expires on time');
    await waitFor(() => provider.mailCommands >= 1, 5_000, 'the first attempt');
    // The host now refuses connections: the breaker opens for an hour, and the retry schedule says an hour too.
    await provider.close();
    await waitFor(
      () => spoolFiles('dead').includes(`${id}.json`),
      5_000,
      'expiry at max_queue_lifetime, not an hour later',
    );
    expect(metricValue(await metricsText(relay.httpPort), 'smarthop_messages_bounced_total{reason="expired"}')).toBe(1);
  });

  test('max_queue_lifetime: a recipient still deferred expires into dead/; the sender gets a 4.4.7 DSN', async () => {
    const provider = await sink({
      rcptReply: (address) =>
        address.startsWith('slow@') ? { code: 451, message: '4.2.2 Mailbox full, try later' } : null,
    });
    const eventsFile = path.join(t.dir, 'events.jsonl');
    const relay = await relayWith([{ name: 'provider', port: provider.port }], {
      spool: {
        dir: path.join(t.dir, 'spool'),
        // Long enough for the first attempt to end (deferred) before it, on a loaded machine too: an
        // attempt that ends after the lifetime expires the recipient at once, without a deferral.
        max_queue_lifetime: '2500ms',
        retry: { initial: '200ms', max: '200ms', factor: 1 },
        min_free_disk: 0,
      },
      events: { file: eventsFile },
    });
    const id = await send('app@corp.example', ['slow@example.com'], 'will expire');
    await waitFor(() => dsns(provider).length === 1, 10_000, 'the expiry DSN');
    const [dsn] = dsns(provider);
    expect(dsn.to).toEqual(['app@corp.example']);
    expect(text(dsn)).toContain('\r\nSubject: Undelivered Mail Returned to Sender (delivery time expired)\r\n');
    expect(part(dsn, 'message/delivery-status')).toContain(
      [
        'Final-Recipient: rfc822; slow@example.com',
        'Action: failed',
        'Status: 4.4.7',
        'Remote-MTA: dns; 127.0.0.1',
        'Diagnostic-Code: smtp; 451 4.2.2 Mailbox full, try later',
      ].join('\r\n'),
    );
    expect(part(dsn, 'text/rfc822-headers')).toContain('Subject: will expire\r\n');
    await waitFor(
      () => spoolFiles('dead').includes(`${id}.json`) && spoolFiles('queue').length === 0,
      5000,
      'dead-letter',
    );
    const dead = JSON.parse(readFileSync(path.join(t.dir, 'spool', 'dead', `${id}.json`), 'utf8')) as {
      dead: { reason: string; response: string };
    };
    expect(dead.dead).toMatchObject({ reason: 'expired', response: '451 4.2.2 Mailbox full, try later' });
    expect(metricValue(await metricsText(relay.httpPort), 'smarthop_messages_bounced_total{reason="expired"}')).toBe(1);
    await relay.stop();
    t.running = null;
    const types = readFileSync(eventsFile, 'utf8')
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as { type: string; queue_id: string })
      .filter((e) => e.queue_id === id)
      .map((e) => e.type);
    expect(types[0]).toBe('received');
    expect(types[types.length - 1]).toBe('expired');
    expect(types.filter((t) => t === 'deferred').length).toBeGreaterThanOrEqual(1);
  });

  test('a DSN is queued like any other message: deferred, it survives a restart and is delivered after', async () => {
    let senderMailbox: 'full' | 'ok' = 'full';
    const provider = await sink({
      rcptReply: (address) => {
        if (address.startsWith('gone@')) return { code: 550, message: '5.1.1 No such user' };
        if (address === 'app@corp.example' && senderMailbox === 'full')
          return { code: 452, message: '4.2.2 Mailbox full' };
        return null;
      },
    });
    const config = buildConfig(baseConfig(t.dir, [{ name: 'provider', port: provider.port }]), t.dir);
    t.running = await startRelay(config);
    const id = await send('app@corp.example', ['gone@example.com'], 'bounce me');
    const queuedDsn = () =>
      spoolFiles('queue')
        .filter((n) => n.endsWith('.json'))
        .map(
          (n) =>
            JSON.parse(readFileSync(path.join(t.dir, 'spool', 'queue', n), 'utf8')) as {
              dsnOf?: string;
              attempts: number;
            },
        );
    await waitFor(
      () => queuedDsn().some((m) => m.dsnOf === id && m.attempts >= 1) && spoolFiles('dead').includes(`${id}.json`),
      10_000,
      'the DSN deferred, the original dead',
    );
    await t.running.stop();
    senderMailbox = 'ok';
    t.running = await startRelay(config);
    await waitFor(() => dsns(provider).length === 1, 10_000, 'the recovered DSN delivered');
    expect(dsns(provider)[0].to).toEqual(['app@corp.example']);
    await waitFor(() => spoolFiles('queue').length === 0, 5000, 'queue to empty');
  });
});
