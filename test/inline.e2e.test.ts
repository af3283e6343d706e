import { readdirSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import {
  relayPerTest,
  freePort,
  metricsText,
  metricValue,
  waitFor,
  type RunningRelay,
  type SmartHostSpec,
} from './helpers/harness';
import { message, openSession } from './helpers/smtp-client';

/**
 * `delivery: inline`: the relay answers DATA only after trying the smart hosts (the message already
 * on disk): 2xx → 250, 5xx from every host → that 5xx, anything else → 250 and queued.
 */
describe('inline delivery verdict', () => {
  const t = relayPerTest();
  const { sink } = t;

  /**
   * The default inline_timeout is far above what an attempt takes, so that on a loaded machine the
   * verdict is still the attempt's and never the timeout's (both answer 250 when delivered).
   */
  function relayWith(
    hosts: SmartHostSpec[],
    inlineTimeout = '20s',
    overrides: Record<string, unknown> = {},
  ): Promise<RunningRelay> {
    return t.relayWith(hosts, {
      listeners: [
        {
          name: 'app',
          address: '127.0.0.1:0',
          tls: 'none',
          auth: 'optional',
          delivery: 'inline',
          inline_timeout: inlineTimeout,
        },
      ],
      events: { file: path.join(t.dir, 'events.jsonl') },
      ...overrides,
    });
  }

  async function send(to: string[] = ['user@example.com']): Promise<string | null> {
    const { client } = await openSession((t.running as RunningRelay).smtpPort);
    const reply = await client.sendMessage('app@corp.example', to, message({ subject: 'inline' }));
    await client.quit();
    return reply;
  }

  const spoolFiles = (state: string) => readdirSync(path.join(t.dir, 'spool', state));
  const metric = async (sample: string) => metricValue(await metricsText((t.running as RunningRelay).httpPort), sample);

  test('2xx: the reply comes after the smart host took it, and nothing stays queued', async () => {
    const provider = await sink();
    await relayWith([{ name: 'provider', port: provider.port }]);
    const reply = await send();
    expect(reply).toMatch(/^250 2\.0\.0 Ok: queued as [0-9A-Z]+$/);
    // Inline: delivered before the answer, not after.
    expect(provider.messages).toHaveLength(1);
    await waitFor(() => spoolFiles('queue').length === 0, 5000, 'queue to empty');
  });

  test('5xx from every eligible host: the app gets that 5xx, the message is removed, no DSN', async () => {
    const primary = await sink({
      rcptReply: () => ({ code: 550, message: '5.1.1 <user@example.com>: Recipient address rejected: User unknown' }),
    });
    const backup = await sink({ behaviour: { mode: 'reject', code: 554 } });
    await relayWith([
      { name: 'primary', port: primary.port, priority: 10 },
      { name: 'backup', port: backup.port, priority: 20 },
    ]);
    const reply = await send();
    // The last refusal is the verdict (here the backup's, after the primary's 550).
    expect(reply).toBe('554 5.7.1 Message refused by policy');
    expect(primary.mailCommands).toBe(1);
    expect(backup.mailCommands).toBe(1);
    expect(spoolFiles('queue')).toHaveLength(0);
    expect(spoolFiles('dead')).toHaveLength(0);
    expect(primary.messages).toHaveLength(0);
    expect(await metric('smarthop_messages_rejected_total{client="lan",reason="smarthost_rejected"}')).toBe(1);
    expect(await metric('smarthop_messages_bounced_total{reason="rejected"}')).toBe(0);
    await (t.running as RunningRelay).stop();
    t.running = null;
    const types = readFileSync(path.join(t.dir, 'events.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((line) => (JSON.parse(line) as { type: string }).type);
    // The outcomes (the smart-host `attempt` lines are there for `smarthop trace`).
    expect(types.filter((type) => type !== 'attempt')).toEqual(['received', 'rejected']);
  });

  test('5xx for one recipient, 2xx for the other: 250 (the app cannot be told half), a DSN for the one', async () => {
    const provider = await sink({
      rcptReply: (address) => (address.startsWith('gone@') ? { code: 550, message: '5.1.1 No such user' } : null),
    });
    await relayWith([{ name: 'provider', port: provider.port }]);
    expect(await send(['ok@example.com', 'gone@example.com'])).toMatch(/^250 2\.0\.0 Ok: queued as /);
    await waitFor(() => provider.messages.some((m) => m.from === ''), 10_000, 'the DSN');
    expect(provider.messages.filter((m) => m.from !== '').map((m) => m.to)).toEqual([['ok@example.com']]);
  });

  test('4xx: 250 and the message stays queued for the scheduler', async () => {
    const provider = await sink({ behaviour: { mode: 'defer' } });
    await relayWith([{ name: 'provider', port: provider.port }]);
    const reply = await send();
    expect(reply).toMatch(/^250 2\.0\.0 Ok: queued as /);
    const id = (reply as string).split(' ').pop() as string;
    expect(spoolFiles('queue')).toContain(`${id}.json`);
    await waitFor(async () => (await metric('smarthop_queue_messages{state="deferred"}')) === 1, 5000, 'deferral');
    provider.behaviour = { mode: 'accept' };
    await waitFor(() => provider.messages.length === 1, 10_000, 'delivery by the scheduler');
  });

  test('5xx from the only host, without an enhanced code: that code, with one added to the text', async () => {
    const provider = await sink({ rcptReply: () => ({ code: 550, message: 'Mailbox unavailable' }) });
    await relayWith([{ name: 'provider', port: provider.port }]);
    expect(await send()).toBe('550 5.0.0 Mailbox unavailable');
    expect(spoolFiles('queue')).toHaveLength(0);
  });

  test('no host reachable: 250 and queued', async () => {
    await relayWith([{ name: 'down', port: await freePort() }]);
    const reply = await send();
    expect(reply).toMatch(/^250 2\.0\.0 Ok: queued as /);
    expect(spoolFiles('queue').filter((n) => n.endsWith('.json'))).toHaveLength(1);
  });

  test('timeout: 250 after inline_timeout; the attempt finishes (failover), the message delivered once', async () => {
    const primary = await sink({ behaviour: { mode: 'hang' } });
    const backup = await sink();
    await relayWith(
      [
        { name: 'primary', port: primary.port, priority: 10, connect_timeout: '1500ms', socket_timeout: '1500ms' },
        { name: 'backup', port: backup.port, priority: 20 },
      ],
      '300ms',
      {
        spool: {
          dir: path.join(t.dir, 'spool'),
          retry: { initial: '100ms', max: '100ms', factor: 1 },
          min_free_disk: 0,
        },
      },
    );
    const reply = await send();
    expect(reply).toMatch(/^250 2\.0\.0 Ok: queued as /);
    expect(backup.messages).toHaveLength(0);
    await waitFor(() => backup.messages.length === 1, 10_000, 'failover delivery after the reply');
    await waitFor(() => spoolFiles('queue').length === 0, 5000, 'queue to empty');
    expect(backup.messages).toHaveLength(1);
    expect(await metric('smarthop_delivery_attempts_total{smarthost="primary",outcome="unreachable"}')).toBe(1);
  });
});
