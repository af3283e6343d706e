import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { fillSpool } from '../bench/deep-queue/fill';
import type { MessageMeta } from '../src/spool/message';
import { QueueScanner } from '../src/spool/queue-scan';
import { recoverSpool } from '../src/spool/recovery';
import { Scheduler } from '../src/spool/scheduler';
import { SpoolStore } from '../src/spool/store';
import { encodeTrailer } from '../src/spool/trailer';
import type { SmtpSink } from '../src/tools/sink';
import { RELAY_NODE_FLAGS, relayEnvironment } from '../src/lifecycle/launch-settings';
import { childRelayConfig, CLI } from './helpers/child-relay';
import {
  baseConfig,
  buildConfig,
  freePort,
  metricsText,
  metricValue,
  readyz,
  removeDir,
  startRelay,
  startSink,
  tempDir,
  waitFor,
  type RunningRelay,
} from './helpers/harness';
import { pending, queuedMeta } from './helpers/queued-meta';
import { message, openSession } from './helpers/smtp-client';

jest.setTimeout(120_000);

/** Issue 24: a deep queue is kept on disk, recovered in the background, and a dead smart host is not hammered. */

/** Scheduler, queue scan and recovery over a real spool, with an attempt that delivers by removing the message. */
async function drainWith(
  spoolDir: string,
  window: number,
  attempt: (store: SpoolStore, id: string) => Promise<'done' | number>,
) {
  const store = new SpoolStore(spoolDir);
  store.open();
  const attempts: string[] = [];
  let inMemoryMax = 0;
  const scheduler: Scheduler = new Scheduler({
    attempt: async (id) => {
      attempts.push(id);
      inMemoryMax = Math.max(inMemoryMax, scheduler.window - scheduler.room());
      const outcome = await attempt(store, id);
      return outcome === 'done' ? { kind: 'done' } : { kind: 'retry', at: outcome };
    },
    concurrency: 4,
    onAttemptError: (_id, err) => {
      throw err;
    },
    window,
    horizonMs: 1000,
    queued: () => store.queuedCount,
  });
  const scanner = new QueueScanner({ store, scheduler, maxIntervalMs: 60_000 });
  scheduler.attachBacklog(scanner);
  await recoverSpool({
    store,
    startedAt: Date.now() + 1,
    onProblem: () => undefined,
    found: (meta) => {
      if (!scheduler.load(meta, meta.nextAttemptAt, { onDisk: false })) scheduler.enqueue(meta, meta.nextAttemptAt);
    },
  });
  scanner.start();
  return { store, scheduler, scanner, attempts, inMemoryMax: () => inMemoryMax };
}

describe('the scheduler keeps a bounded window and the rest on disk', () => {
  let dir: string;
  beforeEach(() => {
    dir = tempDir();
  });
  afterEach(() => removeDir(dir));

  test('300 queued messages, a window of 20: each attempted exactly once, never more than 20 in memory', async () => {
    const spoolDir = path.join(dir, 'spool');
    await fillSpool(spoolDir, { count: 300, size: 600, runId: 'window' });
    const run = await drainWith(spoolDir, 20, async (store, id) => {
      await store.remove(id);
      return 'done';
    });
    await waitFor(() => run.store.queuedCount === 0, 60_000, 'the queue to drain');
    expect(run.attempts).toHaveLength(300);
    expect(new Set(run.attempts).size).toBe(300);
    expect(run.inMemoryMax()).toBeLessThanOrEqual(20);
    expect(run.scheduler.snapshot()).toMatchObject({ ready: 0, deferred: 0, active: 0 });
    run.scanner.stop();
    await run.scheduler.stop();
    await run.store.close();
  });

  test('a message deferred past the horizon leaves memory and comes back from disk when it is due', async () => {
    const spoolDir = path.join(dir, 'spool');
    await fillSpool(spoolDir, { count: 3, size: 600, runId: 'horizon' });
    const run = await drainWith(spoolDir, 20, async (store, id) => {
      const meta = await store.read(id);
      if (meta.attempts > 0) {
        await store.remove(id);
        return 'done';
      }
      // As the dispatcher does: the state with its next attempt, 1.5 s ahead (past the 1 s horizon).
      const next: MessageMeta = { ...meta, attempts: 1, nextAttemptAt: Date.now() + 1500 };
      await store.update(next);
      return next.nextAttemptAt;
    });
    await waitFor(() => run.attempts.length === 3, 10_000, 'the first attempts');
    await waitFor(
      () => run.scheduler.snapshot().deferred === 3 && run.scheduler.room() === run.scheduler.window,
      5000,
      'all three on disk, none in memory',
    );
    await waitFor(() => run.store.queuedCount === 0, 20_000, 'the second attempts, from disk');
    expect(run.attempts).toHaveLength(6);
    run.scanner.stop();
    await run.scheduler.stop();
    await run.store.close();
  });
});

describe('smart hosts that are down, and an admin flush', () => {
  let dir: string;
  let running: RunningRelay | null = null;
  const sinks: SmtpSink[] = [];
  beforeEach(() => {
    dir = tempDir();
  });
  afterEach(async () => {
    await running?.stop();
    running = null;
    await Promise.all(sinks.splice(0).map((s) => s.close()));
    removeDir(dir);
  });

  const eventsFile = () => path.join(dir, 'events.jsonl');
  const events = () =>
    existsSync(eventsFile())
      ? readFileSync(eventsFile(), 'utf8')
          .trim()
          .split('\n')
          .filter(Boolean)
          .map((l) => JSON.parse(l) as Record<string, unknown>)
      : [];

  async function send(n: number): Promise<void> {
    for (let i = 0; i < n; i++) {
      const { client } = await openSession((running as RunningRelay).smtpPort);
      expect(
        await client.sendMessage(
          'erp@corp.example',
          [`r${i}@example.com`],
          message({ messageId: `deep-${i}@corp.example` }),
        ),
      ).toMatch(/^250 /);
      await client.quit();
    }
  }

  test('while the breaker is open messages wait on disk: one probe per cooldown, not a deferral of each', async () => {
    const primaryPort = await freePort();
    running = await startRelay(
      buildConfig(
        baseConfig(dir, [{ name: 'primary', port: primaryPort, breaker: { failures: 1, cooldown: '300ms' } }], {
          spool: {
            dir: path.join(dir, 'spool'),
            retry: { initial: '100ms', max: '200ms', factor: 2 },
            min_free_disk: 0,
          },
          events: { file: eventsFile() },
        }),
        dir,
      ),
    );
    await send(10);
    // The first attempt opens the breaker; after that, one probe delivery per cooldown.
    const attemptsMade = async () =>
      metricValue(
        await metricsText((running as RunningRelay).httpPort),
        'smarthop_delivery_attempts_total{smarthost="primary",outcome="unreachable"}',
      ) ?? 0;
    await waitFor(async () => (await attemptsMade()) >= 5, 20_000, 'four probes after the first failure');
    const attempts = await attemptsMade();
    const deferrals = events().filter((e) => e.type === 'deferred').length;
    // A deferral per attempt (one more may be under way), none for the messages that waited. Without
    // the gate, every message comes due at every cooldown and is deferred again, skipped: 40 and more.
    expect(deferrals).toBeLessThanOrEqual(attempts + 1);
    const metrics = await metricsText(running.httpPort);
    expect(
      metricValue(metrics, 'smarthop_queue_messages{state="ready"}')! +
        metricValue(metrics, 'smarthop_queue_messages{state="deferred"}')!,
    ).toBe(10);

    sinks.push(await startSink({ port: primaryPort }));
    await waitFor(() => sinks[0].messages.length === 10, 15_000, 'everything once the primary answers the probe');
  });

  test('queue flush probes at once: flushed mail goes to the returned primary, not to the dead backup', async () => {
    const [primaryPort, backupPort] = [await freePort(), await freePort()];
    const breaker = { failures: 1, cooldown: '1h' };
    running = await startRelay(
      buildConfig(
        baseConfig(
          dir,
          [
            { name: 'primary', port: primaryPort, priority: 10, breaker },
            { name: 'backup', port: backupPort, priority: 20, breaker },
          ],
          {
            spool: { dir: path.join(dir, 'spool'), retry: { initial: '1h', max: '1h', factor: 2 }, min_free_disk: 0 },
          },
        ),
        dir,
      ),
    );
    await send(5);
    await waitFor(
      async () =>
        metricValue(
          await metricsText((running as RunningRelay).httpPort),
          'smarthop_smarthost_up{smarthost="backup"}',
        ) === 0,
      10_000,
      'both breakers open',
    );
    await waitFor(
      async () =>
        metricValue(
          await metricsText((running as RunningRelay).httpPort),
          'smarthop_queue_messages{state="deferred"}',
        ) === 5,
      10_000,
      'all five deferred',
    );
    const primary = await startSink({ port: primaryPort });
    sinks.push(primary);
    const flushed = await fetch(`http://127.0.0.1:${running.httpPort}/api/queue/flush`, { method: 'POST' });
    expect(await flushed.json()).toEqual({ flushed: 5 });
    await waitFor(() => primary.messages.length === 5, 10_000, 'all five at the primary, at once');
    expect(new Set(primary.messages.map((m) => m.messageId)).size).toBe(5);
    await waitFor(
      async () =>
        metricValue(
          await metricsText((running as RunningRelay).httpPort),
          'smarthop_smarthost_up{smarthost="primary"}',
        ) === 1,
      5000,
      'the primary breaker closed',
    );
  });
});

describe('recovery runs in the background (child relay)', () => {
  let dir: string;
  let child: ChildProcess | null = null;
  afterEach(async () => {
    if (child && child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await new Promise((resolve) => child?.once('exit', resolve));
    }
    child = null;
    removeDir(dir);
  });

  /** Until the relay's HTTP endpoint answers: polled closely, so the answer comes as early in recovery as it can. */
  async function firstAnswer(httpPort: number): Promise<{ status: number; checks: Record<string, unknown> }> {
    const deadline = Date.now() + 15_000;
    for (;;) {
      const answer = await readyz(httpPort);
      if (answer) return answer;
      if (Date.now() > deadline) throw new Error('the relay did not listen within 15 s');
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
  }

  /** `count` committed message files in the spool's format, written directly (a test cannot wait for their fsyncs). */
  function writeQueue(queueDir: string, count: number): void {
    mkdirSync(queueDir, { recursive: true });
    const base = Date.now() - 60_000;
    for (let i = 0; i < count; i++) {
      const stamp = (base + Math.floor(i / 1000)).toString(36).toUpperCase().padStart(9, '0');
      const id = `${stamp}${i.toString(16).toUpperCase().padStart(10, '0')}`;
      const body = Buffer.from(`Subject: deep ${i}\r\nMessage-ID: <deep-${i}@corp.example>\r\n\r\nbody\r\n`);
      const recipients = pending(`r${i}@example.com`);
      const meta = queuedMeta(id, body.length, {
        receivedAt: base,
        nextAttemptAt: base,
        from: 'erp@corp.example',
        recipients,
      });
      writeFileSync(path.join(queueDir, `${id}.eml`), Buffer.concat([body, encodeTrailer(JSON.stringify(meta))]));
    }
  }

  test('mail is accepted while 30,000 queued messages are recovered; a kill -9 in recovery loses none', async () => {
    // On tmpfs where the machine has one: creating 30,000 files on a journaling file system costs
    // seconds of kernel time, which is not what this test is about. The relay reads them from memory
    // (the page cache) on either.
    dir = existsSync('/dev/shm') ? mkdtempSync('/dev/shm/smarthop-test-') : tempDir();
    // Enough that recovery outlasts the message below by a wide margin, also on a machine several times
    // faster: recovery checks about 10,000 queued files per CPU-second here, and the session costs a few
    // dozen event-loop turns (each waits for at most one recovery slice, 8 ms) plus its fsyncs, whatever
    // the CPU. A relay that recovers before it listens fails on `during` whatever the count.
    const count = 30_000;
    const [smtpPort, httpPort, downPort] = [await freePort(), await freePort(), await freePort()];
    const configFile = path.join(dir, 'relay.yaml');
    const ports = { smtp: smtpPort, http: httpPort, smarthost: downPort };
    writeFileSync(
      configFile,
      childRelayConfig(ports, { initial: '1h', max: '1h' }, { breaker: { failures: 1, cooldown: '1h' } }),
    );
    const queueDir = path.join(dir, 'spool', 'queue');
    writeQueue(queueDir, count);
    const start = () =>
      spawn(process.execPath, [...RELAY_NODE_FLAGS, CLI, 'start', '-c', configFile], {
        stdio: 'ignore',
        env: relayEnvironment(process.env),
      });

    child = start();
    const during = await firstAnswer(httpPort);
    const { client } = await openSession(smtpPort);
    const reply = await client.sendMessage(
      'erp@corp.example',
      ['new@example.com'],
      message({ subject: 'during recovery' }),
    );
    const afterAccept = await readyz(httpPort);
    child.kill('SIGKILL');
    await new Promise((resolve) => child?.once('exit', resolve));
    expect(reply).toMatch(/^250 2\.0\.0 Ok: queued as /);
    // Listening, taking mail, and still recovering: /readyz says so, before the message and after its 250.
    expect(during).toMatchObject({ status: 503, checks: { queue_recovered: false } });
    expect(afterAccept?.checks.queue_recovered).toBe(false);

    const emls = () => readdirSync(queueDir).filter((name) => name.endsWith('.eml')).length;
    expect(emls()).toBe(count + 1);
    child = start();
    await waitFor(
      async () => (await readyz(httpPort))?.checks.queue_recovered === true,
      60_000,
      'recovery to finish after the restart',
    );
    expect(emls()).toBe(count + 1);
    expect(readdirSync(path.join(dir, 'spool', 'corrupt'))).toEqual([]);
    const metrics = await metricsText(httpPort);
    expect(
      metricValue(metrics, 'smarthop_queue_messages{state="ready"}')! +
        metricValue(metrics, 'smarthop_queue_messages{state="deferred"}')!,
    ).toBe(count + 1);
  });
});
