import { existsSync, readdirSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { stringify } from 'yaml';
import type { MessageDetail, QueueListing, StatusReport } from '../src/admin/types';
import type { SmtpSink } from '../src/tools/sink';
import { runAdminCommand } from './helpers/admin-cli';
import { runCli } from './helpers/child-relay';
import {
  baseConfig,
  buildConfig,
  freePort,
  metricsText,
  metricValue,
  removeDir,
  startRelay,
  startSink,
  tempDir,
  waitFor,
  waitRecovered,
  type RunningRelay,
} from './helpers/harness';
import { message, openSession } from './helpers/smtp-client';

const TOKEN = 'test-token-0123456789abcdef';
const BODY_MARKER = 'the-body-must-never-be-shown-by-the-admin-api';

/** The admin API and the CLI over it, against a relay whose smart host is down (so mail stays queued). */
// Real sockets, child processes and timers on a shared 2-core machine: be generous.
jest.setTimeout(90_000);

describe('admin API and queue commands', () => {
  let dir: string;
  let primaryPort: number;
  let running: RunningRelay | null;
  const sinks: SmtpSink[] = [];

  beforeEach(async () => {
    dir = tempDir();
    primaryPort = await freePort();
    running = null;
  });

  afterEach(async () => {
    await running?.stop();
    await Promise.all(sinks.splice(0).map((s) => s.close()));
    removeDir(dir);
  });

  function rawConfig(overrides: Record<string, unknown> = {}): Record<string, unknown> {
    // Retries an hour apart: only an admin's retry, flush or release makes a deferred message move.
    // The smart host is down on purpose (messages stay queued for the commands to act on); a breaker
    // that never opens keeps its reported state steady while the test reads it.
    return baseConfig(
      dir,
      [{ name: 'primary', port: primaryPort, connect_timeout: '1s', breaker: { failures: 1_000_000, cooldown: '1s' } }],
      {
        spool: { dir: path.join(dir, 'spool'), retry: { initial: '1h', max: '1h', factor: 2 }, min_free_disk: 0 },
        http: { address: '127.0.0.1:0', token: TOKEN },
        ...overrides,
      },
    );
  }

  async function relay(overrides: Record<string, unknown> = {}): Promise<RunningRelay> {
    running = await startRelay(buildConfig(rawConfig(overrides), dir));
    return running;
  }

  async function primaryComesUp(): Promise<SmtpSink> {
    const sink = await startSink({ port: primaryPort });
    sinks.push(sink);
    return sink;
  }

  async function api<T = Record<string, unknown>>(
    method: string,
    route: string,
    headers: Record<string, string> = { authorization: `Bearer ${TOKEN}` },
  ): Promise<{ status: number; body: T }> {
    const res = await fetch(`http://127.0.0.1:${(running as RunningRelay).httpPort}${route}`, { method, headers });
    return { status: res.status, body: (await res.json()) as T };
  }

  async function send(to: string[], subject = 'admin test'): Promise<string> {
    const { client } = await openSession((running as RunningRelay).smtpPort);
    const reply = await client.sendMessage('app@corp.example', to, message({ subject, body: BODY_MARKER }));
    await client.quit();
    expect(reply).toMatch(/^250 2\.0\.0 Ok: queued as /);
    return (reply as string).split(' ').pop() as string;
  }

  async function deferredCount(n: number): Promise<void> {
    await waitFor(
      async () =>
        metricValue(
          await metricsText((running as RunningRelay).httpPort),
          'smarthop_queue_messages{state="deferred"}',
        ) === n,
      15_000,
      `${n} deferred`,
    );
  }

  const files = (folder: string) => readdirSync(path.join(dir, 'spool', folder));

  test('list filters by state, client, recipient and age; bad filters are 400', async () => {
    await relay();
    const a = await send(['a@example.com']);
    const b = await send(['b@other.example', 'c@other.example']);
    await deferredCount(2);

    const all = await api<QueueListing>('GET', '/api/queue');
    expect(all.status).toBe(200);
    expect(all.body.messages.map((m) => m.id)).toEqual([a, b]);
    expect(all.body.messages[0]).toMatchObject({
      state: 'deferred',
      client: 'lan',
      from: 'app@corp.example',
      attempts: 1,
      active: false,
    });
    expect(all.body.messages[0].last_response).toMatch(/ECONNREFUSED/);

    const ids = async (query: string) =>
      (await api<QueueListing>('GET', `/api/queue?${query}`)).body.messages.map((m) => m.id);
    expect(await ids('recipient=@OTHER.example')).toEqual([b]);
    expect(await ids('state=deferred')).toEqual([a, b]);
    expect(await ids('state=ready,held,dead')).toEqual([]);
    expect(await ids('client=lan')).toEqual([a, b]);
    expect(await ids('client=nobody')).toEqual([]);
    expect(await ids('min_age=1h')).toEqual([]);
    expect(await ids('max_age=1h')).toEqual([a, b]);
    const limited = await api<QueueListing>('GET', '/api/queue?limit=1');
    expect(limited.body).toMatchObject({ truncated: true });
    expect(limited.body.messages).toHaveLength(1);

    expect((await api('GET', '/api/queue?state=stuck')).status).toBe(400);
    expect((await api('GET', '/api/queue?min_age=soon')).status).toBe(400);
    expect((await api('GET', '/api/queue?limit=0')).status).toBe(400);
  });

  test('show: envelope, recipients with last responses, attempts and headers, never the body', async () => {
    await relay();
    const id = await send(['a@example.com'], 'show me');
    await deferredCount(1);
    const { status, body } = await api<MessageDetail>('GET', `/api/queue/${id}`);
    expect(status).toBe(200);
    expect(body).toMatchObject({
      id,
      state: 'deferred',
      client: 'lan',
      listener: 'smtp',
      remote: '127.0.0.1',
      route: 'default',
      from: 'app@corp.example',
      attempts: 1,
    });
    expect(body.recipients).toEqual([
      {
        address: 'a@example.com',
        status: 'pending',
        smarthost: 'primary',
        response: expect.stringMatching(/ECONNREFUSED/),
      },
    ]);
    expect(body.headers.find((h) => h.name === 'Subject')?.value).toBe('show me');
    expect(body.headers[0].name).toBe('Received');
    expect(JSON.stringify(body)).not.toContain(BODY_MARKER);

    expect((await api('GET', '/api/queue/0MWTKRH6D3728F1EC18')).status).toBe(404);
    expect((await api('GET', '/api/queue/..%2F..%2Fetc%2Fpasswd')).status).toBe(404);
  });

  test('retry now delivers a deferred message at once; flush does it for all', async () => {
    await relay();
    const first = await send(['a@example.com']);
    await deferredCount(1);
    const sink = await primaryComesUp();
    expect(await api('POST', `/api/queue/${first}/retry`)).toEqual({
      status: 200,
      body: { id: first, folder: 'queue' },
    });
    await waitFor(() => sink.messages.length === 1, 15_000, 'delivery after retry');
    await waitFor(() => files('queue').length === 0, 5000, 'queue to empty');
    expect((await api('POST', `/api/queue/${first}/retry`)).status).toBe(404);

    await sink.close();
    sinks.length = 0;
    await send(['b@example.com']);
    await send(['c@example.com']);
    await deferredCount(2);
    const again = await primaryComesUp();
    expect(await api('POST', '/api/queue/flush')).toEqual({ status: 200, body: { flushed: 2 } });
    await waitFor(() => again.messages.length === 2, 15_000, 'delivery after flush');
  });

  test('hold is durable across a restart and keeps the message out of delivery; release sends it', async () => {
    await relay();
    const id = await send(['a@example.com']);
    await deferredCount(1);
    expect(await api('POST', `/api/queue/${id}/hold`)).toEqual({ status: 200, body: { id, folder: 'hold' } });
    expect(files('hold').sort()).toEqual([`${id}.eml`, `${id}.json`]);
    expect(files('queue')).toEqual([]);
    const metrics = await metricsText((running as RunningRelay).httpPort);
    expect(metricValue(metrics, 'smarthop_queue_messages{state="held"}')).toBe(1);
    expect(metricValue(metrics, 'smarthop_queue_messages{state="deferred"}')).toBe(0);
    expect((await api('POST', `/api/queue/${id}/retry`)).status).toBe(409);
    expect((await api('POST', `/api/queue/${id}/hold`)).status).toBe(409);
    expect((await api<QueueListing>('GET', '/api/queue?state=held')).body.messages.map((m) => m.id)).toEqual([id]);

    // A restart with the smart host up: recovery must not schedule the held message. Once it is done
    // the scheduler holds nothing, and a message sent after the restart goes out alone.
    await (running as RunningRelay).stop();
    running = null;
    const sink = await primaryComesUp();
    await waitRecovered((await relay()).httpPort);
    expect((await api<StatusReport>('GET', '/api/status')).body.queue).toMatchObject({
      held: 1,
      ready: 0,
      active: 0,
      deferred: 0,
    });
    await send(['after-restart@example.com']);
    // Its files go (unlink, then the folder's fsync) a moment before the attempt ends and leaves the
    // scheduler's active set: the status is read once the attempt has ended.
    const attemptEnded = async () => (await api<StatusReport>('GET', '/api/status')).body.queue.active === 0;
    await waitFor(
      async () => sink.messages.length === 1 && files('queue').length === 0 && (await attemptEnded()),
      15_000,
      'the delivery of the message sent after the restart',
    );
    expect(sink.recipients()).toEqual(['after-restart@example.com']);
    expect((await api<StatusReport>('GET', '/api/status')).body.queue).toMatchObject({
      held: 1,
      ready: 0,
      active: 0,
      deferred: 0,
    });

    expect(await api('POST', `/api/queue/${id}/release`)).toEqual({ status: 200, body: { id, folder: 'queue' } });
    await waitFor(() => sink.messages.length === 2, 15_000, 'delivery after release');
    expect(sink.recipients()).toEqual(['after-restart@example.com', 'a@example.com']);
    // The sink has it a moment before the relay, on the smart host's 250, removes its files.
    await waitFor(() => files('queue').length === 0, 5000, 'queue to empty');
    expect((await api('POST', `/api/queue/${id}/release`)).status).toBe(404);
  });

  test('delete removes a message from the queue and from hold; twice is 404', async () => {
    await relay();
    const queued = await send(['a@example.com']);
    const held = await send(['b@example.com']);
    await deferredCount(2);
    await api('POST', `/api/queue/${held}/hold`);
    expect(await api('DELETE', `/api/queue/${queued}`)).toEqual({ status: 200, body: { id: queued, folder: null } });
    expect(await api('POST', `/api/queue/${held}/delete`)).toEqual({ status: 200, body: { id: held, folder: null } });
    expect(files('queue')).toEqual([]);
    expect(files('hold')).toEqual([]);
    expect((await api('DELETE', `/api/queue/${queued}`)).status).toBe(404);
    const metrics = await metricsText((running as RunningRelay).httpPort);
    expect(metricValue(metrics, 'smarthop_queue_messages{state="deferred"}')).toBe(0);
    expect(metricValue(metrics, 'smarthop_queue_messages{state="held"}')).toBe(0);
  });

  test('smart hosts and status: counts by state, oldest message, hosts up/down, top clients', async () => {
    await relay();
    const id = await send(['a@example.com', 'b@example.com']);
    await deferredCount(1);
    expect((await api('GET', '/api/smarthosts')).body).toEqual({
      smarthosts: [
        { name: 'primary', relay: `primary[127.0.0.1]:${primaryPort}`, up: true, breaker: 'closed', quota: [] },
      ],
    });
    const { body } = await api<StatusReport>('GET', '/api/status');
    expect(body.queue).toEqual({ ready: 0, deferred: 1, active: 0, held: 0, dead: 0 });
    expect(body.oldest?.id).toBe(id);
    expect(body.top_clients).toEqual([{ client: 'lan', messages: 1, recipients: 2 }]);
    expect(body).toMatchObject({ hostname: 'relay.test', last_reload: null });
  });

  test('/api/ needs the token (/metrics and /healthz do not); browser requests, wrong methods: refused', async () => {
    const { httpPort } = await relay();
    expect((await api('GET', '/api/status', {})).status).toBe(401);
    const wrong = await fetch(`http://127.0.0.1:${httpPort}/api/status`, {
      headers: { authorization: 'Bearer not-the-token' },
    });
    expect(wrong.status).toBe(401);
    expect(wrong.headers.get('www-authenticate')).toMatch(/^Bearer/);
    expect((await api('GET', '/api/status')).status).toBe(200);
    expect((await fetch(`http://127.0.0.1:${httpPort}/metrics`)).status).toBe(200);
    expect((await fetch(`http://127.0.0.1:${httpPort}/healthz`)).status).toBe(200);
    expect(
      (await api('POST', '/api/queue/flush', { authorization: `Bearer ${TOKEN}`, origin: 'https://evil.example' }))
        .status,
    ).toBe(403);
    expect((await api('GET', '/api/queue/flush')).status).toBe(405);
    expect((await api('DELETE', '/api/queue')).status).toBe(405);
    expect((await api('GET', '/api/reload')).status).toBe(405);
    expect((await api('GET', '/api/nothing')).status).toBe(404);
  });

  test('no token: the API is open on loopback; a non-loopback address without a token is a config error', async () => {
    await relay({ http: { address: '127.0.0.1:0' } });
    expect((await api('GET', '/api/status', {})).status).toBe(200);
    expect(() => buildConfig(rawConfig({ http: { address: '0.0.0.0:9465' } }), dir)).toThrow(
      /http\.token: required when http\.address is not loopback/,
    );
    expect(() => buildConfig(rawConfig({ http: { address: '[::]:9465' } }), dir)).toThrow(/http\.token: required/);
    expect(() => buildConfig(rawConfig({ http: { address: '0.0.0.0:9465', token: TOKEN } }), dir)).not.toThrow();
    expect(() => buildConfig(rawConfig({ http: { address: '[::1]:9465' } }), dir)).not.toThrow();
  });

  test('CLI: every queue command, status and reload over the API, as tables and as JSON', async () => {
    const { httpPort } = await relay();
    const target = ['--url', `http://127.0.0.1:${httpPort}`];
    const env = { SMARTHOP_API_TOKEN: TOKEN };
    // The commands' output and status, run in this process; the real binary's exit codes are checked below.
    const cli = (args: string[]) => runAdminCommand([...args, ...target, '--token', TOKEN]);
    const a = await send(['a@example.com']);
    const b = await send(['b@other.example']);
    await deferredCount(2);

    const [list, json, show, showJson] = await Promise.all([
      cli(['queue', 'list']),
      cli(['queue', 'list', '--recipient', 'other.example', '--json']),
      cli(['queue', 'show', a]),
      cli(['queue', 'show', a, '--json']),
    ]);
    expect(list.code).toBe(0);
    const lines = list.stdout.trim().split('\n');
    expect(lines[0]).toMatch(/^ID\s+STATE\s+AGE\s+SIZE\s+TRIES\s+CLIENT\s+FROM\s+RECIPIENTS\s+LAST RESPONSE$/);
    expect(lines[1]).toMatch(
      new RegExp(
        `^${a}\\s+deferred\\s+\\d+s\\s+\\d+\\s+1\\s+lan\\s+<app@corp.example>\\s+a@example.com\\s+ECONNREFUSED`,
      ),
    );
    // Columns are aligned: every row starts its STATE column where the header does.
    expect(lines[2].indexOf('deferred')).toBe(lines[0].indexOf('STATE'));
    expect(lines[3]).toBe('2 message(s): 2 deferred');

    expect((JSON.parse(json.stdout) as QueueListing).messages.map((m) => m.id)).toEqual([b]);

    expect(show.code).toBe(0);
    expect(show.stdout).toMatch(/^id:\s+\S+/m);
    expect(show.stdout).toMatch(/^a@example.com\s+pending\s+primary\s+ECONNREFUSED/m);
    expect(show.stdout).toContain('Subject: admin test');
    expect(show.stdout).not.toContain(BODY_MARKER);
    expect(JSON.parse(showJson.stdout)).toMatchObject({ id: a, state: 'deferred' });

    expect(await cli(['queue', 'hold', a, b])).toMatchObject({ code: 0, stdout: `${a}: held\n${b}: held\n` });
    expect((await cli(['queue', 'list', '--state', 'held', '--json'])).stdout).toContain(a);
    expect(await cli(['queue', 'release', b])).toMatchObject({ code: 0, stdout: `${b}: released\n` });
    await deferredCount(1);
    expect(await cli(['queue', 'retry', b])).toMatchObject({ code: 0, stdout: `${b}: due now\n` });
    const flush = await cli(['queue', 'flush', '--json']);
    expect(JSON.parse(flush.stdout)).toEqual({ flushed: expect.any(Number) });
    expect(await cli(['queue', 'delete', a])).toMatchObject({ code: 0, stdout: `${a}: deleted\n` });

    const [status, statusJson, reload] = await Promise.all([
      cli(['status']),
      cli(['status', '--json']),
      cli(['reload']),
    ]);
    expect(status.code).toBe(0);
    expect(status.stdout).toMatch(/^queue: +\d+ ready \(\d+ active\), \d+ deferred, 0 held, 0 dead$/m);
    expect(status.stdout).toContain('smart hosts: 1 up, 0 down');
    expect(status.stdout).toMatch(/^primary\s+up\s+closed\s+-\s+primary\[127\.0\.0\.1\]/m);
    expect(status.stdout).toMatch(/^lan\s+2\s+2$/m);
    expect(JSON.parse(statusJson.stdout)).toMatchObject({
      hostname: 'relay.test',
      top_clients: [{ client: 'lan', messages: 2 }],
    });

    // This relay was not started from a file: the reload is refused and says why.
    expect(reload.code).toBe(1);
    expect(reload.stdout).toContain('reload refused');

    // Refusals and failures have distinct exit codes, as the built CLI's processes exit with them (the
    // token from the environment, as a script would pass it).
    const unreachable = `http://127.0.0.1:${await freePort()}`;
    const [gone, noToken, holdAgain, down] = await Promise.all([
      runCli(['queue', 'show', a, ...target], env),
      runCli(['queue', 'show', b, ...target], {}),
      runCli(['queue', 'hold', a, b, ...target], env),
      runCli(['status', '--url', unreachable], env),
    ]);
    expect(gone).toMatchObject({ code: 1, stderr: expect.stringContaining(`no message ${a}`) });
    expect(noToken.code).toBe(1); // no token
    expect(holdAgain.code).toBe(1); // a is gone, b is held
    expect(down.code).toBe(2);
  }, 120_000);

  test('CLI: queue list reads the spool directory when the relay is not running', async () => {
    await relay();
    const a = await send(['a@example.com']);
    const b = await send(['b@other.example']);
    await deferredCount(2);
    await api('POST', `/api/queue/${b}/hold`);
    await (running as RunningRelay).stop();
    running = null;

    const configFile = path.join(dir, 'relay.yaml');
    writeFileSync(
      configFile,
      stringify({
        ...rawConfig(),
        spool: { dir: './spool' },
        http: { address: `127.0.0.1:${await freePort()}`, token: '${SMARTHOP_API_TOKEN}' },
      }),
    );
    const offline = await runAdminCommand(['queue', 'list', '-c', configFile, '--json']);
    expect(offline.code).toBe(0);
    expect(offline.stderr).toMatch(/cannot reach the relay's admin API .*reading the spool directly/);
    const listing = JSON.parse(offline.stdout) as QueueListing;
    expect(listing.messages.map((m) => [m.id, m.state])).toEqual([
      [a, 'deferred'],
      [b, 'held'],
    ]);
    const held = await runAdminCommand(['queue', 'list', '-c', configFile, '--state', 'held']);
    expect(held.stdout).toMatch(new RegExp(`^${b}\\s+held`, 'm'));
    expect(existsSync(path.join(dir, 'spool', 'tmp'))).toBe(true); // reading never touches the spool
    // Other commands need the running relay.
    expect((await runAdminCommand(['status', '-c', configFile])).code).toBe(2);
  }, 120_000);
});
