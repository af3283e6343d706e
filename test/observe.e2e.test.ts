import { readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';
import { Writable } from 'node:stream';
import { stringify } from 'yaml';
import { loadConfigFile } from '../src/config/load';
import { hashPassword } from '../src/ingress/password';
import { RotatingEventFile } from '../src/observe/event-file';
import { createLogger } from '../src/observe/logger';
import { signBody } from '../src/observe/webhook';
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
import { message, openSession, plainAuth } from './helpers/smtp-client';

/** Logs, the events file and the webhook: what they say, and what they must never say. */
// Real sockets, child processes and timers on a shared 2-core machine: be generous.
jest.setTimeout(90_000);

describe('logs and events', () => {
  let dir: string;
  let running: RunningRelay | null;
  const sinks: SmtpSink[] = [];
  const servers: Server[] = [];

  beforeEach(() => {
    dir = tempDir();
    running = null;
  });

  afterEach(async () => {
    await running?.stop();
    await Promise.all(sinks.splice(0).map((s) => s.close()));
    for (const server of servers.splice(0)) {
      server.closeAllConnections();
      server.close();
    }
    removeDir(dir);
  });

  async function sink(options: Parameters<typeof startSink>[0] = {}): Promise<SmtpSink> {
    const s = await startSink(options);
    sinks.push(s);
    return s;
  }

  /** A webhook receiver on loopback; `respond` decides each answer (or never answers). */
  async function receiver(
    respond: (req: IncomingMessage, body: string, res: ServerResponse, n: number) => void,
  ): Promise<string> {
    let n = 0;
    const server = createServer((req, res) => {
      let body = '';
      req.setEncoding('utf8');
      req.on('data', (chunk: string) => (body += chunk));
      req.on('end', () => respond(req, body, res, ++n));
    });
    servers.push(server);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return `http://127.0.0.1:${(server.address() as AddressInfo).port}/hooks/smarthop`;
  }

  test('AUTH secrets, passwords, tokens, bodies never reach a log; outcomes are one Postfix-style line', async () => {
    const password = 'Corr3ct-Horse-Log-Secret';
    const wrongPassword = 'Wr0ng-Guess-Log-Secret';
    const smarthostPass = 'Upstream-Pass-Log-Secret';
    const token = 'Admin-Token-Log-Secret-0123456789';
    const webhookSecret = 'Webhook-Secret-Log-0123456789';
    const bodyMarker = 'BODY-MARKER-must-not-be-logged-7d1f';
    const primary = await sink({ auth: { user: 'relay', pass: smarthostPass } });
    const lines: string[] = [];
    const capture = new Writable({
      write: (chunk: Buffer, _enc, done) => {
        lines.push(...chunk.toString().split('\n').filter(Boolean));
        done();
      },
    });

    const raw = baseConfig(
      dir,
      [{ name: 'primary', port: primary.port, auth: { user: 'relay', pass: smarthostPass } }],
      {
        listeners: [{ name: 'smtp', address: '127.0.0.1:0', tls: 'none', auth: 'optional', allow_insecure_auth: true }],
        clients: [
          { name: 'lan', networks: ['127.0.0.1/32'] },
          { name: 'webshop', username: 'webshop', password_hash: await hashPassword(password) },
        ],
        http: { address: '127.0.0.1:0', token },
        events: {
          file: path.join(dir, 'events.jsonl'),
          webhook: { url: await receiver((_req, _body, res) => res.writeHead(204).end()), secret: webhookSecret },
        },
        log: { level: 'trace' },
      },
    );
    const configFile = path.join(dir, 'relay.yaml');
    writeFileSync(configFile, stringify(raw));
    running = await startRelay(buildConfig(raw, dir), {
      logger: createLogger('trace', capture),
      configSource: () => loadConfigFile(configFile, {}),
    });

    const { client } = await openSession(running.smtpPort);
    expect(await client.command(plainAuth('webshop', wrongPassword))).toMatch(/^535 /);
    expect(await client.command('AUTH LOGIN')).toMatch(/^334 /);
    expect(await client.command(Buffer.from('webshop').toString('base64'))).toMatch(/^334 /);
    expect(await client.command(Buffer.from(wrongPassword).toString('base64'))).toMatch(/^535 /);
    expect(await client.command(plainAuth('webshop', password))).toMatch(/^235 /);
    const reply = await client.sendMessage(
      'shop@corp.example',
      ['buyer@example.com'],
      message({ subject: 'order', body: `${bodyMarker}\r\nsecond line` }),
    );
    await client.quit();
    const id = (reply as string).split(' ').pop() as string;
    await waitFor(() => primary.messages.length === 1, 15_000, 'delivery');
    // A reload that fails and one that succeeds: their log lines must not echo secrets either.
    writeFileSync(
      configFile,
      stringify({ ...raw, clients: [{ name: 'webshop', username: 'webshop', password_hash: password }] }),
    );
    await fetch(`http://127.0.0.1:${running.httpPort}/api/reload`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}` },
    });
    writeFileSync(configFile, stringify(raw));
    await fetch(`http://127.0.0.1:${running.httpPort}/api/reload`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}` },
    });
    await running.stop();
    running = null;

    const all = lines.join('\n');
    expect(lines.length).toBeGreaterThan(5);
    for (const secret of [password, wrongPassword, smarthostPass, token, webhookSecret, bodyMarker]) {
      expect(all).not.toContain(secret);
      expect(all).not.toContain(Buffer.from(secret).toString('base64'));
    }
    expect(all).not.toContain(Buffer.from(`\0webshop\0${password}`).toString('base64'));
    const parsed = lines.map((l) => JSON.parse(l) as { msg: string; queue_id?: string });
    const received = parsed.filter((l) => l.queue_id === id).map((l) => l.msg);
    expect(received).toContainEqual(
      expect.stringMatching(
        new RegExp(
          `^${id}: client=webshop\\[127\\.0\\.0\\.1\\], listener=smtp, ` +
            'from=<shop@corp\\.example>, size=\\d+, nrcpt=1 \\(queued\\)$',
        ),
      ),
    );
    expect(received).toContainEqual(
      expect.stringMatching(
        new RegExp(
          `^${id}: to=<buyer@example\\.com>, relay=primary\\[127\\.0\\.0\\.1\\]:${primary.port}, ` +
            'delay=\\d+\\.\\d\\d, attempt=1, status=sent \\(250 ',
        ),
      ),
    );
    const messages = parsed.map((l) => l.msg);
    expect(messages).toContainEqual('authentication failed for username "webshop" from [127.0.0.1]');
    expect(messages).toContainEqual(
      expect.stringMatching(
        /^config reload \(api\) refused, still running the previous configuration: clients\[0\]\.password_hash: /,
      ),
    );
  });

  test('events.jsonl is rotated by size and keeps N files', async () => {
    const file = path.join(dir, 'events', 'events.jsonl');
    const drops: number[] = [];
    const output = new RotatingEventFile({
      file,
      maxSize: 1000,
      keep: 2,
      onDrop: (n) => drops.push(n),
      onError: (err) => {
        throw err;
      },
    });
    for (let i = 0; i < 60; i++)
      output.write({ ts: 't', type: 'received', queue_id: `Q${String(i).padStart(3, '0')}`, pad: 'x'.repeat(40) });
    await output.close();
    expect(readdirSync(path.dirname(file)).sort()).toEqual(['events.jsonl', 'events.jsonl.1', 'events.jsonl.2']);
    const ids = (name: string) =>
      readFileSync(path.join(path.dirname(file), name), 'utf8')
        .trim()
        .split('\n')
        .map((l) => (JSON.parse(l) as { queue_id: string }).queue_id);
    for (const name of ['events.jsonl', 'events.jsonl.1', 'events.jsonl.2'])
      expect(statSync(path.join(path.dirname(file), name)).size).toBeLessThanOrEqual(1000);
    // Newest in the live file, then .1, then .2: together a contiguous tail of what was written, in order.
    const kept = [...ids('events.jsonl.2'), ...ids('events.jsonl.1'), ...ids('events.jsonl')];
    expect(kept[kept.length - 1]).toBe('Q059');
    expect(kept).toEqual(
      Array.from({ length: kept.length }, (_, i) => `Q${String(60 - kept.length + i).padStart(3, '0')}`),
    );
    expect(drops).toEqual([]);

    // Appending after a restart continues the current file and its size.
    const again = new RotatingEventFile({
      file,
      maxSize: 1000,
      keep: 2,
      onDrop: () => undefined,
      onError: (err) => {
        throw err;
      },
    });
    again.write({ type: 'delivered', queue_id: 'Q060' });
    await again.close();
    expect(ids('events.jsonl').pop()).toBe('Q060');
  });

  test('the relay rotates its events file as outcomes happen', async () => {
    const primary = await sink();
    const file = path.join(dir, 'events.jsonl');
    running = await startRelay(
      buildConfig(
        baseConfig(dir, [{ name: 'primary', port: primary.port }], { events: { file, max_size: '1KiB', keep: 1 } }),
        dir,
      ),
    );
    const { client } = await openSession(running.smtpPort);
    for (let i = 0; i < 6; i++)
      expect(await client.sendMessage('app@corp.example', ['user@example.com'], message())).toMatch(/^250 /);
    await client.quit();
    await waitFor(() => primary.messages.length === 6, 15_000, 'deliveries');
    await running.stop();
    running = null;
    expect(
      readdirSync(dir)
        .filter((f) => f.startsWith('events.jsonl'))
        .sort(),
    ).toEqual(['events.jsonl', 'events.jsonl.1']);
    expect(statSync(`${file}.1`).size).toBeLessThanOrEqual(1024);
  });

  test('the webhook gets every outcome HMAC-signed, and a failed post is retried', async () => {
    const primary = await sink();
    const secret = 'hook-secret-0123456789abcdef';
    const got: { type: string; queue_id: string }[] = [];
    const badSignatures: string[] = [];
    let requests = 0;
    const url = await receiver((req, body, res, n) => {
      requests = n;
      if (req.headers['x-smarthop-signature'] !== signBody(secret, body)) badSignatures.push(body);
      if (n === 1) return res.writeHead(503).end('busy'); // the first post fails: must be retried
      got.push(JSON.parse(body) as { type: string; queue_id: string });
      res.writeHead(200).end();
    });
    running = await startRelay(
      buildConfig(
        baseConfig(dir, [{ name: 'primary', port: primary.port }], {
          events: { webhook: { url, secret, retry: { initial: '100ms', max: '500ms' } } },
        }),
        dir,
      ),
    );
    const { client } = await openSession(running.smtpPort);
    const reply = await client.sendMessage('app@corp.example', ['user@example.com'], message());
    await client.quit();
    const id = (reply as string).split(' ').pop();
    await waitFor(() => got.length === 2, 15_000, 'two events at the webhook');
    expect(got.map((e) => [e.type, e.queue_id])).toEqual([
      ['received', id],
      ['delivered', id],
    ]);
    expect(got[1]).toMatchObject({
      client: 'lan',
      from: 'app@corp.example',
      to: 'user@example.com',
      smarthost: 'primary',
      attempt: 1,
    });
    expect(requests).toBe(3);
    expect(badSignatures).toEqual([]);
    // The well-known HMAC-SHA256 test vector: receivers can check with any library.
    expect(signBody('key', 'The quick brown fox jumps over the lazy dog')).toBe(
      'sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8',
    );
  });

  test('a webhook that never answers does not hold up delivery; its bounded queue drops and counts', async () => {
    const primary = await sink();
    const url = await receiver(() => undefined); // never answers
    running = await startRelay(
      buildConfig(
        baseConfig(dir, [{ name: 'primary', port: primary.port }], {
          events: { webhook: { url, secret: 'hook-secret-0123456789abcdef', timeout: '30s', max_queue: 2 } },
        }),
        dir,
      ),
    );
    const { client } = await openSession(running.smtpPort);
    for (let i = 0; i < 5; i++)
      expect(await client.sendMessage('app@corp.example', ['user@example.com'], message())).toMatch(/^250 /);
    await client.quit();
    await waitFor(() => primary.messages.length === 5, 15_000, 'deliveries while the webhook hangs');
    await waitFor(
      async () =>
        (metricValue(
          await metricsText((running as RunningRelay).httpPort),
          'smarthop_events_dropped_total{output="webhook"}',
        ) ?? 0) > 0,
      10_000,
      'drops counted',
    );
    await running.stop(); // bounded: the webhook gets a short grace, then is abandoned
    running = null;
  });
});
