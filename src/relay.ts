import { access, constants } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import type { RelayConfig } from './config/schema';
import { Bouncer } from './forward/bounce';
import { Dispatcher } from './forward/dispatcher';
import { GuardedSmartHost } from './forward/guarded-host';
import { InlineDelivery } from './forward/inline';
import { SmartHostQuota } from './forward/quota';
import { NodemailerSmartHost } from './forward/smarthost';
import { ClientDirectory } from './ingress/clients';
import { IngressSessions } from './ingress/session';
import { SmtpListener } from './ingress/smtp-listener';
import { MemoryWindowCounters } from './limits/window-counters';
import { HttpEndpoints } from './observe/http';
import { createLogger, type Logger } from './observe/logger';
import { Metrics } from './observe/metrics';
import { RelayObserver } from './observe/observer';
import { AddressGuard } from './policy/address-guard';
import { PolicyEngine } from './policy/engine';
import { loadRouteKeys } from './reenvelope/dkim-keys';
import { DkimSigningFilter } from './reenvelope/dkim-signer';
import { ReenvelopeFilter } from './reenvelope/filter';
import { FreeSpaceGuard } from './spool/free-space';
import { Scheduler } from './spool/scheduler';
import { SpoolStore } from './spool/store';

export interface RelayOptions {
  logger?: Logger;
}

export interface RelayAddresses {
  listeners: Record<string, AddressInfo>;
  http: AddressInfo | null;
}

/**
 * The composition root: builds every stage from the config, wires them, starts and stops them.
 * Nothing else constructs a stage, and no stage reaches for a global.
 */
export class Relay {
  readonly metrics = new Metrics();
  readonly logger: Logger;
  readonly store: SpoolStore;
  private readonly observer: RelayObserver;
  private readonly smarthosts: Map<string, GuardedSmartHost>;
  private readonly scheduler: Scheduler;
  private readonly listeners: SmtpListener[];
  private readonly policy: PolicyEngine;
  private readonly http: HttpEndpoints | null;
  private addresses: RelayAddresses | null = null;

  constructor(readonly config: RelayConfig, options: RelayOptions = {}) {
    this.logger = options.logger ?? createLogger(config.log.level);
    this.observer = new RelayObserver(this.metrics, this.logger, config.events?.file);
    this.store = new SpoolStore(config.spool.dir);
    // Provider quotas are counted in one bounded store per relay (Redis-backed later, for a fleet).
    const quotaCounters = new MemoryWindowCounters(Math.max(1000, config.smarthosts.length * 16));
    this.smarthosts = new Map(config.smarthosts.map((host) => [host.name, new GuardedSmartHost(
      host, new NodemailerSmartHost(host, config.hostname), new SmartHostQuota(host.name, host.rate_limits, quotaCounters), this.observer,
    )]));

    const dispatcher = new Dispatcher({
      store: this.store, smarthosts: this.smarthosts, config, observer: this.observer,
      bouncer: new Bouncer({ store: this.store, hostname: config.hostname, copyTo: config.bounce_copy_to }),
      onGenerated: (meta) => this.scheduler.enqueue(meta.id, meta.receivedAt),
    });
    this.scheduler = new Scheduler((id) => dispatcher.attempt(id), config.delivery.concurrency, (id, err) => {
      this.logger.error({ err, queue_id: id }, `${id}: delivery attempt failed unexpectedly, will retry: ${(err as Error).message}`);
      return config.spool.retry.initial;
    });
    const inline = new InlineDelivery({ attempt: (id, claim) => dispatcher.attempt(id, claim), scheduler: this.scheduler });

    // Keys are read now: a missing or wrong key stops the start instead of leaving mail unsigned.
    const dkim = loadRouteKeys(config.routes);
    if (dkim.errors.length > 0) throw new Error(`DKIM keys: ${dkim.errors.join('; ')}`);

    // Two counter stores: per-client windows (a handful of keys) never share an LRU with the
    // per-address ones, which strangers can create at will.
    this.policy = new PolicyEngine({
      policies: config.policies,
      counters: new MemoryWindowCounters(10_000),
      observer: this.observer,
      log: { info: (message) => this.logger.info(message), warn: (message) => this.logger.warn(message) },
    });
    const guard = new AddressGuard({
      limits: config.limits,
      // Up to three windows per address: connection rate, AUTH failures, lockout.
      counters: new MemoryWindowCounters(config.limits.max_tracked_addresses * 3),
      observer: this.observer,
    });

    const sessions = new IngressSessions({
      config,
      // Order matters: the policy judges what the client sent, the route's rewrites come next, and
      // DKIM signing last, over the final header.
      filters: [this.policy.filter(), new ReenvelopeFilter({ routes: config.routes, hostname: config.hostname }), new DkimSigningFilter(dkim.keys)],
      policy: this.policy,
      guard,
      clients: new ClientDirectory(config.clients),
      store: this.store,
      freeSpace: new FreeSpaceGuard(() => this.store.freeBytes(), config.spool.min_free_disk),
      observer: this.observer,
      onQueued: async (meta, listener) => {
        if (listener.delivery === 'inline') return inline.deliver(meta, listener.inline_timeout);
        this.scheduler.enqueue(meta.id, meta.receivedAt);
        return { ok: true };
      },
    });
    this.listeners = config.listeners.map((listener) => new SmtpListener({ listener, config, sessions, logger: this.logger }));
    this.http = config.http ? new HttpEndpoints(this.metrics, { ready: () => this.readiness() }) : null;

    this.metrics.bindQueue(() => {
      const snapshot = this.scheduler.snapshot();
      return { ready: snapshot.ready, deferred: snapshot.deferred, held: 0, dead: this.store.deadCount, oldestReceivedAt: snapshot.oldestReceivedAt };
    });
    this.metrics.bindSmartHosts(() => [...this.smarthosts.values()].map((host) => ({ name: host.name, up: host.up() })));
    this.metrics.bindQuotas(async () => {
      const now = Date.now();
      const samples = await Promise.all([...this.smarthosts.values()].map(async (host) => (await host.quotaRemaining(now)).map((sample) => ({ smarthost: host.name, ...sample }))));
      return samples.flat();
    });
    this.metrics.initialise({
      listeners: config.listeners.map((l) => l.name),
      clients: config.clients.map((c) => c.name),
      smarthosts: config.smarthosts.map((s) => s.name),
      rateLimits: this.policy.rateLimitLabels(config.clients),
    });
  }

  /** Recovery first (the normal path, not a special one), then the listeners. */
  async start(): Promise<RelayAddresses> {
    await this.store.open();
    await this.policy.start();
    const recovered = await this.store.recover((id, problem) => this.logger.warn({ queue_id: id }, `${id}: recovery: ${problem}`));
    for (const meta of recovered) this.scheduler.enqueue(meta.id, meta.receivedAt, meta.nextAttemptAt);
    if (recovered.length > 0) this.logger.info(`recovered ${recovered.length} queued message(s) from ${this.config.spool.dir}`);

    const listeners: Record<string, AddressInfo> = {};
    for (const [i, listener] of this.listeners.entries()) {
      const address = await listener.listen();
      listeners[this.config.listeners[i].name] = address;
      this.logger.info(`listener ${this.config.listeners[i].name} on ${formatAddress(address)} (tls ${this.config.listeners[i].tls}, auth ${this.config.listeners[i].auth})`);
    }
    const http = this.http && this.config.http ? await this.http.listen(this.config.http.address.host, this.config.http.address.port) : null;
    if (http) this.logger.info(`http endpoints (/metrics, /healthz, /readyz) on ${formatAddress(http)}`);
    this.addresses = { listeners, http };
    return this.addresses;
  }

  /** Stops taking mail, lets sessions in DATA and deliveries under way finish, then closes the rest. */
  async stop(): Promise<void> {
    await Promise.all(this.listeners.map((listener) => listener.close()));
    await this.scheduler.stop();
    await this.policy.stop();
    for (const host of this.smarthosts.values()) host.close();
    await this.http?.close();
    await this.observer.close();
  }

  get started(): RelayAddresses {
    if (!this.addresses) throw new Error('relay not started');
    return this.addresses;
  }

  private async readiness(): Promise<{ ok: boolean; checks: Record<string, boolean | string> }> {
    const spoolWritable = await access(this.store.queueDir, constants.W_OK).then(() => true, () => false);
    const now = Date.now();
    const smarthostAvailable = [...this.smarthosts.values()].some((host) => host.available(now));
    return { ok: spoolWritable && smarthostAvailable, checks: { spool_writable: spoolWritable, smarthost_available: smarthostAvailable } };
  }
}

function formatAddress(address: AddressInfo): string {
  return address.family === 'IPv6' ? `[${address.address}]:${address.port}` : `${address.address}:${address.port}`;
}
