import { execFile, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rename, rm } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { Command, InvalidArgumentError } from 'commander';
import { SmtpSink } from '../../src/tools/sink';
import { freePort } from '../free-port';
import { RelayProcess, type RelayPorts } from '../relay-process';
import { buildMessage, sendOne } from '../smtp-client';
import { fillSpool } from './fill';

/**
 * `npm run bench -- --deep-queue N` (issue 24): a relay restarted on a spool holding N queued
 * messages while its smart host is down, then the smart host coming back. The spool is filled
 * through the spool's own writer (no SMTP). Measured, against the same relay started on an empty
 * spool: start to listening, start to queue recovered (/readyz), one message accepted during
 * recovery, peak RSS, the admin commands' wall times (`status`, `queue list --limit 50`, a recipient
 * search that reads every message), and the drain rate once `queue flush` sends the queue to the
 * returned smart host (over the first `--drain` messages).
 *
 * Exit 0 when the measured part of the queue drained, 1 when it did not, 2 when the bench could not run.
 */

export interface DeepQueueReport {
  messages: number;
  size: number;
  /** null: the spool was reused (--reuse-spool). */
  fill: { seconds: number; rate: number } | null;
  empty: { listeningMs: number; recoveredMs: number; peakRssBytes: number | null };
  deep: {
    listeningMs: number;
    recoveredMs: number;
    /** A message sent the moment the relay listened: its 250, and whether recovery was still running then. */
    acceptedDuringRecovery: { latencyMs: number; recoveryRunning: boolean } | null;
    peakRssBytes: number | null;
    /** Wall time of each command at a shell, node's own start included (`nodeStartMs`: `smarthop --version`). */
    admin: { statusMs: number; listLimit50Ms: number; listRecipientMs: number; nodeStartMs: number };
    /** The same questions asked of the admin API directly: the relay's own answer time. */
    api: { statusMs: number; listLimit50Ms: number; listRecipientMs: number; firstRowMs: number | null };
    drain: { measured: number; delivered: number; seconds: number; rate: number; firstDeliveryMs: number | null };
    peakRssAfterDrainBytes: number | null;
  };
  rssOverEmptyBytes: number | null;
  notes: string[];
}

interface Options {
  messages: number;
  size: number;
  drain: number;
  json: boolean;
  dir: string | null;
  /** A spool filled by an earlier run, used instead of filling one (and kept). */
  reuse: string | null;
  /** Where the filled spool goes at the end instead of being removed. */
  keep: string | null;
}

const LIMITS = { startMs: 30_000, recoveryMs: 60 * 60_000, drainNoProgressMs: 60_000 };

export function deepQueueRequested(argv: readonly string[]): boolean {
  return argv.some((arg) => arg === '--deep-queue' || arg.startsWith('--deep-queue='));
}

function positiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError('expected a positive integer');
  return n;
}

function parse(argv: readonly string[]): Options {
  const program = new Command('bench --deep-queue')
    .requiredOption('--deep-queue <n>', 'messages in the spool', positiveInt)
    .option('--size <bytes>', 'size of each message', positiveInt, 10240)
    .option(
      '--drain <n>',
      'messages over which the drain rate is measured (default: all, at most 100,000)',
      positiveInt,
    )
    .option('--dir <folder>', 'where the spools go (default: the temp folder); needs about N x (size + 1 KiB)')
    .option('--keep-spool <dir>', 'move the filled spool here at the end (for --reuse-spool) instead of removing it')
    .option(
      '--reuse-spool <dir>',
      'use this spool (kept by an earlier run with --keep-spool) instead of filling one; it is kept',
    )
    .option('--json', 'one JSON object instead of the table', false)
    .exitOverride((err) => process.exit(err.exitCode === 0 ? 0 : 2));
  program.parse(
    argv.filter((arg) => arg !== '--'),
    { from: 'user' },
  );
  const opts = program.opts<{
    deepQueue: number;
    size: number;
    drain?: number;
    json: boolean;
    dir?: string;
    reuseSpool?: string;
    keepSpool?: string;
  }>();
  return {
    messages: opts.deepQueue,
    size: opts.size,
    drain: Math.min(opts.drain ?? Math.min(opts.deepQueue, 100_000), opts.deepQueue),
    json: opts.json,
    dir: opts.dir ?? null,
    reuse: opts.reuseSpool ? path.resolve(opts.reuseSpool) : null,
    keep: opts.keepSpool ? path.resolve(opts.keepSpool) : null,
  };
}

export async function runDeepQueue(argv: readonly string[]): Promise<number> {
  const options = parse(argv.slice(2));
  const notes: string[] = [];
  const base = await mkdtemp(path.join(options.dir ?? tmpdir(), 'smarthop-deep-queue-'));
  const runId = randomBytes(4).toString('hex');
  const progress = (text: string) => {
    if (!options.json) process.stderr.write(`${text}\n`);
  };
  let relay: RelayProcess | null = null;
  let reused: string | null = null;
  const sink = new SmtpSink({ port: 0 });
  try {
    const emptyDir = path.join(base, 'empty');
    const deepDir = path.join(base, 'deep');
    await mkdir(emptyDir, { recursive: true });
    progress(`filling ${path.join(deepDir, 'spool')} with ${options.messages} messages of ${options.size} bytes…`);
    const fillStart = performance.now();
    if (options.reuse) {
      await mkdir(deepDir, { recursive: true });
      await rename(options.reuse, path.join(deepDir, 'spool'));
      reused = options.reuse;
      notes.push(`spool reused from an earlier fill (${options.reuse}); the fill figures are not this run's`);
    } else {
      await fillSpool(path.join(deepDir, 'spool'), {
        count: options.messages,
        size: options.size,
        runId,
        onProgress: (done) =>
          done % 100_000 === 0 &&
          progress(`  ${done} written (${Math.round(done / ((performance.now() - fillStart) / 1000))} msg/s)`),
      });
    }
    const fillSeconds = (performance.now() - fillStart) / 1000;
    // A restart follows a quiet spool, not one whose pages are still being written back.
    spawnSync('sync');

    // The sink's port is reserved but nothing listens on it until the drain: the smart host is down.
    const sinkPort = await freePort();
    const maxMessageSize = 25 * 1024 * 1024;

    progress('the same relay on an empty spool…');
    const emptyPorts: RelayPorts = { smtp: await freePort(), http: await freePort(), sink: sinkPort };
    relay = await RelayProcess.start(emptyDir, emptyPorts, maxMessageSize);
    const emptyStart = await timeStart(relay, emptyPorts);
    const empty = { ...emptyStart, peakRssBytes: relay.peakRss().vmHwmBytes };
    await relay.stop(30_000);

    progress(`the relay on ${options.messages} queued messages…`);
    const ports: RelayPorts = { smtp: await freePort(), http: await freePort(), sink: sinkPort };
    relay = await RelayProcess.start(deepDir, ports, maxMessageSize);
    const started = await timeStart(relay, ports, async () => {
      const probe = buildMessage(runId, options.messages, options.size);
      const sent = await sendOne('127.0.0.1', ports.smtp, probe, { connectMs: 10_000, replyMs: 60_000 }, new Set());
      const recoveryRunning = !(await recovered(ports.http));
      if (sent.kind !== 'accepted') notes.push(`the message sent during recovery was not accepted: ${sent.kind}`);
      return sent.kind === 'accepted' ? { latencyMs: Math.round(sent.latencyMs * 10) / 10, recoveryRunning } : null;
    });
    const configFile = path.join(deepDir, 'relay.yaml');
    progress('admin commands…');
    const statusMs = await timeCli(['status', '-c', configFile]);
    const listLimit50Ms = await timeCli(['queue', 'list', '--limit', '50', '-c', configFile]);
    const listRecipientMs = await timeCli([
      'queue',
      'list',
      '--recipient',
      '@sink.example',
      '--limit',
      '50',
      '-c',
      configFile,
    ]);
    const nodeStartMs = await timeCli(['--version']);
    const api = await timeApi(ports.http, '@sink.example');
    const peakRssBytes = relay.peakRss().vmHwmBytes;

    progress(`the smart host comes back; queue flush; measuring the drain of ${options.drain} messages…`);
    let delivered = 0;
    let firstAt: number | null = null;
    let lastAt = 0;
    let onArrival: (() => void) | null = null;
    const counting = new SmtpSink({
      port: sinkPort,
      onMessage: () => {
        delivered++;
        lastAt = performance.now();
        firstAt ??= lastAt;
        onArrival?.();
      },
    });
    await counting.listen();
    const flushAt = performance.now();
    await timeCli(['queue', 'flush', '-c', configFile]);
    await new Promise<void>((resolve) => {
      const check = () => {
        if (delivered >= options.drain || performance.now() - Math.max(lastAt, flushAt) > LIMITS.drainNoProgressMs) {
          clearInterval(idle);
          resolve();
        }
      };
      const idle = setInterval(check, 1000);
      onArrival = check;
    });
    onArrival = null;
    const drainSeconds = ((lastAt || performance.now()) - flushAt) / 1000;
    const peakRssAfterDrainBytes = relay.peakRss().vmHwmBytes;
    const deepWarnings = relay.output.warnLines;
    if (delivered < options.drain)
      notes.push(`drain stopped after ${LIMITS.drainNoProgressMs / 1000} s without a delivery`);
    await relay.stop(60_000);
    relay = null;
    await counting.close();

    notes.push(`the relay logged ${deepWarnings} warning(s) (deferrals while the smart host was down among them)`);
    const report: DeepQueueReport = {
      messages: options.messages,
      size: options.size,
      fill: reused ? null : { seconds: round1(fillSeconds), rate: round1(options.messages / fillSeconds) },
      empty,
      deep: {
        listeningMs: started.listeningMs,
        recoveredMs: started.recoveredMs,
        acceptedDuringRecovery: started.during,
        peakRssBytes,
        admin: { statusMs, listLimit50Ms, listRecipientMs, nodeStartMs },
        api,
        drain: {
          measured: options.drain,
          delivered: Math.min(delivered, options.drain),
          seconds: round1(drainSeconds),
          rate: round1(Math.min(delivered, options.drain) / Math.max(drainSeconds, 0.001)),
          firstDeliveryMs: firstAt === null ? null : Math.round((firstAt as number) - flushAt),
        },
        peakRssAfterDrainBytes,
      },
      rssOverEmptyBytes:
        peakRssAfterDrainBytes !== null && empty.peakRssBytes !== null
          ? peakRssAfterDrainBytes - empty.peakRssBytes
          : null,
      notes,
    };
    process.stdout.write(options.json ? `${JSON.stringify(report)}\n` : formatReport(report));
    return delivered >= options.drain ? 0 : 1;
  } finally {
    if (relay?.running) await relay.stop(30_000);
    await sink.close().catch(() => undefined);
    const back = reused ?? options.keep;
    if (back) await rename(path.join(base, 'deep', 'spool'), back).catch(() => undefined);
    progress(`removing ${base}…`);
    await rm(base, { recursive: true, force: true });
  }
}

/**
 * Spawn to listening (a TCP connect succeeds) and to /readyz reporting the queue recovered; `during` runs once
 * listening.
 */
async function timeStart<T>(
  relay: RelayProcess,
  ports: RelayPorts,
  during?: () => Promise<T>,
): Promise<{ listeningMs: number; recoveredMs: number; during: T | null }> {
  const t0 = relay.spawnedAt;
  const deadline = Date.now() + LIMITS.startMs;
  while (!(await canConnect(ports.smtp))) {
    if (!relay.running || Date.now() > deadline) throw new Error('the relay did not start listening');
    await sleep(5);
  }
  const listeningMs = Math.round(performance.now() - t0);
  const duringResult = during ? await during() : null;
  const recoveryDeadline = Date.now() + LIMITS.recoveryMs;
  while (!(await recovered(ports.http))) {
    if (!relay.running || Date.now() > recoveryDeadline)
      throw new Error('the relay did not finish recovering its queue');
    await sleep(20);
  }
  return { listeningMs, recoveredMs: Math.round(performance.now() - t0), during: duringResult };
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

async function recovered(httpPort: number): Promise<boolean> {
  try {
    const res = await fetch(`http://127.0.0.1:${httpPort}/readyz`, { signal: AbortSignal.timeout(5000) });
    const body = (await res.json()) as { checks?: { queue_recovered?: unknown } };
    return body.checks?.queue_recovered === true;
  } catch {
    return false;
  }
}

/**
 * The admin API's own answer times: `/api/status`, a listing of 50, and a recipient search
 * (`format=ndjson`, 50 rows), with the time to its first row. A search for something rare reads
 * every message: on a spool the page cache no longer holds, a few hundred a second on this machine's
 * disk, so the bench times the streamed rows rather than a whole walk.
 */
async function timeApi(httpPort: number, recipient: string): Promise<DeepQueueReport['deep']['api']> {
  const base = `http://127.0.0.1:${httpPort}`;
  const timed = async (url: string) => {
    const start = performance.now();
    const res = await fetch(url);
    await res.arrayBuffer();
    return Math.round(performance.now() - start);
  };
  const statusMs = await timed(`${base}/api/status`);
  const listLimit50Ms = await timed(`${base}/api/queue?limit=50`);
  const start = performance.now();
  let firstRowMs: number | null = null;
  const res = await fetch(`${base}/api/queue?format=ndjson&limit=50&recipient=${encodeURIComponent(recipient)}`);
  for await (const chunk of res.body ?? []) {
    if (
      firstRowMs === null &&
      (chunk as Uint8Array).length > 0 &&
      Buffer.from(chunk as Uint8Array)
        .toString()
        .includes('"id"')
    )
      firstRowMs = Math.round(performance.now() - start);
  }
  return { statusMs, listLimit50Ms, listRecipientMs: Math.round(performance.now() - start), firstRowMs };
}

/** Wall time of one CLI command, as an admin at a shell sees it (node's start included). */
function timeCli(args: string[]): Promise<number> {
  const cli = path.resolve(__dirname, '..', '..', 'src', 'cli.js');
  const start = performance.now();
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [cli, ...args], { timeout: 10 * 60_000, maxBuffer: 64 * 1024 * 1024 }, (err) => {
      if (err && typeof err.code !== 'number') return reject(err);
      resolve(Math.round(performance.now() - start));
    });
  });
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function round1(value: number): number {
  return Math.round(value * 10) / 10;
}

function mib(bytes: number | null): string {
  return bytes === null ? 'n/a' : `${(bytes / (1024 * 1024)).toFixed(1)} MiB`;
}

function formatReport(r: DeepQueueReport): string {
  const row = (label: string, value: string) => `${label.padEnd(34)}${value}\n`;
  let out = `smarthop bench --deep-queue: ${r.messages} messages x ${r.size} B queued, smart host down at start\n`;
  out += row(
    'fill (spool writer)',
    r.fill ? `${r.fill.seconds} s, ${r.fill.rate} msg/s` : 'reused from an earlier run',
  );
  out += row('start to listening', `${r.deep.listeningMs} ms (empty spool: ${r.empty.listeningMs} ms)`);
  out += row('start to queue recovered', `${r.deep.recoveredMs} ms (empty spool: ${r.empty.recoveredMs} ms)`);
  const during = r.deep.acceptedDuringRecovery;
  out += row(
    'a message sent on listening',
    during
      ? `250 after ${during.latencyMs} ms${during.recoveryRunning ? ', recovery still running' : ''}`
      : 'not accepted',
  );
  out += row(
    'smarthop status',
    `${r.deep.admin.statusMs} ms at the shell; the API answers in ${r.deep.api.statusMs} ms`,
  );
  out += row(
    'queue list --limit 50',
    `${r.deep.admin.listLimit50Ms} ms at the shell; the API answers in ${r.deep.api.listLimit50Ms} ms`,
  );
  out += row(
    'queue list --recipient … (50)',
    `${r.deep.admin.listRecipientMs} ms at the shell; ` +
      `API: 50 rows in ${r.deep.api.listRecipientMs} ms, the first after ${r.deep.api.firstRowMs ?? 'n/a'} ms`,
  );
  out += row('node start (smarthop --version)', `${r.deep.admin.nodeStartMs} ms (part of every shell figure)`);
  out += row(
    'drain after queue flush',
    `${r.deep.drain.delivered} of ${r.deep.drain.measured} in ${r.deep.drain.seconds} s: ${r.deep.drain.rate} msg/s ` +
      `(first after ${r.deep.drain.firstDeliveryMs ?? 'n/a'} ms)`,
  );
  out += row(
    'peak RSS',
    `${mib(r.deep.peakRssBytes)} before the drain, ${mib(r.deep.peakRssAfterDrainBytes)} after ` +
      `(empty spool: ${mib(r.empty.peakRssBytes)}; +${mib(r.rssOverEmptyBytes)})`,
  );
  for (const note of r.notes) out += row('note', note);
  return out;
}
