import { execFile } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { stringify } from 'yaml';
import { SmtpSink } from '../../src/sink/sink';
import { freePort, waitFor } from '../helpers/harness';
import { message, openSession } from '../helpers/smtp-client';

/**
 * `npm run test:container`: the real Dockerfile, built and run with podman (slow, so not part of
 * `npm test`; .ci/run runs it after). It builds the image on a base from
 * deploy/container/build-base.sh, runs it as its non-root user with the spool on a volume, relays a
 * message to a sink on the host, sees the HEALTHCHECK report healthy, stops the container with
 * SIGTERM while a message waits in its queue (exit 0), replaces it with a new container on the same
 * volume that delivers that message, and stops that one too (exit 0, queue empty).
 */

const ROOT = path.resolve(__dirname, '..', '..', '..');
const PODMAN = ['--runtime', 'runc', '--cgroup-manager=cgroupfs'];
const IMAGE = 'localhost/smarthop:test';
const run = promisify(execFile);

async function podman(args: string[], timeoutMs = 120_000): Promise<string> {
  const { stdout } = await run('podman', [...PODMAN, ...args], { timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024 });
  return stdout.trim();
}

async function hardLimit(flag: '-Hn' | '-Hu', cap: number): Promise<number> {
  const { stdout } = await run('bash', ['-c', `ulimit ${flag}`]);
  const value = stdout.trim() === 'unlimited' ? cap : Number(stdout.trim());
  return Math.min(cap, value);
}

function step(text: string): void {
  process.stdout.write(`container: ${text}\n`);
}

async function main(): Promise<void> {
  const started = Date.now();
  step('base image');
  const { stdout: baseOut } = await run(path.join(ROOT, 'deploy/container/build-base.sh'), [], {
    timeout: 15 * 60_000,
    maxBuffer: 16 * 1024 * 1024,
  });
  const base = baseOut.trim().split('\n').pop() as string;
  step(`building the Dockerfile on ${base}`);
  const previous = await podman(['image', 'inspect', '--format', '{{.Id}}', IMAGE]).catch(() => null);
  await podman(
    ['build', '--format', 'docker', '--network', 'host', '--build-arg', `BASE=${base}`, '-t', IMAGE, ROOT],
    20 * 60_000,
  );
  // The image the last run built is replaced by this one: it goes (the base image and the build cache stay).
  const built = await podman(['image', 'inspect', '--format', '{{.Id}}', IMAGE]);
  if (previous && previous !== built) await podman(['rmi', previous]).catch(() => undefined);
  const healthcheck = await podman(['image', 'inspect', '--format', '{{json .Config.Healthcheck}}', IMAGE]);
  if (!healthcheck.includes('/healthz') && !healthcheck.includes('SMARTHOP_HEALTH_URL')) {
    throw new Error(`the image lost its HEALTHCHECK: ${healthcheck}`);
  }

  const work = mkdtempSync(path.join(tmpdir(), 'smarthop-container-'));
  const volume = `smarthop-test-spool-${process.pid}`;
  const containers: string[] = [];
  const sinkPort = await freePort();
  let sink: SmtpSink | null = null;
  try {
    const smtpPort = await freePort();
    const httpPort = await freePort();
    // The container shares the host's network: loopback is trusted, the sink is on the host's loopback.
    const config = path.join(work, 'relay.config.yaml');
    writeFileSync(
      config,
      stringify({
        hostname: 'relay.container.test',
        shutdown_grace: '5s',
        spool: { dir: '/var/spool/smarthop', min_free_disk: 0, retry: { initial: '1s', max: '2s', factor: 2 } },
        listeners: [{ name: 'smtp', address: `127.0.0.1:${smtpPort}`, tls: 'none', auth: 'optional' }],
        clients: [{ name: 'host', networks: ['127.0.0.0/8'] }],
        routes: { default: { smarthosts: ['sink'] } },
        smarthosts: [
          { name: 'sink', host: '127.0.0.1', port: sinkPort, tls: 'none', breaker: { failures: 3, cooldown: '1s' } },
        ],
        http: { address: `127.0.0.1:${httpPort}` },
        events: { file: '/var/spool/smarthop/events.jsonl' },
        log: { level: 'info' },
      }),
    );
    chmodSync(work, 0o755);
    chmodSync(config, 0o644);
    await podman(['volume', 'create', volume]);
    const nofile = await hardLimit('-Hn', 65_536);
    const nproc = await hardLimit('-Hu', 4096);
    const start = async (name: string) => {
      containers.push(name);
      await podman([
        'run',
        '-d',
        '--name',
        name,
        '--network',
        'host',
        '--ulimit',
        `nofile=${nofile}:${nofile}`,
        '--ulimit',
        `nproc=${nproc}:${nproc}`,
        '-v',
        `${volume}:/var/spool/smarthop`,
        '-v',
        `${config}:/etc/smarthop/relay.config.yaml:ro`,
        '-e',
        `SMARTHOP_HEALTH_URL=http://127.0.0.1:${httpPort}/healthz`,
        IMAGE,
      ]);
      // podman runs HEALTHCHECK on a systemd timer; without systemd, `healthcheck run` runs the image's check now.
      await waitFor(
        async () =>
          await podman(['healthcheck', 'run', name]).then(
            () => true,
            () => false,
          ),
        60_000,
        `${name} healthy`,
      );
      const status = await podman(['inspect', '--format', '{{.State.Health.Status}}', name]);
      if (status !== 'healthy') throw new Error(`${name}: health ${status}`);
      const uid = await podman(['exec', name, 'id', '-u']);
      if (uid !== '1000') throw new Error(`${name} runs as uid ${uid}, not the image's node user`);
      step(`${name} is healthy, running as uid ${uid}`);
    };
    const stop = async (name: string) => {
      await podman(['stop', '-t', '30', name], 60_000);
      const code = await podman(['inspect', '--format', '{{.State.ExitCode}}', name]);
      if (code !== '0') throw new Error(`${name} exited with ${code} on SIGTERM:\n${await podman(['logs', name])}`);
      step(`${name} stopped by SIGTERM, exit 0`);
    };
    const send = async (subject: string) => {
      const { client } = await openSession(smtpPort);
      const reply = await client.sendMessage(
        'app@corp.example',
        ['user@example.com'],
        message({ subject, messageId: `${subject}@container.test` }),
      );
      await client.quit();
      if (!reply?.startsWith('250 ')) throw new Error(`${subject}: ${reply}`);
      return reply.split(' ').pop() as string;
    };
    const sinkUp = async () => {
      sink = new SmtpSink({ port: sinkPort, keep: true });
      await sink.listen();
      return sink;
    };

    const first = await sinkUp();
    await start('smarthop-test-1');
    await send('relayed');
    await waitFor(
      () => first.messages.some((m) => m.messageId === '<relayed@container.test>'),
      30_000,
      'the first message at the sink',
    );
    step('relayed a message to the sink on the host');

    // The smart host goes away; a message is accepted and waits in the queue on the volume.
    await first.close();
    sink = null;
    const queued = await send('queued');
    await waitFor(
      async () =>
        (await podman(['exec', 'smarthop-test-1', 'sh', '-c', 'cat /var/spool/smarthop/events.jsonl'])).includes(
          `"type":"deferred","queue_id":"${queued}"`,
        ),
      30_000,
      'the deferral',
    );
    await stop('smarthop-test-1');

    // A new container on the same volume: it recovers the queue and delivers once the smart host is back.
    const second = await sinkUp();
    await start('smarthop-test-2');
    await waitFor(
      () => second.messages.some((m) => m.messageId === '<queued@container.test>'),
      60_000,
      'the queued message delivered by the new container',
    );
    step(`the new container delivered ${queued}, queued by the old one`);
    const status = JSON.parse(
      await podman([
        'exec',
        'smarthop-test-2',
        'node',
        'dist/src/cli.js',
        'status',
        '-c',
        '/etc/smarthop/relay.config.yaml',
        '--json',
      ]),
    ) as { queue: Record<string, number> };
    if (Object.values(status.queue).some((n) => n !== 0))
      throw new Error(`queue not empty: ${JSON.stringify(status.queue)}`);
    await stop('smarthop-test-2');
    step(`passed in ${Math.round((Date.now() - started) / 1000)} s`);
  } finally {
    const open = sink as SmtpSink | null;
    await open?.close();
    for (const name of containers) await podman(['rm', '-f', name]).catch(() => undefined);
    await podman(['volume', 'rm', '-f', volume]).catch(() => undefined);
    rmSync(work, { recursive: true, force: true });
  }
}

main().then(
  () => process.exit(0),
  (err: Error) => {
    process.stderr.write(`container: FAILED: ${err.message}\n`);
    process.exit(1);
  },
);
