import { existsSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import * as path from 'node:path';
import type { SinkOptions, SmtpSink } from '../src/tools/sink';
import { metricsText, metricValue, relayPerTest, waitFor, type RunningRelay } from './helpers/harness';
import { message, openSession } from './helpers/smtp-client';

/**
 * Smart hosts that end pooled connections on their own terms: a cap on messages per connection
 * (with or without a 421), an idle timeout. The pool reuses connections, so the next message can be
 * handed to one the host is just closing; it must go out once, over another connection, without a
 * deferral, and no queue file may stay open behind a try that never read it.
 */
describe('smart hosts that end connections', () => {
  const t = relayPerTest();
  const eventsFile = () => path.join(t.dir, 'events.jsonl');
  const events = () =>
    existsSync(eventsFile())
      ? readFileSync(eventsFile(), 'utf8')
          .trim()
          .split('\n')
          .filter(Boolean)
          .map((line) => JSON.parse(line) as Record<string, unknown>)
      : [];
  const metric = async (sample: string) => metricValue(await metricsText((t.running as RunningRelay).httpPort), sample);
  const queueFiles = () => readdirSync(path.join(t.dir, 'spool', 'queue'));

  /**
   * The relay, with two pooled connections to a sink behaving as `options` say, and one delivery at a
   * time. A message handed to a pooled connection the host has just ended goes again (the pool puts it
   * back after a pause); with other deliveries in flight, they can take each fresh connection first
   * and leave it the reused ones, at their end, up to the pool's six tries, after which it is deferred
   * to the queue's next try (nothing lost, but these tests assert no deferral, and a loaded CI met
   * it). One at a time, the retry is the only message waiting and gets the fresh connection. Hosts
   * that cap messages per connection are told so with `messages_per_connection` (the last test).
   */
  async function relayTo(
    options: SinkOptions,
    relayOverrides: { delivery?: Record<string, unknown> } = {},
    hostOverrides: Record<string, unknown> = {},
  ): Promise<SmtpSink> {
    const primary = await t.sink({ keep: true, ...options });
    await t.relayWith([{ name: 'primary', port: primary.port, max_connections: 2, ...hostOverrides }], {
      events: { file: eventsFile() },
      delivery: { concurrency: 1, ...relayOverrides.delivery },
    });
    return primary;
  }

  /** `count` messages over `sessions` parallel client sessions, each to its own recipient; returns the recipients. */
  async function sendMany(count: number, sessions: number, prefix: string, body?: string): Promise<string[]> {
    const recipients = Array.from({ length: count }, (_, i) => `${prefix}${i}@example.com`);
    await Promise.all(
      Array.from({ length: sessions }, async (_, s) => {
        const { client } = await openSession((t.running as RunningRelay).smtpPort);
        for (let i = s; i < count; i += sessions) {
          expect(
            await client.sendMessage('app@corp.example', [recipients[i]], message({ subject: `${prefix} ${i}`, body })),
          ).toMatch(/^250 2\.0\.0 Ok: queued as /);
        }
        await client.quit();
      }),
    );
    return recipients;
  }

  /** Each recipient exactly once at the smart host, nobody deferred, every attempt a delivery. */
  async function expectEachDeliveredOnce(primary: SmtpSink, recipients: string[]): Promise<void> {
    await waitFor(() => primary.messages.length >= recipients.length, 20_000, `${recipients.length} deliveries`);
    // A duplicate would come from a message requeued after its first copy, whose file then stays queued:
    // once the queue is empty and every outcome is logged, nothing is left to be sent again.
    await waitFor(
      () => queueFiles().length === 0 && events().filter((e) => e.type === 'delivered').length >= recipients.length,
      10_000,
      'the queue to empty',
    );
    expect([...primary.recipients()].sort()).toEqual([...recipients].sort());
    expect(events().filter((e) => e.type === 'deferred')).toEqual([]);
    expect(events().filter((e) => e.type === 'delivered')).toHaveLength(recipients.length);
    expect(await metric('smarthop_delivery_attempts_total{smarthost="primary",outcome="delivered"}')).toBe(
      recipients.length,
    );
    expect(await metric('smarthop_delivery_attempts_total{smarthost="primary",outcome="deferred"}')).toBeUndefined();
    expect(await metric('smarthop_smarthost_up{smarthost="primary"}')).toBe(1);
  }

  /**
   * Message files this process holds open under the relay's spool (the relay and its delivery thread
   * run in it). The spool's folders themselves stay open on purpose, for their fsyncs.
   */
  function openSpoolFiles(): string[] {
    const spool = path.join(t.dir, 'spool');
    const folders = new Set(['tmp', 'queue', 'hold', 'dead', 'corrupt'].map((folder) => path.join(spool, folder)));
    const open: string[] = [];
    for (const fd of readdirSync('/proc/self/fd')) {
      try {
        const target = readlinkSync(`/proc/self/fd/${fd}`);
        if (target.startsWith(spool) && !folders.has(target)) open.push(target);
      } catch {
        // Closed between the listing and the readlink: not open.
      }
    }
    return open;
  }

  test('a host hanging up right after every 250: each message goes once, on a new connection, undeferred', async () => {
    const primary = await relayTo({ messagesPerConnection: { limit: 1, then: 'close' } });
    const recipients = await sendMany(16, 4, 'close-each');
    await expectEachDeliveredOnce(primary, recipients);
  });

  // A retried try used to fail at once with the 421 of the connection before it (see smarthost.ts).
  test.each([
    ['the delivery thread', true],
    ['the event loop', false],
  ])(
    'a host that answers 421 to the MAIL after its cap (sent from %s): ' +
      'the message goes again over another connection, none deferred',
    async (_where, workerThread) => {
      const primary = await relayTo(
        { messagesPerConnection: { limit: 2, then: 'refuse' } },
        { delivery: { worker_thread: workerThread } },
      );
      const recipients = await sendMany(16, 4, 'cap-two');
      await expectEachDeliveredOnce(primary, recipients);
      // The cap was reached, so pooled connections were reused up to it and the 421 was really met.
      expect(primary.mailCommands).toBeGreaterThan(recipients.length);
    },
  );

  test('one message per connection, and messages_per_connection: 1: no try meets an ended connection', async () => {
    const primary = await relayTo(
      { messagesPerConnection: { limit: 1, then: 'refuse' } },
      { delivery: { concurrency: 20 } },
      { messages_per_connection: 1 },
    );
    const recipients = await sendMany(16, 4, 'one-each');
    await expectEachDeliveredOnce(primary, recipients);
    // Every MAIL went over a fresh connection: none was refused for the host's cap.
    expect(primary.mailCommands).toBe(recipients.length);
  });

  test('a host that times idle connections out (421): the next message opens a new one, not deferred', async () => {
    const primary = await relayTo({ idleTimeoutMs: 300 });
    const first = await sendMany(1, 1, 'before-idle');
    await waitFor(() => primary.messages.length === 1, 10_000, 'the first delivery');
    // The host's idle timeout closes the pooled connection under the relay.
    await waitFor(() => primary.openConnections === 0, 10_000, 'the host to close the idle connection');
    const second = await sendMany(3, 1, 'after-idle');
    await expectEachDeliveredOnce(primary, [...first, ...second]);
  });

  // A try refused before its DATA never reads the stream it was handed, which has its file open already.
  test.each([
    ['hangs up behind every 250', 'close'],
    ['answers 421 to the MAIL after one message', 'refuse'],
  ] as const)(
    'messages read back from queue files, to a host that %s: each goes once and no queue file stays open',
    async (_how, then) => {
      const primary = await relayTo({ behaviour: { mode: 'defer' }, messagesPerConnection: { limit: 1, then } });
      // Larger than what a read stream and its consumer buffer between them (~80 KiB), so a stream
      // nobody reads keeps its file open until it is destroyed.
      const recipients = await sendMany(12, 4, 'from-disk', `${'x'.repeat(76)}\r\n`.repeat(3000));
      // Deferred once each, so the next attempt streams the message from its file, not from memory.
      await waitFor(
        () =>
          new Set(
            events()
              .filter((e) => e.type === 'deferred')
              .map((e) => e.to),
          ).size === recipients.length,
        10_000,
        'every message deferred once',
      );
      primary.behaviour = { mode: 'accept' };
      await waitFor(
        () => primary.messages.length >= recipients.length,
        20_000,
        'every message delivered from its file',
      );
      await waitFor(
        () => queueFiles().length === 0 && events().filter((e) => e.type === 'delivered').length >= recipients.length,
        10_000,
        'the queue to empty',
      );
      expect([...primary.recipients()].sort()).toEqual([...recipients].sort());
      // Before the switch the host deferred with its 451 (a retry may still have met it); any other
      // deferral means a message was given up on a dropped connection after the host accepted again.
      expect(events().filter((e) => e.type === 'deferred' && e.response !== '451 4.7.0 Try again later')).toEqual([]);
      expect(queueFiles()).toEqual([]);
      await waitFor(() => openSpoolFiles().length === 0, 5_000, 'no queue file left open').catch(() => undefined);
      expect(openSpoolFiles()).toEqual([]);
    },
  );
});
