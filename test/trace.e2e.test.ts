import { execFile } from 'node:child_process';
import * as path from 'node:path';
import { promisify } from 'node:util';
import pino from 'pino';
import type { StatusReport } from '../src/admin/types';
import { loadConfigFile } from '../src/config/load';
import type { TraceReport } from '../src/trace/trace';
import { removeDir, startRelay, tempDir, waitFor } from './helpers/harness';
import { startTrafficRelay, type TrafficRelay } from './helpers/trace-traffic';

/**
 * `smarthop trace` and `GET /api/trace` against a relay that really delivered, failed over,
 * deferred, bounced and refused: through the running relay, then with the relay stopped (the CLI
 * reads the events files itself), and the status's top clients after a restart.
 */

const CLI = path.resolve(__dirname, '..', 'dist', 'src', 'cli.js');
const run = promisify(execFile);

jest.setTimeout(90_000);

async function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [CLI, ...args], {
      env: { ...process.env, SMARTHOP_API_TOKEN: '' },
    });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const failed = err as { code: number; stdout: string; stderr: string };
    return { code: failed.code, stdout: failed.stdout, stderr: failed.stderr };
  }
}

describe('message trace over a real relay', () => {
  let dir = '';
  let relay: TrafficRelay;
  beforeAll(async () => {
    dir = tempDir('smarthop-trace-e2e-');
    relay = await startTrafficRelay(dir);
  });
  afterAll(async () => {
    await relay?.running.stop();
    await Promise.all((relay?.sinks ?? []).map((sink) => sink.close()));
    removeDir(dir);
  });

  const api = async (query: string, token: string | null = relay.token) => {
    const response = await fetch(`http://127.0.0.1:${relay.running.httpPort}/api/trace?${query}`, {
      headers: token ? { authorization: `Bearer ${token}` } : {},
    });
    return { status: response.status, body: (await response.json()) as TraceReport & { error?: string } };
  };

  test('GET /api/trace: received, every attempt with its host and reply, the outcome, the DSN', async () => {
    const { ids } = relay;
    const delivered = (await api(`queue_id=${ids.delivered}`)).body.stories;
    expect(delivered).toHaveLength(1);
    expect(delivered[0]).toMatchObject({
      queue_id: ids.delivered,
      state: 'delivered',
      received: {
        client: 'lan',
        remote: '127.0.0.1',
        listener: 'smtp',
        from: 'app@corp.example',
        to: ['ok@example.com'],
        message_id: '<invoice-4711@corp.example>',
      },
      recipients: [
        {
          address: 'ok@example.com',
          state: 'delivered',
          smarthost: 'backup',
          response: expect.stringMatching(/^250 /),
        },
      ],
    });
    // The failover: primary greylisted it, backup took it.
    const attempts = delivered[0].events
      .filter((e) => e.type === 'attempt')
      .map((e) => [e.smarthost, e.outcome, e.response]);
    expect(attempts).toEqual([
      ['primary', 'deferred', '451 4.7.1 Greylisted, try again later'],
      ['backup', 'delivered', expect.stringMatching(/^250 /)],
    ]);

    const bounced = (await api(`queue_id=${ids.bounced}`)).body.stories[0];
    expect(bounced.state).toBe('bounced');
    expect(bounced.dsns).toEqual([
      expect.objectContaining({ to: ['app@corp.example'], about: ['nobody@example.com'], state: 'delivered' }),
    ]);
    // By the Message-ID (with or without brackets), the sender, or a recipient glob: the same stories.
    expect((await api('message_id=invoice-4711@corp.example')).body.stories.map((s) => s.queue_id)).toEqual([
      ids.delivered,
    ]);
    expect(
      (await api(`message_id=${encodeURIComponent('<invoice-4712@corp.example>')}`)).body.stories.map(
        (s) => s.queue_id,
      ),
    ).toEqual([ids.bounced]);
    expect((await api('recipient=*@example.com&outcome=deferred')).body.stories.map((s) => s.queue_id)).toEqual([
      ids.deferred,
    ]);
    expect((await api('sender=*@corp.example&since=1h')).body.stories.map((s) => s.queue_id).sort()).toEqual(
      [ids.delivered, ids.bounced, ids.deferred].sort(),
    );
    expect((await api('outcome=rejected')).body.stories).toEqual([
      expect.objectContaining({
        queue_id: null,
        state: 'rejected',
        rejected: { reason: 'access_denied', response: expect.stringMatching(/^554 5\.7\.1 /) },
      }),
    ]);
    expect((await api('smarthost=backup&outcome=bounced')).body.stories.map((s) => s.queue_id)).toEqual([ids.bounced]);
    expect((await api('until=2000-01-01T00:00Z')).body.stories).toEqual([]);
  });

  test('the API checks its token and its parameters', async () => {
    expect((await api(`queue_id=${relay.ids.delivered}`, null)).status).toBe(401);
    expect((await api(`queue_id=${relay.ids.delivered}`, 'wrong')).status).toBe(401);
    expect(await api('outcome=gone')).toEqual({
      status: 400,
      body: { error: expect.stringMatching(/^outcome: unknown gone/) },
    });
    expect((await api('since=3 weeks')).status).toBe(400);
  });

  test('smarthop trace asks the running relay; stopped, it reads the events files and answers the same', async () => {
    const online = await cli(['trace', '-c', relay.configFile, relay.ids.bounced]);
    expect(online.code).toBe(0);
    expect(online.stderr).toBe('');
    expect(online.stdout).toMatch(
      new RegExp(
        `^${relay.ids.bounced}  bounced  received \\d{4}-\\d\\d-\\d\\d \\d\\d:\\d\\d:\\d\\d ` +
          'from lan \\[127\\.0\\.0\\.1\\] on smtp\\n',
      ),
    );
    expect(online.stdout).toMatch(
      /attempt {4}primary\[127\.0\.0\.1\]:\d+: failed, 0\/1 accepted \(550 5\.1\.1 No such user here\)/,
    );
    expect(online.stdout).toMatch(/dsn {8}\w+ to <app@corp\.example> about <nobody@example\.com>/);
    const onlineJson = await cli(['trace', '-c', relay.configFile, '--recipient', '*@example.com', '--json']);
    const brief = await cli(['trace', '-c', relay.configFile, '--sender', 'app@corp.example', '--brief']);
    expect(brief.stdout.split('\n')[0]).toMatch(/^ID +RECEIVED +STATE +CLIENT +FROM +TO +LAST RESPONSE$/);
    expect(brief.stdout.split('\n').filter((line) => line.includes('<app@corp.example>'))).toHaveLength(3);
    const nothing = await cli(['trace', '-c', relay.configFile, '--recipient', 'nobody@elsewhere.example']);
    expect(nothing).toMatchObject({ code: 1, stdout: 'no message matches\n' });

    await relay.running.stop();
    const offline = await cli(['trace', '-c', relay.configFile, '--recipient', '*@example.com', '--json']);
    expect(offline.code).toBe(0);
    expect(offline.stderr).toMatch(/cannot reach the relay's admin API .*; reading the events files directly/);
    const stories = (text: string) => (JSON.parse(text) as TraceReport).stories;
    expect(stories(offline.stdout)).toEqual(stories(onlineJson.stdout));
    expect(
      stories(offline.stdout)
        .map((s) => s.state)
        .sort(),
    ).toEqual(['bounced', 'deferred', 'delivered']);
    // --events names a file directly, for a copy taken off a server.
    const direct = await cli([
      'trace',
      '--events',
      relay.eventsFile,
      '--message-id',
      '<invoice-4713@corp.example>',
      '--json',
    ]);
    expect(stories(direct.stdout).map((s) => s.queue_id)).toEqual([relay.ids.deferred]);
    const bad = await cli(['trace', '--events', relay.eventsFile, '--from', 'last tuesday']);
    expect(bad).toMatchObject({ code: 1, stderr: expect.stringMatching(/^--from: expected a time like/) });
  });

  test("after a restart, status's top clients still count the last hour (read back from the events file)", async () => {
    const config = loadConfigFile(relay.configFile, {});
    if (!config.ok) throw new Error(config.errors.join('\n'));
    const restarted = await startRelay(
      {
        ...config.config,
        http: { ...(config.config.http ?? { allowed_hosts: [] }), address: { host: '127.0.0.1', port: 0 } },
      },
      { logger: pino({ level: 'silent' }) },
    );
    relay.running = restarted;
    const status = async () => {
      const response = await fetch(`http://127.0.0.1:${restarted.httpPort}/api/status`, {
        headers: { authorization: `Bearer ${relay.token}` },
      });
      return (await response.json()) as StatusReport;
    };
    // Read back in the background once the relay listens: wait for it, then it must be all three.
    await waitFor(async () => (await status()).top_clients.length > 0, 10_000, 'top clients read back');
    expect((await status()).top_clients).toEqual([{ client: 'lan', messages: 3, recipients: 3 }]);
  });
});
