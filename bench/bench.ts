import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { Command, InvalidArgumentError, Option } from 'commander';
import { waitForArrivals } from './arrival-wait';
import { SmtpSink, type SinkMessage } from '../src/tools/sink';
import { runComparison, type CompareOptions } from './compare/compare';
import { deepQueueRequested, runDeepQueue } from './deep-queue/deep-queue';
import { readCpuTimes, readThreadSchedule, scheduleShare, type ScheduleShare } from './cpu/cpu-time';
import { formatProfile, parseCpuProfile, summarizeProfile, type ProfileSummary } from './profile/cpu-profile';
import { BenchRedis } from './redis-server';
import { runTraceBench } from './trace';
import { freePort } from './free-port';
import { RelayProcess } from './relay-process';
import { buildMessage, sendOne, type ConnectionRegistry, type SendResult, type Timeouts } from './smtp-client';

/**
 * `npm run bench` (issue 2): N messages through a relay started from a temp config into an
 * in-process sink, one message per connection (smtp-source style). Prints accept and end-to-end
 * rates, accept latency, the relay's peak RSS and CPU, and the messages lost (250 given, never seen
 * at the sink). `--cpu-prof` runs the relay under node's profiler and lists where it spent its time.
 *
 * `--compare postfix` (issue 9) is the side-by-side run against a private Postfix: see
 * bench/compare/compare.ts and docs/performance.md.
 *
 * Exit 0 when nothing was lost, 1 when something was, 2 when the bench itself could not run.
 */

interface BenchOptions {
  messages: number;
  size: number;
  connections: number;
  json: boolean;
  /** Where the relay's .cpuprofile goes; null: no profiling. */
  cpuProfDir: string | null;
  /** Where the relay keeps its counters: `redis` starts a redis-server of the bench's own. */
  state: 'memory' | 'redis';
  /** Put every message through every kind of counter (limits never reached); implied by --state redis. */
  limits: boolean;
  /** Every policy rule on. */
  fullPolicy: boolean;
  /** The route's rewrites and DKIM signing on. */
  reenvelope: boolean;
  /** false: the relay runs with `delivery.worker_thread: false`. */
  deliveryThread: boolean;
}

/** What commander hands back; the defaults that depend on the mode are applied after. */
interface ParsedOptions {
  messages?: number;
  size: number;
  connections: number;
  json: boolean;
  compare?: 'postfix';
  rounds: number;
  probeRate: number;
  warmup: number;
  cpuProf?: string | true;
  state: 'memory' | 'redis';
  limits: boolean;
  fullPolicy: boolean;
  reenvelope: boolean;
  deliveryThread: boolean;
}

type Mode = { kind: 'bench'; options: BenchOptions } | { kind: 'compare'; options: CompareOptions };

const DEFAULT_MESSAGES = { bench: 2000, compare: 5000 };
/**
 * A relay runs for days, so --compare measures both warm. A fresh smarthop spends its first few
 * thousand messages compiling its hot code (--trace-opt: 459 optimisations in the first 2,000
 * messages, 146 in the next 2,000, 33 in the fourth 2,000); in one process, a second run of 5,000
 * messages took 27% less CPU than the first (9.5 against 12.9 s; V8's background threads 0.6 against
 * 2.2 s). Postfix, warmed the same way, has its smtpd, cleanup and smtp processes running.
 */
const DEFAULT_WARMUP = 2000;
const DEFAULT_CPU_PROF_DIR = 'var/cpu-prof';
/** How many functions --cpu-prof lists. */
const PROFILE_TOP = 15;

/** Everything is bounded so the bench always ends, even against a relay that hangs. */
const LIMITS = {
  overallMs: 10 * 60_000,
  healthyMs: 15_000,
  /** End-to-end wait gives up after this long without a single new message at the sink. */
  noProgressMs: 120_000,
  stopGraceMs: 30_000,
  smtp: { connectMs: 10_000, replyMs: 60_000 } satisfies Timeouts,
};

// ---------------------------------------------------------------------------------------------
// options

function positiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError('expected a positive integer');
  return n;
}

function nonNegativeInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError('expected an integer >= 0');
  return n;
}

function nonNegativeNumber(value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n < 0) throw new InvalidArgumentError('expected a number >= 0');
  return n;
}

function optionsProgram(): Command {
  return new Command('bench')
    .description('push messages through a relay into a sink and report throughput, latency, memory and loss')
    .option(
      '--messages <n>',
      `messages to send (default: ${DEFAULT_MESSAGES.bench}, with --compare ${DEFAULT_MESSAGES.compare})`,
      positiveInt,
    )
    .option(
      '--size <bytes>',
      'size of each message, headers included; with --compare the body size smtp-source sends (-l)',
      positiveInt,
      10240,
    )
    .option('--connections <c>', 'concurrent SMTP connections', positiveInt, 20)
    .option('--json', 'print one JSON object instead of the table', false)
    .addOption(
      new Option(
        '--compare <relay>',
        'run smarthop and this relay alternately on the same smtp-source load (needs root)',
      ).choices(['postfix']),
    )
    .option('--rounds <n>', 'with --compare: rounds of smarthop then the other relay', positiveInt, 3)
    .option(
      '--warmup <n>',
      `with --compare: messages each relay relays, unmeasured, before its measured load (0: measure it cold)`,
      nonNegativeInt,
      DEFAULT_WARMUP,
    )
    .option(
      '--probe-rate <per-second>',
      'with --compare: latency probe messages per second during the load (0: off)',
      nonNegativeNumber,
      20,
    )
    .option(
      '--cpu-prof [dir]',
      `run the relay under node --cpu-prof, keep the profile in dir (default: ${DEFAULT_CPU_PROF_DIR}) ` +
        `and list its top ${PROFILE_TOP} functions`,
    )
    .option('--state <store>', 'memory, or redis (starts a temp redis-server; implies --limits)', stateStore, 'memory')
    .option(
      '--limits',
      'rate limits, connection rate and a smart-host quota that are never reached, so each message is counted',
      false,
    )
    .option(
      '--full-policy',
      'every policy rule on (senders, recipients, size, attachments, header rules, rate limits)',
      false,
    )
    .option(
      '--reenvelope',
      "the route's rewrites (envelope sender, From, stripped headers) and an RSA-2048 DKIM signature on",
      false,
    )
    .option(
      '--no-delivery-thread',
      'smart-host connections on the event loop (delivery.worker_thread: false): less memory, less throughput',
    )
    .exitOverride((err) => process.exit(err.exitCode === 0 ? 0 : 2));
}

/**
 * Later issues add options (--compare postfix, …) that this version does not know; they and their
 * values are set aside rather than handed to commander, which would otherwise stop parsing at the
 * first unknown option and silently drop the known ones after it. Bare `--` separators are dropped
 * too, so `node dist/bench/bench.js -- --messages 500` works like `npm run bench -- --messages 500`.
 */
function splitArgs(program: Command, args: readonly string[]): { known: string[]; ignored: string[] } {
  const takesValue = new Map<string, boolean>([
    ['-h', false],
    ['--help', false],
  ]);
  const optionalValue = new Set<string>();
  for (const option of program.options) {
    for (const flag of [option.long, option.short]) {
      if (!flag) continue;
      takesValue.set(flag, option.required || option.optional);
      if (option.optional) optionalValue.add(flag);
    }
  }
  const known: string[] = [];
  const ignored: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (arg === '--') continue;
    const flag = arg.split('=', 1)[0];
    const needsValue = takesValue.get(flag);
    if (needsValue === undefined) {
      ignored.push(arg);
      continue;
    }
    known.push(arg);
    if (!needsValue || arg.includes('=') || i + 1 >= args.length) continue;
    // An optional value (--cpu-prof [dir]) is only taken when the next word is not an option itself.
    if (optionalValue.has(flag) && args[i + 1].startsWith('-')) continue;
    known.push(args[++i]);
  }
  return { known, ignored };
}

function stateStore(value: string): 'memory' | 'redis' {
  if (value !== 'memory' && value !== 'redis') throw new InvalidArgumentError('expected memory or redis');
  return value;
}

function parseOptions(argv: readonly string[]): Mode {
  const program = optionsProgram();
  const { known, ignored } = splitArgs(program, argv.slice(2));
  if (ignored.length > 0) process.stderr.write(`bench: ignoring unknown argument(s): ${ignored.join(' ')}\n`);
  program.parse(known, { from: 'user' });
  const parsed = program.opts<ParsedOptions>();
  const { size, connections, json } = parsed;
  if (parsed.compare !== undefined) {
    // Profiling one of several relay runs would be a profile of nothing in particular.
    if (parsed.cpuProf !== undefined)
      program.error('--cpu-prof profiles a plain bench run; leave out --compare', { exitCode: 2 });
    const messages = parsed.messages ?? DEFAULT_MESSAGES.compare;
    return {
      kind: 'compare',
      options: {
        messages,
        size,
        connections,
        json,
        rounds: parsed.rounds,
        probeRate: parsed.probeRate,
        warmup: parsed.warmup,
        fullPolicy: parsed.fullPolicy,
        reenvelope: parsed.reenvelope,
        deliveryThread: parsed.deliveryThread,
      },
    };
  }
  const cpuProfDir =
    parsed.cpuProf === undefined ? null : path.resolve(parsed.cpuProf === true ? DEFAULT_CPU_PROF_DIR : parsed.cpuProf);
  // Redis state with nothing to count would measure nothing: the comparison is always with counters on.
  const limits = parsed.limits || parsed.state === 'redis';
  return {
    kind: 'bench',
    options: {
      messages: parsed.messages ?? DEFAULT_MESSAGES.bench,
      size,
      connections,
      json,
      cpuProfDir,
      state: parsed.state,
      limits,
      fullPolicy: parsed.fullPolicy,
      reenvelope: parsed.reenvelope,
      deliveryThread: parsed.deliveryThread,
    },
  };
}

// ---------------------------------------------------------------------------------------------
// the sink side: which Message-IDs arrived, when

class Arrivals {
  /** Message-ID -> performance.now() of its first arrival. */
  readonly firstSeen = new Map<string, number>();
  duplicates = 0;
  withoutId = 0;
  private onArrival: (() => void) | null = null;

  record(message: SinkMessage): void {
    if (message.messageId === null) {
      this.withoutId++;
    } else if (this.firstSeen.has(message.messageId)) {
      this.duplicates++;
    } else {
      this.firstSeen.set(message.messageId, performance.now());
    }
    this.onArrival?.();
  }

  /**
   * Resolves once every accepted Message-ID has arrived, or when nothing new arrived for
   * `noProgressMs`, or at the overall deadline: a stuck queue must end the bench, not hang it.
   */
  waitFor(
    ids: readonly string[],
    noProgressMs: number,
    deadline: number,
    halted: () => string | null,
  ): Promise<{ complete: boolean; reason: string }> {
    const missing = new Set(ids.filter((id) => !this.firstSeen.has(id)));
    return waitForArrivals({
      done: () => {
        for (const id of missing) if (this.firstSeen.has(id)) missing.delete(id);
        return missing.size === 0;
      },
      onArrival: (callback) => {
        this.onArrival = callback;
      },
      noProgressMs,
      deadline,
      halted,
      deadlineReason: `overall limit of ${LIMITS.overallMs / 60_000} min reached`,
    });
  }
}

// ---------------------------------------------------------------------------------------------
// the load

interface LoadResult {
  acceptedIds: string[];
  latenciesMs: number[];
  rejected: Map<string, number>;
  failed: Map<string, number>;
  startedAt: number;
  lastAcceptedAt: number;
  /** Messages a worker took on; the rest were never sent because the load stopped early. */
  attempted: number;
  /** The overall deadline cut the load short. */
  aborted: boolean;
}

/**
 * C workers share one counter; each takes the next message number, one message per connection.
 * `halted` stops them taking new messages (a dead relay would otherwise earn thousands of ECONNREFUSED).
 */
async function runLoad(
  options: BenchOptions,
  runId: string,
  smtpPort: number,
  deadline: number,
  halted: () => string | null,
): Promise<LoadResult> {
  const result: LoadResult = {
    acceptedIds: [],
    latenciesMs: [],
    rejected: new Map(),
    failed: new Map(),
    startedAt: performance.now(),
    lastAcceptedAt: performance.now(),
    attempted: 0,
    aborted: false,
  };
  const live: ConnectionRegistry = new Set();
  const guard = setTimeout(
    () => {
      result.aborted = true;
      for (const connection of live) connection.destroy();
    },
    Math.max(0, deadline - Date.now()),
  );

  let next = 0;
  const worker = async () => {
    while (!result.aborted && halted() === null && next < options.messages) {
      const n = next++;
      result.attempted++;
      const message = buildMessage(runId, n, options.size);
      record(result, message.messageId, await sendOne('127.0.0.1', smtpPort, message, LIMITS.smtp, live));
    }
  };
  await Promise.all(Array.from({ length: Math.min(options.connections, options.messages) }, worker));
  clearTimeout(guard);
  return result;
}

function record(result: LoadResult, messageId: string, outcome: SendResult): void {
  switch (outcome.kind) {
    case 'accepted':
      result.acceptedIds.push(messageId);
      result.latenciesMs.push(outcome.latencyMs);
      result.lastAcceptedAt = performance.now();
      return;
    case 'rejected':
      count(result.rejected, `${outcome.stage}: ${outcome.reply}`);
      return;
    case 'failed':
      count(result.failed, `${outcome.stage}: ${outcome.error}`);
  }
}

function count(map: Map<string, number>, key: string): void {
  // Queue ids and ports make replies unique; collapse them (reply codes and addresses stay) to group the rest.
  const normalized = key
    .replace(/\b(?=[0-9A-Za-z]*\d)(?=[0-9A-Za-z]*[A-Za-z])[0-9A-Za-z]{8,}\b/g, '…')
    .replace(/:\d{2,5}\b/g, ':…');
  map.set(normalized, (map.get(normalized) ?? 0) + 1);
}

// ---------------------------------------------------------------------------------------------
// the report

interface Report {
  messages: number;
  size: number;
  connections: number;
  state: 'memory' | 'redis';
  limits: boolean;
  fullPolicy: boolean;
  reenvelope: boolean;
  deliveryThread: boolean;
  accepted: number;
  rejected: number;
  failed: number;
  /** Never sent: the load stopped early (relay gone, overall limit). */
  notSent: number;
  acceptRate: number;
  endToEndRate: number;
  latencyMs: { p50: number | null; p99: number | null; max: number | null };
  relayPeakRss: { vmHwmBytes: number | null; sampledMaxRssBytes: number | null };
  /** user + system CPU of the relay from the start of the load until the sink had everything. */
  relayCpu: { seconds: number | null; msPerMessage: number | null };
  /** Of the same wall time, the share the relay's main (event loop) thread ran, and waited runnable for a CPU. */
  relayMainThread: ScheduleShare | null;
  lost: number;
  duplicated: number;
  /** Arrived at the sink without a 250 to the bench (e.g. the 250 timed out), or without a bench Message-ID. */
  unexpected: number;
  durationsMs: { accept: number; endToEnd: number };
  rejectReasons: Record<string, number>;
  failReasons: Record<string, number>;
  notes: string[];
  relay: { exitCode: number | null; warnLines: number; errorLines: number };
}

/** Nearest-rank percentile over sorted values. */
function percentile(sorted: readonly number[], p: number): number | null {
  if (sorted.length === 0) return null;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}

function rate(count: number, ms: number): number {
  return ms > 0 ? count / (ms / 1000) : 0;
}

function round1(value: number): number {
  return Math.round(value * 10) / 10;
}

function buildReport(
  options: BenchOptions,
  load: LoadResult,
  arrivals: Arrivals,
  rss: Report['relayPeakRss'],
  cpuSeconds: number | null,
  mainThread: Report['relayMainThread'],
  relay: Report['relay'],
  notes: string[],
): Report {
  const acceptedSet = new Set(load.acceptedIds);
  const deliveredAt = load.acceptedIds
    .map((id) => arrivals.firstSeen.get(id))
    .filter((t): t is number => t !== undefined);
  const lost = load.acceptedIds.length - deliveredAt.length;
  const unexpected = [...arrivals.firstSeen.keys()].filter((id) => !acceptedSet.has(id)).length + arrivals.withoutId;
  const acceptMs = load.acceptedIds.length > 0 ? load.lastAcceptedAt - load.startedAt : 0;
  const endToEndMs = deliveredAt.length > 0 ? Math.max(...deliveredAt) - load.startedAt : 0;
  const sorted = [...load.latenciesMs].sort((a, b) => a - b);
  const latency = (p: number) => {
    const value = percentile(sorted, p);
    return value === null ? null : round1(value);
  };
  return {
    messages: options.messages,
    size: options.size,
    connections: options.connections,
    state: options.state,
    limits: options.limits,
    fullPolicy: options.fullPolicy,
    reenvelope: options.reenvelope,
    deliveryThread: options.deliveryThread,
    accepted: load.acceptedIds.length,
    rejected: sum(load.rejected),
    failed: sum(load.failed),
    notSent: options.messages - load.attempted,
    acceptRate: round1(rate(load.acceptedIds.length, acceptMs)),
    endToEndRate: round1(rate(deliveredAt.length, endToEndMs)),
    latencyMs: { p50: latency(50), p99: latency(99), max: latency(100) },
    relayPeakRss: rss,
    relayCpu: {
      seconds: cpuSeconds,
      msPerMessage:
        cpuSeconds === null || deliveredAt.length === 0
          ? null
          : Math.round((cpuSeconds * 1000 * 100) / deliveredAt.length) / 100,
    },
    relayMainThread: mainThread,
    lost,
    duplicated: arrivals.duplicates,
    unexpected,
    durationsMs: { accept: Math.round(acceptMs), endToEnd: Math.round(endToEndMs) },
    rejectReasons: Object.fromEntries(load.rejected),
    failReasons: Object.fromEntries(load.failed),
    notes,
    relay,
  };
}

function sum(map: Map<string, number>): number {
  let total = 0;
  for (const n of map.values()) total += n;
  return total;
}

function mib(bytes: number | null): string {
  return bytes === null ? 'n/a' : `${(bytes / (1024 * 1024)).toFixed(1)} MiB`;
}

function ms(value: number | null): string {
  return value === null ? 'n/a' : `${value.toFixed(1)} ms`;
}

function formatTable(r: Report): string {
  const row = (label: string, value: string) => `${label.padEnd(19)}${value}\n`;
  const variant =
    (r.limits ? ' (every message counted)' : '') +
    (r.fullPolicy ? ', every policy rule' : '') +
    (r.reenvelope ? ', rewrites + DKIM' : '') +
    (r.deliveryThread ? '' : ', no delivery thread');
  let out = `smarthop bench: ${r.messages} messages x ${r.size} B, ${r.connections} connections, `;
  out += `state ${r.state}${variant}\n`;
  const extra = `${r.failed > 0 ? `, failed ${r.failed}` : ''}${r.notSent > 0 ? `, not sent ${r.notSent}` : ''}`;
  out += row('accepted', `${r.accepted} (rejected ${r.rejected}${extra})`);
  out += row('accept rate', `${r.acceptRate.toFixed(1)} msg/s`);
  out += row('end-to-end rate', `${r.endToEndRate.toFixed(1)} msg/s`);
  out += row('accept latency', `p50 ${ms(r.latencyMs.p50)}   p99 ${ms(r.latencyMs.p99)}   max ${ms(r.latencyMs.max)}`);
  out += row(
    'relay peak RSS',
    `${mib(r.relayPeakRss.vmHwmBytes)} (VmHWM; max sampled VmRSS ${mib(r.relayPeakRss.sampledMaxRssBytes)})`,
  );
  if (r.relayCpu.seconds !== null)
    out += row(
      'relay CPU',
      `${r.relayCpu.seconds.toFixed(2)} s user+system, ${r.relayCpu.msPerMessage?.toFixed(2) ?? 'n/a'} ms per message`,
    );
  if (r.relayMainThread) {
    const { onCpuPercent, waitingForCpuPercent } = r.relayMainThread;
    out += row(
      'relay main thread',
      `on a CPU ${onCpuPercent.toFixed(0)}% of the run, ` +
        `runnable but waiting for one ${waitingForCpuPercent.toFixed(0)}%`,
    );
  }
  out += row(
    'lost',
    `${r.lost}   duplicated ${r.duplicated}${r.unexpected > 0 ? `   unexpected ${r.unexpected}` : ''}`,
  );
  if (r.relay.warnLines + r.relay.errorLines > 0)
    out += row('relay log', `${r.relay.errorLines} error(s), ${r.relay.warnLines} warning(s)`);
  for (const [reason, n] of Object.entries(r.rejectReasons)) out += row('  rejected', `${n} x ${reason}`);
  for (const [reason, n] of Object.entries(r.failReasons)) out += row('  failed', `${n} x ${reason}`);
  for (const note of r.notes) out += row('note', note);
  return out;
}

// ---------------------------------------------------------------------------------------------
// the run

async function main(): Promise<number> {
  if (deepQueueRequested(process.argv)) return runDeepQueue(process.argv);
  // `--trace` is a benchmark of its own: message trace over a big events history (bench/trace.ts).
  if (process.argv.includes('--trace')) return runTraceBench(process.argv.slice(2));
  const mode = parseOptions(process.argv);
  return mode.kind === 'compare' ? runComparison(mode.options) : runBench(mode.options);
}

async function runBench(options: BenchOptions): Promise<number> {
  const deadline = Date.now() + LIMITS.overallMs;
  const runId = randomBytes(4).toString('hex');
  const notes: string[] = [];

  const dir = await mkdtemp(path.join(tmpdir(), 'smarthop-bench-'));
  const arrivals = new Arrivals();
  const sink = new SmtpSink({ port: 0, onMessage: (message) => arrivals.record(message) });
  let relay: RelayProcess | null = null;
  let redis: BenchRedis | null = null;
  try {
    if (options.state === 'redis') {
      const binary = BenchRedis.find();
      if (!binary) {
        process.stderr.write('bench: --state redis needs redis-server on PATH (apt-get install redis-server)\n');
        return 2;
      }
      redis = await BenchRedis.start(binary, dir, await freePort());
    }
    const sinkAddress = await sink.listen();
    const ports = { smtp: await freePort(), http: await freePort(), sink: sinkAddress.port };
    // Room for the largest --size with headroom for the Received header; never below the relay default.
    const maxMessageSize = Math.max(25 * 1024 * 1024, options.size + 64 * 1024);
    if (options.cpuProfDir !== null) await mkdir(options.cpuProfDir, { recursive: true });
    const nodeArgs = options.cpuProfDir === null ? [] : ['--cpu-prof', '--cpu-prof-dir', options.cpuProfDir];
    relay = await RelayProcess.start(
      dir,
      ports,
      maxMessageSize,
      { nodeArgs },
      {
        limits: options.limits,
        redisUrl: redis?.url,
        fullPolicy: options.fullPolicy,
        reenvelope: options.reenvelope,
        deliveryThread: options.deliveryThread,
      },
    );
    const relayPid = relay.pid;
    try {
      await relay.waitHealthy(ports.http, LIMITS.healthyMs);
    } catch (err) {
      process.stderr.write(`bench: ${(err as Error).message}\n`);
      relay.dumpTail();
      return 2;
    }

    const running = relay;
    const relayGone = () => (running.running ? null : 'the relay exited');
    const cpuAtStart = relayCpuSeconds(relay);
    const scheduleAtStart = relay.pid === undefined ? null : readThreadSchedule(relay.pid);
    const loadStartedAt = performance.now();
    const load = await runLoad(options, runId, ports.smtp, deadline, relayGone);
    if (load.aborted) notes.push(`load cut short by the overall limit of ${LIMITS.overallMs / 60_000} min`);
    const delivery = await arrivals.waitFor(load.acceptedIds, LIMITS.noProgressMs, deadline, relayGone);
    if (!delivery.complete) notes.push(`stopped waiting for the sink: ${delivery.reason}`);

    // Read VmHWM while the relay is alive and before shutdown work could move it.
    const rss = relay.peakRss();
    const cpuAtEnd = relayCpuSeconds(relay);
    const scheduleAtEnd = relay.pid === undefined ? null : readThreadSchedule(relay.pid);
    const mainThread = scheduleShare(scheduleAtStart, scheduleAtEnd, (performance.now() - loadStartedAt) * 1e6);
    const cpuSeconds =
      cpuAtStart === null || cpuAtEnd === null ? null : Math.round((cpuAtEnd - cpuAtStart) * 100) / 100;
    const diedEarly = !relay.running;
    const exitCode = await relay.stop(LIMITS.stopGraceMs);
    if (diedEarly) notes.push(`relay exited during the run (code ${String(exitCode)})`);
    else if (exitCode !== 0) notes.push(`relay exited with code ${String(exitCode)} after SIGTERM`);
    if (diedEarly || exitCode !== 0) relay.dumpTail();

    const report = buildReport(
      options,
      load,
      arrivals,
      rss,
      cpuSeconds,
      mainThread,
      { exitCode, warnLines: relay.output.warnLines, errorLines: relay.output.errorLines },
      notes,
    );
    // The relay writes its profile as it exits, so it is read only after stop().
    const profiles = options.cpuProfDir === null ? [] : await readRelayProfiles(options.cpuProfDir, relayPid, notes);
    const [profile, ...threadProfiles] = profiles;
    if (options.json)
      process.stdout.write(`${JSON.stringify(profile ? { ...report, profile, threadProfiles } : report)}\n`);
    else
      process.stdout.write(
        formatTable(report) +
          profiles.map((p, i) => formatProfile(p.summary, p.file, i === 0 ? 'event loop' : 'delivery thread')).join(''),
      );
    return report.lost === 0 ? 0 : 1;
  } finally {
    if (relay?.running) await relay.stop(LIMITS.stopGraceMs);
    await redis?.stop();
    await sink.close();
    await rm(dir, { recursive: true, force: true });
  }
}

function relayCpuSeconds(relay: RelayProcess): number | null {
  return relay.pid === undefined || !relay.running ? null : (readCpuTimes(relay.pid)?.ownSeconds ?? null);
}

/**
 * The .cpuprofiles `node --cpu-prof` wrote for the relay's pid (CPU.<date>.<time>.<pid>.<thread>.<seq>.cpuprofile),
 * one per thread: the event loop (thread 0) first, then the delivery thread.
 */
async function readRelayProfiles(
  dir: string,
  pid: number | undefined,
  notes: string[],
): Promise<{ file: string; summary: ProfileSummary }[]> {
  const threadOf = (name: string) => Number(name.split('.')[4]);
  const names = (await readdir(dir))
    .filter((f) => f.endsWith('.cpuprofile') && f.split('.')[3] === String(pid))
    .sort((a, b) => threadOf(a) - threadOf(b));
  if (names.length === 0)
    notes.push(`no CPU profile of relay pid ${String(pid)} in ${dir} (node writes it only on a clean exit)`);
  const profiles: { file: string; summary: ProfileSummary }[] = [];
  for (const name of names) {
    const file = path.join(dir, name);
    profiles.push({
      file,
      summary: summarizeProfile(
        parseCpuProfile(await readFile(file, 'utf8')),
        PROFILE_TOP,
        path.resolve(__dirname, '..', '..'),
      ),
    });
  }
  return profiles;
}

main().then(
  (code) => {
    process.exitCode = code;
    // Anything still holding the loop open (a half-closed socket) must not keep the bench alive.
    setTimeout(() => process.exit(code), 2_000).unref();
  },
  (err: Error) => {
    process.stderr.write(`bench: ${err.stack ?? err.message}\n`);
    process.exit(2);
  },
);
