import { writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { humanAge, table } from '../src/admin/format';
import { parseQueueQuery } from '../src/admin/query';
import { resolveTarget } from '../src/admin/target';
import { loadConfigFile } from '../src/config/load';
import type { SmartHost } from '../src/forward/smarthost';
import { smartHostStatus } from '../src/forward/smarthost-status';
import { planReload, reconcileSmartHosts } from '../src/lifecycle/reload';
import { ClientActivity } from '../src/observe/activity';
import { Scheduler, type AttemptResult } from '../src/spool/scheduler';
import { removeDir, tempDir } from './helpers/temp-dir';
import { baseConfig, buildConfig } from './helpers/test-config';

const ROOT = path.resolve(__dirname, '..');

/** Table tests for the pure parts of running the relay: reload plans, filters, formatting, scheduling. */

function fakeHost(name: string, extra: Partial<SmartHost> = {}): SmartHost & { closed: boolean } {
  return {
    name,
    relay: `${name}[h]:25`,
    closed: false,
    available: () => true,
    up: () => true,
    admit: async (recipients: number) => ({ ok: true, recipients }),
    send: async () => new Map(),
    close() {
      this.closed = true;
    },
    ...extra,
  } as SmartHost & { closed: boolean };
}

describe('reload plan', () => {
  const dir = '/srv/relay';
  const base = () =>
    baseConfig(dir, [
      { name: 'primary', port: 2601 },
      { name: 'backup', port: 2602 },
    ]);

  test('identical configs change nothing', () => {
    const plan = planReload(buildConfig(base(), dir), buildConfig(base(), dir));
    expect(plan).toMatchObject({ changed: [], restartRequired: [] });
  });

  test('sender lists and header rules read again are unchanged; a changed pattern is a change', () => {
    const withPolicy = (subject: string) => ({
      ...base(),
      clients: [{ name: 'lan', networks: ['127.0.0.1/32', 'fd00::/64'], policy: 'apps' }],
      policies: {
        apps: {
          allowed_senders: ['*@corp.example', 'erp@corp.example'],
          blocked_attachments: ['exe'],
          header_rules: [{ header: 'Subject', match: subject, action: 'reject' }],
        },
      },
      routes: {
        default: { smarthosts: ['primary'], rewrite_from: { unless: ['*@corp.example'], to: 'noreply@corp.example' } },
      },
    });
    const running = buildConfig(withPolicy('lottery'), dir);
    expect(planReload(running, buildConfig(withPolicy('lottery'), dir))).toMatchObject({
      changed: [],
      restartRequired: [],
    });
    expect(planReload(running, buildConfig(withPolicy('you have won'), dir)).changed).toEqual(['policies']);
    const otherSenders = withPolicy('lottery');
    otherSenders.policies.apps.allowed_senders = ['*@corp.example'];
    otherSenders.routes.default.rewrite_from.unless = ['*@other.example'];
    expect(planReload(running, buildConfig(otherSenders, dir)).changed).toEqual(['policies', 'routes']);
  });

  test('clients, policies, routes, smart hosts and log level are taken over; the rest waits for a restart', () => {
    const running = buildConfig(base(), dir);
    const next = buildConfig(
      {
        ...base(),
        clients: [{ name: 'lan', networks: ['127.0.0.0/8'] }],
        routes: { default: { smarthosts: ['backup'] } },
        log: { level: 'warn' },
        hostname: 'other.test',
        spool: { dir: '/elsewhere', min_free_disk: 0 },
        listeners: [
          { name: 'smtp', address: '127.0.0.1:2525' },
          { name: 'submission', address: '127.0.0.1:587' },
        ],
        http: { address: '127.0.0.1:9999' },
      },
      dir,
    );
    const plan = planReload(running, next);
    expect(plan.changed).toEqual(['clients', 'routes', 'log']);
    expect(plan.restartRequired.sort()).toEqual(
      ['hostname', 'http.address', 'listeners.smtp', 'listeners.submission', 'spool.dir', 'spool.retry'].sort(),
    );
    expect(plan.effective.clients).toBe(next.clients);
    expect(plan.effective.routes).toBe(next.routes);
    expect(plan.effective.hostname).toBe('relay.test');
    expect(plan.effective.spool).toBe(running.spool);
    expect(plan.effective.listeners).toBe(running.listeners);
  });

  test('smart hosts: unchanged ones keep their pools, changed and removed ones are retired, new ones created', () => {
    const running = buildConfig(base(), dir);
    const next = buildConfig(
      baseConfig(dir, [
        { name: 'primary', port: 2601 },
        { name: 'backup', port: 2700 },
        { name: 'extra', port: 2800 },
      ]),
      dir,
    );
    const hosts = new Map([
      ['primary', fakeHost('primary')],
      ['backup', fakeHost('backup')],
    ]);
    const created: string[] = [];
    const result = reconcileSmartHosts(running.smarthosts, hosts, next.smarthosts, (config) => {
      created.push(config.name);
      return fakeHost(config.name);
    });
    expect(created).toEqual(['backup', 'extra']);
    expect(result.hosts.get('primary')).toBe(hosts.get('primary'));
    expect(result.retired).toEqual([hosts.get('backup')]);
    expect([...result.hosts.keys()]).toEqual(['primary', 'backup', 'extra']);
  });
});

describe('smart host status', () => {
  test('reports available() as up, and breaker and quota once a host offers details()', async () => {
    expect(await smartHostStatus(fakeHost('a'), 0)).toEqual({
      name: 'a',
      relay: 'a[h]:25',
      up: true,
      breaker: null,
      quota: [],
    });
    const limited = fakeHost('b', {
      available: () => false,
      details: async () => ({ breaker: 'closed', quota: [{ window: '1m', unit: 'messages', remaining: 0 }] }),
    });
    expect(await smartHostStatus(limited, 0)).toMatchObject({
      up: false,
      breaker: 'closed',
      quota: [{ window: '1m', unit: 'messages', remaining: 0 }],
    });
  });
});

describe('queue filters', () => {
  test.each([
    ['', {}],
    ['state=deferred,held', { states: ['deferred', 'held'] }],
    ['client=erp&recipient=@example.com', { client: 'erp', recipient: '@example.com' }],
    ['min_age=1h&max_age=2d&limit=5', { minAgeMs: 3_600_000, maxAgeMs: 172_800_000, limit: 5 }],
  ])('%p', (query, filter) => expect(parseQueueQuery(new URLSearchParams(query))).toEqual({ ok: true, filter }));
  test.each(['state=stuck', 'min_age=soon', 'limit=0', 'limit=10001', 'limit=1.5'])('%p is refused', (query) =>
    expect(parseQueueQuery(new URLSearchParams(query)).ok).toBe(false),
  );
});

describe('formatting', () => {
  test('tables align every column to its widest cell', () => {
    expect(
      table(
        ['ID', 'N', 'NAME'],
        [
          ['a', '1', 'x'],
          ['bbbb', '22', 'yy'],
        ],
        [1],
      ),
    ).toBe('ID     N  NAME\na      1  x\nbbbb  22  yy');
  });
  test.each([
    [0, '0s'],
    [59, '59s'],
    [60, '1m'],
    [3599, '59m'],
    [3600, '1h00m'],
    [3 * 3600 + 120, '3h02m'],
    [86_400 + 3600, '1d01h'],
  ])('%p s is %p', (s, text) => expect(humanAge(s)).toBe(text));
});

describe('client activity', () => {
  test('counts the last hour per client, busiest first', () => {
    const activity = new ClientActivity();
    const t0 = 10 * 3_600_000;
    activity.record('erp', 1, t0);
    activity.record('shop', 3, t0 + 1000);
    activity.record('shop', 1, t0 + 30 * 60_000);
    expect(activity.top(10, t0 + 30 * 60_000)).toEqual([
      { client: 'shop', messages: 2, recipients: 4 },
      { client: 'erp', messages: 1, recipients: 1 },
    ]);
    expect(activity.top(1, t0 + 30 * 60_000)).toHaveLength(1);
    expect(activity.top(10, t0 + 61 * 60_000)).toEqual([{ client: 'shop', messages: 1, recipients: 1 }]);
    expect(activity.top(10, t0 + 200 * 60_000)).toEqual([]);
  });
});

describe('scheduler controls', () => {
  test('retryNow and flush make deferred messages due; withdraw waits for an attempt under way, drops it', async () => {
    const attempts: string[] = [];
    let release: (() => void) | null = null;
    const scheduler = new Scheduler({
      attempt: async (id) => {
        attempts.push(id);
        if (id === 'slow') await new Promise<void>((resolve) => (release = resolve));
        return { kind: 'retry', at: Date.now() + 3_600_000 } as AttemptResult;
      },
      concurrency: 5,
      onAttemptError: () => 1000,
      // No backlog here: everything stays in memory, however far ahead it is due.
      horizonMs: Infinity,
    });
    const at = (id: string) => ({ id, receivedAt: 0, route: 'default' });
    const later = Date.now() + 3_600_000;
    scheduler.enqueue(at('a'), later);
    scheduler.enqueue(at('b'), later);
    scheduler.enqueue(at('c'), later);
    expect(scheduler.stateOf('a')).toBe('deferred');
    expect(scheduler.retryNow('a')).toBe(true);
    expect(scheduler.retryNow('nope')).toBe(false);
    await new Promise((resolve) => setImmediate(resolve));
    expect(attempts).toEqual(['a']);
    // `a` was deferred again by its attempt: flush makes all three due.
    expect(scheduler.flush()).toBe(3);
    await new Promise((resolve) => setImmediate(resolve));
    expect(attempts.sort()).toEqual(['a', 'a', 'b', 'c']);

    scheduler.enqueue(at('slow'));
    expect(scheduler.stateOf('slow')).toBe('active');
    let withdrawn = false;
    const withdrawal = scheduler.withdraw('slow').then(() => (withdrawn = true));
    await new Promise((resolve) => setImmediate(resolve));
    expect(withdrawn).toBe(false);
    (release as unknown as () => void)();
    await withdrawal;
    expect(scheduler.stateOf('slow')).toBeUndefined();
    expect(scheduler.snapshot().oldestId).not.toBe('slow');
    await scheduler.withdraw('b');
    expect(scheduler.stateOf('b')).toBeUndefined();
    await scheduler.stop();
  });
});

describe('config additions', () => {
  let dir: string;
  beforeEach(() => {
    dir = tempDir();
  });
  afterEach(() => removeDir(dir));

  test('events: rotation defaults, webhook validation, and a file or a webhook is needed', () => {
    const config = buildConfig(baseConfig(dir, [{ name: 'p', port: 1 }], { events: { file: 'events.jsonl' } }), dir);
    expect(config.events).toEqual({ file: path.join(dir, 'events.jsonl'), max_size: 100 * 1024 * 1024, keep: 5 });
    expect(() => buildConfig(baseConfig(dir, [{ name: 'p', port: 1 }], { events: {} }), dir)).toThrow(
      /events: events needs a file, a webhook, or both/,
    );
    expect(() =>
      buildConfig(
        baseConfig(dir, [{ name: 'p', port: 1 }], { events: { webhook: { url: 'ftp://x', secret: 'short' } } }),
        dir,
      ),
    ).toThrow(
      new RegExp(
        /events\.webhook\.url: expected an http:\/\/ or https:\/\/ URL[\s\S]*/.source +
          /events\.webhook\.secret: expected at least 16 characters/.source,
      ),
    );
    const hook = buildConfig(
      baseConfig(dir, [{ name: 'p', port: 1 }], {
        events: { webhook: { url: 'https://hooks.example/x', secret: 's'.repeat(16) } },
      }),
      dir,
    );
    expect(hook.events?.webhook).toMatchObject({
      timeout: 5000,
      max_queue: 10_000,
      max_attempts: 10,
      retry: { initial: 1000, max: 60_000 },
    });
  });

  test('the container config validates with its environment, and demands the API token', () => {
    const file = path.join(ROOT, 'deploy/relay.container.yaml');
    expect(loadConfigFile(file, { SMARTHOP_API_TOKEN: 't'.repeat(32) })).toMatchObject({ ok: true });
    const without = loadConfigFile(file, {});
    expect(without.ok ? [] : without.errors).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^http\.token: environment variable SMARTHOP_API_TOKEN is not set/),
      ]),
    );
  });

  test('the CLI finds the API, token and spool from the config file, without needing its other secrets', () => {
    const file = path.join(dir, 'relay.yaml');
    writeFileSync(
      file,
      'spool: { dir: ./spool }\nhttp: { address: "0.0.0.0:9465", token: "${TOKEN}" }\n' +
        'smarthosts: [{ name: p, auth: { pass: "${UNSET_SECRET}" } }]\n',
    );
    expect(resolveTarget({ config: file }, { TOKEN: 'from-env-file-token' })).toEqual({
      url: 'http://127.0.0.1:9465',
      token: 'from-env-file-token',
      spoolDir: path.join(dir, 'spool'),
      eventsFile: null,
      smtp: null,
    });
    expect(
      resolveTarget({ config: file, url: 'http://[::1]:1/', token: 'flag' }, { SMARTHOP_API_TOKEN: 'env' }),
    ).toMatchObject({ url: 'http://[::1]:1', token: 'flag' });
    expect(resolveTarget({ config: file }, { SMARTHOP_API_TOKEN: 'env' }).token).toBe('env');
    expect(resolveTarget({ config: path.join(dir, 'missing.yaml') }, {})).toEqual({
      url: null,
      token: undefined,
      spoolDir: null,
      eventsFile: null,
      smtp: null,
    });
  });
});
