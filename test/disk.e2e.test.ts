import { execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync, rmSync, statfsSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import type { SmtpSink } from '../src/tools/sink';
import {
  baseConfig,
  buildConfig,
  metricsText,
  metricValue,
  removeDir,
  startRelay,
  startSink,
  tempDir,
  waitFor,
  type RunningRelay,
} from './helpers/harness';
import { recordSkip } from './helpers/skip';
import { message, openSession, type RawSmtpClient } from './helpers/smtp-client';

/** A real small file system (tmpfs, 4 MiB) for the spool, so "disk full" is the kernel's ENOSPC. */
function mountTmpfs(dir: string): boolean {
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', dir], { stdio: 'pipe' });
    return true;
  } catch (err) {
    recordSkip(
      `cannot mount a tmpfs here (${(err as Error).message.split('\n')[0]}); ` +
        'the disk-full tests need root with CAP_SYS_ADMIN',
    );
    return false;
  }
}

const SPOOL_FS = tempDir('smarthop-tmpfs-');
const mounted = mountTmpfs(SPOOL_FS);
const describeIfMounted = mounted ? describe : describe.skip;

describeIfMounted('spool full: 452 4.3.1, nothing half-accepted, recovery when space returns', () => {
  let dir: string;
  let sink: SmtpSink;
  let running: RunningRelay;
  const filler = path.join(SPOOL_FS, 'filler');

  beforeAll(async () => {
    dir = tempDir();
    sink = await startSink();
    const spoolDir = path.join(SPOOL_FS, 'spool');
    mkdirSync(spoolDir);
    running = await startRelay(
      buildConfig(
        baseConfig(dir, [{ name: 'primary', port: sink.port }], {
          max_message_size: '8MiB',
          spool: { dir: spoolDir, retry: { initial: '200ms', max: '1s', factor: 2 }, min_free_disk: '1MiB' },
        }),
        dir,
      ),
    );
  });

  afterAll(async () => {
    await running.stop();
    await sink.close();
    removeDir(dir);
    execFileSync('umount', [SPOOL_FS]);
    removeDir(SPOOL_FS);
  });

  /** Leaves about `freeBytes` free on the 4 MiB file system. */
  function leaveFree(freeBytes: number): void {
    rmSync(filler, { force: true });
    const { bavail, bsize } = statfsSync(SPOOL_FS);
    writeFileSync(filler, Buffer.alloc(Math.max(0, bavail * bsize - freeBytes)));
  }

  /**
   * The relay reads the free space again at most once a second: MAIL is asked (and reset) until its
   * reply shows the new reading. Returns that reply.
   */
  async function mailOnceSeen(client: RawSmtpClient, expected: RegExp): Promise<string> {
    let reply = '';
    await waitFor(
      async () => {
        reply = (await client.command('MAIL FROM:<erp@corp.example>')) ?? '';
        if (expected.test(reply)) return true;
        expect(await client.command('RSET')).toMatch(/^250 /);
        return false;
      },
      10_000,
      `a MAIL reply matching ${expected}`,
    );
    return reply;
  }

  const spoolState = () => ({
    tmp: readdirSync(path.join(SPOOL_FS, 'spool', 'tmp')),
    queue: readdirSync(path.join(SPOOL_FS, 'spool', 'queue')),
  });

  test('below min_free_disk MAIL gets 452 4.3.1; once space returns that client is accepted, delivered', async () => {
    leaveFree(512 * 1024);
    const { client } = await openSession(running.smtpPort);
    expect(await mailOnceSeen(client, /^452 /)).toBe('452 4.3.1 Insufficient system storage, try again later');
    expect(
      metricValue(
        await metricsText(running.httpPort),
        'smarthop_messages_rejected_total{client="lan",reason="storage"}',
      ),
    ).toBe(1);

    leaveFree(3 * 1024 * 1024);
    await mailOnceSeen(client, /^250 /);
    expect(await client.command('RSET')).toMatch(/^250 /);
    expect(
      await client.sendMessage('erp@corp.example', ['a@example.com'], message({ subject: 'space is back' })),
    ).toMatch(/^250 2\.0\.0 Ok: queued as /);
    await client.quit();
    await waitFor(
      () => sink.messages.some((m) => m.data.toString().includes('Subject: space is back')),
      10_000,
      'delivery',
    );
  });

  test('the disk filling during DATA: 452 4.3.1, no partial file; a message that fits is then accepted', async () => {
    // Still more than min_free_disk (the last reading said so too): MAIL passes, the write runs out of space.
    leaveFree(1536 * 1024);
    const { client } = await openSession(running.smtpPort);
    const big = message({ subject: 'does not fit', body: `${'x'.repeat(998)}\r\n`.repeat(2500) });
    const reply = await client.sendMessage('erp@corp.example', ['a@example.com'], big);
    expect(reply).toMatch(/^452 4\.3\.1 Insufficient system storage, try again later \(ENOSPC\)$/);
    expect(spoolState()).toEqual({ tmp: [], queue: [] });

    expect(await client.sendMessage('erp@corp.example', ['a@example.com'], message({ subject: 'fits' }))).toMatch(
      /^250 /,
    );
    await client.quit();
    await waitFor(() => sink.messages.some((m) => m.data.toString().includes('Subject: fits')), 10_000, 'delivery');
    expect(sink.messages.some((m) => m.data.toString().includes('Subject: does not fit'))).toBe(false);
    rmSync(filler, { force: true });
  });
});

if (!mounted) {
  test.skip('spool full (needs a tmpfs mount)', () => undefined);
  removeDir(SPOOL_FS);
}
