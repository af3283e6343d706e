import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { stringify } from 'yaml';
import { loadConfigFile } from '../src/config/load';
import { SmtpSink } from '../src/tools/sink';
import {
  baseConfig,
  buildConfig,
  freePort,
  makeCertificate,
  relayPerTest,
  removeDir,
  startRelay,
  tempDir,
  waitFor,
} from './helpers/harness';
import { message, openSession } from './helpers/smtp-client';

/**
 * What a new user ran into on a first try: the process `npm start` shows is the one to stop, `send`
 * checks the relay's certificate, the sink never overwrites what it captured before, a YAML typo is
 * one clear error, and a client removed by a reload is told it is not welcome (not to AUTH).
 */

const ROOT = path.resolve(__dirname, '..');
const CLI = path.join(ROOT, 'dist', 'src', 'cli.js');

jest.setTimeout(90_000);

/** A child's output as it comes, and a way to wait for a line. */
function watch(child: ChildProcess): {
  output: () => string;
  waitFor: (pattern: RegExp, what: string) => Promise<void>;
  exited: Promise<number | null>;
} {
  let output = '';
  child.stdout?.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr?.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  return {
    output: () => output,
    waitFor: (pattern, what) => waitFor(() => pattern.test(output), 30_000, what),
    exited,
  };
}

function run(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number | null; output: string }> {
  const child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, ...env } });
  const watched = watch(child);
  return watched.exited.then((code) => ({ code, output: watched.output() }));
}

describe('first use', () => {
  let dir = '';
  beforeEach(() => {
    dir = tempDir('smarthop-first-use-');
  });
  afterEach(() => removeDir(dir));

  test('the PID of `npm start` is the one to stop: SIGTERM to it stops the relay (the script execs node)', async () => {
    const config = path.join(dir, 'relay.yaml');
    writeFileSync(
      config,
      stringify(baseConfig(dir, [{ name: 'primary', port: await freePort() }], { log: { level: 'info' } })),
    );
    // --ignore-scripts skips the prestart build (the test run has built dist/ already); the last -c wins.
    const npm = spawn('npm', ['start', '--ignore-scripts', '--', '-c', config], { cwd: ROOT, env: process.env });
    const watched = watch(npm);
    await watched.waitFor(/listener smtp on 127\.0\.0\.1:(\d+)/, 'the relay listening');
    const port = Number(/listener smtp on 127\.0\.0\.1:(\d+)/.exec(watched.output())?.[1]);
    npm.kill('SIGTERM');
    expect(await watched.exited).toBe(0);
    expect(watched.output()).toMatch(/"msg":"stopped"/);
    // Nothing listens any more: the node process went with npm.
    await expect(openSession(port)).rejects.toThrow(/ECONNREFUSED/);
  });

  test('smarthop send checks the STARTTLS certificate unless told otherwise (--ca, --insecure)', async () => {
    const cert = makeCertificate(dir, 'relay.test');
    const sink = new SmtpSink({ keep: true });
    await sink.listen();
    const running = await startRelay(
      buildConfig(
        baseConfig(dir, [{ name: 'primary', port: sink.port }], {
          tls: { cert: cert.cert, key: cert.key },
          listeners: [{ name: 'sub', address: '127.0.0.1:0', tls: 'starttls', auth: 'optional' }],
        }),
        dir,
      ),
    );
    try {
      const send = (...extra: string[]) =>
        run([
          'send',
          '--server',
          `127.0.0.1:${running.smtpPort}`,
          '--from',
          'app@corp.example',
          '--to',
          'user@example.com',
          ...extra,
        ]);
      const unchecked = await send();
      expect(unchecked.code).toBe(1);
      expect(unchecked.output).toMatch(
        /self[- ]signed certificate[\s\S]*trust its CA with --ca FILE, or skip the check with --insecure/,
      );
      expect(sink.messages).toHaveLength(0);
      expect(await send('--ca', cert.cert)).toMatchObject({ code: 0, output: expect.stringMatching(/^250 /) });
      expect(await send('--insecure')).toMatchObject({
        code: 0,
        output: expect.stringMatching(/^warning: --insecure: the relay's TLS certificate is not checked\n250 /),
      });
      await waitFor(() => sink.messages.length === 2, 15_000, 'two messages');
      expect(sink.messages.every((m) => m.data.toString().includes('with ESMTPS'))).toBe(true);
    } finally {
      await running.stop();
      await sink.close();
    }
  });

  test('sink --dir numbers on after a restart, names captures after the queue id, overwrites nothing', async () => {
    const captures = path.join(dir, 'captures');
    const sinkPort = await freePort();
    const running = await startRelay(buildConfig(baseConfig(dir, [{ name: 'primary', port: sinkPort }]), dir));
    // A round that fails leaves its sink running: it would hold the port and keep jest from exiting.
    let live: { sink: ChildProcess; exited: Promise<number | null> } | null = null;
    try {
      for (let round = 1; round <= 2; round++) {
        const sink = spawn(process.execPath, [CLI, 'sink', '--listen', `127.0.0.1:${sinkPort}`, '--dir', captures]);
        const watched = watch(sink);
        live = { sink, exited: watched.exited };
        await watched.waitFor(/sink: listening on .* \(pid \d+\)/, 'the sink');
        expect(watched.output()).toContain(`(pid ${sink.pid})`);
        const { client } = await openSession(running.smtpPort);
        const reply = await client.sendMessage(
          'app@corp.example',
          ['user@example.com'],
          message({ subject: `round ${round}` }),
        );
        await client.quit();
        const id = (reply as string).split(' ').pop() as string;
        await waitFor(() => readdirSync(captures).some((name) => name.includes(id)), 15_000, `capture of ${id}`);
        expect(readdirSync(captures).sort().pop()).toBe(`${String(round).padStart(6, '0')}-${id}.eml`);
        sink.kill('SIGTERM');
        await watched.exited;
        live = null;
      }
      expect(readdirSync(captures)).toHaveLength(2);
    } finally {
      if (live) {
        live.sink.kill('SIGKILL');
        await live.exited;
      }
      await running.stop();
    }
  });

  test('a YAML syntax error is reported once, with its line and column, a hint, and a count of the rest', async () => {
    const config = path.join(dir, 'relay.yaml');
    writeFileSync(
      config,
      'hostname: relay.test\nspool: { dir: ${SPOOL}/spool, max_queue_lifetime: 5d }\n' +
        'listeners:\n  - name: smtp\n    address: 127.0.0.1:2525\n',
    );
    const result = await run(['check-config', '-c', config]);
    expect(result.code).toBe(1);
    const lines = result.output.trimEnd().split('\n');
    expect(lines[0]).toBe(`${config}: invalid configuration`);
    expect(lines[1]).toBe(`  ${config}:2:16: Unexpected flow-map-start at node end`);
    expect(lines[2]).toBe('      spool: { dir: ${SPOOL}/spool, max_queue_lifetime: 5d }');
    expect(lines[3]).toBe(`      ${' '.repeat(15)}^`);
    expect(lines[4]).toMatch(/hint: inside \{ … \} or \[ … \], quote a value that holds \$\{…\}/);
    expect(lines.length).toBeLessThanOrEqual(8);
    expect(lines[lines.length - 1]).toMatch(/^ {2}… and \d+ more YAML error\(s\)/);
  });
});

describe('a client removed by a reload', () => {
  const t = relayPerTest();

  test('gets 554 5.7.1 at its next MAIL where AUTH cannot help, 530 5.7.0 where it can (STARTTLS first)', async () => {
    const cert = makeCertificate(t.dir, 'relay.test');
    const sink = await t.sink();
    const raw = baseConfig(t.dir, [{ name: 'primary', port: sink.port }], {
      tls: { cert: cert.cert, key: cert.key },
      listeners: [
        { name: 'plain', address: '127.0.0.1:0', tls: 'none', auth: 'optional' },
        { name: 'sub', address: '127.0.0.1:0', tls: 'starttls', auth: 'optional' },
      ],
    });
    const file = path.join(t.dir, 'relay.yaml');
    writeFileSync(file, stringify(raw));
    t.running = await startRelay(buildConfig(raw, t.dir), { configSource: () => loadConfigFile(file, {}) });
    const plain = (await openSession(t.running.portOf('plain'))).client;
    const sub = (await openSession(t.running.portOf('sub'))).client;
    expect(await plain.command('MAIL FROM:<app@corp.example>')).toMatch(/^250 /);
    expect(await plain.command('RSET')).toMatch(/^250 /);

    writeFileSync(file, stringify({ ...raw, clients: [{ name: 'lan', networks: ['10.99.0.0/16'] }] }));
    expect((await t.running.relay.reload('api')).ok).toBe(true);
    expect(await plain.command('MAIL FROM:<app@corp.example>')).toBe(
      '554 5.7.1 Access denied: [127.0.0.1] is not a permitted client',
    );
    expect(await sub.command('MAIL FROM:<app@corp.example>')).toBe('530 5.7.0 Authentication required');
    await plain.quit();
    await sub.quit();
  });
});
