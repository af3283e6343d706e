import { readdirSync, watch, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import type { SmtpSink } from '../src/tools/sink';
import { ChildRelay, childRelayConfig, tearDownChildRelay } from './helpers/child-relay';
import { freePort, metricsText, metricValue, removeDir, startSink, tempDir, waitFor } from './helpers/harness';
import { message, openSession } from './helpers/smtp-client';

/** The durability contract: a 250 survives kill -9, a half-received message leaves nothing behind. */
describe('durability across kill -9', () => {
  let dir: string;
  let smtpPort: number;
  let httpPort: number;
  let sinkPort: number;
  let configFile: string;
  let relay: ChildRelay | null = null;
  let sink: SmtpSink | null = null;

  // One spool for the file. Each test kills the relay and starts the next one itself, and ends with
  // that relay running on an empty queue: the next test starts from it (a relay restarted after a
  // crash is an ordinary relay), which saves a start per test. No smart host listens when a test begins.
  beforeAll(async () => {
    dir = tempDir();
    [smtpPort, httpPort, sinkPort] = [await freePort(), await freePort(), await freePort()];
    configFile = path.join(dir, 'relay.yaml');
    const ports = { smtp: smtpPort, http: httpPort, smarthost: sinkPort };
    writeFileSync(configFile, childRelayConfig(ports, { initial: '200ms', max: '500ms' }));
  });

  const spoolEmpty = () =>
    ['queue', 'tmp'].every((folder) => readdirSync(path.join(dir, 'spool', folder)).length === 0);

  beforeEach(async () => {
    await sink?.close();
    sink = null;
    const running = relay !== null && relay.process.exitCode === null && relay.process.signalCode === null;
    if (running && spoolEmpty()) return;
    // The first test, or one after a test that failed half way: a fresh spool and relay.
    await relay?.kill('SIGKILL');
    removeDir(path.join(dir, 'spool'));
    relay = await ChildRelay.start(configFile, httpPort);
  });

  afterAll(async () => {
    await tearDownChildRelay(relay, 'SIGKILL', sink, dir);
  });

  test('a message killed right after its 250 is delivered after the restart', async () => {
    const { client } = await openSession(smtpPort);
    const reply = await client.sendMessage(
      'erp@corp.example',
      ['boss@example.com'],
      message({ subject: 'survives kill -9', messageId: 'kill9@corp.example' }),
    );
    await (relay as ChildRelay).kill('SIGKILL');
    client.quit().catch(() => undefined);
    expect(reply).toMatch(/^250 2\.0\.0 Ok: queued as /);

    sink = await startSink({ port: sinkPort });
    relay = await ChildRelay.start(configFile, httpPort);
    await waitFor(() => (sink as SmtpSink).messages.length === 1, 15_000, 'delivery after restart');
    const [delivered] = sink.messages;
    expect(delivered.messageId).toBe('<kill9@corp.example>');
    expect(delivered.to).toEqual(['boss@example.com']);
    expect(delivered.data.toString()).toContain('Subject: survives kill -9');
    await waitFor(() => readdirSync(path.join(dir, 'spool', 'queue')).length === 0, 5000, 'queue to empty');
  });

  test('killed right after a DSN is written: after the restart only the DSN may repeat, never a delivery', async () => {
    sink = await startSink({
      port: sinkPort,
      rcptReply: (address) => (address.startsWith('gone@') ? { code: 550, message: '5.1.1 No such user' } : null),
    });
    const queueDir = path.join(dir, 'spool', 'queue');
    let originalId = '';
    // SIGKILL the moment a second message (the DSN) lands in queue/: between the DSN and the original's last state.
    const killed = new Promise<void>((resolve) => {
      const watcher = watch(queueDir, (_event, name) => {
        const file = String(name ?? '');
        if (originalId === '' || !file.endsWith('.eml') || file.startsWith(originalId)) return;
        watcher.close();
        void (relay as ChildRelay).kill('SIGKILL').then(() => resolve());
      });
    });
    const { client } = await openSession(smtpPort);
    const reply = (await client.sendMessage(
      'erp@corp.example',
      ['ok@example.com', 'gone@example.com'],
      message({ subject: 'one of two refused' }),
    )) as string;
    expect(reply).toMatch(/^250 2\.0\.0 Ok: queued as /);
    originalId = reply.split(' ').pop() as string;
    client.quit().catch(() => undefined);
    await killed;

    relay = await ChildRelay.start(configFile, httpPort);
    await waitFor(() => readdirSync(queueDir).length === 0, 15_000, 'queue to empty after the restart');
    const originals = (sink as SmtpSink).messages.filter((m) => m.from !== '');
    expect(originals.map((m) => m.to)).toEqual([['ok@example.com']]);
    const dsns = (sink as SmtpSink).messages.filter((m) => m.from === '');
    expect(dsns.length).toBeGreaterThanOrEqual(1);
    expect(dsns.length).toBeLessThanOrEqual(2);
  });

  test('a relay killed in the middle of DATA leaves nothing queued and delivers nothing after restart', async () => {
    const { client } = await openSession(smtpPort);
    expect(await client.command('MAIL FROM:<erp@corp.example>')).toMatch(/^250/);
    expect(await client.command('RCPT TO:<boss@example.com>')).toMatch(/^250/);
    expect(await client.command('DATA')).toMatch(/^354/);
    client.write(`${message({ subject: 'never finished' })}\r\n${'partial line\r\n'.repeat(1000)}`);
    await waitFor(() => readdirSync(path.join(dir, 'spool', 'tmp')).length === 1, 5000, 'the partial file in tmp/');
    await (relay as ChildRelay).kill('SIGKILL');
    await client.quit().catch(() => undefined);

    sink = await startSink({ port: sinkPort });
    relay = await ChildRelay.start(configFile, httpPort);
    expect(readdirSync(path.join(dir, 'spool', 'tmp'))).toHaveLength(0);
    expect(readdirSync(path.join(dir, 'spool', 'queue'))).toHaveLength(0);
    // Recovery is over once the relay answers: it scheduled nothing, and a message sent now goes out alone.
    const metrics = await metricsText(httpPort);
    expect([
      metricValue(metrics, 'smarthop_queue_messages{state="ready"}'),
      metricValue(metrics, 'smarthop_queue_messages{state="deferred"}'),
    ]).toEqual([0, 0]);
    const after = (await openSession(smtpPort)).client;
    expect(
      await after.sendMessage('erp@corp.example', ['boss@example.com'], message({ subject: 'after the restart' })),
    ).toMatch(/^250 /);
    await after.quit();
    await waitFor(
      () => (sink as SmtpSink).messages.length === 1 && readdirSync(path.join(dir, 'spool', 'queue')).length === 0,
      15_000,
      'the delivery of the message sent after the restart',
    );
    expect(sink.messages[0].data.toString()).toContain('Subject: after the restart');
  });

  test('SIGTERM stops the relay cleanly with exit code 0', async () => {
    expect(await (relay as ChildRelay).kill('SIGTERM')).toBe(0);
    relay = null;
  });
});
