import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readdirSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { LOCK_FILE, SpoolInUse, SpoolLock } from '../src/spool/lock';
import type { SmtpSink } from '../src/tools/sink';
import { runAdminCommand } from './helpers/admin-cli';
import { ChildRelay, childRelayConfig, CLI, runCli, tearDownChildRelay } from './helpers/child-relay';
import { freePort, removeDir, startSink, tempDir, waitFor, waitRecovered } from './helpers/harness';
import { message, openSession } from './helpers/smtp-client';

jest.setTimeout(60_000);

/** One spool, one relay: the lock taken at start, what a second start does, and the offline queue commands. */
describe('the spool lock', () => {
  let dir: string;
  beforeEach(() => {
    dir = tempDir();
  });
  afterEach(() => removeDir(dir));

  test('held by one taker at a time, named in the refusal, free again once released', async () => {
    const spool = path.join(dir, 'spool');
    const lock = await SpoolLock.acquire(spool, 'relay');
    const refused = await SpoolLock.acquire(spool, 'cli').catch((err: unknown) => err);
    expect(refused).toBeInstanceOf(SpoolInUse);
    expect((refused as SpoolInUse).holder).toMatchObject({ pid: process.pid, role: 'relay' });
    expect((refused as Error).message).toMatch(/is in use by a running relay \(pid \d+, since /);
    await lock.release();
    expect(existsSync(path.join(spool, LOCK_FILE))).toBe(false);
    await (await SpoolLock.acquire(spool, 'cli')).release();
  });

  test('a socket left by a holder killed with SIGKILL is stale and taken over', async () => {
    const spool = path.join(dir, 'spool');
    const socket = path.join(spool, LOCK_FILE);
    // Another process takes the lock and is killed: the kernel closes its socket, the file stays.
    const holder = spawn(
      process.execPath,
      [
        '-e',
        `require('node:fs').mkdirSync(${JSON.stringify(spool)}, { recursive: true }); ` +
          `require('node:net').createServer().listen(${JSON.stringify(socket)}, () => console.log('listening'))`,
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    await new Promise<void>((resolve) => holder.stdout?.once('data', () => resolve()));
    expect((await SpoolLock.acquire(spool, 'relay').catch((err: unknown) => err)) instanceof SpoolInUse).toBe(true);
    holder.kill('SIGKILL');
    await new Promise((resolve) => holder.once('exit', resolve));
    expect(existsSync(socket)).toBe(true);
    const lock = await SpoolLock.acquire(spool, 'relay');
    expect(readdirSync(spool)).toEqual([LOCK_FILE]);
    await lock.release();
  });
});

describe('one spool, one relay (child processes)', () => {
  let dir: string;
  let smtpPort: number;
  let httpPort: number;
  let sinkPort: number;
  let configFile: string;
  let relay: ChildRelay | null = null;
  let sink: SmtpSink | null = null;

  const config = (smtp: number, http: number) =>
    childRelayConfig({ smtp, http, smarthost: sinkPort }, { initial: '1h', max: '1h' });

  // One spool for the file: each test begins with a relay holding it and no smart host listening, and
  // the relay a test ends with (started after a kill -9 or a SIGTERM) is the next test's, which saves
  // a start per test. Mail a test leaves queued waits an hour (the retry delay) or for the next flush;
  // each test names its own mail.
  beforeAll(async () => {
    dir = tempDir();
    [smtpPort, httpPort, sinkPort] = [await freePort(), await freePort(), await freePort()];
    configFile = path.join(dir, 'relay.yaml');
    writeFileSync(configFile, config(smtpPort, httpPort));
  });

  beforeEach(async () => {
    await sink?.close();
    sink = null;
    if (relay !== null && relay.process.exitCode === null && relay.process.signalCode === null) return;
    relay = await ChildRelay.start(configFile, httpPort);
  });

  afterAll(async () => {
    await tearDownChildRelay(relay, 'SIGKILL', sink, dir);
  });

  test("a second start on the same spool.dir exits 1 with a clear error; the first's tmp/ is left alone", async () => {
    const { client } = await openSession(smtpPort);
    expect(await client.command('MAIL FROM:<erp@corp.example>')).toMatch(/^250/);
    expect(await client.command('RCPT TO:<boss@example.com>')).toMatch(/^250/);
    expect(await client.command('DATA')).toMatch(/^354/);
    client.write(`${message({ subject: 'in flight while a second relay starts' })}\r\n${'line\r\n'.repeat(20_000)}`);
    const tmp = path.join(dir, 'spool', 'tmp');
    await waitFor(() => readdirSync(tmp).length === 1, 5000, 'the message in tmp/');

    const second = path.join(dir, 'second.yaml');
    writeFileSync(second, config(await freePort(), await freePort()));
    const run = spawnSync(process.execPath, [CLI, 'start', '-c', second], { encoding: 'utf8', timeout: 20_000 });
    expect(run.status).toBe(1);
    const { pid } = (relay as ChildRelay).process;
    expect(run.stderr).toMatch(
      new RegExp(
        `cannot start: spool .*spool is in use by a running relay \\(pid ${pid}, since .*one spool has one relay`,
      ),
    );
    expect(readdirSync(tmp)).toHaveLength(1);

    client.write('\r\n.\r\n');
    expect(await client.reply()).toMatch(/^250 2\.0\.0 Ok: queued as /);
    await client.quit();
  });

  test('after kill -9 the lock is stale: the next start takes it and delivers what was queued', async () => {
    const { client } = await openSession(smtpPort);
    expect(
      await client.sendMessage(
        'erp@corp.example',
        ['boss@example.com'],
        message({ messageId: 'stale-lock@corp.example' }),
      ),
    ).toMatch(/^250 /);
    await client.quit();
    await (relay as ChildRelay).kill('SIGKILL');
    expect(existsSync(path.join(dir, 'spool', LOCK_FILE))).toBe(true);

    sink = await startSink({ port: sinkPort });
    relay = await ChildRelay.start(configFile, httpPort);
    // The first attempt may have found the smart host down and deferred the message for an hour
    // before the kill: a flush makes it due now, which is all the restart can be asked to do.
    await waitRecovered(httpPort);
    expect((await fetch(`http://127.0.0.1:${httpPort}/api/queue/flush`, { method: 'POST' })).status).toBe(200);
    await waitFor(
      () => readdirSync(path.join(dir, 'spool', 'queue')).length === 0,
      15_000,
      'the queued mail delivered after the restart',
    );
    expect((sink as SmtpSink).messages.filter((m) => m.messageId === '<stale-lock@corp.example>')).toHaveLength(1);
  });

  test("queue hold, release and delete work on a stopped relay's spool and refuse while a relay holds it", async () => {
    const ids: string[] = [];
    for (const to of ['a@example.com', 'b@example.com']) {
      const { client } = await openSession(smtpPort);
      const reply = (await client.sendMessage('erp@corp.example', [to], message())) as string;
      await client.quit();
      expect(reply).toMatch(/^250 /);
      ids.push(reply.split(' ').pop() as string);
    }
    const [a, b] = ids;
    expect(await (relay as ChildRelay).kill('SIGTERM')).toBe(0);
    relay = null;
    const files = (folder: string) => readdirSync(path.join(dir, 'spool', folder)).sort();

    // Real CLI processes where the point is a process of its own taking or meeting the lock (the first
    // hold, the refusal below); the other commands run in this process (runAdminCommand: the same
    // registered commands and exit status), which takes the spool's lock the same way.
    const hold = await runCli(['queue', 'hold', a, '-c', configFile]);
    expect(hold).toMatchObject({ code: 0, stdout: `${a}: held\n` });
    expect(hold.stderr).toMatch(/cannot reach the relay's admin API .*; acting on the spool directly/);
    expect(files('hold')).toEqual([`${a}.eml`, `${a}.json`]);
    expect(await runAdminCommand(['queue', 'release', a, '--offline', '-c', configFile])).toMatchObject({
      code: 0,
      stdout: `${a}: released\n`,
    });
    expect(files('hold')).toEqual([]);
    expect(await runAdminCommand(['queue', 'delete', b, '--offline', '-c', configFile])).toMatchObject({
      code: 0,
      stdout: `${b}: deleted\n`,
    });
    expect(await runAdminCommand(['queue', 'delete', b, '--offline', '-c', configFile])).toMatchObject({
      code: 1,
      stdout: `${b}: no message ${b} in the spool\n`,
    });
    expect(await runAdminCommand(['queue', 'hold', a, '--offline', '-c', configFile])).toMatchObject({ code: 0 });
    expect(existsSync(path.join(dir, 'spool', LOCK_FILE))).toBe(false);

    // The relay starts on the spool as the commands left it: the held message stays held.
    sink = await startSink({ port: sinkPort });
    relay = await ChildRelay.start(configFile, httpPort);
    await waitFor(
      async () => (await fetch(`http://127.0.0.1:${httpPort}/readyz`)).status === 200,
      15_000,
      'recovery done',
    );
    const refused = await runCli(['queue', 'release', a, '--offline', '-c', configFile]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(
      new RegExp(`is in use by a running relay \\(pid ${relay.process.pid},.*use the running relay's admin API`),
    );
    expect(files('hold')).toEqual([`${a}.eml`, `${a}.json`]);
    expect(await runAdminCommand(['queue', 'release', a, '-c', configFile])).toMatchObject({
      code: 0,
      stdout: `${a}: released\n`,
    });
    await waitFor(() => (sink as SmtpSink).messages.length === 1, 15_000, 'the released message');
    expect(sink.messages.map((m) => m.to)).toEqual([['a@example.com']]);
  });
});
