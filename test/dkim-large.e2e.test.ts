import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import type { SmtpSink } from '../src/tools/sink';
import { ChildRelay } from './helpers/child-relay';
import { makeDkimKey, verifyDkim, zoneResolver } from './helpers/dkim';
import { freePort, removeDir, startSink, tempDir, waitFor } from './helpers/harness';
import { message, openSession } from './helpers/smtp-client';

const MiB = 1024 * 1024;
const BODY_BYTES = 50 * MiB;
/**
 * The relay may grow by this much while it takes in, signs and forwards 50 MiB (issue 21's bound),
 * and must come back to within RETURN_WITHIN of where it started. Holding the message would take
 * 50 MiB by itself; it is never held (a session holds at most 64 KiB of it). What streaming leaves is
 * spent Buffers (each socket read, smtp-server's copy of it, each read of the queue file), which V8
 * frees on its own schedule, at the latest when they pass its 64 MiB external-memory limit: 19-42 MiB
 * of growth on this 2-core machine. The relay runs as deployed, with MALLOC_ARENA_MAX=2 (ChildRelay):
 * without it glibc gives the delivery thread an arena of its own that keeps the Buffers the thread
 * freed resident.
 */
const MAX_RSS_GROWTH = 64 * MiB;
const RETURN_WITHIN = 10 * MiB;

/** 50 MiB (and a line) of 78-byte lines (76 characters + CRLF), generated chunk by chunk as the socket drains. */
function* bodyChunks(sent: { hash: ReturnType<typeof createHash>; bytes: number }): Generator<Buffer> {
  const tail = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'.slice(0, 68);
  const line = (n: number) => `${n.toString(36).padStart(8, '0')}${tail}\r\n`;
  let written = 0;
  let n = 0;
  while (written < BODY_BYTES) {
    const lines: string[] = [];
    for (let i = 0; i < 800 && written < BODY_BYTES; i++, n++) {
      const next = line(n);
      lines.push(next);
      written += next.length;
    }
    const chunk = Buffer.from(lines.join(''), 'latin1');
    sent.hash.update(chunk);
    sent.bytes += chunk.length;
    yield chunk;
  }
}

function procStatus(pid: number, field: 'VmRSS' | 'VmHWM'): number {
  const match = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!match) throw new Error(`no ${field} for pid ${pid}`);
  return Number(match[1]) * 1024;
}

describe('a 50 MiB message is rewritten and DKIM-signed while it streams', () => {
  let dir: string;
  let relay: ChildRelay | null = null;
  let sink: SmtpSink | null = null;

  beforeEach(() => {
    dir = tempDir();
  });

  afterEach(async () => {
    await relay?.kill('SIGTERM');
    await sink?.close();
    removeDir(dir);
  });

  test('verifies at the sink, body byte for byte; the relay grows < 64 MiB and returns to within 10 MiB', async () => {
    const key = makeDkimKey(dir, 'rsa');
    sink = await startSink();
    const smtpPort = await freePort();
    const httpPort = await freePort();
    const configFile = path.join(dir, 'relay.config.json');
    // JSON is YAML: the child reads it with the same loader as any config file.
    writeFileSync(
      configFile,
      JSON.stringify({
        hostname: 'relay.test',
        max_message_size: '60MiB',
        spool: { dir: './spool', min_free_disk: 0 },
        listeners: [{ name: 'smtp', address: `127.0.0.1:${smtpPort}`, tls: 'none' }],
        clients: [{ name: 'lan', networks: ['127.0.0.1/32'] }],
        routes: {
          default: {
            smarthosts: ['sink'],
            envelope_from: 'bounces@corp.example',
            rewrite_from: { unless: ['*@corp.example'], to: 'noreply@corp.example' },
            dkim: { domain: 'corp.example', selector: 's1', private_key: key.file },
          },
        },
        smarthosts: [{ name: 'sink', host: '127.0.0.1', port: sink.port, tls: 'none', socket_timeout: '60s' }],
        http: { address: `127.0.0.1:${httpPort}` },
        log: { level: 'warn' },
      }),
    );
    relay = await ChildRelay.start(configFile, httpPort);
    const pid = relay.process.pid as number;

    // Warm up (modules loaded, pools and JIT settled) with a small message, then measure from there.
    const warm = await openSession(smtpPort);
    expect(
      await warm.client.sendMessage(
        'scanner@printer.local',
        ['user@example.com'],
        message({ from: 'scanner@printer.local' }),
      ),
    ).toMatch(/^250 /);
    await warm.client.quit();
    const current = sink;
    await waitFor(() => current.messages.length === 1, 20_000, 'warm-up delivery');
    const baseline = procStatus(pid, 'VmRSS');
    writeFileSync(`/proc/${pid}/clear_refs`, '5'); // resets the peak (VmHWM) to the current RSS

    const { client } = await openSession(smtpPort);
    expect(await client.command('MAIL FROM:<scanner@printer.local>')).toMatch(/^250 /);
    expect(await client.command('RCPT TO:<user@example.com>')).toMatch(/^250 /);
    expect(await client.command('DATA')).toMatch(/^354 /);
    client.write('From: "Big Scanner" <scanner@printer.local>\r\nTo: user@example.com\r\nSubject: 50 MiB\r\n\r\n');
    const sent = { hash: createHash('sha256'), bytes: 0 };
    await client.writeAll(bodyChunks(sent));
    client.write('.\r\n');
    expect(await client.reply(120_000)).toMatch(/^250 2\.0\.0 Ok: queued as /);
    await client.quit();

    await waitFor(() => current.messages.length === 2, 120_000, 'delivery of the 50 MiB message');
    const growth = procStatus(pid, 'VmHWM') - baseline;
    const delivered = current.messages[1];
    expect(delivered.from).toBe('bounces@corp.example');
    const data = delivered.data;
    const bodyStart = data.indexOf('\r\n\r\n') + 4;
    const header = data.subarray(0, bodyStart).toString('latin1');
    expect(header).toMatch(/^DKIM-Signature: /);
    expect(header).toContain('\r\nFrom: Big Scanner <noreply@corp.example>\r\n');
    expect(sent.bytes).toBeGreaterThanOrEqual(BODY_BYTES);
    expect(data.length - bodyStart).toBe(sent.bytes);
    expect(createHash('sha256').update(data.subarray(bodyStart)).digest('hex')).toBe(sent.hash.digest('hex'));
    expect(await verifyDkim(data, zoneResolver({ 's1._domainkey.corp.example': { TXT: [key.record] } }))).toEqual([
      'corp.example/s1 rsa-sha256 pass',
    ]);
    expect(growth).toBeLessThan(MAX_RSS_GROWTH);
    // For the record in the test output: how much the relay actually grew.
    process.stdout.write(
      `relay RSS: baseline ${(baseline / MiB).toFixed(1)} MiB, peak growth ${(growth / MiB).toFixed(1)} MiB ` +
        `for a ${BODY_BYTES / MiB} MiB message\n`,
    );
    // Once the message is gone the relay gives the memory back (V8 collects the spent Buffers on its
    // own schedule, glibc returns the pages): waited for, with room for a loaded machine.
    await waitFor(
      () => procStatus(pid, 'VmRSS') - baseline < RETURN_WITHIN,
      60_000,
      `RSS back within ${RETURN_WITHIN / MiB} MiB of the baseline`,
    );
    const settled = procStatus(pid, 'VmRSS') - baseline;
    process.stdout.write(`relay RSS: back to ${(settled / MiB).toFixed(1)} MiB over the baseline after the message\n`);
  }, 300_000);
});
