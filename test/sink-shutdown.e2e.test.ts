import { existsSync, readdirSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { SmtpSink } from '../src/tools/sink';
import { relayPerTest, waitFor } from './helpers/harness';
import { message, openSession, RawSmtpClient } from './helpers/smtp-client';

/**
 * Stopping the capture sink (`smarthop sink`, SIGTERM or Ctrl-C) between writing a message and
 * answering its 250 left the client thinking the message was lost: it sent it again to the next
 * sink on the port, which captured it twice, and a relay counted the cut as a connection failure
 * on the way to opening its breaker. Each test stops the sink from `onMessage`, which runs right
 * after the capture is written and before the reply, so the stop lands in that window every time.
 */
describe('a sink stopped while it owes a reply', () => {
  const t = relayPerTest();

  test('answers the captured message with 250, then hangs up; other sessions are cut, nothing listens', async () => {
    const stops: Promise<void>[] = [];
    const captures = path.join(t.dir, 'captures');
    const sink: SmtpSink = await t.sink({ dir: captures, onMessage: () => stops.push(sink.close()) });
    const idle = (await openSession(sink.port)).client;
    const { client } = await openSession(sink.port);
    expect(await client.sendMessage('app@corp.example', ['user@example.com'], message())).toBe(
      '250 2.0.0 Ok: captured as 1',
    );
    // Ended right behind the reply, and the idle session did not hold the close up.
    expect(await client.reply()).toBeNull();
    expect(await idle.reply()).toBeNull();
    expect(stops).toHaveLength(1);
    await stops[0];
    expect(readdirSync(captures)).toEqual(['000001.eml']);
    await expect(RawSmtpClient.connect(sink.port)).rejects.toThrow(/ECONNREFUSED/);
  });

  test('a connection that arrives while it waits to answer a captured message is told 421', async () => {
    let stopping: Promise<void> | undefined;
    // The reply held a moment, so the stop is still waiting for it when the newcomer connects.
    const sink: SmtpSink = await t.sink({ dataReplyDelayMs: 300, onMessage: () => (stopping = sink.close()) });
    const { client } = await openSession(sink.port);
    const reply = client.sendMessage('app@corp.example', ['user@example.com'], message());
    await waitFor(() => stopping !== undefined, 5_000, 'the stop');
    const newcomer = await openSession(sink.port);
    expect(newcomer.greeting).toMatch(/^421 4\.3\.2 /);
    expect(await reply).toBe('250 2.0.0 Ok: captured as 1');
    await stopping;
  });

  test('a relay delivers to it once, at the first attempt, and at once to the sink restarted on its port', async () => {
    const captures = path.join(t.dir, 'captures');
    const eventsFile = path.join(t.dir, 'events.jsonl');
    const events = () =>
      existsSync(eventsFile)
        ? readFileSync(eventsFile, 'utf8')
            .trim()
            .split('\n')
            .filter(Boolean)
            .map((line) => JSON.parse(line) as { type: string; queue_id?: string; attempt?: number })
        : [];
    const first: SmtpSink = await t.sink({ dir: captures, onMessage: () => void first.close() });
    const port = first.port;
    // A retry soon after the cut, as in the first-use test: three refused connects would open the breaker.
    const relay = await t.relayWith([{ name: 'primary', port }], {
      events: { file: eventsFile },
      spool: { dir: path.join(t.dir, 'spool'), retry: { initial: '200ms', max: '1s', factor: 2 }, min_free_disk: 0 },
    });
    const send = async (subject: string) => {
      const { client } = await openSession(relay.smtpPort);
      const reply = await client.sendMessage('app@corp.example', ['user@example.com'], message({ subject }));
      await client.quit();
      return (reply as string).split(' ').pop() as string;
    };
    const outcome = async (queueId: string) => {
      const decided = () => events().find((e) => e.queue_id === queueId && /^(delivered|deferred)$/.test(e.type));
      await waitFor(() => decided() !== undefined, 15_000, `the outcome of ${queueId}`);
      return decided();
    };

    const one = await send('before the stop');
    expect(await outcome(one)).toMatchObject({ type: 'delivered', attempt: 1 });
    await first.close();

    // The sink comes back on the same port: the relay's pooled connection to the old one is gone,
    // and that is no failure of the host.
    const again = await t.sink({ dir: captures, port });
    const two = await send('after the restart');
    expect(await outcome(two)).toMatchObject({ type: 'delivered', attempt: 1 });
    expect(again.count).toBe(1);
    expect(readdirSync(captures).sort()).toEqual([`000001-${one}.eml`, `000002-${two}.eml`]);
    expect(events().filter((e) => e.type === 'deferred' || e.type === 'breaker')).toEqual([]);
  });
});
