import { execFile } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { stringify } from 'yaml';
import { loadConfigFile } from '../src/config/load';
import { hashPassword } from '../src/ingress/password';
import type { SmtpSink } from '../src/tools/sink';
import {
  baseConfig,
  freePort,
  removeDir,
  startRelay,
  startSink,
  tempDir,
  waitFor,
  type RunningRelay,
} from './helpers/harness';
import { findBinary, TestPrometheus } from './helpers/prometheus';
import { testUnless } from './helpers/skip';
import { message, openSession, plainAuth, RawSmtpClient } from './helpers/smtp-client';

const ROOT = path.resolve(__dirname, '..');
const ALERTS = path.join(ROOT, 'deploy/prometheus/alerts.yml');
const ALERT_TESTS = path.join(ROOT, 'deploy/prometheus/alerts.test.yml');
const DASHBOARD = path.join(ROOT, 'deploy/grafana/smarthop.json');
const PROMETHEUS = findBinary('prometheus');
const PROMTOOL = findBinary('promtool');
const run = promisify(execFile);

/** Every family of the metrics contract (docs/architecture.md) (histograms by their base name). */
const CONTRACT = [
  'smarthop_connections_total',
  'smarthop_connections_active',
  'smarthop_auth_attempts_total',
  'smarthop_messages_received_total',
  'smarthop_received_bytes_total',
  'smarthop_messages_rejected_total',
  'smarthop_rate_limited_total',
  'smarthop_delivery_attempts_total',
  'smarthop_delivery_duration_seconds',
  'smarthop_failovers_total',
  'smarthop_messages_delivered_total',
  'smarthop_messages_bounced_total',
  'smarthop_queue_messages',
  'smarthop_queue_oldest_age_seconds',
  'smarthop_smarthost_up',
  'smarthop_smarthost_quota_remaining',
  'smarthop_line_endings_normalized_total',
  'smarthop_config_reloads_total',
  'process_cpu_seconds_total',
  'process_resident_memory_bytes',
];

/** Grafana's variables, as a dashboard would have them expanded for "All". */
function expandGrafana(expr: string): string {
  return expr
    .replaceAll('$__rate_interval', '1m')
    .replaceAll('$__interval', '15s')
    .replaceAll('$__range', '1h')
    .replaceAll('$job', '.*')
    .replaceAll('$instance', '.*');
}

interface Panel {
  title?: string;
  targets?: { expr: string }[];
  panels?: Panel[];
}

const missing = !PROMETHEUS || !PROMTOOL;

// Real sockets, child processes and timers on a shared 2-core machine: be generous.
jest.setTimeout(90_000);

describe('metrics proven against a real Prometheus', () => {
  if (missing && process.env.CI) {
    test('prometheus is installed in CI', () => {
      throw new Error(
        'CI is set but `prometheus`/`promtool` are not on PATH: .ci/run must install the Debian package `prometheus`',
      );
    });
    return;
  }
  // CI installs the package (see .ci/run), so there this never skips.
  const maybe = testUnless(
    missing
      ? 'the `prometheus` and `promtool` binaries are not on PATH (apt-get install prometheus); CI must have them'
      : null,
  );

  let dir: string;
  let running: RunningRelay;
  let prometheus: TestPrometheus | null = null;
  let backup: SmtpSink;
  let configFile: string;

  beforeAll(async () => {
    if (missing) return;
    dir = tempDir();
    backup = await startSink();
    // The primary is down for the whole test; its breaker never opens, so every message fails over
    // (an open breaker would skip it, and the failover counter this test watches would stop).
    const raw = baseConfig(
      dir,
      [
        {
          name: 'primary',
          port: await freePort(),
          priority: 10,
          connect_timeout: '1s',
          breaker: { failures: 1_000_000, cooldown: '1s' },
        },
        { name: 'backup', port: backup.port, priority: 20 },
      ],
      {
        listeners: [
          { name: 'smtp', address: '127.0.0.1:0', tls: 'none', auth: 'optional', allow_insecure_auth: true },
          { name: 'lan_only', address: '127.0.0.1:0', tls: 'none', auth: 'off' },
        ],
        clients: [
          { name: 'lan', networks: ['127.0.0.1/32'] },
          { name: 'webshop', username: 'webshop', password_hash: await hashPassword('pw-for-prometheus-test') },
        ],
      },
    );
    configFile = path.join(dir, 'relay.yaml');
    writeFileSync(configFile, stringify(raw));
    const loaded = loadConfigFile(configFile, {});
    if (!loaded.ok) throw new Error(loaded.errors.join('\n'));
    running = await startRelay(loaded.config, { configSource: () => loadConfigFile(configFile, {}) });
    prometheus = await TestPrometheus.start(PROMETHEUS as string, dir, [`127.0.0.1:${running.httpPort}`], [ALERTS]);
    // A first scrape before any traffic, so Prometheus sees every counter at 0 and then moving
    // (rate() and increase() need the 0; the relay exports configured names at 0 for that reason).
    const p = prometheus;
    await waitFor(
      async () =>
        (await p.query('sum(smarthop_messages_received_total{job="smarthop",client="webshop"})'))[0]?.value === 0,
      30_000,
      'a first scrape',
    );
  }, 90_000);

  afterAll(async () => {
    await prometheus?.stop(); // always: a leaked Prometheus would outlive the test run
    await running?.stop();
    await backup?.close();
    if (dir) removeDir(dir);
  }, 30_000);

  maybe('promtool accepts the alert rules and their unit tests pass', async () => {
    const check = await run(PROMTOOL as string, ['check', 'rules', ALERTS]);
    expect(check.stdout).toMatch(/SUCCESS: \d+ rules found/);
    const unit = await run(PROMTOOL as string, ['test', 'rules', ALERT_TESTS], { cwd: path.dirname(ALERT_TESTS) });
    expect(unit.stdout).toContain('SUCCESS');
  });

  maybe(
    'the counters move in Prometheus as mail flows: accepted, failed over, delivered, rejected, AUTH, bare LF, reload',
    async () => {
      const p = prometheus as TestPrometheus;
      const { client } = await openSession(running.portOf('smtp'));
      expect(await client.command(plainAuth('webshop', 'wrong'))).toMatch(/^535 /);
      expect(await client.command(plainAuth('webshop', 'pw-for-prometheus-test'))).toMatch(/^235 /);
      for (let i = 0; i < 3; i++)
        expect(
          await client.sendMessage('shop@corp.example', ['user@example.com'], message({ subject: `prom ${i}` })),
        ).toMatch(/^250 /);
      expect(
        await client.sendMessage('shop@corp.example', ['user@example.com'], 'Subject: bare LF\n\nline one\nline two'),
      ).toMatch(/^250 /);
      await client.quit();
      const outsider = await RawSmtpClient.connect(running.portOf('lan_only'), { localAddress: '127.0.0.2' });
      expect(await outsider.reply()).toMatch(/^554 /);
      await outsider.quit();
      expect((await fetch(`http://127.0.0.1:${running.httpPort}/api/reload`, { method: 'POST' })).status).toBe(200);
      await waitFor(() => backup.messages.length === 4, 15_000, 'deliveries through the backup');

      const value = async (expr: string) => (await p.query(expr))[0]?.value ?? 0;
      const expectations: [string, number][] = [
        ['sum(smarthop_messages_received_total{job="smarthop",client="webshop"})', 4],
        ['sum(smarthop_failovers_total{from="primary",to="backup"})', 4],
        ['sum(smarthop_messages_delivered_total{smarthost="backup"})', 4],
        ['sum(smarthop_delivery_attempts_total{smarthost="primary",outcome="unreachable"})', 4],
        ['sum(smarthop_delivery_duration_seconds_count{smarthost="backup"})', 4],
        ['sum(smarthop_messages_rejected_total{reason="access_denied"})', 1],
        ['sum(smarthop_auth_attempts_total{result="failure"})', 1],
        ['sum(smarthop_auth_attempts_total{result="success"})', 1],
        ['sum(smarthop_line_endings_normalized_total{client="webshop"})', 1],
        ['sum(smarthop_config_reloads_total{result="success"})', 1],
        ['sum(smarthop_connections_total{listener="smtp",result="accepted"})', 1],
        ['up{job="smarthop"}', 1],
      ];
      for (const [expr, atLeast] of expectations) {
        await waitFor(async () => (await value(expr)) >= atLeast, 20_000, `${expr} >= ${atLeast} in Prometheus`);
      }
      expect(await value('sum(increase(smarthop_messages_received_total{client="webshop"}[1m]))')).toBeGreaterThan(0);
      expect(await value('smarthop_smarthost_up{smarthost="backup"}')).toBe(1);
      expect(await value('smarthop_queue_messages{state="dead"}')).toBe(0);
    },
    60_000,
  );

  maybe(
    'the whole metrics contract is scraped (families without samples yet are known by their metadata)',
    async () => {
      const p = prometheus as TestPrometheus;
      await waitFor(async () => (await p.query('up{job="smarthop"}'))[0]?.value === 1, 20_000, 'a successful scrape');
      const metadata = await p.api<Record<string, unknown>>('/api/v1/metadata');
      const withSamples = await p.api<string[]>('/api/v1/label/__name__/values');
      const known = new Set([...Object.keys(metadata.data), ...withSamples.data]);
      expect(CONTRACT.filter((name) => !known.has(name))).toEqual([]);
    },
    30_000,
  );

  maybe(
    'every alert rule loads and evaluates without error',
    async () => {
      const p = prometheus as TestPrometheus;
      type Rules = { groups: { rules: { name: string; health: string; lastError?: string }[] }[] };
      let rules: Rules['groups'][number]['rules'] = [];
      await waitFor(
        async () => {
          rules = (await p.api<Rules>('/api/v1/rules')).data.groups.flatMap((g) => g.rules);
          return rules.length > 0 && rules.every((r) => r.health !== 'unknown');
        },
        20_000,
        'rules to be evaluated',
      );
      expect(rules.map((r) => r.name)).toEqual(
        expect.arrayContaining([
          'SmarthopQueueGrowing',
          'SmarthopOldestMessageOld',
          'SmarthopSmartHostDown',
          'SmarthopFailoverStorm',
          'SmarthopRejectionSpike',
          'SmarthopSpoolDiskLow',
        ]),
      );
      expect(rules.filter((r) => r.health !== 'ok').map((r) => `${r.name}: ${r.lastError}`)).toEqual([]);
    },
    30_000,
  );

  maybe(
    'every PromQL expression of the Grafana dashboard evaluates without error',
    async () => {
      const p = prometheus as TestPrometheus;
      const dashboard = JSON.parse(readFileSync(DASHBOARD, 'utf8')) as {
        panels: Panel[];
        templating: { list: { name: string; query?: { query: string } | string }[] };
      };
      const panels = dashboard.panels.flatMap((panel) => [panel, ...(panel.panels ?? [])]);
      const exprs = panels.flatMap((panel) => (panel.targets ?? []).map((t) => ({ title: panel.title, expr: t.expr })));
      expect(exprs.length).toBeGreaterThan(20);
      const errors: string[] = [];
      for (const { title, expr } of exprs) {
        const result = await p.api('/api/v1/query', { query: expandGrafana(expr) });
        if (result.status !== 'success') errors.push(`${title}: ${expr}: ${result.error}`);
      }
      expect(errors).toEqual([]);
      // Grafana's label_values(metric, label) is `group by (label) (metric)` in PromQL: the variables must
      // find this relay.
      for (const variable of dashboard.templating.list) {
        const query = typeof variable.query === 'string' ? variable.query : variable.query?.query;
        const match = /^label_values\((.+),\s*(\w+)\)$/.exec(query ?? '');
        if (!match) continue;
        const found = await p.query(`group by (${match[2]}) (${expandGrafana(match[1])})`);
        expect(found.map((s) => s.metric[match[2]])).toContain(
          match[2] === 'job' ? 'smarthop' : `127.0.0.1:${running.httpPort}`,
        );
      }
      // And the traffic panels show this relay's traffic, not just "no error".
      await waitFor(
        async () =>
          (
            await p.query(
              expandGrafana('sum by (client) (rate(smarthop_messages_received_total{job=~"$job"}[$__rate_interval]))'),
            )
          ).some((s) => s.metric.client === 'webshop' && s.value > 0),
        20_000,
        'traffic by client',
      );
    },
    60_000,
  );
});
