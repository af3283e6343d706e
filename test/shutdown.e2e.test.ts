import { readdirSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';
import { SMTPServer } from 'smtp-server';
import { stringify } from 'yaml';
import { ChildRelay, tearDownChildRelay } from './helpers/child-relay';
import { freePort, tempDir, waitFor } from './helpers/harness';
import { message, openSession, RawSmtpClient } from './helpers/smtp-client';

/**
 * A smart host that takes its time over each message, so a SIGTERM lands while deliveries are under
 * way. It counts every Message-ID it receives: a duplicate would show.
 */
class SlowSmartHost {
  readonly received: string[] = [];
  inFlight = 0;
  private readonly server: SMTPServer;

  constructor(private readonly delayMs: number) {
    this.server = new SMTPServer({
      authOptional: true,
      disabledCommands: ['AUTH', 'STARTTLS'],
      logger: false,
      disableReverseLookup: true,
      closeTimeout: 500,
      onData: (stream, _session, callback) => {
        this.inFlight++;
        const chunks: Buffer[] = [];
        stream.on('data', (chunk: Buffer) => chunks.push(chunk));
        stream.on('end', () => {
          setTimeout(() => {
            const id = /^Message-ID:\s*<([^>]+)>/im.exec(Buffer.concat(chunks).toString())?.[1] ?? 'none';
            this.received.push(id);
            this.inFlight--;
            callback(null, 'Ok');
          }, this.delayMs);
        });
      },
    });
    this.server.on('error', () => undefined);
  }

  async listen(): Promise<number> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    return (this.server.server.address() as AddressInfo).port;
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

// Real sockets, child processes and timers on a shared 2-core machine: be generous.
jest.setTimeout(90_000);

describe('SIGTERM during traffic', () => {
  let dir: string;
  let relay: ChildRelay | null = null;
  let smarthost: SlowSmartHost | null = null;

  beforeEach(() => {
    dir = tempDir();
  });

  afterEach(async () => {
    await tearDownChildRelay(relay, 'SIGKILL', smarthost, dir);
    relay = null;
    smarthost = null;
  });

  test('stops accepting, finishes DATA and deliveries under way, exits 0; a restart sends the rest once', async () => {
    smarthost = new SlowSmartHost(400);
    const smarthostPort = await smarthost.listen();
    const [smtpPort, httpPort] = [await freePort(), await freePort()];
    const configFile = path.join(dir, 'relay.yaml');
    writeFileSync(
      configFile,
      stringify({
        hostname: 'relay.test',
        shutdown_grace: '10s',
        spool: { dir: './spool', retry: { initial: '200ms', max: '1s', factor: 2 }, min_free_disk: 0 },
        delivery: { concurrency: 3 },
        listeners: [{ name: 'smtp', address: `127.0.0.1:${smtpPort}`, tls: 'none', auth: 'off' }],
        clients: [{ name: 'lan', networks: ['127.0.0.0/8'] }],
        routes: { default: { smarthosts: ['primary'] } },
        smarthosts: [{ name: 'primary', host: '127.0.0.1', port: smarthostPort, tls: 'none', max_connections: 3 }],
        http: { address: `127.0.0.1:${httpPort}` },
        log: { level: 'warn' },
      }),
    );
    relay = await ChildRelay.start(configFile, httpPort);

    const accepted: string[] = [];
    const unexpected: string[] = [];
    let stop = false;
    const sender = async (n: number) => {
      const { client } = await openSession(smtpPort);
      for (let i = 0; !stop; i++) {
        const id = `s${n}-m${i}@corp.example`;
        const reply = await client
          .sendMessage('app@corp.example', ['user@example.com'], message({ messageId: id }))
          .catch(() => null);
        if (reply?.startsWith('250 ')) accepted.push(id);
        else {
          // Once stopping, the relay may only say 421 or close; anything else would be a lie.
          if (reply !== null && !reply.startsWith('421')) unexpected.push(reply);
          break;
        }
      }
      client.write('QUIT\r\n');
    };
    const senders = [0, 1, 2].map(sender);
    await waitFor(
      () => accepted.length >= 10 && (smarthost as SlowSmartHost).inFlight > 0,
      20_000,
      'traffic with deliveries under way',
    );

    // One client is in the middle of DATA when the signal arrives.
    const { client: slow } = await openSession(smtpPort);
    expect(await slow.command('MAIL FROM:<app@corp.example>')).toMatch(/^250/);
    expect(await slow.command('RCPT TO:<slow@example.com>')).toMatch(/^250/);
    expect(await slow.command('DATA')).toMatch(/^354/);
    const slowBody = message({ messageId: 'in-data@corp.example' });
    slow.write(slowBody.slice(0, 40));

    await waitFor(() => (smarthost as SlowSmartHost).inFlight > 0, 20_000, 'a delivery under way');
    const inFlightAtSignal = (smarthost as SlowSmartHost).inFlight;
    const exited = relay.kill('SIGTERM');
    stop = true;
    await waitFor(
      async () =>
        (await fetch(`http://127.0.0.1:${httpPort}/readyz`).then(
          (r) => r.status,
          () => 0,
        )) !== 200,
      10_000,
      '/readyz to stop saying ready',
    );
    await expect(RawSmtpClient.connect(smtpPort)).rejects.toThrow(/ECONNREFUSED/);
    slow.write(`${slowBody.slice(40)}\r\n.\r\n`);
    const slowReply = await slow.reply();
    expect(slowReply).toMatch(/^250 2\.0\.0 Ok: queued as /);
    accepted.push('in-data@corp.example');
    expect(await slow.command('NOOP')).toMatch(/^421/);
    await slow.quit();
    await Promise.all(senders);

    expect(await exited).toBe(0);
    expect(unexpected).toEqual([]);
    expect(inFlightAtSignal).toBeGreaterThan(0);
    // The deliveries under way were finished before the exit, not cut off and left to repeat.
    expect((smarthost as SlowSmartHost).inFlight).toBe(0);
    const deliveredBeforeRestart = [...smarthost.received];
    const spooled = readdirSync(path.join(dir, 'spool', 'queue')).filter((f) => f.endsWith('.eml')).length;
    expect(deliveredBeforeRestart.length + spooled).toBeGreaterThanOrEqual(accepted.length);

    relay = await ChildRelay.start(configFile, httpPort);
    await waitFor(
      () => readdirSync(path.join(dir, 'spool', 'queue')).length === 0,
      30_000,
      'the restarted relay to deliver the rest',
    );
    const delivered = (smarthost as SlowSmartHost).received;
    for (const id of accepted) expect(delivered.filter((d) => d === id)).toEqual([id]);
    expect(new Set(delivered).size).toBe(delivered.length);
    expect(await relay.kill('SIGTERM')).toBe(0);
  });
});
