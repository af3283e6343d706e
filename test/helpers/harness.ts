import pino from 'pino';
import type { RelayConfig } from '../../src/config/schema';
import { Relay, type RelayOptions } from '../../src/relay';
import type { SmtpSink, SinkOptions } from '../../src/tools/sink';
import { startSink } from './start-sink';
import { baseConfig, buildConfig, type SmartHostSpec } from './test-config';
import { removeDir, tempDir } from './temp-dir';
import { waitFor } from './wait-for';

/*
 * The relay in-process with its smart-host sinks, for end-to-end tests. What a test needs without a
 * relay lives in its own small module (a unit test that imports only those does not load the whole
 * relay, about a second of module loading per test file); it is exported from here too, so a test of
 * the whole relay imports from one place.
 */
export { makeCertificate, makeCertificateAuthority } from './certificates';
export { freePort } from '../../bench/free-port';
export { metricsText, metricValue } from './metrics-text';
export { readQueued, recoverAll, spoolPerTest } from './spool-fixtures';
export { removeDir, tempDir } from './temp-dir';
export { baseConfig, buildConfig, listenerPerAuthMode, smtpHost, type SmartHostSpec } from './test-config';
export { TokenEndpoint } from './token-endpoint';
export { startSink } from './start-sink';
export { waitFor } from './wait-for';

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
