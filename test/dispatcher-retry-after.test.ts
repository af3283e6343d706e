import { Bouncer } from '../src/forward/bounce';
import { Dispatcher } from '../src/forward/dispatcher';
import { GuardedSmartHost } from '../src/forward/guarded-host';
import type { Outcome } from '../src/forward/outcome';
import { SmartHostQuota } from '../src/forward/quota';
import { NodemailerSmartHost, type Admission, type Envelope, type SmartHost } from '../src/forward/smarthost';
import { MemoryWindowCounters } from '../src/limits/window-counters';
import type { RelayEvent } from '../src/observe/events';
import { SpoolStore } from '../src/spool/store';
import type { SmtpSink } from '../src/tools/sink';
import { startSink } from './helpers/start-sink';
import { removeDir, tempDir } from './helpers/temp-dir';
import { baseConfig, buildConfig, smtpHost } from './helpers/test-config';
import { pending, queuedMeta } from './helpers/queued-meta';

/**
 * Stands in for an HTTP smart host (issue 25's Graph host) at the SmartHost boundary: one request
 * carries every recipient and is answered for all of them, here 429 with a Retry-After.
 */
class ThrottledHttpHost implements SmartHost {
  readonly name = 'm365';
  readonly relay = 'm365[graph.example]:443';
  readonly requests: string[][] = [];

  constructor(private readonly retryAfterMs: number) {}

  available(): boolean {
    return true;
  }

  up(): boolean {
    return true;
  }

  async admit(recipients: number): Promise<Admission> {
    return { ok: true, recipients };
  }

  async send(envelope: Envelope): Promise<Map<string, Outcome>> {
    this.requests.push([...envelope.to]);
    const text = '429 ApplicationThrottled: mailbox concurrency limit';
    const outcome: Outcome = {
      kind: 'transient',
      cause: 'reply',
      reply: { code: 429, text },
      detail: text,
      retryAfterMs: this.retryAfterMs,
    };
    return new Map(envelope.to.map((address) => [address, outcome]));
  }

  close(): void {}
}

describe('a smart host that answers with Retry-After', () => {
  let dir: string;
  let backup: SmtpSink;
  const cleanups: (() => Promise<void>)[] = [];

  beforeEach(async () => {
    dir = tempDir();
    backup = await startSink({ rcptReply: () => ({ code: 451, message: '4.3.2 Backup busy, try later' }) });
  });

  afterEach(async () => {
    for (const cleanup of cleanups.splice(0)) await cleanup();
    await backup.close();
    removeDir(dir);
  });

  /** The stand-in first, the real SMTP backup second; the dispatcher's clock is `clock.now`. */
  async function setup(retryAfterMs: number, maxQueueLifetime = '1d') {
    const raw = baseConfig(dir, [
      { name: 'm365', port: 1, priority: 10 },
      { name: 'backup', port: backup.port, priority: 20 },
    ]);
    const config = buildConfig(
      { ...raw, spool: { ...(raw.spool as object), max_queue_lifetime: maxQueueLifetime } },
      dir,
    );
    const store = new SpoolStore(config.spool.dir);
    await store.open();
    const events: RelayEvent[] = [];
    const observer = { emit: (event: RelayEvent) => events.push(event) };
    const graph = new ThrottledHttpHost(retryAfterMs);
    const backupConfig = config.smarthosts[1];
    const smtp = new GuardedSmartHost(
      backupConfig,
      new NodemailerSmartHost(smtpHost(config, 1), config.hostname),
      new SmartHostQuota('backup', [], new MemoryWindowCounters()),
      observer,
    );
    const clock = { now: Date.now() };
    const dispatcher = new Dispatcher({
      store,
      observer,
      current: () => ({
        config,
        smarthosts: new Map<string, SmartHost>([
          ['m365', graph],
          ['backup', smtp],
        ]),
      }),
      bouncer: new Bouncer({ store, hostname: config.hostname, now: () => clock.now }),
      onGenerated: () => undefined,
      now: () => clock.now,
    });
    cleanups.push(async () => {
      smtp.close();
      await store.close();
    });
    const id = store.newId();
    const body = Buffer.from('Subject: t\r\n\r\nbody\r\n');
    const recipients = pending('a@example.com', 'b@example.com');
    await store.commitGenerated(
      queuedMeta(id, body.length, { receivedAt: clock.now, nextAttemptAt: clock.now, recipients }),
      body,
    );
    return { store, events, graph, clock, dispatcher, id, start: clock.now };
  }

  test('the backup is tried at once; no attempt before the wait ends, even on a flush', async () => {
    const { store, events, graph, clock, dispatcher, id, start } = await setup(600_000);
    const waitEnds = start + 600_000;

    expect(await dispatcher.attempt(id)).toEqual({ kind: 'retry', at: waitEnds });
    expect(graph.requests).toEqual([['a@example.com', 'b@example.com']]);
    expect(backup.mailCommands).toBe(1);
    expect(events.filter((e) => e.type === 'failover')).toEqual([
      { type: 'failover', queueId: id, from: 'm365', to: 'backup' },
    ]);
    expect((await store.read(id)).recipients.map((r) => [r.status, r.notBefore])).toEqual([
      ['pending', waitEnds],
      ['pending', waitEnds],
    ]);

    // An admin's flush a second later: nothing is sent, and the message keeps its time.
    clock.now = start + 1_000;
    events.length = 0;
    expect(await dispatcher.attempt(id)).toEqual({ kind: 'retry', at: waitEnds });
    expect([graph.requests.length, backup.mailCommands]).toEqual([1, 1]);
    expect(events.map((e) => [e.type, (e as { nextAttemptAt?: number }).nextAttemptAt])).toEqual([
      ['deferred', waitEnds],
      ['deferred', waitEnds],
    ]);
    expect(events[0]).toMatchObject({ smarthost: 'backup', response: '451 4.3.2 Backup busy, try later' });
    expect((await store.read(id)).attempts).toBe(1);

    // Once the wait is over, the hosts get their turn again, in their order.
    clock.now = waitEnds;
    await dispatcher.attempt(id);
    expect([graph.requests.length, backup.mailCommands]).toEqual([2, 2]);
  });

  test('a Retry-After longer than the message may stay queued: it expires on time, with a DSN', async () => {
    const { store, events, clock, dispatcher, id, start } = await setup(2 * 3_600_000, '1h');
    expect(await dispatcher.attempt(id)).toEqual({ kind: 'retry', at: start + 3_600_000 });

    clock.now = start + 3_600_000;
    expect(await dispatcher.attempt(id)).toEqual({ kind: 'done' });
    expect(events.filter((e) => e.type === 'expired').map((e) => (e as { to: string }).to)).toEqual([
      'a@example.com',
      'b@example.com',
    ]);
    expect(events.filter((e) => e.type === 'dsn')).toHaveLength(1);
    expect((await store.readIn('dead', id)).dead?.reason).toBe('expired');
  });
});
