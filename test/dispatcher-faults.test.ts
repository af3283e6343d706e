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
import type { SmtpSink } from '../src/sink/sink';
import { baseConfig, buildConfig, removeDir, startSink, tempDir } from './helpers/harness';

/** A real spool whose DSN commit fails with ENOSPC while `full` is set: a fault at the spool layer. */
class FillingSpool extends SpoolStore {
  full = false;
  override async commitGenerated(meta: MessageMeta, body: Buffer): Promise<void> {
    if (this.full) throw Object.assign(new Error('ENOSPC: no space left on device'), { code: 'ENOSPC' });
    return super.commitGenerated(meta, body);
  }
}

describe('delivery when the spool cannot take an outcome', () => {
  let dir: string;
  let sink: SmtpSink;

  beforeEach(async () => {
    dir = tempDir();
    sink = await startSink({ rcptReply: (address) => (address.startsWith('gone@') ? { code: 550, message: '5.1.1 No such user' } : null) });
  });

  afterEach(async () => {
    await sink.close();
    removeDir(dir);
  });

  test('a recipient delivered in an attempt whose DSN could not be written is never sent again', async () => {
    const config = buildConfig(baseConfig(dir, [{ name: 'primary', port: sink.port }]), dir);
    const store = new FillingSpool(config.spool.dir);
    await store.open();
    const events: RelayEvent[] = [];
    const observer = { emit: (event: RelayEvent) => events.push(event) };
    const host = new GuardedSmartHost(config.smarthosts[0], new NodemailerSmartHost(config.smarthosts[0], config.hostname), new SmartHostQuota('primary', [], new MemoryWindowCounters()), observer);
    const dispatcher = new Dispatcher({
      store, observer, current: () => ({ config, smarthosts: new Map([['primary', host]]) }),
      bouncer: new Bouncer({ store, hostname: config.hostname }), onGenerated: () => undefined,
    });
    const id = store.newId();
    await store.commitGenerated({
      version: 1, id, receivedAt: Date.now(), client: 'lan', listener: 'smtp', remote: '127.0.0.1', route: 'default', from: 'app@corp.example',
      recipients: [{ address: 'ok@example.com', status: 'pending' }, { address: 'gone@example.com', status: 'pending' }], size: 22, attempts: 0, nextAttemptAt: Date.now(),
    }, Buffer.from('Subject: t\r\n\r\nbody\r\n'));

    store.full = true;
    await expect(dispatcher.attempt(id)).rejects.toThrow(/ENOSPC/);
    expect(sink.recipients()).toEqual(['ok@example.com']);
    const delivered = () => events.filter((e) => e.type === 'delivered').map((e) => (e as { to: string }).to);
    expect(delivered()).toEqual(['ok@example.com']);

    store.full = false;
    const result = await dispatcher.attempt(id);
    expect(result.kind).toBe('done');
    // The second attempt offered only the refused recipient; ok@ got its one copy in the first.
    expect(sink.recipients()).toEqual(['ok@example.com']);
    expect(delivered()).toEqual(['ok@example.com']);
    expect(events.filter((e) => e.type === 'bounced').map((e) => (e as { to: string }).to)).toEqual(['gone@example.com']);
    const dead = await store.readIn('dead', id);
    expect(dead.recipients.map((r) => r.status)).toEqual(['delivered', 'failed']);
    host.close();
    await store.close();
  });

  test('a message deleted between scheduling and its attempt is done, not retried forever', async () => {
    const config = buildConfig(baseConfig(dir, [{ name: 'primary', port: sink.port }]), dir);
    const store = new SpoolStore(config.spool.dir);
    await store.open();
    const observer = { emit: () => undefined };
    const dispatcher = new Dispatcher({
      store, observer, current: () => ({ config, smarthosts: new Map() }),
      bouncer: new Bouncer({ store, hostname: config.hostname }), onGenerated: () => undefined,
    });
    expect(await dispatcher.attempt('NOSUCHMESSAGE')).toEqual({ kind: 'done' });
    await store.close();
  });

  test('a damaged queue file defers every pending recipient, also one the first host refused before: the next host has not had its turn', async () => {
    const backup = await startSink();
    try {
      const config = buildConfig(baseConfig(dir, [{ name: 'primary', port: sink.port, priority: 10 }, { name: 'backup', port: backup.port, priority: 20 }]), dir);
      const store = new SpoolStore(config.spool.dir);
      await store.open();
      const events: RelayEvent[] = [];
      const observer = { emit: (event: RelayEvent) => events.push(event) };
      const hosts = new Map(config.smarthosts.map((c) => [c.name, new GuardedSmartHost(c, new NodemailerSmartHost(c, config.hostname), new SmartHostQuota(c.name, [], new MemoryWindowCounters()), observer)]));
      const dispatcher = new Dispatcher({
        store, observer, current: () => ({ config, smarthosts: hosts }),
        bouncer: new Bouncer({ store, hostname: config.hostname }), onGenerated: () => undefined,
      });
      const id = store.newId();
      const body = Buffer.from('Subject: t\r\n\r\nbody\r\n');
      const meta: MessageMeta = {
        version: 2, id, receivedAt: Date.now(), client: 'lan', listener: 'smtp', remote: '127.0.0.1', route: 'default', from: 'app@corp.example',
        recipients: [
          { address: 'one@example.com', status: 'pending' },
          // Refused by the primary in an earlier attempt while the backup was down: the backup's turn is still to come.
          { address: 'two@example.com', status: 'pending', rejectedBy: ['primary'], permanentRejections: 1, response: '550 5.1.1 No such user', smarthost: 'primary' },
        ],
        size: body.length, attempts: 1, nextAttemptAt: Date.now(),
      };
      await store.commitGenerated(meta, body);
      await store.readForDelivery(id); // the copy kept from the commit: later reads go to the file
      await store.update(meta); // state beside the file, so the file is only the message
      truncateSync(store.bodyPath(id), 5);

      const result = await dispatcher.attempt(id);
      expect(result.kind).toBe('retry');
      expect(events.filter((e) => e.type === 'bounced' || e.type === 'dsn')).toEqual([]);
      expect(events.filter((e) => e.type === 'deferred').map((e) => (e as { to: string }).to).sort()).toEqual(['one@example.com', 'two@example.com']);
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
