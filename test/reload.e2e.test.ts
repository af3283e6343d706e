import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { stringify } from 'yaml';
import type { StatusReport } from '../src/admin/types';
import { loadConfigFile } from '../src/config/load';
import type { SinkOptions, SmtpSink } from '../src/tools/sink';
import { ChildRelay } from './helpers/child-relay';
import {
  baseConfig,
  freePort,
  metricsText,
  metricValue,
  removeDir,
  startRelay,
  startSink,
  tempDir,
  waitFor,
  type RunningRelay,
} from './helpers/harness';
import { message, openSession, RawSmtpClient } from './helpers/smtp-client';

/**
 * Reload (POST /api/reload, SIGHUP) swaps clients, policies, routes and smart hosts under live
 * traffic: no connection dropped, no queued message lost; an invalid file changes nothing.
 */
// Real sockets, child processes and timers on a shared 2-core machine: be generous.
jest.setTimeout(90_000);

describe('reload', () => {
  let dir: string;
  let configFile: string;
  let running: RunningRelay | null;
  let child: ChildRelay | null;
  const sinks: SmtpSink[] = [];

  beforeEach(() => {
    dir = tempDir();
    configFile = path.join(dir, 'relay.yaml');
    running = null;
    child = null;
  });

  afterEach(async () => {
    await running?.stop();
    await child?.kill('SIGKILL');
    await Promise.all(sinks.splice(0).map((s) => s.close()));
    removeDir(dir);
  });

  async function sink(options: SinkOptions = {}): Promise<SmtpSink> {
    const s = await startSink(options);
    sinks.push(s);
    return s;
  }

  function write(raw: Record<string, unknown>): void {
    writeFileSync(configFile, stringify(raw));
  }

  async function start(raw: Record<string, unknown>): Promise<RunningRelay> {
    write(raw);
    const loaded = loadConfigFile(configFile, {});
    if (!loaded.ok) throw new Error(loaded.errors.join('\n'));
    running = await startRelay(loaded.config, { configSource: () => loadConfigFile(configFile, {}) });
    return running;
  }

  async function reload(): Promise<{ status: number; body: Record<string, unknown> }> {
    const res = await fetch(`http://127.0.0.1:${(running as RunningRelay).httpPort}/api/reload`, { method: 'POST' });
    return { status: res.status, body: (await res.json()) as Record<string, unknown> };
  }

  const subjectOf = (m: { data: Buffer }) => /^Subject: (.*)$/m.exec(m.data.toString())?.[1]?.trim();

  test('a client added by reload can relay afterwards; a session open across the reload keeps working', async () => {
    const primary = await sink();
    const raw = baseConfig(dir, [{ name: 'primary', port: primary.port }], {
      listeners: [{ name: 'smtp', address: '127.0.0.1:0', tls: 'none', auth: 'off' }],
    });
    const relay = await start(raw);

    const { client: open } = await openSession(relay.smtpPort);
    expect(await open.sendMessage('app@corp.example', ['a@example.com'], message({ subject: 'before' }))).toMatch(
      /^250 /,
    );
    const refused = await RawSmtpClient.connect(relay.smtpPort, { localAddress: '127.0.0.2' });
    expect(await refused.reply()).toMatch(/^554 5\.7\.1 /);
    await refused.quit();

    write({ ...raw, clients: [...(raw.clients as unknown[]), { name: 'office', networks: ['127.0.0.2/32'] }] });
    expect(await reload()).toEqual({ status: 200, body: { ok: true, changed: ['clients'], restart_required: [] } });

    expect(
      await open.sendMessage('app@corp.example', ['b@example.com'], message({ subject: 'same session, after' })),
    ).toMatch(/^250 /);
    await open.quit();
    const { client: office, greeting } = await openSession(relay.smtpPort, { localAddress: '127.0.0.2' });
    expect(greeting).toMatch(/^220 /);
    expect(
      await office.sendMessage('printer@corp.example', ['c@example.com'], message({ subject: 'from the office' })),
    ).toMatch(/^250 /);
    await office.quit();

    await waitFor(() => primary.messages.length === 3, 15_000, 'three deliveries');
    expect(primary.messages.find((m) => subjectOf(m) === 'from the office')?.data.toString()).toContain(
      '(client office)',
    );
    const metrics = await metricsText(relay.httpPort);
    expect(metricValue(metrics, 'smarthop_messages_received_total{client="office"}')).toBe(1);
    expect(metricValue(metrics, 'smarthop_config_reloads_total{result="success"}')).toBe(1);
    expect(metricValue(metrics, 'smarthop_config_reloads_total{result="failure"}')).toBe(0);
  });

  test('a policy routed elsewhere by reload works mid-traffic; each accepted message is delivered once', async () => {
    const a = await sink();
    const b = await sink();
    const raw = baseConfig(
      dir,
      [
        { name: 'a', port: a.port },
        { name: 'b', port: b.port },
      ],
      {
        clients: [{ name: 'lan', networks: ['127.0.0.1/32'], policy: 'apps' }],
        policies: { apps: { route: 'via_a' } },
        routes: { default: { smarthosts: ['a'] }, via_a: { smarthosts: ['a'] }, via_b: { smarthosts: ['b'] } },
      },
    );
    const relay = await start(raw);

    const accepted: string[] = [];
    let reloaded = false;
    const afterReload: string[] = [];
    // Three sessions sending back to back while the reload happens.
    const senders = [0, 1, 2].map(async (n) => {
      const { client } = await openSession(relay.smtpPort);
      for (let i = 0; i < 12; i++) {
        const subject = `s${n}-m${i}`;
        const wasReloaded = reloaded;
        const reply = await client.sendMessage('app@corp.example', ['user@example.com'], message({ subject }));
        expect(reply).toMatch(/^250 2\.0\.0 Ok: queued as /);
        accepted.push(subject);
        if (wasReloaded) afterReload.push(subject);
      }
      await client.quit();
    });
    await waitFor(() => accepted.length >= 6, 15_000, 'traffic before the reload');
    write({ ...raw, policies: { apps: { route: 'via_b' } } });
    expect(await reload()).toMatchObject({ status: 200, body: { ok: true, changed: ['policies'] } });
    reloaded = true;
    await Promise.all(senders);

    await waitFor(
      () => a.messages.length + b.messages.length === accepted.length,
      20_000,
      'every accepted message delivered',
    );
    const delivered = [...a.messages, ...b.messages].map(subjectOf);
    expect(new Set(delivered).size).toBe(accepted.length); // none twice
    expect(afterReload.length).toBeGreaterThan(0);
    const atB = new Set(b.messages.map(subjectOf));
    for (const subject of afterReload) expect(atB.has(subject)).toBe(true);
    expect(a.messages.length).toBeGreaterThan(0);
  });

  test('a smart host changed by reload takes the next delivery; a removed client can no longer relay', async () => {
    const oldHost = await sink();
    const newHost = await sink();
    const raw = baseConfig(dir, [{ name: 'primary', port: oldHost.port }]);
    const relay = await start(raw);
    const { client } = await openSession(relay.smtpPort);
    expect(await client.sendMessage('app@corp.example', ['a@example.com'], message({ subject: 'old' }))).toMatch(
      /^250 /,
    );
    await waitFor(() => oldHost.messages.length === 1, 15_000, 'delivery to the old host');

    write({ ...raw, smarthosts: [{ name: 'primary', host: '127.0.0.1', port: newHost.port, tls: 'none' }] });
    expect((await reload()).body).toMatchObject({ ok: true, changed: ['smarthosts'] });
    expect(await client.sendMessage('app@corp.example', ['a@example.com'], message({ subject: 'new' }))).toMatch(
      /^250 /,
    );
    await waitFor(() => newHost.messages.length === 1, 15_000, 'delivery to the new host');
    expect(oldHost.messages).toHaveLength(1);

    write({
      ...raw,
      smarthosts: [{ name: 'primary', host: '127.0.0.1', port: newHost.port, tls: 'none' }],
      clients: [{ name: 'elsewhere', networks: ['10.0.0.0/8'] }],
    });
    expect((await reload()).body).toMatchObject({ ok: true, changed: ['clients'] });
    // A plaintext listener where AUTH cannot help a stranger: refused as at connect, not asked to AUTH.
    expect(await client.command('MAIL FROM:<app@corp.example>')).toBe(
      '554 5.7.1 Access denied: [127.0.0.1] is not a permitted client',
    );
    await client.quit();
  });

  test('a smart host removed by reload while an attempt is under way is not used by that attempt', async () => {
    const hanging = await startSink({ behaviour: { mode: 'hang' } });
    sinks.push(hanging);
    const removed = await sink();
    const kept = await sink();
    // The attempt starts on `first`, which never greets; `removed` is next in line when it gives up.
    const eventsFile = path.join(dir, 'events.jsonl');
    const raw = baseConfig(
      dir,
      [
        // Longer than the test: the attempt waits on `first` until the test hangs up on it after the reload.
        { name: 'first', port: hanging.port, priority: 10, connect_timeout: '60s' },
        { name: 'removed', port: removed.port, priority: 20 },
      ],
      { events: { file: eventsFile } },
    );
    const relay = await start(raw);
    const { client } = await openSession(relay.smtpPort);
    expect(
      await client.sendMessage('app@corp.example', ['a@example.com'], message({ subject: 'across a reload' })),
    ).toMatch(/^250 /);
    await client.quit();

    // Reloaded while the attempt waits for `first`: `removed` is retired, `kept` takes its place.
    await waitFor(() => hanging.openConnections > 0, 10_000, 'the attempt to be waiting on first');
    write({
      ...raw,
      routes: { default: { smarthosts: ['first', 'kept'] } },
      smarthosts: [
        (raw.smarthosts as unknown[])[0],
        { name: 'kept', host: '127.0.0.1', port: kept.port, tls: 'none', priority: 20 },
      ],
    });
    expect((await reload()).body).toMatchObject({ ok: true, changed: expect.arrayContaining(['smarthosts']) });
    await hanging.close();

    await waitFor(() => kept.messages.length === 1, 20_000, 'delivery by the host the reload added');
    expect(subjectOf(kept.messages[0])).toBe('across a reload');
    // The retired host was not tried at all: no transaction, and no outcome of the message names it
    // (before, the attempt went on to it and recorded its closed transport's failure).
    expect(removed.mailCommands).toBe(0);
    const events = readFileSync(eventsFile, 'utf8')
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as { type: string; smarthost?: string | null });
    expect(events.filter((e) => e.smarthost === 'removed')).toEqual([]);
    expect(events.filter((e) => e.type === 'deferred').map((e) => e.smarthost)).toEqual(['first']);
  });

  test('reload between transactions of a split envelope: the rest go to the new host at once, no backoff', async () => {
    // The first transaction's 250 comes late, so the reload lands while it is under way.
    const slow = await sink({ dataReplyDelayMs: 1500 });
    const eventsFile = path.join(dir, 'events.jsonl');
    const raw = baseConfig(dir, [{ name: 'only', port: slow.port, max_recipients: 1 }], {
      events: { file: eventsFile },
      spool: { dir: path.join(dir, 'spool'), retry: { initial: '1h', max: '1h', factor: 2 }, min_free_disk: 0 },
    });
    const relay = await start(raw);
    const { client } = await openSession(relay.smtpPort);
    expect(
      await client.sendMessage(
        'app@corp.example',
        ['a@example.com', 'b@example.com', 'c@example.com'],
        message({ subject: 'split across a reload' }),
      ),
    ).toMatch(/^250 /);
    await client.quit();
    await waitFor(() => slow.count === 1, 5_000, 'the first transaction at the host');

    // A changed definition retires `only` and puts a new host of the same name in its place.
    write({ ...raw, smarthosts: [{ ...(raw.smarthosts as Record<string, unknown>[])[0], max_recipients: 2 }] });
    expect((await reload()).body).toMatchObject({ ok: true, changed: expect.arrayContaining(['smarthosts']) });

    // An hour's backoff would keep b and c waiting; they go in the next attempt, on the new host, now.
    await waitFor(() => slow.recipients().length === 3, 10_000, 'every recipient delivered');
    expect(slow.messages.map((m) => m.to)).toEqual([['a@example.com'], ['b@example.com', 'c@example.com']]);
    const delivered = () =>
      (existsSync(eventsFile) ? readFileSync(eventsFile, 'utf8') : '')
        .trim()
        .split('\n')
        .filter(Boolean)
        .map((line) => JSON.parse(line) as { type: string; to?: string; attempt?: number })
        .filter((e) => e.type === 'delivered');
    await waitFor(() => delivered().length === 3, 5_000, 'three delivered events');
    expect(delivered().map((e) => [e.to, e.attempt])).toEqual([
      ['a@example.com', 1],
      ['b@example.com', 2],
      ['c@example.com', 2],
    ]);
  });

  test('an invalid config is refused: the running one stays, the failure is counted and explained', async () => {
    const primary = await sink();
    const raw = baseConfig(dir, [{ name: 'primary', port: primary.port }]);
    const relay = await start(raw);

    write({ ...raw, clients: [{ name: 'shop', username: 'shop', password_hash: 'hunter2' }], bogus: 1 });
    const refused = await reload();
    expect(refused.status).toBe(422);
    expect(refused.body.ok).toBe(false);
    expect(refused.body.errors).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^clients\[0\]\.password_hash: expected scrypt hash/),
        expect.stringMatching(/bogus/),
      ]),
    );
    writeFileSync(configFile, 'hostname: [unclosed\n');
    expect((await reload()).status).toBe(422);

    const { client } = await openSession(relay.smtpPort);
    expect(await client.sendMessage('app@corp.example', ['a@example.com'], message())).toMatch(/^250 /);
    await client.quit();
    await waitFor(() => primary.messages.length === 1, 15_000, 'delivery with the old config');
    const metrics = await metricsText(relay.httpPort);
    expect(metricValue(metrics, 'smarthop_config_reloads_total{result="failure"}')).toBe(2);
    expect(metricValue(metrics, 'smarthop_config_reloads_total{result="success"}')).toBe(0);
    const status = (await (await fetch(`http://127.0.0.1:${relay.httpPort}/api/status`)).json()) as StatusReport;
    expect(status.last_reload).toMatchObject({ ok: false });
  });

  test('a changed listener or spool is reported as needing a restart and keeps running as before', async () => {
    const primary = await sink();
    const raw = baseConfig(dir, [{ name: 'primary', port: primary.port }]);
    const relay = await start(raw);
    write({
      ...raw,
      listeners: [{ name: 'smtp', address: '127.0.0.1:1', tls: 'none', auth: 'optional' }],
      max_message_size: '2MiB',
      log: { level: 'fatal' },
    });
    expect((await reload()).body).toEqual({
      ok: true,
      changed: ['log'],
      restart_required: ['max_message_size', 'listeners.smtp'],
    });
    const { client } = await openSession(relay.smtpPort);
    expect(await client.sendMessage('app@corp.example', ['a@example.com'], message())).toMatch(/^250 /);
    await client.quit();
    expect(relay.relay.config.max_message_size).toBe(1024 * 1024);
    expect(relay.relay.config.log.level).toBe('fatal');
  });

  test('SIGHUP re-reads the file of a running relay process', async () => {
    const primary = await sink();
    const [smtpPort, httpPort] = [await freePort(), await freePort()];
    const raw = baseConfig(dir, [{ name: 'primary', port: primary.port }], {
      listeners: [{ name: 'smtp', address: `127.0.0.1:${smtpPort}`, tls: 'none', auth: 'off' }],
      http: { address: `127.0.0.1:${httpPort}` },
      log: { level: 'info' },
    });
    write(raw);
    child = await ChildRelay.start(configFile, httpPort);
    const reloads = async (result: string) =>
      metricValue(await metricsText(httpPort), `smarthop_config_reloads_total{result="${result}"}`);
    // The config the relay read at start (through the releasing reader) trusts 127.0.0.1 only.
    const stranger = await RawSmtpClient.connect(smtpPort, { localAddress: '127.0.0.2' });
    expect(await stranger.reply()).toMatch(/^554 5\.7\.1 /);
    await stranger.quit();

    writeFileSync(configFile, 'not: [valid\n');
    child.process.kill('SIGHUP');
    await waitFor(async () => (await reloads('failure')) === 1, 10_000, 'failed reload counted');
    expect(child.output.join('')).toMatch(/config reload \(SIGHUP\) refused, still running the previous configuration/);

    write({ ...raw, clients: [...(raw.clients as unknown[]), { name: 'office', networks: ['127.0.0.2/32'] }] });
    child.process.kill('SIGHUP');
    await waitFor(async () => (await reloads('success')) === 1, 10_000, 'reload counted');
    const { client, greeting } = await openSession(smtpPort, { localAddress: '127.0.0.2' });
    expect(greeting).toMatch(/^220 /);
    expect(await client.sendMessage('printer@corp.example', ['a@example.com'], message())).toMatch(/^250 /);
    await client.quit();
    await waitFor(() => primary.messages.length === 1, 15_000, 'delivery');

    // A schema error on reload comes back in zod's own words, with its path.
    write({
      ...raw,
      listeners: [{ name: 'smtp', address: `127.0.0.1:${smtpPort}`, tls: 'none', auth: 'off', max_clients: -1 }],
    });
    child.process.kill('SIGHUP');
    await waitFor(async () => (await reloads('failure')) === 2, 10_000, 'second failed reload counted');
    expect(child.output.join('')).toMatch(/listeners\[0\]\.max_clients: Too small: expected number to be >0/);
    const withOffice = {
      ...raw,
      clients: [...(raw.clients as unknown[]), { name: 'office', networks: ['127.0.0.2/32'] }],
    };
    write({ ...withOffice, log: { level: 'warn' } });
    child.process.kill('SIGHUP');
    await waitFor(async () => (await reloads('success')) === 2, 10_000, 'second reload counted');
    // Read again from the file, the unchanged parts compare equal to the running ones.
    write({ ...withOffice, log: { level: 'error' } });
    const res = await fetch(`http://127.0.0.1:${httpPort}/api/reload`, { method: 'POST' });
    expect({ status: res.status, body: await res.json() }).toEqual({
      status: 200,
      body: { ok: true, changed: ['log'], restart_required: [] },
    });
    expect(await child.kill('SIGTERM')).toBe(0);
  });
});
