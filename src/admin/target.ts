import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { interpolateEnv } from '../config/interpolate';
import { parseHostPort } from '../config/units';

/** Where the admin commands find the relay: its API (from `http.address`) and, when it is down, its spool. */
export interface AdminTarget {
  /** `http://127.0.0.1:9465`, or null when neither --url nor the config names an http address. */
  url: string | null;
  token: string | undefined;
  /** `spool.dir` resolved against the config file, for `queue list` on a stopped relay. */
  spoolDir: string | null;
  /** `events.file` resolved the same way, for `smarthop trace` on a stopped relay. */
  eventsFile: string | null;
  /** The first listener, where `smarthop sendmail` submits (a wildcard address is reached on loopback). */
  smtp: { host: string; port: number; tls: string } | null;
}

const NO_TARGET: AdminTarget = { url: null, token: undefined, spoolDir: null, eventsFile: null, smtp: null };

export interface TargetOptions {
  config?: string;
  url?: string;
  token?: string;
}

/**
 * Reads only `http.address`, `http.token`, `spool.dir`, `events.file` and the first listener
 * from the config file, leniently: an admin
 * at a shell usually lacks the service's environment (smart-host passwords and the like), and the
 * queue commands need none of it. A `${SMARTHOP_API_TOKEN}` reference is still resolved if it is set.
 */
export function resolveTarget(options: TargetOptions, env: NodeJS.ProcessEnv = process.env): AdminTarget {
  const fromFile = options.config ? readTargetFromConfig(options.config, env) : NO_TARGET;
  return {
    url: options.url ? options.url.replace(/\/+$/, '') : fromFile.url,
    token: options.token ?? (env.SMARTHOP_API_TOKEN || undefined) ?? fromFile.token,
    spoolDir: fromFile.spoolDir,
    eventsFile: fromFile.eventsFile,
    smtp: fromFile.smtp,
  };
}

function readTargetFromConfig(file: string, env: NodeJS.ProcessEnv): AdminTarget {
  // Loaded here, not at the top: the relay's own process loads this module with the CLI, and must
  // not keep yaml once it has read its config (config/load-and-release.ts).
  const { parse } = require('yaml') as typeof import('yaml');
  let raw: unknown;
  try {
    raw = interpolateEnv(parse(readFileSync(file, 'utf8')), env, []);
  } catch {
    return NO_TARGET;
  }
  const config = isRecord(raw) ? raw : {};
  const http = isRecord(config.http) ? config.http : {};
  const spool = isRecord(config.spool) ? config.spool : {};
  const events = isRecord(config.events) ? config.events : {};
  const baseDir = path.dirname(path.resolve(file));
  const listener = Array.isArray(config.listeners) && isRecord(config.listeners[0]) ? config.listeners[0] : {};
  const smtp = typeof listener.address === 'string' ? parseHostPort(listener.address) : undefined;
  const smtpTls = typeof listener.tls === 'string' ? listener.tls : 'none';
  const address = typeof http.address === 'string' ? parseHostPort(http.address) : undefined;
  return {
    url: address ? `http://${urlHost(address.host)}:${address.port}` : null,
    token: typeof http.token === 'string' && http.token !== '' ? http.token : undefined,
    spoolDir: typeof spool.dir === 'string' ? path.resolve(baseDir, spool.dir) : null,
    eventsFile: typeof events.file === 'string' ? path.resolve(baseDir, events.file) : null,
    smtp: smtp ? { ...smtp, host: connectHost(smtp.host), tls: smtpTls } : null,
  };
}

/** A relay listening on every address is reached on loopback. */
function connectHost(host: string): string {
  if (host === '0.0.0.0') return '127.0.0.1';
  if (host === '::') return '::1';
  return host;
}

function urlHost(host: string): string {
  const reached = connectHost(host);
  return reached.includes(':') ? `[${reached}]` : reached;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}
