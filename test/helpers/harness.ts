import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import pino from 'pino';
import { parseConfig } from '../../src/config/load';
import type { RelayConfig, SmtpSmartHostConfig } from '../../src/config/schema';
import { Relay, type RelayOptions } from '../../src/relay';
import { SmtpSink, type SinkOptions } from '../../src/tools/sink';
import type { MessageMeta } from '../../src/spool/message';
import { recoverSpool } from '../../src/spool/recovery';
import { SpoolStore } from '../../src/spool/store';
import { madeOncePerRun } from './run-cache';

export function tempDir(prefix = 'smarthop-test-'): string {
  return mkdtempSync(path.join(tmpdir(), prefix));
}

/**
 * Where the kernel hands out ports for `listen(0)` and for outgoing connections' source ports. A
 * port bound and released again is only free until one of those takes it: another suite running
 * beside this one, or any connection's source port, could get it between our check and our use, and
 * a "down" smart host would then answer (a fresh-clone CI run once waited 15 s for two deferrals that
 * never came). Ports below this range are handed out by nobody but freePort.
 */
function ephemeralPortRange(): [number, number] {
  try {
    const [low, high] = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/).map(Number);
    if (low > 0 && high >= low) return [low, high];
  } catch {
    // not Linux: the IANA dynamic range
  }
  return [49152, 65535];
}

const PORTS_BELOW_EPHEMERAL: [number, number] | null = (() => {
  const [low] = ephemeralPortRange();
  return low > 12_000 ? [10_000, low] : null;
})();

async function listensOn(port: number): Promise<number | null> {
  const server = createServer();
  const bound = await new Promise<boolean>((resolve) => {
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => resolve(true));
  });
  if (!bound) return null;
  const { port: actual } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return actual;
}

/**
 * A port nothing listens on (bound, then released): a smart host that is down, or one a test starts
 * later. Taken below the kernel's ephemeral range when there is room, so no `listen(0)` or outgoing
 * connection elsewhere can take it meanwhile; at random, so parallel suites do not pick alike.
 */
export async function freePort(): Promise<number> {
  if (PORTS_BELOW_EPHEMERAL) {
    const [from, to] = PORTS_BELOW_EPHEMERAL;
    for (let tries = 0; tries < 50; tries++) {
      const port = await listensOn(from + Math.floor(Math.random() * (to - from)));
      if (port !== null) return port;
    }
  }
  const port = await listensOn(0);
  if (port === null) throw new Error('no free port on 127.0.0.1');
  return port;
}

export async function startSink(options: SinkOptions = {}): Promise<SmtpSink> {
  const sink = new SmtpSink({ keep: true, ...options });
  await sink.listen();
  return sink;
}

/** Validates a raw config object exactly as a YAML file would be, failing the test on errors. */
export function buildConfig(raw: Record<string, unknown>, baseDir: string, env: NodeJS.ProcessEnv = {}): RelayConfig {
  const result = parseConfig(raw, baseDir, env);
  if (!result.ok) throw new Error(`test config invalid:\n${result.errors.join('\n')}`);
  return result.config;
}

/** The SMTP smart host a test config defines at `index` (the transports that speak SMTP take nothing else). */
export function smtpHost(config: RelayConfig, index = 0): SmtpSmartHostConfig {
  const host = config.smarthosts[index];
  if (host?.type !== 'smtp') throw new Error(`smarthosts[${index}] is not an SMTP smart host`);
  return host;
}

export interface SmartHostSpec {
  name: string;
  /** An SMTP host's port (a `type: graph` host has none). */
  port?: number;
  priority?: number;
  [key: string]: unknown;
}

/** The usual test relay: loopback listener on port 0, 127.0.0.1 trusted, the given smart hosts in route default. */
export function baseConfig(
  dir: string,
  smarthosts: SmartHostSpec[],
  overrides: Record<string, unknown> = {},
): Record<string, unknown> {
  return {
    hostname: 'relay.test',
    max_message_size: '1MiB',
    shutdown_grace: '1s',
    spool: { dir: path.join(dir, 'spool'), retry: { initial: '200ms', max: '1s', factor: 2 }, min_free_disk: 0 },
    listeners: [{ name: 'smtp', address: '127.0.0.1:0', tls: 'none', auth: 'optional' }],
    clients: [{ name: 'lan', networks: ['127.0.0.1/32'] }],
    routes: { default: { smarthosts: smarthosts.map((s) => s.name) } },
    smarthosts: smarthosts.map((s) => ({
      // A Graph host has no host or port: it is reached at its graph_url.
      ...(s.type === 'graph' ? {} : { host: '127.0.0.1', tls: 'none' }),
      priority: 10,
      connect_timeout: '2s',
      socket_timeout: '5s',
      ...s,
    })),
    http: { address: '127.0.0.1:0' },
    log: { level: 'silent' },
    ...overrides,
  };
}

export interface RunningRelay {
  relay: Relay;
  smtpPort: number;
  httpPort: number;
  portOf(listener: string): number;
  stop(): Promise<void>;
}

export async function startRelay(config: RelayConfig, options: RelayOptions = {}): Promise<RunningRelay> {
  const relay = new Relay(config, { logger: pino({ level: 'silent' }), ...options });
  const addresses = await relay.start();
  return {
    relay,
    smtpPort: Object.values(addresses.listeners)[0].port,
    httpPort: addresses.http?.port ?? 0,
    portOf: (listener) => addresses.listeners[listener].port,
    stop: () => relay.stop(),
  };
}

/**
 * A logger that keeps every line it writes, parsed, for a test to wait on the log line that shows a
 * decision was taken (pass it to startRelay's options).
 */
export function recordingLogger(level: pino.Level = 'info'): { logger: pino.Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const logger = pino({ level }, { write: (line: string) => lines.push(JSON.parse(line) as Record<string, unknown>) });
  return { logger, lines };
}

/**
 * Polls until `check` is true; real sockets and timers, so tests wait for the real thing. Soon at
 * first, then less often (10 ms growing to 100 ms): a check is often a /metrics scrape, ~5 ms of CPU
 * that a long wait would otherwise spend forty times a second.
 */
/** What /readyz says, or null while nothing answers on the port. */
export async function readyz(port: number): Promise<{ status: number; checks: Record<string, unknown> } | null> {
  try {
    const res = await fetch(`http://127.0.0.1:${port}/readyz`);
    return { status: res.status, checks: ((await res.json()) as { checks: Record<string, unknown> }).checks };
  } catch {
    return null;
  }
}

/** Until the queue found on disk at the start is recovered (the relay listens before that). */
export async function waitRecovered(port: number, timeoutMs = 15_000): Promise<void> {
  await waitFor(async () => (await readyz(port))?.checks.queue_recovered === true, timeoutMs, 'the queue recovered');
}

export async function waitFor(
  check: () => boolean | Promise<boolean>,
  timeoutMs = 10_000,
  what = 'condition',
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let pauseMs = 10;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, pauseMs));
    pauseMs = Math.min(100, pauseMs * 1.5);
  }
}

export async function metricsText(httpPort: number): Promise<string> {
  const res = await fetch(`http://127.0.0.1:${httpPort}/metrics`);
  return res.text();
}

/** The value of one sample line, e.g. metricValue(text, 'smarthop_messages_received_total{client="lan"}'). */
export function metricValue(text: string, sample: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${sample} `));
  return line === undefined ? undefined : Number(line.slice(sample.length + 1));
}

export function removeDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}

/** openssl's arguments for a new RSA key and a certificate signed with it, valid for two days (one test run). */
function selfSignedArgs(key: string, cert: string, subject: string, extensions: string[]): string[] {
  const head = ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '2'];
  return [...head, '-subj', subject, ...extensions.flatMap((extension) => ['-addext', extension])];
}

/** A self-signed certificate made with openssl for this test run; returns the file paths. */
export function makeCertificate(dir: string, commonName = 'relay.test'): { cert: string; key: string } {
  const [certFile, keyFile] = [`${commonName}.crt`, `${commonName}.key`];
  madeOncePerRun(dir, `self-signed-${commonName}`, [certFile, keyFile], (into) => {
    const [key, cert] = [path.join(into, keyFile), path.join(into, certFile)];
    const names = `subjectAltName=DNS:${commonName},IP:127.0.0.1`;
    execFileSync('openssl', selfSignedArgs(key, cert, `/CN=${commonName}`, [names]), { stdio: 'ignore' });
  });
  return { cert: path.join(dir, certFile), key: path.join(dir, keyFile) };
}

/**
 * A private CA and a leaf it signed (SAN DNS:<name>, IP:127.0.0.1), made with openssl for this test
 * run: smart hosts that speak TLS with a certificate nothing else trusts.
 */
export function makeCertificateAuthority(
  dir: string,
  leafName = 'smarthost.test',
): { ca: string; cert: string; key: string } {
  const [caFile, certFile, keyFile] = ['test-ca.crt', `${leafName}.crt`, `${leafName}.key`];
  madeOncePerRun(dir, `ca-${leafName}`, [caFile, certFile, keyFile], (into) => {
    const ca = path.join(into, caFile);
    const caKey = path.join(into, 'test-ca.key');
    const key = path.join(into, keyFile);
    const csr = path.join(into, `${leafName}.csr`);
    const cert = path.join(into, certFile);
    const ext = path.join(into, `${leafName}.ext`);
    const run = (args: string[]) => execFileSync('openssl', args, { stdio: 'ignore' });
    const caExtensions = ['basicConstraints=critical,CA:TRUE', 'keyUsage=critical,keyCertSign,cRLSign'];
    run(selfSignedArgs(caKey, ca, '/CN=smarthop test CA', caExtensions));
    run(['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', csr, '-subj', `/CN=${leafName}`]);
    writeFileSync(
      ext,
      `basicConstraints=CA:FALSE\nsubjectAltName=DNS:${leafName},IP:127.0.0.1\nextendedKeyUsage=serverAuth\n`,
    );
    run([
      'x509',
      '-req',
      '-in',
      csr,
      '-CA',
      ca,
      '-CAkey',
      caKey,
      '-CAcreateserial',
      '-out',
      cert,
      '-days',
      '2',
      '-extfile',
      ext,
    ]);
  });
  return { ca: path.join(dir, caFile), cert: path.join(dir, certFile), key: path.join(dir, keyFile) };
}

/**
 * An OAuth2 token endpoint (client-credentials grant) on loopback: checks the client and scope,
 * issues `token-1`, `token-2`, … valid for `lifetimeS`, and remembers every token it issued.
 */
export class TokenEndpoint {
  readonly requests: URLSearchParams[] = [];
  readonly issued = new Set<string>();
  private readonly server: HttpServer;
  private port = 0;

  constructor(
    private readonly expected: { clientId: string; clientSecret: string; scope: string; lifetimeS?: number },
  ) {
    this.server = createHttpServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (chunk: Buffer) => chunks.push(chunk));
      req.on('end', () => {
        const form = new URLSearchParams(Buffer.concat(chunks).toString());
        this.requests.push(form);
        const reply = (status: number, body: Record<string, unknown>) => {
          res.writeHead(status, { 'content-type': 'application/json' });
          res.end(JSON.stringify(body));
        };
        if (req.method !== 'POST' || req.headers['content-type'] !== 'application/x-www-form-urlencoded')
          return reply(400, { error: 'invalid_request' });
        if (form.get('grant_type') !== 'client_credentials') return reply(400, { error: 'unsupported_grant_type' });
        if (
          form.get('client_id') !== this.expected.clientId ||
          form.get('client_secret') !== this.expected.clientSecret
        ) {
          return reply(401, {
            error: 'invalid_client',
            error_description: 'AADSTS7000215: Invalid client secret provided.',
          });
        }
        if (form.get('scope') !== this.expected.scope) return reply(400, { error: 'invalid_scope' });
        const token = `token-${this.requests.length}`;
        this.issued.add(token);
        reply(200, { token_type: 'Bearer', access_token: token, expires_in: this.expected.lifetimeS ?? 3600 });
      });
    });
  }

  async listen(): Promise<string> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.port = (this.server.address() as { port: number }).port;
    return this.url;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}/oauth2/v2.0/token`;
  }

  close(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

/**
 * One relay forwarding to one sink (smart host `primary`), shared by the tests of a describe and torn
 * down after them: call inside a describe. `overrides` gets the describe's temp dir and returns what
 * the relay's config changes from baseConfig (clients, listeners, limits, …).
 */
export function relayPerDescribe(
  overrides: (dir: string) => Record<string, unknown> | Promise<Record<string, unknown>>,
  options: RelayOptions = {},
): {
  readonly dir: string;
  readonly sink: SmtpSink;
  readonly running: RunningRelay;
} {
  let dir = '';
  let sink: SmtpSink | null = null;
  let running: RunningRelay | null = null;
  beforeAll(async () => {
    dir = tempDir();
    sink = await startSink();
    running = await startRelay(
      buildConfig(baseConfig(dir, [{ name: 'primary', port: sink.port }], await overrides(dir)), dir),
      options,
    );
  });
  afterAll(async () => {
    await running?.stop();
    await sink?.close();
    removeDir(dir);
  });
  return {
    get dir() {
      return dir;
    },
    get sink() {
      return sink as SmtpSink;
    },
    get running() {
      return running as RunningRelay;
    },
  };
}

/**
 * One relay, one spool and its own smart-host sinks per test, all torn down after it: call inside a
 * describe. Outcomes cannot leak from one test into the next.
 */
export function relayPerTest(): {
  readonly dir: string;
  running: RunningRelay | null;
  sink(options?: SinkOptions): Promise<SmtpSink>;
  /** `env`: what `${NAME}` references in the config read (tests never read the real environment). */
  relayWith(
    hosts: SmartHostSpec[],
    overrides?: Record<string, unknown>,
    env?: NodeJS.ProcessEnv,
  ): Promise<RunningRelay>;
} {
  let dir = '';
  const sinks: SmtpSink[] = [];
  const state = {
    get dir() {
      return dir;
    },
    running: null as RunningRelay | null,
    async sink(options: SinkOptions = {}): Promise<SmtpSink> {
      const sink = await startSink(options);
      sinks.push(sink);
      return sink;
    },
    async relayWith(
      hosts: SmartHostSpec[],
      overrides: Record<string, unknown> = {},
      env: NodeJS.ProcessEnv = {},
    ): Promise<RunningRelay> {
      state.running = await startRelay(buildConfig(baseConfig(dir, hosts, overrides), dir, env));
      return state.running;
    },
  };
  beforeEach(() => {
    dir = tempDir();
    state.running = null;
  });
  afterEach(async () => {
    await state.running?.stop();
    await Promise.all(sinks.splice(0).map((sink) => sink.close()));
    removeDir(dir);
  });
  return state;
}

/**
 * A queued message as the relay sees it: its metadata (the `.json` once its state changed, else the
 * trailer of its file) and its own bytes (without the trailer). Null while it is not in `queue/`.
 */
export async function readQueued(spoolDir: string, id: string): Promise<{ meta: MessageMeta; message: Buffer } | null> {
  const store = new SpoolStore(spoolDir);
  const meta = await store.readIn('queue', id).catch(() => null);
  if (!meta) return null;
  const file = await readFile(store.bodyPath(id)).catch(() => null);
  return file ? { meta, message: file.subarray(0, meta.size) } : null;
}

/**
 * Runs recovery over a spool as a start after everything now on disk would: returns the queued
 * messages it found (in the order it found them).
 */
export async function recoverAll(
  store: SpoolStore,
  onProblem: (id: string, problem: string) => void = () => undefined,
): Promise<MessageMeta[]> {
  const found: MessageMeta[] = [];
  await recoverSpool({ store, startedAt: Date.now() + 1, found: (meta) => found.push(meta), onProblem });
  return found;
}

/**
 * A fresh spool per test, opened before it and closed and removed after it: call inside a describe.
 * `files(folder)` lists a spool folder, sorted.
 */
export function spoolPerTest(): { readonly dir: string; readonly store: SpoolStore; files(folder: string): string[] } {
  let dir = '';
  let store: SpoolStore | null = null;
  beforeEach(async () => {
    dir = tempDir();
    store = new SpoolStore(path.join(dir, 'spool'));
    store.open();
  });
  afterEach(async () => {
    await store?.close();
    store = null;
    removeDir(dir);
  });
  return {
    get dir() {
      return dir;
    },
    get store() {
      if (!store) throw new Error('spoolPerTest: the spool exists only inside a test');
      return store;
    },
    files: (folder) => readdirSync(path.join(dir, 'spool', folder)).sort(),
  };
}
