import { truncateSync } from 'node:fs';
import { Bouncer } from '../src/forward/bounce';
import { Dispatcher } from '../src/forward/dispatcher';
import { GuardedSmartHost } from '../src/forward/guarded-host';
import { SmartHostQuota } from '../src/forward/quota';
import { NodemailerSmartHost } from '../src/forward/smarthost';
import { MemoryWindowCounters } from '../src/limits/window-counters';
import type { RelayEvent } from '../src/observe/events';
import type { MessageMeta } from '../src/spool/message';
import { Scheduler } from '../src/spool/scheduler';
import { SpoolStore } from '../src/spool/store';
import type { SmtpSink } from '../src/tools/sink';
import { baseConfig, buildConfig, removeDir, smtpHost, startSink, tempDir } from './helpers/harness';
import { pending, queuedMeta } from './helpers/queued-meta';

const enospc = () => Object.assign(new Error('ENOSPC: no space left on device'), { code: 'ENOSPC' });

/**
 * A real spool that fails with ENOSPC at the spool layer: the DSN commit while `full` is set, state
 * writes (update, and so moveToDead) while `stateFull` is set.
 */
class FillingSpool extends SpoolStore {
  full = false;
  stateFull = false;
  failedUpdates = 0;
  private waiters: { count: number; resolve: () => void }[] = [];

  override async commitGenerated(meta: MessageMeta, body: Buffer): Promise<void> {
    if (this.full) throw enospc();
    return super.commitGenerated(meta, body);
  }

  override async update(meta: MessageMeta): Promise<void> {
    if (!this.stateFull) return super.update(meta);
    this.failedUpdates++;
    for (const waiter of this.waiters.filter((w) => w.count <= this.failedUpdates)) waiter.resolve();
    throw enospc();
  }

  /** Resolves once `count` state writes have failed. */
  updatesFailed(count: number): Promise<void> {
    if (this.failedUpdates >= count) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push({ count, resolve }));
  }
}

describe('delivery when the spool cannot take an outcome', () => {
  let dir: string;
  let sink: SmtpSink;

  beforeEach(async () => {
    dir = tempDir();
    sink = await startSink({
      rcptReply: (address) => (address.startsWith('gone@') ? { code: 550, message: '5.1.1 No such user' } : null),
    });
  });

  const cleanups: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0)) await cleanup();
    await sink.close();
    removeDir(dir);
  });

  test('a recipient delivered in an attempt whose DSN could not be written is never sent again', async () => {
    const { store, dispatcher, queue, of } = await fillingSetup();
    const id = await queue('app@corp.example', ['ok@example.com', 'gone@example.com']);

    store.full = true;
    await expect(dispatcher.attempt(id)).rejects.toThrow(/ENOSPC/);
    expect(sink.recipients()).toEqual(['ok@example.com']);
    expect(of('delivered')).toEqual(['ok@example.com']);

    store.full = false;
    const result = await dispatcher.attempt(id);
    expect(result.kind).toBe('done');
    // The second attempt offered only the refused recipient; ok@ got its one copy in the first.
    expect(sink.recipients()).toEqual(['ok@example.com']);
    expect(of('delivered')).toEqual(['ok@example.com']);
    expect(of('bounced')).toEqual(['gone@example.com']);
    const dead = await store.readIn('dead', id);
    expect(dead.recipients.map((r) => r.status)).toEqual(['delivered', 'failed']);
  });

  /** A dispatcher with one real smart host (the sink) over a FillingSpool; state writes retried every 20 ms. */
  async function fillingSetup() {
    const config = buildConfig(baseConfig(dir, [{ name: 'primary', port: sink.port }]), dir);
    const store = new FillingSpool(config.spool.dir);
    await store.open();
    const events: RelayEvent[] = [];
    const observer = { emit: (event: RelayEvent) => events.push(event) };
    const quota = new SmartHostQuota('primary', [], new MemoryWindowCounters());
    const transport = new NodemailerSmartHost(smtpHost(config), config.hostname);
    const host = new GuardedSmartHost(config.smarthosts[0], transport, quota, observer);
    const unwritable: string[] = [];
    const dispatcher = new Dispatcher({
      store,
      observer,
      current: () => ({ config, smarthosts: new Map([['primary', host]]) }),
      bouncer: new Bouncer({ store, hostname: config.hostname }),
      onGenerated: () => undefined,
      onOutcomeUnwritable: (id) => unwritable.push(id),
      outcomeWriteRetry: { initial: 20, max: 20, factor: 1 },
    });
    const queue = async (from: string, to: string[]) => {
      const id = store.newId();
      const body = Buffer.from('Subject: t\r\n\r\nbody\r\n');
      await store.commitGenerated(queuedMeta(id, body.length, { from, recipients: pending(...to) }), body);
      return id;
    };
    // Also when a test fails half way: an attempt still writing again must not outlive it.
    cleanups.push(async () => {
      dispatcher.stop();
      host.close();
      await store.close();
    });
    const of = (type: string) => events.filter((e) => e.type === type).map((e) => (e as { to: string }).to);
    return { store, dispatcher, unwritable, queue, of };
  }

  test.each([
    ['the state saved before the DSN', 'app@corp.example'],
    ['the final state (no DSN is due for a message from <>)', ''],
  ])('a delivery the spool cannot take (%s): written again until it can be, never sent twice', async (_what, from) => {
    const { store, dispatcher, unwritable, queue, of } = await fillingSetup();
    const id = await queue(from, ['ok@example.com', 'gone@example.com']);
    store.stateFull = true;
    let ended = false;
    const first = dispatcher.attempt(id).finally(() => {
      ended = true;
    });
    first.catch(() => undefined);

    // Two failed writes: the first, and one written again; the attempt is still under way, so the
    // scheduler cannot start another one on the stale state (which still has ok@ pending on disk).
    await store.updatesFailed(2);
    expect(ended).toBe(false);
    expect(unwritable[0]).toBe(id);
    expect(sink.recipients()).toEqual(['ok@example.com']);
    expect((await store.read(id)).recipients.map((r) => r.status)).toEqual(['pending', 'pending']);

    store.stateFull = false;
    if (from === '') {
      // The final write failed: once the deliveries are safe, its error ends the attempt.
      await expect(first).rejects.toThrow(/ENOSPC/);
      expect((await store.read(id)).recipients.map((r) => r.status)).toEqual(['delivered', 'pending']);
      expect(await dispatcher.attempt(id)).toEqual({ kind: 'done' });
    } else {
      // Saved before the DSN, the attempt goes on as if the disk had never been full.
      expect(await first).toEqual({ kind: 'done' });
      expect(of('bounced')).toEqual(['gone@example.com']);
    }
    expect(sink.recipients()).toEqual(['ok@example.com']);
    expect(of('delivered')).toEqual(['ok@example.com']);
    expect((await store.readIn('dead', id)).recipients.map((r) => r.status)).toEqual(['delivered', 'failed']);
  });

  test('a relay that stops while an attempt waits for the disk does not wait: the attempt gives up', async () => {
    const { store, dispatcher, queue } = await fillingSetup();
    const id = await queue('app@corp.example', ['ok@example.com', 'gone@example.com']);
    store.stateFull = true;
    const attempt = dispatcher.attempt(id);
    attempt.catch(() => undefined);
    await store.updatesFailed(1);
    dispatcher.stop();
    const gaveUp = /stopped before the outcome of its attempt could be written \(ENOSPC.*\); recipients it delivered/;
    await expect(attempt).rejects.toThrow(gaveUp);
  });

  test('an attempt that delivered nothing does not wait for the disk; the next one bounces', async () => {
    const { store, dispatcher, unwritable, queue, of } = await fillingSetup();
    const id = await queue('app@corp.example', ['gone@example.com']);
    store.stateFull = true;
    await expect(dispatcher.attempt(id)).rejects.toThrow(/ENOSPC/);
    expect([store.failedUpdates, unwritable]).toEqual([1, []]);
    expect(of('bounced')).toEqual([]);

    store.stateFull = false;
    expect(await dispatcher.attempt(id)).toEqual({ kind: 'done' });
    expect(of('bounced')).toEqual(['gone@example.com']);
    expect(sink.recipients()).toEqual([]);
  });

  test('a message deleted between scheduling and its attempt is done, not retried forever', async () => {
    const config = buildConfig(baseConfig(dir, [{ name: 'primary', port: sink.port }]), dir);
    const store = new SpoolStore(config.spool.dir);
    await store.open();
    const observer = { emit: () => undefined };
    const dispatcher = new Dispatcher({
      store,
      observer,
      current: () => ({ config, smarthosts: new Map() }),
      bouncer: new Bouncer({ store, hostname: config.hostname }),
      onGenerated: () => undefined,
    });
    expect(await dispatcher.attempt('NOSUCHMESSAGE')).toEqual({ kind: 'done' });
    await store.close();
  });

  test('a damaged queue file defers every pending recipient, also one refused by the first host before', async () => {
    const backup = await startSink();
    try {
      const config = buildConfig(
        baseConfig(dir, [
          { name: 'primary', port: sink.port, priority: 10 },
          { name: 'backup', port: backup.port, priority: 20 },
        ]),
        dir,
      );
      const store = new SpoolStore(config.spool.dir);
      await store.open();
      const events: RelayEvent[] = [];
      const observer = { emit: (event: RelayEvent) => events.push(event) };
      const hosts = new Map(
        config.smarthosts.map((c, i) => {
          const transport = new NodemailerSmartHost(smtpHost(config, i), config.hostname);
          const quota = new SmartHostQuota(c.name, [], new MemoryWindowCounters());
          return [c.name, new GuardedSmartHost(c, transport, quota, observer)];
        }),
      );
      const dispatcher = new Dispatcher({
        store,
        observer,
        current: () => ({ config, smarthosts: hosts }),
        bouncer: new Bouncer({ store, hostname: config.hostname }),
        onGenerated: () => undefined,
      });
      const id = store.newId();
      const body = Buffer.from('Subject: t\r\n\r\nbody\r\n');
      const meta = queuedMeta(id, body.length, {
        attempts: 1,
        recipients: [
          ...pending('one@example.com'),
          // Refused by the primary in an earlier attempt while the backup was down: the backup's turn is still to come.
          {
            address: 'two@example.com',
            status: 'pending',
            rejectedBy: ['primary'],
            permanentRejections: 1,
            response: '550 5.1.1 No such user',
            smarthost: 'primary',
          },
        ],
      });
      await store.commitGenerated(meta, body);
      await store.readForDelivery(id); // the copy kept from the commit: later reads go to the file
      await store.update(meta); // state beside the file, so the file is only the message
      truncateSync(store.bodyPath(id), 5);

      const result = await dispatcher.attempt(id);
      expect(result.kind).toBe('retry');
      expect(events.filter((e) => e.type === 'bounced' || e.type === 'dsn')).toEqual([]);
      expect(
        events
          .filter((e) => e.type === 'deferred')
          .map((e) => (e as { to: string }).to)
          .sort(),
      ).toEqual(['one@example.com', 'two@example.com']);
      expect((await store.readIn('queue', id)).recipients.map((r) => r.status)).toEqual(['pending', 'pending']);
      expect([sink.recipients(), backup.recipients()]).toEqual([[], []]);
      for (const host of hosts.values()) host.close();
      await store.close();
    } finally {
      await backup.close();
    }
  });
});

describe('Scheduler', () => {
  test('never runs two attempts of one message at once, whoever asks', async () => {
    let running = 0;
    let maxRunning = 0;
    let release: () => void = () => undefined;
    const scheduler = new Scheduler({
      attempt: async () => {
        running++;
        maxRunning = Math.max(maxRunning, running);
        await new Promise<void>((resolve) => {
          release = resolve;
        });
        running--;
        return { kind: 'done' };
      },
      concurrency: 10,
      onAttemptError: () => 1000,
    });
    scheduler.enqueue({ id: 'A', receivedAt: Date.now(), route: 'default' });
    scheduler.enqueue({ id: 'A', receivedAt: Date.now(), route: 'default' });
    expect(scheduler.adopt('A', Date.now(), async () => ({ kind: 'done' }))).toBe(false);
    release();
    await scheduler.stop();
    expect(maxRunning).toBe(1);
  });
});
