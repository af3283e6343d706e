import { createSecureContext } from 'node:tls';
import * as ipaddr from 'ipaddr.js';
import { z } from 'zod';
import { validateAddressPatterns } from '../message/address-pattern';
import { headerPatternError } from '../message/header-pattern';
import { parseDuration, parseHostPort, parseSize } from './units';

/**
 * The `relay.config.yaml` contract (docs/configuration.md). Keys stay snake_case as admins write them;
 * sizes become bytes and durations milliseconds so no stage ever parses a unit again. A block left out
 * is read as `{}` (`.prefault({})`), so each default is written once, on its own field.
 */

const size = z.union([z.string(), z.number()]).transform((value, ctx) => {
  const bytes = parseSize(value);
  if (bytes === undefined) {
    ctx.addIssue({
      code: 'custom',
      message: `expected a size like 25MiB, 512KiB or plain bytes, got ${JSON.stringify(value)}`,
    });
    return z.NEVER;
  }
  return bytes;
});

const duration = z.union([z.string(), z.number()]).transform((value, ctx) => {
  const ms = parseDuration(value);
  if (ms === undefined) {
    ctx.addIssue({
      code: 'custom',
      message: `expected a duration like 30s, 5m, 1h or 5d, got ${JSON.stringify(value)}`,
    });
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
    ctx.addIssue({
      code: 'custom',
      message: `expected a CIDR like 10.20.0.0/16 or fd00::/64, got ${JSON.stringify(value)}`,
    });
    return z.NEVER;
  }
});

const name = z
  .string()
  .regex(/^[A-Za-z0-9_.-]{1,64}$/, 'expected a name of letters, digits, "_", "-" or "." (it becomes a metric label)');

const tlsMode = z.enum(['none', 'starttls', 'implicit']);

const scryptHash = z
  .string()
  .refine((value) => /^scrypt\$\d+\$\d+\$\d+\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+$/.test(value), {
    message: 'expected scrypt hash, got plain text (make one with `smarthop hash-password`)',
  });

const positiveDuration = duration.refine((ms) => ms > 0, 'must be longer than 0');

const listenerSchema = z
  .strictObject({
    name,
    address: hostPort,
    tls: tlsMode.default('none'),
    require_tls: z.boolean().default(false),
    auth: z.enum(['off', 'optional', 'required']).default('optional'),
    allow_insecure_auth: z.boolean().default(false),
    line_endings: z.enum(['normalize', 'strict']).default('normalize'),
    max_clients: z.number().int().positive().default(500),
    socket_timeout: duration.default(60_000),
    /**
     * The longest one command line may take from its first byte to its end: bytes trickled in one at a
     * time reset socket_timeout but not this (421 4.4.2 and the connection closes).
     */
    command_deadline: positiveDuration.default(30_000),
    /**
     * From accept to the SMTP session on an implicit-TLS or proxy_protocol listener: the TLS handshake
     * and the PROXY header must be done within this, whoever the peer is (else the connection is closed).
     */
    handshake_timeout: positiveDuration.default(10_000),
    /** A connection from an address outside every client's networks must authenticate within this (else 421 4.7.0). */
    identify_timeout: positiveDuration.default(30_000),
    /**
     * Connections from addresses outside every client's networks that have not authenticated yet, at
     * once (421 4.7.0 past it): what is left of max_clients stays for trusted networks. Default: half of max_clients.
     */
    max_unidentified_clients: z.number().int().positive().optional(),
    /** Pause before the greeting; a client that talks during it gets 421 (early-talker detection). */
    greeting_delay: duration.default(0),
    /** `inline`: once the message is on disk, try the smart hosts before answering DATA (the app sees a real 5xx). */
    delivery: z.enum(['queue', 'inline']).default('queue'),
    inline_timeout: duration.default(5_000),
    /**
     * Behind a load balancer: connections must come from `trusted_proxies` and start with a PROXY
     * protocol v1 header, whose source address is then the client's address for everything.
     */
    proxy_protocol: z.boolean().default(false),
    trusted_proxies: z.array(network).default([]),
  })
  .transform((listener) => ({
    ...listener,
    max_unidentified_clients: listener.max_unidentified_clients ?? Math.max(1, Math.floor(listener.max_clients / 2)),
  }));

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
      ctx.addIssue({
        code: 'custom',
        path: ['password_hash'],
        message: 'required with username (make one with `smarthop hash-password`)',
      });
    }
    if (client.username === undefined && client.password_hash !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['username'], message: 'required with password_hash' });
    }
  });

/**
 * Address/domain globs (message/address-pattern.ts), kept as written: the config is plain data, and
 * the stages that match compile them. A bad pattern is an error at its index.
 */
const addressPatterns = z.array(z.string()).superRefine((patterns, ctx) => {
  for (const error of validateAddressPatterns(patterns))
    ctx.addIssue({ code: 'custom', path: [error.index], message: error.message });
});

/**
 * A header rule's pattern, checked here for RE2's linear-time matcher (message/header-pattern.ts) and kept as
 * written.
 */
const regex = z
  .string()
  .min(1)
  .superRefine((source, ctx) => {
    const error = headerPatternError(source);
    if (error !== undefined) ctx.addIssue({ code: 'custom', message: error });
  });

const extension = z.string().transform((value, ctx) => {
  const ext = value.trim().replace(/^\./, '').toLowerCase();
  if (!/^[^\s./\\]+$/.test(ext)) {
    ctx.addIssue({
      code: 'custom',
      message: `expected a file-name extension like exe or .js, got ${JSON.stringify(value)}`,
    });
    return z.NEVER;
  }
  return ext;
});

const positiveCount = z.number().int().min(1);

const rateLimitSchema = z
  .strictObject({
    window: duration.refine((ms) => ms > 0, 'a window must be longer than 0'),
    messages: positiveCount.optional(),
    recipients: positiveCount.optional(),
    bytes: size.refine((bytes) => bytes > 0, 'expected more than 0 bytes').optional(),
  })
  .refine((limit) => limit.messages !== undefined || limit.recipients !== undefined || limit.bytes !== undefined, {
    message: 'a rate limit needs messages, recipients or bytes',
  });

const headerRuleSchema = z.strictObject({
  header: z.string().regex(/^[!-9;-~]+$/, 'expected a header field name such as Subject or X-Mailer'),
  match: regex,
  action: z.enum(['reject', 'strip']),
});

const policySchema = z.strictObject({
  route: name.default('default'),
  /** Envelope MAIL FROM and every address in the header From must match one of these. */
  allowed_senders: addressPatterns.optional(),
  allowed_recipients: addressPatterns.optional(),
  /** Wins over allowed_recipients. */
  denied_recipients: addressPatterns.optional(),
  max_message_size: size.optional(),
  /** Capped at the listener's ceiling of 1000 recipients per transaction. */
  max_recipients: positiveCount.max(1000).optional(),
  rate_limits: z.array(rateLimitSchema).default([]),
  blocked_attachments: z.array(extension).default([]),
  header_rules: z.array(headerRuleSchema).default([]),
  /** A file of addresses and domains (relative to the config file), reloaded when it changes. */
  suppressed_recipients: z.string().min(1).optional(),
});

const connectionRate = z.strictObject({
  window: duration.refine((ms) => ms > 0, 'a window must be longer than 0'),
  max: positiveCount,
});

/** Guards per source address, on every listener (IPv6 addresses are grouped by prefix: one host owns a whole /64). */
const limitsSchema = z.strictObject({
  /** Open SMTP connections from one address at once; over it: 421 4.7.0 at connect. */
  connections_per_address: positiveCount.optional(),
  /** The same for an address outside every client's networks (a stranger), which has a cap by default. */
  connections_per_stranger: positiveCount.default(10),
  /** New connections from one address per window; over it: 421 4.7.0 at connect. */
  connection_rate: connectionRate.optional(),
  /** The same for a stranger, which has a rate by default (both apply to it). */
  connection_rate_per_stranger: connectionRate.default({ window: 60_000, max: 120 }),
  /**
   * `max` failed AUTHs from one address within `window` lock it out (421 4.7.0) for `lockout`; each failure after the
   * first is answered `delay` late.
   */
  auth_failures: z
    .strictObject({
      max: positiveCount.default(10),
      window: duration.default(600_000),
      lockout: duration.default(900_000),
      delay: duration.default(1000),
    })
    .prefault({}),
  /**
   * Failed AUTHs for one username, from every address together: each one past `slow_after` is answered
   * `delay` late; past `max` within `window` the username gets 454 4.7.0 (temporary, no password
   * checked) until the window ends, except from an address it authenticated from before.
   */
  auth_failures_per_username: z
    .strictObject({
      slow_after: positiveCount.default(10),
      max: positiveCount.default(50),
      window: positiveDuration.default(3_600_000),
      delay: duration.default(2000),
    })
    .refine((budget) => budget.slow_after < budget.max, { path: ['slow_after'], message: 'must be less than max' })
    .prefault({}),
  /** Bound on the addresses whose counters are kept in memory (least recently used dropped first). */
  max_tracked_addresses: positiveCount.default(100_000),
  ipv6_prefix: z.number().int().min(32).max(128).default(64),
  /**
   * Each IPv6 address is a host with every budget above of its own; the strangers of one `ipv6_prefix`
   * together get this many hosts' budgets (connections, connection rate, AUTH failures).
   */
  ipv6_hosts_per_prefix: positiveCount.default(4),
  /**
   * Password checks (scrypt, on the thread pool the spool's file calls share) at once on this relay,
   * and how many may wait; past that, AUTH gets 454 4.7.0. Strangers get `concurrent - 1` of the
   * running places (at least one) and half of the waiting ones.
   */
  password_checks: z
    .strictObject({ concurrent: positiveCount.default(2), queue: positiveCount.default(100) })
    .prefault({}),
});

/** An address as MAIL FROM and header From use it: local@domain, no display name, no brackets. */
const mailbox = z
  .string()
  .regex(
    /^[^\s@<>()",;:\\[\]]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$/,
    'expected an address like bounces@corp.example',
  );

const domain = z
  .string()
  .regex(
    /^[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$/,
    'expected a domain like corp.example',
  )
  .transform((value) => value.toLowerCase());

/** A header field name (RFC 5322 ftext). */
const headerName = z.string().regex(/^[\x21-\x39\x3b-\x7e]+$/, 'expected a header field name like X-Mailer');

const dkimSignatureSchema = z.strictObject({
  domain,
  selector: z.string().regex(/^[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*$/, 'expected a selector like s1 or 2026a'),
  /** A PEM file (relative to the config file), or the PEM itself (e.g. from `${DKIM_KEY}`). */
  private_key: z.string().min(1),
  /** Omitted: taken from the key (RSA → rsa-sha256, Ed25519 → ed25519-sha256). */
  algorithm: z.enum(['rsa-sha256', 'ed25519-sha256']).optional(),
});

const routeSchema = z.strictObject({
  smarthosts: z.array(name).min(1, 'a route needs at least one smart host'),
  /** Envelope-sender domains relayed through this route, whatever the client's policy says (see README). */
  sender_domains: z.array(domain).default([]),
  /** Rewrites MAIL FROM (the null sender stays null); omitted: the client's is kept. */
  envelope_from: mailbox.optional(),
  /** `unless` holds address globs, the same patterns as allowed_senders. */
  rewrite_from: z.strictObject({ unless: addressPatterns.default([]), to: mailbox }).optional(),
  /** Removed in addition to Received and X-Originating-IP, which never leave the LAN. */
  strip_headers: z.array(headerName).default([]),
  /** Name the client's address (not only its name) in our Received header. */
  received_include_address: z.boolean().default(false),
  /** One signature or several (e.g. rsa-sha256 and ed25519-sha256 side by side). */
  dkim: z
    .union([dkimSignatureSchema, z.array(dkimSignatureSchema).min(1)])
    .transform((value) => (Array.isArray(value) ? value : [value]))
    .default([]),
});

const smarthostPasswordAuthSchema = z.strictObject({
  user: z.string().min(1),
  pass: z.string(),
});

/** XOAUTH2 with a token from the OAuth2 client-credentials flow (Microsoft 365, Google Workspace). */
const smarthostOAuth2Schema = z.strictObject({
  type: z.literal('oauth2'),
  /** The mailbox the token acts for (the `user=` of the XOAUTH2 string). */
  user: z.string().min(1),
  token_url: z.url({ protocol: /^https?$/, error: 'expected an http(s) URL of the OAuth2 token endpoint' }),
  client_id: z.string().min(1),
  client_secret: z.string().min(1),
  scope: z.string().min(1).optional(),
});

const smarthostAuthSchema = z.union([smarthostOAuth2Schema, smarthostPasswordAuthSchema], {
  error: 'expected { user, pass } or { type: oauth2, user, token_url, client_id, client_secret, scope }',
});

/** A provider quota: at most `messages` and/or `recipients` per `window`. */
const quotaSchema = z
  .strictObject({
    window: duration,
    messages: z.number().int().min(1).optional(),
    recipients: z.number().int().min(1).optional(),
  })
  .refine((limit) => limit.messages !== undefined || limit.recipients !== undefined, {
    message: 'a rate limit needs messages, recipients, or both',
  })
  .refine((limit) => limit.window > 0, { path: ['window'], message: 'a rate limit window must be longer than 0' });

const breakerSchema = z.strictObject({
  /** Consecutive connection-level failures (refused, TLS, timeout, AUTH) that open the breaker. */
  failures: z.number().int().min(1).default(3),
  /** How long an open breaker skips the host before one probe delivery decides. */
  cooldown: duration.default(30_000),
});

/** Settings every smart host has, whatever it speaks. */
const smarthostCommon = {
  name,
  /** PEM file of a private CA to trust (in addition to nothing else: it replaces the system roots for this host). */
  ca: z.string().min(1).optional(),
  tls_verify: z.boolean().default(true),
  priority: z.number().int().min(0).default(10),
  weight: z.number().int().min(1).default(1),
  connect_timeout: duration.default(10_000),
  socket_timeout: duration.default(60_000),
  rate_limits: z.array(quotaSchema).default([]),
  breaker: breakerSchema.prefault({}),
};

/** `type: smtp` (the default, and every smart host written before there were types). */
const smtpSmarthostSchema = z.strictObject({
  type: z.literal('smtp').default('smtp'),
  ...smarthostCommon,
  host: z.string().min(1),
  port: z.number().int().min(1).max(65535),
  tls: tlsMode.default('starttls'),
  auth: smarthostAuthSchema.optional(),
  max_connections: z.number().int().min(1).max(100).default(5),
  /**
   * Messages sent over one pooled connection before it is closed and a new one opened. A host that
   * ends its connections after N messages (an idle or per-connection cap) should get N here: a
   * message handed to a connection the host is ending is tried again, but while other messages are
   * in flight it can meet ending connections several times and be deferred (Postfix's
   * smtp_connection_reuse_count_limit is the same knob).
   */
  messages_per_connection: z.number().int().min(1).max(100_000).default(1000),
  /**
   * Most recipients per transaction to this host; a bigger envelope is sent over several. Providers
   * cap it (SES and Postmark at 50, Gmail at 100) and may refuse the whole message past it; 50 is
   * also Postfix's default (smtp_destination_recipient_limit).
   */
  max_recipients: z.number().int().min(1).max(1000).default(50),
});

/**
 * Mozilla's "intermediate" TLS 1.2 suites without the DHE ones (every suite has forward secrecy, and
 * no static-RSA key exchange), plus the TLS 1.3 suites: in Node one `ciphers` string sets both, and
 * a string without TLS 1.3 suites turns TLS 1.3 off.
 */
export const DEFAULT_TLS_CIPHERS = [
  'TLS_AES_128_GCM_SHA256',
  'TLS_AES_256_GCM_SHA384',
  'TLS_CHACHA20_POLY1305_SHA256',
  'ECDHE-ECDSA-AES128-GCM-SHA256',
  'ECDHE-RSA-AES128-GCM-SHA256',
  'ECDHE-ECDSA-AES256-GCM-SHA384',
  'ECDHE-RSA-AES256-GCM-SHA384',
  'ECDHE-ECDSA-CHACHA20-POLY1305',
  'ECDHE-RSA-CHACHA20-POLY1305',
].join(':');

/** An OpenSSL cipher list that names at least one suite this Node.js knows. */
const cipherList = z
  .string()
  .min(1)
  .refine((ciphers) => {
    try {
      createSecureContext({ ciphers });
      return true;
    } catch {
      return false;
    }
  }, 'expected an OpenSSL cipher list naming at least one supported suite, like ECDHE-RSA-AES128-GCM-SHA256');

/** The certificate of our listeners and how they negotiate TLS. */
const tlsSchema = z.strictObject({
  cert: z.string().min(1),
  key: z.string().min(1),
  min_version: z.enum(['TLSv1.2', 'TLSv1.3']).default('TLSv1.2'),
  ciphers: cipherList.default(DEFAULT_TLS_CIPHERS),
});

const httpsUrl = (what: string) => z.url({ protocol: /^https$/, error: `expected an https:// URL of ${what}` });

/** A certificate credential: the app registration holds the certificate, smarthop signs its assertions with the key. */
const graphCertificateSchema = z.strictObject({
  /** PEM file (or the PEM itself) of the certificate uploaded to the app registration. */
  cert: z.string().min(1),
  /** PEM file (or the PEM itself) of its RSA private key. */
  key: z.string().min(1),
});

const GRAPH_URL = 'https://graph.microsoft.com/v1.0';

/** Exchange Online's default send limit for a mailbox (MaxSendSize, 35 MB as Exchange counts: 36,700,160 bytes). */
const EXCHANGE_MAX_SEND_SIZE = 35 * 1024 * 1024;

/**
 * `type: graph`: Microsoft 365 through the Microsoft Graph API (sendMail with the message as MIME),
 * with an app registration's client credentials. No host or port: the token endpoint and Graph URL
 * default to Microsoft's public cloud and can be pointed at a national cloud (or a test emulator).
 */
const graphSmarthostSchema = z.strictObject({
  type: z.literal('graph'),
  ...smarthostCommon,
  /** The directory (tenant) ID, or one of its verified domains (`contoso.onmicrosoft.com`). */
  tenant: z.string().regex(/^[A-Za-z0-9.-]{1,253}$/, 'expected the directory (tenant) ID or a domain of the tenant'),
  /** The application (client) ID of the app registration. */
  client_id: z.string().min(1),
  client_secret: z.string().min(1).optional(),
  certificate: graphCertificateSchema.optional(),
  /** The mailbox (user principal name or object ID) that sends; with `send_as: from`, only when From names none. */
  mailbox: z.string().min(1).optional(),
  /** `mailbox`: every message is sent by `mailbox`. `from`: by the mailbox of the header From address. */
  send_as: z.enum(['mailbox', 'from']).default('mailbox'),
  /** Default: Microsoft's public cloud, `https://login.microsoftonline.com/<tenant>/oauth2/v2.0/token`. */
  token_url: httpsUrl('the token endpoint').optional(),
  /** The Graph API root, version included (`https://graph.microsoft.us/v1.0` for US Government L4). */
  graph_url: httpsUrl('the Graph API, e.g. https://graph.microsoft.com/v1.0').default(GRAPH_URL),
  /** Default: `<origin of graph_url>/.default` (the application permissions granted to the app). */
  scope: z.string().min(1).optional(),
  /** Larger messages are refused by this host (552 5.3.4), so a route's next host may take them. */
  max_message_size: size.default(EXCHANGE_MAX_SEND_SIZE),
  /** Graph requests (sends, uploads) under way at once. */
  max_connections: z.number().int().min(1).max(100).default(4),
  /** Exchange Online takes up to 500 recipients per message by default (its recipient limit). */
  max_recipients: z.number().int().min(1).max(1000).default(500),
});

const smarthostSchema = z
  .discriminatedUnion('type', [smtpSmarthostSchema, graphSmarthostSchema], {
    error: 'expected type: smtp (the default) or type: graph',
  })
  .transform((host) => (host.type === 'graph' ? withGraphDefaults(host) : host));

/**
 * The endpoints a Graph host was not given, from its tenant and Graph URL; `host` is where it
 * delivers (the Graph API's host name), as an SMTP host's `host` is: the DSN's Remote-MTA and the
 * log lines name it.
 */
function withGraphDefaults(host: z.output<typeof graphSmarthostSchema>) {
  const graph = new URL(host.graph_url);
  return {
    ...host,
    graph_url: host.graph_url.replace(/\/+$/, ''),
    token_url: host.token_url ?? `https://login.microsoftonline.com/${host.tenant}/oauth2/v2.0/token`,
    scope: host.scope ?? `${graph.origin}/.default`,
    host: graph.hostname,
  };
}

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

/** A Host header name: letters, digits, '-', '.', or an IP literal ([v6] with brackets). */
const label = '[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?';
const hostName = z
  .string()
  .regex(
    new RegExp(`^(?:${label}(?:\\.${label})*\\.?|\\[[0-9A-Fa-f:.]+\\])$`),
    'expected a host name like relay.corp.example',
  )
  .transform((value) => value.toLowerCase().replace(/\.$/, ''));

const httpSchema = z.strictObject({
  address: hostPort,
  /**
   * Further names the HTTP endpoints answer to in the Host header (say the relay's DNS name when
   * `address` is 0.0.0.0). Always accepted: the address's own host, localhost names and IP literals.
   */
  allowed_hosts: z.array(hostName).default([]),
  /** Bearer token for /api/* (take it from the environment: `token: ${SMARTHOP_API_TOKEN}`). */
  token: z.string().min(16, 'expected at least 16 characters (make one with `openssl rand -hex 32`)').optional(),
});

const webhookSchema = z.strictObject({
  url: z.string().refine((value) => URL.canParse(value) && /^https?:$/.test(new URL(value).protocol), {
    message: 'expected an http:// or https:// URL',
  }),
  /** HMAC-SHA256 key for `X-Smarthop-Signature`; from the environment, never in the file. */
  secret: z.string().min(16, 'expected at least 16 characters (make one with `openssl rand -hex 32`)'),
  timeout: duration.default(5_000),
  max_queue: z.number().int().min(1).max(1_000_000).default(10_000),
  max_attempts: z.number().int().min(1).max(100).default(10),
  retry: z.strictObject({ initial: duration.default(1_000), max: duration.default(60_000) }).prefault({}),
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
  .refine((events) => events.file !== undefined || events.webhook !== undefined, {
    message: 'events needs a file, a webhook, or both',
  });

/** `redis://[user:pass@]host:port[/db]` or `rediss://` (TLS); secrets come from `${ENV}`. */
const redisUrl = z.string().refine((value) => URL.canParse(value) && /^rediss?:$/.test(new URL(value).protocol), {
  message: 'expected a redis:// or rediss:// URL like redis://10.0.0.5:6379/0',
});

/** Where rate-limit, quota and lockout counters live: this process, or Redis shared by a fleet of relays. */
const stateSchema = z
  .strictObject({
    store: z.enum(['memory', 'redis']).default('memory'),
    redis: z
      .strictObject({
        url: redisUrl,
        /** Several fleets (or other applications) can share one Redis under different prefixes. */
        key_prefix: z.string().max(100).default('smarthop:'),
        /** A Redis command slower than this counts as Redis being unreachable (local fallback). */
        command_timeout: duration.refine((ms) => ms > 0, 'must be longer than 0').default(500),
        connect_timeout: duration.refine((ms) => ms > 0, 'must be longer than 0').default(2_000),
      })
      .optional(),
    /** Relays sharing the limits: while Redis is unreachable each enforces 1/fleet_size of every limit. */
    fleet_size: z.number().int().min(1).max(1000).optional(),
  })
  .superRefine((state, ctx) => {
    if (state.store !== 'redis') return;
    if (state.redis === undefined)
      ctx.addIssue({
        code: 'custom',
        path: ['redis'],
        message: 'required with store: redis ({ url: redis://host:6379 })',
      });
    if (state.fleet_size === undefined) {
      ctx.addIssue({
        code: 'custom',
        path: ['fleet_size'],
        message:
          'required with store: redis: how many relays share the limits ' +
          '(while Redis is unreachable each enforces 1/fleet_size of every limit)',
      });
    }
  });

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
        .prefault({}),
      min_free_disk: size.default(256 * 1024 * 1024),
    }),
    delivery: z
      .strictObject({
        concurrency: z.number().int().min(1).max(1000).default(20),
        /**
         * Smart-host connections on a worker thread of their own, so sending uses a second core
         * while the event loop answers clients and writes the spool. `false` keeps them on the event loop.
         */
        worker_thread: z.boolean().default(true),
        /**
         * Queued messages the scheduler keeps in memory (due now or within two minutes); the rest wait
         * on disk and come back as there is room (Postfix's qmgr_message_active_limit). A restart setting.
         */
        queue_window: z.number().int().min(10).max(1_000_000).default(10_000),
      })
      .prefault({}),
    /** How long a stopping relay waits for open sessions before answering them 421. */
    shutdown_grace: duration.default(10_000),
    listeners: z.array(listenerSchema).min(1, 'at least one listener is needed'),
    tls: tlsSchema.optional(),
    clients: z.array(clientSchema).min(1, 'at least one client is needed: nobody may relay otherwise'),
    policies: z.record(name, policySchema).default({}),
    limits: limitsSchema.prefault({}),
    routes: z.record(name, routeSchema),
    /** Also send every DSN to this address (a postmaster who wants to see bounces). */
    bounce_copy_to: z.email({ error: 'expected an email address' }).optional(),
    smarthosts: z.array(smarthostSchema).min(1, 'at least one smart host is needed'),
    http: httpSchema.optional(),
    events: eventsSchema.optional(),
    log: z
      .strictObject({ level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info') })
      .prefault({}),
    state: stateSchema.prefault({}),
  })
  .superRefine((config, ctx) => {
    const issue = (path: (string | number)[], message: string) => ctx.addIssue({ code: 'custom', path, message });
    uniqueNames(config.listeners, 'listeners', issue);
    uniqueNames(config.clients, 'clients', issue);
    uniqueNames(config.smarthosts, 'smarthosts', issue);

    config.listeners.forEach((listener, i) => {
      if (listener.tls !== 'none' && !config.tls)
        issue(['listeners', i, 'tls'], `tls: ${listener.tls} needs the top-level tls.cert and tls.key`);
      if (listener.require_tls && listener.tls !== 'starttls')
        issue(['listeners', i, 'require_tls'], 'only meaningful with tls: starttls (implicit TLS is always encrypted)');
      if (listener.proxy_protocol && listener.trusted_proxies.length === 0) {
        issue(
          ['listeners', i, 'trusted_proxies'],
          'required with proxy_protocol: true (the load balancers allowed to send a PROXY header, e.g. [10.0.0.5/32])',
        );
      }
      if (!listener.proxy_protocol && listener.trusted_proxies.length > 0)
        issue(['listeners', i, 'trusted_proxies'], 'only meaningful with proxy_protocol: true');
      if (listener.max_unidentified_clients > listener.max_clients) {
        const more = `must not be more than max_clients (${listener.max_clients})`;
        issue(['listeners', i, 'max_unidentified_clients'], more);
      }
    });

    config.smarthosts.forEach((host, i) => {
      if (host.type === 'smtp' && host.ca !== undefined && host.tls === 'none') {
        issue(['smarthosts', i, 'ca'], 'only meaningful with tls: starttls or implicit');
      }
      if (host.type === 'smtp' && host.auth && 'type' in host.auth && host.tls === 'none') {
        issue(['smarthosts', i, 'auth'], 'an OAuth2 token must not travel in clear: use tls: starttls or implicit');
      }
      if (host.type === 'graph') {
        if ((host.client_secret === undefined) === (host.certificate === undefined)) {
          const message = 'a Graph host needs client_secret or certificate: { cert, key } (one)';
          issue(['smarthosts', i, 'client_secret'], message);
        }
        if (host.send_as === 'mailbox' && host.mailbox === undefined) {
          const message = 'required with send_as: mailbox (the mailbox that sends, e.g. relay@corp.example)';
          issue(['smarthosts', i, 'mailbox'], message);
        }
      }
      const seen = new Set<string>();
      host.rate_limits.forEach((limit, j) => {
        for (const unit of ['messages', 'recipients'] as const) {
          if (limit[unit] === undefined) continue;
          const key = `${limit.window}:${unit}`;
          if (seen.has(key)) issue(['smarthosts', i, 'rate_limits', j], `a second ${unit} limit for the same window`);
          seen.add(key);
        }
      });
    });

    const usernames = new Map<string, number>();
    config.clients.forEach((client, i) => {
      if (client.username !== undefined) {
        const earlier = usernames.get(client.username);
        if (earlier !== undefined)
          issue(
            ['clients', i, 'username'],
            `duplicate username ${JSON.stringify(client.username)} (also clients[${earlier}])`,
          );
        usernames.set(client.username, i);
      }
      if (client.policy !== undefined && !(client.policy in config.policies)) {
        issue(['clients', i, 'policy'], `no policy named ${JSON.stringify(client.policy)} under policies`);
      }
      if (client.policy === undefined && !('default' in config.routes)) {
        issue(
          ['clients', i, 'policy'],
          'a client without a policy is relayed through the route "default", which is not defined',
        );
      }
    });

    for (const [policyName, policy] of Object.entries(config.policies)) {
      if (!(policy.route in config.routes))
        issue(['policies', policyName, 'route'], `no route named ${JSON.stringify(policy.route)} under routes`);
      if (policy.max_message_size !== undefined && policy.max_message_size > config.max_message_size) {
        issue(
          ['policies', policyName, 'max_message_size'],
          `a policy may only lower max_message_size (the relay's is ${config.max_message_size} bytes)`,
        );
      }
      const seen = new Set<string>();
      policy.rate_limits.forEach((limit, i) => {
        for (const dimension of ['messages', 'recipients', 'bytes'] as const) {
          if (limit[dimension] === undefined) continue;
          const key = `${dimension}/${limit.window}`;
          if (seen.has(key))
            issue(['policies', policyName, 'rate_limits', i], `a second ${dimension} limit for the same window`);
          seen.add(key);
        }
      });
    }
    if (config.http && !isLoopbackHost(config.http.address.host) && config.http.token === undefined) {
      issue(
        ['http', 'token'],
        `required when http.address is not loopback (${config.http.address.host}): the admin API can delete mail`,
      );
    }

    const hostNames = new Set(config.smarthosts.map((host) => host.name));
    const senderDomains = new Map<string, string>();
    for (const [routeName, route] of Object.entries(config.routes)) {
      route.smarthosts.forEach((hostName, i) => {
        if (!hostNames.has(hostName))
          issue(
            ['routes', routeName, 'smarthosts', i],
            `no smart host named ${JSON.stringify(hostName)} under smarthosts`,
          );
      });
      // One envelope domain, one route: anything else would make the choice depend on key order.
      route.sender_domains.forEach((senderDomain, i) => {
        const earlier = senderDomains.get(senderDomain);
        if (earlier !== undefined)
          issue(
            ['routes', routeName, 'sender_domains', i],
            `${senderDomain} is already routed by routes.${earlier}.sender_domains`,
          );
        senderDomains.set(senderDomain, routeName);
      });
    }
  });

function uniqueNames(
  items: { name: string }[],
  key: string,
  issue: (path: (string | number)[], message: string) => void,
): void {
  const seen = new Map<string, number>();
  items.forEach((item, i) => {
    const earlier = seen.get(item.name);
    if (earlier !== undefined)
      issue([key, i, 'name'], `duplicate name ${JSON.stringify(item.name)} (also ${key}[${earlier}])`);
    seen.set(item.name, i);
  });
}

export type RelayConfig = z.output<typeof configSchema>;
export type ListenerConfig = RelayConfig['listeners'][number];
export type ClientConfig = RelayConfig['clients'][number];
export type RouteConfig = RelayConfig['routes'][string];
export type DkimSignatureConfig = RouteConfig['dkim'][number];
export type PolicyConfig = RelayConfig['policies'][string];
export type HeaderRuleConfig = PolicyConfig['header_rules'][number];
export type LimitsConfig = RelayConfig['limits'];
export type SmartHostConfig = RelayConfig['smarthosts'][number];
export type SmtpSmartHostConfig = Extract<SmartHostConfig, { type: 'smtp' }>;
export type GraphSmartHostConfig = Extract<SmartHostConfig, { type: 'graph' }>;
export type SmartHostQuotaConfig = SmartHostConfig['rate_limits'][number];
export type BreakerConfig = SmartHostConfig['breaker'];
export type OAuth2Config = Extract<NonNullable<SmtpSmartHostConfig['auth']>, { type: 'oauth2' }>;
export type RetryConfig = RelayConfig['spool']['retry'];
export type EventsConfig = NonNullable<RelayConfig['events']>;
export type WebhookConfig = NonNullable<EventsConfig['webhook']>;
export type Network = ClientConfig['networks'][number];
export type StateConfig = RelayConfig['state'];
export type TlsConfig = NonNullable<RelayConfig['tls']>;
