import { existsSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { parseConfig } from '../src/config/load';
import type { SmtpSink } from '../src/tools/sink';
import { metricsText, metricValue, relayPerTest, waitFor, type RunningRelay } from './helpers/harness';
import { message, openSession } from './helpers/smtp-client';

/**
 * Providers cap recipients per message (SES and Postmark at 50, Gmail at 100) and may refuse a
 * whole message past the cap. A smart host's `max_recipients` (50 unless set) splits a bigger
 * envelope into transactions of at most that many, one after another in the same attempt; a host
 * that still answers 452 to some recipients of a transaction it took gets them in the next one.
 */
describe('smart hosts: recipients per transaction', () => {
  const t = relayPerTest();
  const eventsFile = () => path.join(t.dir, 'events.jsonl');
  const events = () =>
    (existsSync(eventsFile()) ? readFileSync(eventsFile(), 'utf8') : '')
      .trim()
      .split('\n')
      .filter(Boolean)
      .map((line) => JSON.parse(line) as Record<string, unknown>);
  const metric = async (sample: string) => metricValue(await metricsText((t.running as RunningRelay).httpPort), sample);
  const addresses = (n: number) => Array.from({ length: n }, (_, i) => `user${i}@example.com`);

  async function send(recipients: string[]): Promise<string> {
    const { client } = await openSession((t.running as RunningRelay).smtpPort);
    const reply = await client.sendMessage('app@corp.example', recipients, message({ subject: 'to many' }));
    await client.quit();
    expect(reply).toMatch(/^250 2\.0\.0 Ok: queued as /);
    return (reply as string).split(' ').pop() as string;
  }

  const sorted = (list: string[]) => [...list].sort();
  /** The events file is written after the smart host answered: wait for the outcome lines themselves. */
  const allDelivered = (n: number) =>
    waitFor(() => events().filter((e) => e.type === 'delivered').length >= n, 10_000, `${n} delivered events`);
  const transactionSizes = (sink: SmtpSink) => sink.messages.map((m) => m.to.length);

  test('120 recipients, a host taking 50 (the max_recipients default): 50, 50 and 20 in one attempt', async () => {
    const primary = await t.sink({ maxRecipients: 50 });
    await t.relayWith([{ name: 'primary', port: primary.port }], { events: { file: eventsFile() } });
    const recipients = addresses(120);
    const id = await send(recipients);
    await waitFor(() => primary.recipients().length >= 120, 15_000, 'every recipient at the smart host');

    expect(transactionSizes(primary)).toEqual([50, 50, 20]);
    expect(sorted(primary.recipients())).toEqual(sorted(recipients));
    // The host never had to refuse anything: the relay stayed under its cap.
    expect(primary.mailCommands).toBe(3);
    await allDelivered(120);
    const delivered = events().filter((e) => e.type === 'delivered');
    expect(delivered).toHaveLength(120);
    expect(new Set(delivered.map((e) => `${String(e.queue_id)} ${String(e.attempt)}`))).toEqual(new Set([`${id} 1`]));
    expect(events().filter((e) => e.type === 'deferred' || e.type === 'bounced')).toEqual([]);
    // Three transactions, each taken whole: none partly deferred by the host's own cap.
    expect(await metric('smarthop_delivery_attempts_total{smarthost="primary",outcome="delivered"}')).toBe(3);
    expect(await metric('smarthop_delivery_attempts_total{smarthost="primary",outcome="deferred"}')).toBeUndefined();
    expect(await metric('smarthop_messages_delivered_total{smarthost="primary"}')).toBe(3);
  });

  test("max_recipients over the host's: recipients it refuses with 452 go next in the same attempt", async () => {
    const primary = await t.sink({ maxRecipients: 40 });
    // A retry schedule long enough that only the same attempt could deliver within the wait.
    await t.relayWith([{ name: 'primary', port: primary.port, max_recipients: 100 }], {
      events: { file: eventsFile() },
      spool: { dir: path.join(t.dir, 'spool'), retry: { initial: '1h', max: '1h', factor: 2 }, min_free_disk: 0 },
    });
    const recipients = addresses(90);
    await send(recipients);
    await waitFor(() => primary.recipients().length >= 90, 15_000, 'every recipient at the smart host');

    expect(transactionSizes(primary)).toEqual([40, 40, 10]);
    expect(sorted(primary.recipients())).toEqual(sorted(recipients));
    await allDelivered(90);
    expect(events().filter((e) => e.type === 'deferred' || e.type === 'bounced')).toEqual([]);
    expect(events().filter((e) => e.type === 'delivered')).toHaveLength(90);
    // The first two transactions were partly deferred (452), the last one delivered whole.
    expect(await metric('smarthop_delivery_attempts_total{smarthost="primary",outcome="deferred"}')).toBe(2);
    expect(await metric('smarthop_delivery_attempts_total{smarthost="primary",outcome="delivered"}')).toBe(1);
  });

  test('a host deferring the first transaction gets not the rest: the backup takes all, split the same', async () => {
    const primary = await t.sink({ behaviour: { mode: 'defer' } });
    const backup = await t.sink({ maxRecipients: 50 });
    await t.relayWith(
      [
        { name: 'primary', port: primary.port, priority: 10 },
        { name: 'backup', port: backup.port, priority: 20 },
      ],
      { events: { file: eventsFile() } },
    );
    const recipients = addresses(70);
    await send(recipients);
    await waitFor(() => backup.recipients().length >= 70, 15_000, 'every recipient at the backup');

    expect(primary.mailCommands).toBe(1);
    expect(transactionSizes(backup)).toEqual([50, 20]);
    expect(sorted(backup.recipients())).toEqual(sorted(recipients));
    await allDelivered(70);
    expect(await metric('smarthop_failovers_total{from="primary",to="backup"}')).toBe(1);
    expect(events().filter((e) => e.type === 'deferred' || e.type === 'bounced')).toEqual([]);
  });

  /** Retries an hour away: what arrives within a test came from the first attempt. */
  const firstAttemptOnly = () => ({
    events: { file: eventsFile() },
    spool: { dir: path.join(t.dir, 'spool'), retry: { initial: '1h', max: '1h', factor: 2 }, min_free_disk: 0 },
  });
  const settled = (n: number) =>
    waitFor(
      () => events().filter((e) => ['delivered', 'deferred', 'bounced'].includes(String(e.type))).length >= n,
      10_000,
      `${n} outcomes`,
    );

  test('a 452 4.2.2 (mailbox full) for one recipient is not resent: deferred once; two transactions', async () => {
    const primary = await t.sink({
      rcptReply: (address) => (address === 'user10@example.com' ? { code: 452, message: '4.2.2 Mailbox full' } : null),
    });
    await t.relayWith([{ name: 'primary', port: primary.port }], firstAttemptOnly());
    await send(addresses(60));
    await settled(60);

    expect(primary.mailCommands).toBe(2);
    expect(transactionSizes(primary)).toEqual([49, 10]);
    expect(
      events()
        .filter((e) => e.type === 'deferred')
        .map((e) => [e.to, e.response]),
    ).toEqual([['user10@example.com', '452 4.2.2 Mailbox full']]);
  });

  test('a recipient resent after the limit, then refused for good, bounces in the same attempt', async () => {
    const primary = await t.sink({
      maxRecipients: 2,
      rcptReply: (address) => (address === 'gone@example.com' ? { code: 550, message: '5.1.1 No such user' } : null),
    });
    await t.relayWith([{ name: 'primary', port: primary.port, max_recipients: 100 }], firstAttemptOnly());
    await send(['a@example.com', 'b@example.com', 'gone@example.com']);
    await settled(3);

    expect(
      events()
        .filter((e) => e.type === 'bounced')
        .map((e) => [e.to, e.attempt]),
    ).toEqual([['gone@example.com', 1]]);
    // Two transactions for the message (the second refused at its only RCPT), then its DSN from <>.
    await waitFor(() => primary.messages.some((m) => m.from === ''), 10_000, 'the DSN');
    expect(primary.messages.filter((m) => m.from !== '').map((m) => m.to)).toEqual([
      ['a@example.com', 'b@example.com'],
    ]);
    expect(primary.mailCommands).toBe(3);
    expect(events().filter((e) => e.type === 'deferred')).toEqual([]);
  });

  test('recipient quota: the split uses what the window has left, the rest waits (a skip, not a refusal)', async () => {
    const primary = await t.sink({ maxRecipients: 50 });
    await t.relayWith(
      [{ name: 'primary', port: primary.port, rate_limits: [{ window: '1h', recipients: 60 }] }],
      firstAttemptOnly(),
    );
    await send(addresses(120));
    await settled(120);

    expect(transactionSizes(primary)).toEqual([50, 10]);
    expect(primary.mailCommands).toBe(2);
    const deferred = events().filter((e) => e.type === 'deferred');
    expect(deferred).toHaveLength(60);
    expect(String(deferred[0].response)).toMatch(
      /^no smart host available: primary quota exhausted \(60 recipients per 1h\)/,
    );
    expect(await metric('smarthop_smarthost_quota_remaining{smarthost="primary",window="1h",unit="recipients"}')).toBe(
      0,
    );
  });

  test('max_recipients outside 1–1000 is a config error with its path', async () => {
    for (const bad of [0, 1001]) {
      const result = parseConfig(
        {
          spool: { dir: path.join(t.dir, 'spool') },
          listeners: [{ name: 'smtp', address: '127.0.0.1:0', tls: 'none' }],
          clients: [{ name: 'lan', networks: ['127.0.0.1/32'] }],
          smarthosts: [{ name: 'primary', host: '127.0.0.1', port: 25, tls: 'none', max_recipients: bad }],
        },
        t.dir,
        {},
      );
      expect(result.ok).toBe(false);
      expect(JSON.stringify(result)).toContain('smarthosts[0].max_recipients');
    }
  });
});
