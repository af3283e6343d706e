import * as ipaddr from 'ipaddr.js';
import { z } from 'zod';
import { parseDuration, parseHostPort, parseSize } from './units';

/**
 * The `relay.config.yaml` contract of DESIGN.md. Keys stay snake_case as admins write them; sizes
 * become bytes and durations milliseconds so no stage ever parses a unit again.
 */

const size = z.union([z.string(), z.number()]).transform((value, ctx) => {
  const bytes = parseSize(value);
  if (bytes === undefined) {
    ctx.addIssue({ code: 'custom', message: `expected a size like 25MiB, 512KiB or plain bytes, got ${JSON.stringify(value)}` });
    return z.NEVER;
  }
  return bytes;
});

const duration = z.union([z.string(), z.number()]).transform((value, ctx) => {
  const ms = parseDuration(value);
  if (ms === undefined) {
    ctx.addIssue({ code: 'custom', message: `expected a duration like 30s, 5m, 1h or 5d, got ${JSON.stringify(value)}` });
    return z.NEVER;
  }
  return ms;
});

const hostPort = z.string().transform((value, ctx) => {
  const parsed = parseHostPort(value);
  if (!parsed) {
    ctx.addIssue({ code: 'custom', message: `expected host:port (or [v6]:port), got ${JSON.stringify(value)}` });
    return z.NEVER;
  }
  return parsed;
});

/** A CIDR (`10.20.0.0/16`, `fd00::/64`) or a single address, parsed once here so matching is cheap. */
const network = z.string().transform((value, ctx) => {
  try {
    if (value.includes('/')) return ipaddr.parseCIDR(value);
    const address = ipaddr.parse(value);
    return [address, address.kind() === 'ipv4' ? 32 : 128] as [ipaddr.IPv4 | ipaddr.IPv6, number];
  } catch {
    ctx.addIssue({ code: 'custom', message: `expected a CIDR like 10.20.0.0/16 or fd00::/64, got ${JSON.stringify(value)}` });
    return z.NEVER;
  }
});

const name = z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/, 'expected a name of letters, digits, "_", "-" or "." (it becomes a metric label)');

const tlsMode = z.enum(['none', 'starttls', 'implicit']);

const scryptHash = z.string().refine((value) => /^scrypt\$\d+\$\d+\$\d+\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+$/.test(value), {
  message: 'expected scrypt hash, got plain text (make one with `smarthop hash-password`)',
});

const listenerSchema = z.strictObject({
  name,
  address: hostPort,
  tls: tlsMode.default('none'),
  require_tls: z.boolean().default(false),
  auth: z.enum(['off', 'optional', 'required']).default('optional'),
  allow_insecure_auth: z.boolean().default(false),
  line_endings: z.enum(['normalize', 'strict']).default('normalize'),
  max_clients: z.number().int().positive().default(500),
  socket_timeout: duration.default(60_000),
});

const clientSchema = z
  .strictObject({
    name,
    networks: z.array(network).default([]),
    username: z.string().min(1).optional(),
    password_hash: scryptHash.optional(),
    policy: name.optional(),
  })
  .superRefine((client, ctx) => {
    if (client.networks.length === 0 && client.username === undefined) {
      ctx.addIssue({ code: 'custom', message: 'a client needs networks, a username, or both' });
    }
    if (client.username !== undefined && client.password_hash === undefined) {
      ctx.addIssue({ code: 'custom', path: ['password_hash'], message: 'required with username (make one with `smarthop hash-password`)' });
    }
    if (client.username === undefined && client.password_hash !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['username'], message: 'required with password_hash' });
    }
  });

const policySchema = z.strictObject({
  route: name.default('default'),
});

const routeSchema = z.strictObject({
  smarthosts: z.array(name).min(1, 'a route needs at least one smart host'),
});

const smarthostAuthSchema = z.strictObject({
  user: z.string().min(1),
  pass: z.string(),
});

const smarthostSchema = z.strictObject({
  name,
  host: z.string().min(1),
  port: z.number().int().min(1).max(65535),
  tls: tlsMode.default('starttls'),
  tls_verify: z.boolean().default(true),
  auth: smarthostAuthSchema.optional(),
  priority: z.number().int().min(0).default(10),
  weight: z.number().int().min(1).default(1),
  max_connections: z.number().int().min(1).max(100).default(5),
  connect_timeout: duration.default(10_000),
  socket_timeout: duration.default(60_000),
});

/** `http.address` hosts that only this machine can reach: the admin API may run there without a token. */
export function isLoopbackHost(host: string): boolean {
  if (host === 'localhost') return true;
  try {
    const address = ipaddr.process(host);
    return address.range() === 'loopback';
  } catch {
    return false;
  }
}

const httpSchema = z.strictObject({
  address: hostPort,
  /** Bearer token for /api/* (take it from the environment: `token: ${SMARTHOP_API_TOKEN}`). */
  token: z.string().min(16, 'expected at least 16 characters (make one with `openssl rand -hex 32`)').optional(),
});

const webhookSchema = z.strictObject({
  url: z.string().refine((value) => URL.canParse(value) && /^https?:$/.test(new URL(value).protocol), { message: 'expected an http:// or https:// URL' }),
  /** HMAC-SHA256 key for `X-Smarthop-Signature`; from the environment, never in the file. */
  secret: z.string().min(16, 'expected at least 16 characters (make one with `openssl rand -hex 32`)'),
  timeout: duration.default(5_000),
  max_queue: z.number().int().min(1).max(1_000_000).default(10_000),
  max_attempts: z.number().int().min(1).max(100).default(10),
  retry: z
    .strictObject({ initial: duration.default(1_000), max: duration.default(60_000) })
    .default({ initial: 1_000, max: 60_000 }),
});

const eventsSchema = z
  .strictObject({
    file: z.string().min(1).optional(),
    /** The file is rotated (`events.jsonl.1`, `.2`, …) once the next line would take it past this size. */
    max_size: size.default(100 * 1024 * 1024),
    /** Rotated files kept beside the current one. */
    keep: z.number().int().min(0).max(1000).default(5),
    webhook: webhookSchema.optional(),
  })
  .refine((events) => events.file !== undefined || events.webhook !== undefined, { message: 'events needs a file, a webhook, or both' });

export const configSchema = z
  .strictObject({
    hostname: z.string().min(1),
    max_message_size: size.default(25 * 1024 * 1024),
    spool: z.strictObject({
      dir: z.string().min(1),
      max_queue_lifetime: duration.default(5 * 86_400_000),
      retry: z
        .strictObject({
          initial: duration.default(30_000),
          max: duration.default(3_600_000),
          factor: z.number().min(1).default(2),
        })
        .default({ initial: 30_000, max: 3_600_000, factor: 2 }),
      min_free_disk: size.default(256 * 1024 * 1024),
    }),
    delivery: z
      .strictObject({
        concurrency: z.number().int().min(1).max(1000).default(20),
      })
      .default({ concurrency: 20 }),
    /** How long a stopping relay waits for open sessions before answering them 421. */
    shutdown_grace: duration.default(10_000),
    listeners: z.array(listenerSchema).min(1, 'at least one listener is needed'),
    tls: z.strictObject({ cert: z.string().min(1), key: z.string().min(1) }).optional(),
    clients: z.array(clientSchema).min(1, 'at least one client is needed: nobody may relay otherwise'),
    policies: z.record(name, policySchema).default({}),
    routes: z.record(name, routeSchema),
    smarthosts: z.array(smarthostSchema).min(1, 'at least one smart host is needed'),
    http: httpSchema.optional(),
    events: eventsSchema.optional(),
    log: z.strictObject({ level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info') }).default({ level: 'info' }),
  })
  .superRefine((config, ctx) => {
    const issue = (path: (string | number)[], message: string) => ctx.addIssue({ code: 'custom', path, message });
    uniqueNames(config.listeners, 'listeners', issue);
    uniqueNames(config.clients, 'clients', issue);
    uniqueNames(config.smarthosts, 'smarthosts', issue);

    config.listeners.forEach((listener, i) => {
      if (listener.tls !== 'none' && !config.tls) issue(['listeners', i, 'tls'], `tls: ${listener.tls} needs the top-level tls.cert and tls.key`);
      if (listener.require_tls && listener.tls !== 'starttls') issue(['listeners', i, 'require_tls'], 'only meaningful with tls: starttls (implicit TLS is always encrypted)');
    });

    const usernames = new Map<string, number>();
    config.clients.forEach((client, i) => {
      if (client.username !== undefined) {
        const earlier = usernames.get(client.username);
        if (earlier !== undefined) issue(['clients', i, 'username'], `duplicate username ${JSON.stringify(client.username)} (also clients[${earlier}])`);
        usernames.set(client.username, i);
      }
      if (client.policy !== undefined && !(client.policy in config.policies)) {
        issue(['clients', i, 'policy'], `no policy named ${JSON.stringify(client.policy)} under policies`);
      }
      if (client.policy === undefined && !('default' in config.routes)) {
        issue(['clients', i, 'policy'], 'a client without a policy is relayed through the route "default", which is not defined');
      }
    });

    for (const [policyName, policy] of Object.entries(config.policies)) {
      if (!(policy.route in config.routes)) issue(['policies', policyName, 'route'], `no route named ${JSON.stringify(policy.route)} under routes`);
    }
    if (config.http && !isLoopbackHost(config.http.address.host) && config.http.token === undefined) {
      issue(['http', 'token'], `required when http.address is not loopback (${config.http.address.host}): the admin API can delete mail`);
    }

    const hostNames = new Set(config.smarthosts.map((host) => host.name));
    for (const [routeName, route] of Object.entries(config.routes)) {
      route.smarthosts.forEach((hostName, i) => {
        if (!hostNames.has(hostName)) issue(['routes', routeName, 'smarthosts', i], `no smart host named ${JSON.stringify(hostName)} under smarthosts`);
      });
    }
  });

function uniqueNames(items: { name: string }[], key: string, issue: (path: (string | number)[], message: string) => void): void {
  const seen = new Map<string, number>();
  items.forEach((item, i) => {
    const earlier = seen.get(item.name);
    if (earlier !== undefined) issue([key, i, 'name'], `duplicate name ${JSON.stringify(item.name)} (also ${key}[${earlier}])`);
    seen.set(item.name, i);
  });
}

export type RelayConfig = z.output<typeof configSchema>;
export type ListenerConfig = RelayConfig['listeners'][number];
export type ClientConfig = RelayConfig['clients'][number];
export type RouteConfig = RelayConfig['routes'][string];
export type SmartHostConfig = RelayConfig['smarthosts'][number];
export type RetryConfig = RelayConfig['spool']['retry'];
export type EventsConfig = NonNullable<RelayConfig['events']>;
export type WebhookConfig = NonNullable<EventsConfig['webhook']>;
export type Network = ClientConfig['networks'][number];
