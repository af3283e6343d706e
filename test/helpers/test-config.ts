import * as path from 'node:path';
import { parseConfig } from '../../src/config/load';
import type { RelayConfig, SmtpSmartHostConfig } from '../../src/config/schema';

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

/**
 * One listener of each way of meeting a client: no AUTH, AUTH optional, STARTTLS then AUTH required,
 * implicit TLS then AUTH required (names `off`, `optional`, `required`, `implicit`). Needs the config's
 * top-level `tls`.
 */
export function listenerPerAuthMode(): Record<string, unknown>[] {
  return [
    { name: 'off', address: '127.0.0.1:0', tls: 'none', auth: 'off' },
    { name: 'optional', address: '127.0.0.1:0', tls: 'none', auth: 'optional' },
    { name: 'required', address: '127.0.0.1:0', tls: 'starttls', require_tls: true, auth: 'required' },
    { name: 'implicit', address: '127.0.0.1:0', tls: 'implicit', auth: 'required' },
  ];
}
