import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { Command, InvalidArgumentError } from 'commander';
import { stringify } from 'yaml';
import { SmtpSink } from '../src/tools/sink';
import { prng } from './prng';
import { freePort } from './free-port';
import { RelayProcess } from './relay-process';
import { buildMessage, sendOne, type ConnectionRegistry, type Timeouts } from './smtp-client';

/**
 * `npm run soak`: the durability promise under chaos. Unique messages flow in over several
 * connections while the relay is killed with SIGKILL at random moments and restarted, and the smart
 * hosts go down and come back. At the end every message that got a 250 must be at a sink (counted by
 * Message-ID); duplicates are allowed by the at-least-once contract and are counted.
 */

interface SoakOptions {
  messages: number;
  kills: number;
  connections: number;
  size: number;
  seed: number;
  json: boolean;
}

export interface SoakFigures {
  accepted: number;
  delivered: number;
  lost: number;
  duplicated: number;
  /** At a sink without the client having seen a 250 (the relay died between commit and reply). */
  deliveredWithoutReply: number;
  kills: number;
  sinkOutages: number;
  seconds: number;
}

const TIMEOUTS: Timeouts = { connectMs: 2_000, replyMs: 15_000 };
const DRAIN_NO_PROGRESS_MS = 60_000;
/**
 * A breaker opened by an outage probes its host again after a second, not the default 30 s: the drain
 * then waits for the relay's retries, not for a cooldown that proves nothing about durability.
 */
const SMART_HOST_TIMING = { connect_timeout: '1s', socket_timeout: '5s', breaker: { cooldown: '1s' } };

function positiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError('expected a non-negative integer');
  return n;
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** A smart host that can be taken down and brought back on the same port. */
class FlakySink {
  private sink: SmtpSink | null = null;
  constructor(
    readonly port: number,
    private readonly onMessage: (messageId: string | null) => void,
  ) {}

  async up(): Promise<void> {
    if (this.sink) return;
    const sink = new SmtpSink({ port: this.port, onMessage: (m) => this.onMessage(m.messageId) });
    await sink.listen();
    this.sink = sink;
  }

  async down(): Promise<void> {
    const sink = this.sink;
    this.sink = null;
    await sink?.close();
  }
}

export async function runSoak(options: SoakOptions): Promise<SoakFigures> {
  const started = Date.now();
  const random = prng(options.seed);
  const runId = randomBytes(4).toString('hex');
  const dir = await mkdtemp(path.join(tmpdir(), 'smarthop-soak-'));
  const [smtpPort, httpPort, primaryPort, backupPort] = [
    await freePort(),
    await freePort(),
    await freePort(),
    await freePort(),
  ];

  const seenAtSinks = new Map<string, number>();
  const recordDelivery = (messageId: string | null) => {
    if (messageId) seenAtSinks.set(messageId, (seenAtSinks.get(messageId) ?? 0) + 1);
  };
  const sinks = [new FlakySink(primaryPort, recordDelivery), new FlakySink(backupPort, recordDelivery)];
  await Promise.all(sinks.map((s) => s.up()));

  const configFile = path.join(dir, 'relay.yaml');
  await writeFile(
    configFile,
    stringify({
      hostname: 'soak.localhost',
      spool: { dir: path.join(dir, 'spool'), retry: { initial: '200ms', max: '2s', factor: 2 }, min_free_disk: 0 },
      shutdown_grace: '2s',
      listeners: [{ name: 'smtp', address: `127.0.0.1:${smtpPort}`, tls: 'none', auth: 'off' }],
      clients: [{ name: 'soak', networks: ['127.0.0.0/8'] }],
      routes: { default: { smarthosts: ['primary', 'backup'] } },
      smarthosts: [
        { name: 'primary', host: '127.0.0.1', port: primaryPort, tls: 'none', priority: 10, ...SMART_HOST_TIMING },
        { name: 'backup', host: '127.0.0.1', port: backupPort, tls: 'none', priority: 20, ...SMART_HOST_TIMING },
      ],
      http: { address: `127.0.0.1:${httpPort}` },
      log: { level: 'error' },
    }),
  );

  let relay = RelayProcess.launch(configFile);
  // A soak that fails half way (a relay that never gets healthy) exits through main(): the relay
  // running then, whichever restart it is, must not outlive it holding its ports and spool.
  const killRelay = () => {
    if (relay.running && relay.pid !== undefined) process.kill(relay.pid, 'SIGKILL');
  };
  process.once('exit', killRelay);
  await relay.waitHealthy(httpPort, 15_000);

  const accepted = new Set<string>();
  const pending = Array.from({ length: options.messages }, (_, i) => i);
  const live: ConnectionRegistry = new Set();
  let loadDone = false;

  const worker = async () => {
    while (pending.length > 0) {
      const n = pending.shift() as number;
      const message = buildMessage(runId, n, options.size);
      const result = await sendOne('127.0.0.1', smtpPort, message, TIMEOUTS, live);
      if (result.kind === 'accepted') accepted.add(message.messageId);
      else {
        // No 250: the client keeps the message and tries again later, as an MTA client would.
        pending.push(n);
        await sleep(50);
      }
    }
  };

  // Kills and outages happen at random points of the load (fractions of the accepted count), so a
  // run always gets all of them however fast or slow this machine is today.
  const at = (count: number) =>
    Array.from({ length: count }, () => Math.floor((0.05 + random() * 0.9) * options.messages)).sort((a, b) => a - b);
  const killPoints = at(options.kills);
  const outagePoints = at(Math.ceil(options.kills / 2));
  let kills = 0;
  let sinkOutages = 0;
  const chaos = async () => {
    while (!loadDone && (killPoints.length > 0 || outagePoints.length > 0)) {
      await sleep(20);
      if (outagePoints.length > 0 && accepted.size >= outagePoints[0]) {
        outagePoints.shift();
        const sink = sinks[Math.floor(random() * sinks.length)];
        sinkOutages++;
        await sink.down();
        setTimeout(() => void sink.up(), 200 + random() * 1500);
      }
      if (killPoints.length > 0 && accepted.size >= killPoints[0]) {
        killPoints.shift();
        await relay.kill();
        kills++;
        await sleep(100 + random() * 400);
        relay = RelayProcess.launch(configFile);
        await relay.waitHealthy(httpPort, 15_000);
      }
    }
  };

  const chaosRun = chaos();
  await Promise.all(Array.from({ length: options.connections }, worker));
  loadDone = true;
  await chaosRun;

  // Drain: everything up, wait until every accepted message is at a sink or nothing moves for a minute.
  await Promise.all(sinks.map((s) => s.up()));
  const delivered = () => [...accepted].filter((id) => seenAtSinks.has(id)).length;
  let last = delivered();
  let lastProgress = Date.now();
  while (delivered() < accepted.size && Date.now() - lastProgress < DRAIN_NO_PROGRESS_MS) {
    await sleep(100);
    const now = delivered();
    if (now !== last) {
      last = now;
      lastProgress = Date.now();
    }
  }
  await relay.stop(10_000);
  process.off('exit', killRelay);
  await Promise.all(sinks.map((s) => s.down()));
  await rm(dir, { recursive: true, force: true });

  const copies = [...seenAtSinks.values()].reduce((sum, n) => sum + n, 0);
  return {
    accepted: accepted.size,
    delivered: delivered(),
    lost: accepted.size - delivered(),
    duplicated: copies - seenAtSinks.size,
    deliveredWithoutReply: [...seenAtSinks.keys()].filter((id) => !accepted.has(id)).length,
    kills,
    sinkOutages,
    seconds: (Date.now() - started) / 1000,
  };
}

async function main(): Promise<void> {
  const program = new Command('soak')
    .description('kill -9 the relay and take smart hosts down under load; prove nothing accepted is lost')
    .option('--messages <n>', 'unique messages to send', positiveInt, 2000)
    .option('--kills <k>', 'SIGKILLs of the relay during the load', positiveInt, 5)
    .option('--connections <c>', 'concurrent SMTP connections', positiveInt, 8)
    .option('--size <bytes>', 'message size', positiveInt, 2048)
    .option('--seed <n>', 'random seed (kill and outage timing)', positiveInt, Date.now() % 2 ** 31)
    .option('--json', 'print one JSON object', false);
  program.parse(process.argv.filter((arg) => arg !== '--'));
  const options = program.opts<SoakOptions>();
  const figures = await runSoak(options);
  if (options.json) process.stdout.write(`${JSON.stringify({ ...figures, seed: options.seed })}\n`);
  else {
    process.stdout.write(
      [
        `smarthop soak: ${options.messages} messages, ${options.connections} connections, seed ${options.seed}`,
        `relay SIGKILLs     ${figures.kills}   smart-host outages ${figures.sinkOutages}`,
        `accepted (250)     ${figures.accepted}`,
        `delivered          ${figures.delivered}`,
        `lost               ${figures.lost}`,
        `duplicated         ${figures.duplicated}   delivered without a 250 seen ${figures.deliveredWithoutReply}`,
        `time               ${figures.seconds.toFixed(1)} s`,
        '',
      ].join('\n'),
    );
  }
  process.exit(figures.lost === 0 ? 0 : 1);
}

if (require.main === module) {
  main().catch((err: Error) => {
    process.stderr.write(`soak failed: ${err.stack ?? err.message}\n`);
    process.exit(2);
  });
}
