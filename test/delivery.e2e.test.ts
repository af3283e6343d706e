import { readdirSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { relayPerTest, freePort, metricsText, metricValue, waitFor, type RunningRelay } from './helpers/harness';
import { message, openSession } from './helpers/smtp-client';

/** Each test gets its own relay, spool and smart hosts: outcomes must not leak between them. */
describe('forwarding: failover, deferral and permanent failure', () => {
  const t = relayPerTest();
  const { sink, relayWith } = t;

  async function send(to: string[] = ['user@example.com'], subject = 'failover test'): Promise<string> {
    const { client } = await openSession((t.running as RunningRelay).smtpPort);
    const reply = await client.sendMessage('app@corp.example', to, message({ subject }));
    await client.quit();
    expect(reply).toMatch(/^250 2\.0\.0 Ok: queued as /);
    return (reply as string).split(' ').pop() as string;
  }

  const spoolFiles = (state: string) => readdirSync(path.join(t.dir, 'spool', state));

  /**
   * The sink holds a message once its DATA is in, a moment before the relay reads the sink's 250 and
   * counts the delivery: the metrics are read once the count is there, not at the sink's word.
   */
  async function deliveryCounted(relay: RunningRelay, smarthost = 'backup'): Promise<string> {
    let metrics = '';
    await waitFor(
      async () => {
        metrics = await metricsText(relay.httpPort);
        // Exported at 0 from the start, so the count, not the series, is what to wait for.
        return (metricValue(metrics, `smarthop_messages_delivered_total{smarthost="${smarthost}"}`) ?? 0) >= 1;
      },
      10_000,
      `the delivery to ${smarthost} counted`,
    );
    return metrics;
  }

  test('primary down (connection refused) → the backup receives it at once, and the failover is counted', async () => {
    const backup = await sink();
    const relay = await relayWith([
      { name: 'primary', port: await freePort(), priority: 10 },
      { name: 'backup', port: backup.port, priority: 20 },
    ]);
    await send();
    await waitFor(() => backup.messages.length === 1, 10_000, 'backup delivery');
    const metrics = await deliveryCounted(relay);
    expect(metricValue(metrics, 'smarthop_failovers_total{from="primary",to="backup"}')).toBe(1);
    expect(metricValue(metrics, 'smarthop_delivery_attempts_total{smarthost="primary",outcome="unreachable"}')).toBe(1);
    expect(metricValue(metrics, 'smarthop_delivery_attempts_total{smarthost="backup",outcome="delivered"}')).toBe(1);
    expect(metricValue(metrics, 'smarthop_messages_delivered_total{smarthost="backup"}')).toBe(1);
    await waitFor(() => spoolFiles('queue').length === 0, 5000, 'queue to empty');
  });

  test('with delivery.worker_thread: false the event loop sends, with the same failover and counts', async () => {
    const backup = await sink();
    const relay = await relayWith(
      [
        { name: 'primary', port: await freePort(), priority: 10 },
        { name: 'backup', port: backup.port, priority: 20 },
      ],
      { delivery: { worker_thread: false } },
    );
    await send();
    await waitFor(() => backup.messages.length === 1, 10_000, 'backup delivery');
    const metrics = await deliveryCounted(relay);
    expect(metricValue(metrics, 'smarthop_failovers_total{from="primary",to="backup"}')).toBe(1);
    expect(metricValue(metrics, 'smarthop_messages_delivered_total{smarthost="backup"}')).toBe(1);
    await waitFor(() => spoolFiles('queue').length === 0, 5000, 'queue to empty');
  });

  test('primary prefers by priority: with both up only the primary receives', async () => {
    const primary = await sink();
    const backup = await sink();
    await relayWith([
      { name: 'backup', port: backup.port, priority: 20 },
      { name: 'primary', port: primary.port, priority: 10 },
    ]);
    await send();
    await send();
    await waitFor(() => primary.messages.length === 2, 10_000, 'primary delivery');
    expect(backup.messages).toHaveLength(0);
  });

  test('primary answers 4xx → the backup receives it', async () => {
    const primary = await sink({ behaviour: { mode: 'defer' } });
    const backup = await sink();
    await relayWith([
      { name: 'primary', port: primary.port, priority: 10 },
      { name: 'backup', port: backup.port, priority: 20 },
    ]);
    await send();
    await waitFor(() => backup.messages.length === 1, 10_000, 'backup delivery');
    expect(primary.messages).toHaveLength(0);
  });

  test('primary hangs without a greeting → timeout, then the backup receives it', async () => {
    const primary = await sink({ behaviour: { mode: 'hang' } });
    const backup = await sink();
    await relayWith([
      { name: 'primary', port: primary.port, priority: 10, connect_timeout: '300ms', socket_timeout: '500ms' },
      { name: 'backup', port: backup.port, priority: 20 },
    ]);
    await send();
    await waitFor(() => backup.messages.length === 1, 10_000, 'backup delivery');
  });

  test('primary drops the connection in the middle of DATA → the backup receives it', async () => {
    const primary = await sink({ behaviour: { mode: 'drop' } });
    const backup = await sink();
    await relayWith([
      { name: 'primary', port: primary.port, priority: 10 },
      { name: 'backup', port: backup.port, priority: 20 },
    ]);
    await send();
    await waitFor(() => backup.messages.length === 1, 10_000, 'backup delivery');
    expect(primary.messages).toHaveLength(0);
  });

  test('both down → deferred with backoff (queue and metrics show it), delivered once a smart host is up', async () => {
    const primaryPort = await freePort();
    const relay = await relayWith([
      { name: 'primary', port: primaryPort, priority: 10 },
      { name: 'backup', port: await freePort(), priority: 20 },
    ]);
    const id = await send();
    await waitFor(
      async () => metricValue(await metricsText(relay.httpPort), 'smarthop_queue_messages{state="deferred"}') === 1,
      10_000,
      'deferral',
    );
    const meta = JSON.parse(readFileSync(path.join(t.dir, 'spool', 'queue', `${id}.json`), 'utf8')) as {
      attempts: number;
      recipients: { status: string; response: string }[];
    };
    expect(meta.attempts).toBeGreaterThanOrEqual(1);
    expect(meta.recipients[0].status).toBe('pending');
    expect(meta.recipients[0].response).toMatch(/ECONNREFUSED/);

    const primary = await sink({ port: primaryPort });
    await waitFor(() => primary.messages.length === 1, 10_000, 'delivery after the smart host returns');
    expect(primary.messages[0].data.toString()).toContain('Subject: failover test');
    await waitFor(() => spoolFiles('queue').length === 0, 5000, 'queue to empty');
    const metrics = await metricsText(relay.httpPort);
    expect(metricValue(metrics, 'smarthop_queue_messages{state="deferred"}')).toBe(0);
  });

  test('5xx from every smart host → the message and its DSN leave the queue into dead/ with the reason', async () => {
    const primary = await sink({ behaviour: { mode: 'reject' } });
    const backup = await sink({ behaviour: { mode: 'reject', code: 554 } });
    const relay = await relayWith([
      { name: 'primary', port: primary.port, priority: 10 },
      { name: 'backup', port: backup.port, priority: 20 },
    ]);
    const id = await send();
    // The DSN to the sender goes the same way, is refused as well, and is never bounced itself.
    await waitFor(
      () => spoolFiles('dead').length === 4 && spoolFiles('queue').length === 0,
      10_000,
      'dead-letter of the message and its DSN',
    );
    const dead = JSON.parse(readFileSync(path.join(t.dir, 'spool', 'dead', `${id}.json`), 'utf8')) as {
      dead: { reason: string; response: string };
      recipients: { status: string }[];
    };
    expect(dead.dead.reason).toBe('rejected');
    expect(dead.dead.response).toBe('554 5.7.1 Message refused by policy');
    expect(dead.recipients[0].status).toBe('failed');
    const dsnFile = spoolFiles('dead').find((name) => name.endsWith('.json') && name !== `${id}.json`) as string;
    const dsn = JSON.parse(readFileSync(path.join(t.dir, 'spool', 'dead', dsnFile), 'utf8')) as {
      dsnOf: string;
      from: string;
      recipients: { address: string }[];
    };
    expect(dsn).toMatchObject({ dsnOf: id, from: '', recipients: [{ address: 'app@corp.example' }] });
    // The files land in dead/ a moment before the count is updated.
    await waitFor(
      async () => metricValue(await metricsText(relay.httpPort), 'smarthop_queue_messages{state="dead"}') === 2,
      5000,
      'dead count',
    );
    const metrics = await metricsText(relay.httpPort);
    expect(metricValue(metrics, 'smarthop_messages_bounced_total{reason="rejected"}')).toBe(2);
    expect(metricValue(metrics, 'smarthop_delivery_attempts_total{smarthost="primary",outcome="failed"}')).toBe(2);
  });

  test('partial rejection: the accepted recipient gets one copy, only the refused one goes to the backup', async () => {
    const primary = await sink({
      rcptReply: (address) =>
        address.startsWith('refused@') ? { code: 550, message: '5.1.1 No such user here' } : null,
    });
    const backup = await sink();
    await relayWith([
      { name: 'primary', port: primary.port, priority: 10 },
      { name: 'backup', port: backup.port, priority: 20 },
    ]);
    await send(['ok@example.com', 'refused@example.com']);
    await waitFor(() => backup.messages.length === 1, 10_000, 'backup delivery');
    expect(primary.recipients()).toEqual(['ok@example.com']);
    expect(backup.recipients()).toEqual(['refused@example.com']);
    await waitFor(() => spoolFiles('queue').length === 0, 5000, 'queue to empty');
  });

  test('a message older than max_queue_lifetime is expired into dead/', async () => {
    const relay = await relayWith([{ name: 'primary', port: await freePort() }], {
      spool: {
        dir: path.join(t.dir, 'spool'),
        max_queue_lifetime: '600ms',
        retry: { initial: '200ms', max: '200ms', factor: 1 },
        min_free_disk: 0,
      },
    });
    const id = await send();
    await waitFor(() => spoolFiles('dead').includes(`${id}.json`), 10_000, 'expiry');
    const dead = JSON.parse(readFileSync(path.join(t.dir, 'spool', 'dead', `${id}.json`), 'utf8')) as {
      dead: { reason: string };
    };
    expect(dead.dead.reason).toBe('expired');
    expect(metricValue(await metricsText(relay.httpPort), 'smarthop_messages_bounced_total{reason="expired"}')).toBe(1);
  });

  test('every outcome is one JSON line in the events file', async () => {
    const primary = await sink();
    const eventsFile = path.join(t.dir, 'events.jsonl');
    const relay = await relayWith([{ name: 'primary', port: primary.port }], { events: { file: eventsFile } });
    const id = await send();
    await waitFor(() => primary.messages.length === 1, 10_000, 'delivery');
    await relay.stop();
    t.running = null;
    // The outcomes; the file also holds the smart-host `attempt` that `smarthop trace` reads.
    const events = readFileSync(eventsFile, 'utf8')
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as Record<string, unknown>)
      .filter((e) => e.type !== 'attempt');
    expect(events.map((e) => e.type)).toEqual(['received', 'delivered']);
    expect(events[1]).toMatchObject({
      type: 'delivered',
      queue_id: id,
      client: 'lan',
      from: 'app@corp.example',
      to: 'user@example.com',
      smarthost: 'primary',
      attempt: 1,
    });
    expect(String(events[1].response)).toMatch(/^250 /);
  });
});
