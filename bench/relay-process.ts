import { generateKeyPairSync } from 'node:crypto';
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { RELAY_NODE_FLAGS, relayEnvironment } from '../src/lifecycle/launch-settings';

/**
 * The relay under test, run exactly as an admin runs it (`smarthop start -c file`) in a child
 * process, so its memory can be read from /proc and nothing of the bench shares its event loop.
 */

export interface RelayPorts {
  smtp: number;
  http: number;
  sink: number;
}

/** What a run counts and where: `limits` puts every message through the counters, `redisUrl` keeps them in Redis. */
export interface BenchState {
  limits: boolean;
  redisUrl?: string;
  /** Every policy rule on (issue 3 measures with it). */
  fullPolicy?: boolean;
  /** The route's rewrites and DKIM signing on (issue 4 measures with them). */
  reenvelope?: boolean;
  /**
   * false: `delivery.worker_thread: false`, smart-host connections on the event loop (less memory, less
   * throughput).
   */
  deliveryThread?: boolean;
}

/**
 * A policy with every rule on, none of which the bench's messages break (all pass every check
 * and reach the sink), plus the route's rewrites and an RSA-2048 DKIM signature.
 */
function fullPolicyYaml(): string[] {
  return [
    'policies:',
    '  counted:',
    '    allowed_senders: ["*@bench.localhost"]',
    '    allowed_recipients: ["*"]',
    '    denied_recipients: ["*@competitor.example"]',
    '    max_message_size: 20MiB',
    '    max_recipients: 50',
    '    rate_limits:',
    '      - { window: 1h, messages: 100000000, recipients: 100000000, bytes: 1000GiB }',
    '    blocked_attachments: [exe, js, vbs, scr, bat]',
    '    header_rules:',
    '      - { header: Subject, match: "lottery|you have won", action: reject }',
    '      - { header: X-Mailer, match: ".", action: strip }',
    'limits:',
    '  connection_rate: { window: 1h, max: 100000000 }',
  ];
}

function fullRouteYaml(dkimKeyPath: string): string[] {
  return [
    '    envelope_from: bounces@bench.localhost',
    '    rewrite_from: { unless: ["*@bench.localhost"], to: noreply@bench.localhost }',
    '    strip_headers: [X-Originating-IP]',
    `    dkim: { domain: bench.localhost, selector: s1, private_key: ${JSON.stringify(dkimKeyPath)} }`,
  ];
}

/**
 * Limits no bench run reaches, so every message passes through each kind of counter (connection
 * rate at connect, messages at MAIL, recipients at RCPT, bytes at DATA, the smart host's quota at
 * delivery) without being refused: what a fleet pays per message for shared counting.
 */
function countedLimitsYaml(): string[] {
  return [
    'policies:',
    '  counted:',
    '    rate_limits:',
    '      - { window: 1h, messages: 100000000, recipients: 100000000, bytes: 1000GiB }',
    'limits:',
    '  connection_rate: { window: 1h, max: 100000000 }',
  ];
}

/**
 * The temp config: one plain listener, the bench as a network client, everything routed to the
 * sink. Log level warn so the relay spends its time relaying, not logging; no events file for the same reason.
 */
export function benchConfigYaml(
  dir: string,
  ports: RelayPorts,
  maxMessageSize: number,
  state: BenchState = { limits: false },
): string {
  return [
    '# written by bench/bench.ts for one benchmark run',
    'hostname: bench.localhost',
    `max_message_size: ${maxMessageSize}`,
    'spool:',
    `  dir: ${JSON.stringify(path.join(dir, 'spool'))}`,
    'listeners:',
    '  - name: smtp',
    `    address: 127.0.0.1:${ports.smtp}`,
    '    tls: none',
    '    auth: optional',
    'clients:',
    '  - name: bench',
    '    networks: [127.0.0.0/8]',
    ...(state.fullPolicy
      ? ['    policy: counted', ...fullPolicyYaml()]
      : state.limits
        ? ['    policy: counted', ...countedLimitsYaml()]
        : []),
    'routes:',
    '  default:',
    '    smarthosts: [sink]',
    ...(state.reenvelope ? fullRouteYaml(path.join(dir, 'dkim-s1.pem')) : []),
    'smarthosts:',
    '  - name: sink',
    '    host: 127.0.0.1',
    `    port: ${ports.sink}`,
    '    tls: none',
    '    max_connections: 10',
    ...(state.limits || state.fullPolicy
      ? ['    rate_limits: [{ window: 1h, messages: 100000000, recipients: 100000000 }]']
      : []),
    'http:',
    `  address: 127.0.0.1:${ports.http}`,
    ...(state.deliveryThread === false ? ['delivery:', '  worker_thread: false'] : []),
    'log:',
    '  level: warn',
    ...(state.redisUrl
      ? ['state:', '  store: redis', `  redis: { url: ${JSON.stringify(state.redisUrl)} }`, '  fleet_size: 1']
      : []),
    '',
  ].join('\n');
}

export interface LaunchOptions {
  /** Node flags placed before the script, e.g. `--cpu-prof --cpu-prof-dir DIR`. */
  nodeArgs?: readonly string[];
}

/** Lines the relay printed that the operator of the bench should see. */
export interface RelayOutput {
  warnLines: number;
  errorLines: number;
  /** The last lines of stdout and stderr, for when the relay dies. */
  tail: string[];
}

/** Forwarded live to the bench's stderr, at most this many; the rest are only counted. */
const MAX_FORWARDED_LINES = 20;
const TAIL_LINES = 50;

export class RelayProcess {
  readonly output: RelayOutput = { warnLines: 0, errorLines: 0, tail: [] };
  /** performance.now() when the process was spawned. */
  readonly spawnedAt = performance.now();
  private forwarded = 0;
  private readonly exited: Promise<number | null>;
  private exitCode: number | null | undefined = undefined;
  private readonly rssSampler: NodeJS.Timeout;
  private sampledMaxRss: number | null = null;

  private constructor(private readonly child: ChildProcess) {
    this.exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => {
        this.exitCode = code ?? (signal ? null : 0);
        resolve(this.exitCode);
      });
    });
    // The relay logs (pino, JSON) on stdout; both pipes must be drained or the relay would block on them.
    if (child.stdout) createInterface({ input: child.stdout }).on('line', (line) => this.onLine('stdout', line));
    if (child.stderr) createInterface({ input: child.stderr }).on('line', (line) => this.onLine('stderr', line));
    // VmHWM is the kernel's own peak; the 100 ms samples show whether the peak was a spike or a plateau.
    this.rssSampler = setInterval(() => this.sampleRss(), 100);
    this.rssSampler.unref();
  }

  /** Writes the config under `dir` and starts `node dist/src/cli.js start -c <dir>/relay.yaml`. */
  static async start(
    dir: string,
    ports: RelayPorts,
    maxMessageSize: number,
    launch: LaunchOptions = {},
    state?: BenchState,
  ): Promise<RelayProcess> {
    const configFile = path.join(dir, 'relay.yaml');
    if (state?.reenvelope) {
      const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
      await writeFile(path.join(dir, 'dkim-s1.pem'), privateKey.export({ type: 'pkcs8', format: 'pem' }));
    }
    await writeFile(configFile, benchConfigYaml(dir, ports, maxMessageSize, state));
    return RelayProcess.launch(configFile, launch);
  }

  /** Starts `node dist/src/cli.js start -c <configFile>` on a config written by the caller. */
  static launch(configFile: string, launch: LaunchOptions = {}): RelayProcess {
    const cli = path.resolve(__dirname, '..', 'src', 'cli.js');
    // Started the way deploy/smarthop.service, the Dockerfile and npm start start it; nodeArgs come later and win.
    const args = [...RELAY_NODE_FLAGS, ...(launch.nodeArgs ?? []), cli, 'start', '-c', configFile];
    const child = spawn(process.execPath, args, {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: relayEnvironment(process.env),
    });
    return new RelayProcess(child);
  }

  /** The kernel's way to end a process: no handler runs, nothing is flushed. */
  async kill(): Promise<void> {
    clearInterval(this.rssSampler);
    if (!this.running) return;
    this.child.kill('SIGKILL');
    await this.exited;
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  get running(): boolean {
    return this.exitCode === undefined;
  }

  /** Polls /healthz until 200; fails early if the relay exits first. */
  async waitHealthy(httpPort: number, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (!this.running) throw new Error(`relay exited with code ${String(this.exitCode)} before becoming healthy`);
      const ok = await fetch(`http://127.0.0.1:${httpPort}/healthz`, { signal: AbortSignal.timeout(1_000) }).then(
        (res) => res.status === 200,
        () => false,
      );
      if (ok) return;
      await sleep(100);
    }
    throw new Error(`relay not healthy on http port ${httpPort} after ${timeoutMs} ms`);
  }

  /** Peak RSS in bytes: the kernel's VmHWM (read now, while the process lives) and the sampled max VmRSS. */
  peakRss(): { vmHwmBytes: number | null; sampledMaxRssBytes: number | null } {
    this.sampleRss();
    return { vmHwmBytes: this.readStatus('VmHWM'), sampledMaxRssBytes: this.sampledMaxRss };
  }

  /** SIGTERM, then SIGKILL if the relay has not exited within `graceMs`. Resolves with the exit code. */
  async stop(graceMs: number): Promise<number | null> {
    clearInterval(this.rssSampler);
    if (!this.running) return this.exited;
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => {
      process.stderr.write(`relay: no exit ${graceMs} ms after SIGTERM, sending SIGKILL\n`);
      this.child.kill('SIGKILL');
    }, graceMs);
    const code = await this.exited;
    clearTimeout(timer);
    return code;
  }

  /** A relay that died or failed to stop is explained with what it printed last. */
  dumpTail(): void {
    if (this.output.tail.length === 0) return;
    process.stderr.write(
      `relay: last ${this.output.tail.length} line(s) of output:\n${this.output.tail.map((l) => `  ${l}\n`).join('')}`,
    );
  }

  private onLine(stream: 'stdout' | 'stderr', line: string): void {
    this.output.tail.push(`[${stream}] ${line}`);
    if (this.output.tail.length > TAIL_LINES) this.output.tail.shift();
    const entry = stream === 'stderr' ? { level: 50, text: line } : parseLogLine(line);
    if (entry === null) return;
    if (entry.level >= 50) this.output.errorLines++;
    else if (entry.level >= 40) this.output.warnLines++;
    else return;
    if (this.forwarded < MAX_FORWARDED_LINES) {
      this.forwarded++;
      process.stderr.write(`relay ${stream === 'stderr' ? 'stderr' : levelName(entry.level)}: ${entry.text}\n`);
      if (this.forwarded === MAX_FORWARDED_LINES)
        process.stderr.write('relay: further warnings and errors are counted, not shown\n');
    }
  }

  private sampleRss(): void {
    const rss = this.readStatus('VmRSS');
    if (rss !== null && (this.sampledMaxRss === null || rss > this.sampledMaxRss)) this.sampledMaxRss = rss;
  }

  /** A `kB` field of /proc/<pid>/status in bytes; null off Linux or once the process is gone. */
  private readStatus(field: 'VmHWM' | 'VmRSS'): number | null {
    if (this.child.pid === undefined || !this.running) return null;
    try {
      const status = readFileSync(`/proc/${this.child.pid}/status`, 'utf8');
      const match = new RegExp(`^${field}:\\s+(\\d+)\\s+kB`, 'm').exec(status);
      return match ? Number(match[1]) * 1024 : null;
    } catch {
      return null;
    }
  }
}

/**
 * pino's numeric level and message of a JSON log line (the error's message is added when there is
 * one, it is usually the interesting part); anything else on stdout is treated as a warning.
 */
function parseLogLine(line: string): { level: number; text: string } | null {
  if (line.trim() === '') return null;
  try {
    const parsed: unknown = JSON.parse(line);
    if (typeof parsed === 'object' && parsed !== null && 'level' in parsed && typeof parsed.level === 'number') {
      const msg = 'msg' in parsed && typeof parsed.msg === 'string' ? parsed.msg : line;
      const err =
        'err' in parsed && typeof parsed.err === 'object' && parsed.err !== null && 'stack' in parsed.err
          ? parsed.err.stack
          : undefined;
      return { level: parsed.level, text: typeof err === 'string' && !msg.includes(err) ? `${msg}\n${err}` : msg };
    }
  } catch {
    // not JSON: fall through
  }
  return { level: 40, text: line };
}

function levelName(level: number): string {
  if (level >= 60) return 'fatal';
  if (level >= 50) return 'error';
  return 'warn';
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
