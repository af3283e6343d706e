import type { AddressInfo } from 'node:net';
import { AdminApi } from './admin/api';
import { RelayState } from './admin/relay-state';
import type { ConfigResult } from './config/load';
import type { RelayConfig, SmartHostConfig } from './config/schema';
import { Bouncer } from './forward/bounce';
import { Dispatcher } from './forward/dispatcher';
import { GraphSmartHost } from './forward/graph/transport';
import { GuardedSmartHost } from './forward/guarded-host';
import { InlineDelivery } from './forward/inline';
import { NODEMAILER } from './nodemailer-adapter';
import { SmartHostQuota } from './forward/quota';
import { DeliveryThread } from './forward/delivery-thread';
import { NodemailerSmartHost, type SmartHostTransport } from './forward/smarthost';
import { ClientDirectory } from './ingress/clients';
import type { MessageFilter } from './ingress/filters';
import { IngressSessions } from './ingress/session';
import { SMTP_SERVER } from './ingress/smtp-server-adapter';
import { SmtpListener } from './ingress/smtp-listener';
import { reconcileSmartHosts, type ReloadResult } from './lifecycle/reload';
import { Reloader, type Generation, type ReloadTrigger } from './lifecycle/reloader';
import { CounterStores } from './limits/counter-stores';
import type { WindowCounters } from './limits/window-counters';
import { ClientActivity } from './observe/activity';
import { HostCheck } from './observe/host-check';
import { HttpEndpoints } from './observe/http';
import { createLogger, type Logger } from './observe/logger';
import { Metrics } from './observe/metrics';
import { RelayObserver } from './observe/observer';
import { buildEventOutputs } from './observe/outputs';
import { AddressGuard } from './policy/address-guard';
import { PolicyEngine } from './policy/engine';
import { loadRouteKeys } from './forward/reenvelope/dkim-keys';
import { DkimSigningFilter } from './forward/reenvelope/dkim-signer';
import { ReenvelopeFilter } from './forward/reenvelope/filter';
import { FreeSpaceGuard } from './spool/free-space';
import { QueueAdmin } from './spool/queue-admin';
import { Scheduler } from './spool/scheduler';
import { SpoolStore } from './spool/store';
import { checkPinnedVersion } from './pinned-library';
import { VERSION } from './version';

export interface RelayOptions {
  logger?: Logger;
  /** Where a reload reads the new configuration (the config file for `smarthop start`); none: reloads are refused. */
  configSource?: () => ConfigResult;
}

export interface RelayAddresses {
  listeners: Record<string, AddressInfo>;
  http: AddressInfo | null;
}

/**
 * The running configuration and what is built from it. Stages read it through a getter on every
 * transaction or attempt, never keep it, so a reload swaps it in one assignment.
 */
class Live implements Generation {
  constructor(
    readonly config: RelayConfig,
    readonly clients: ClientDirectory,
    readonly smarthosts: ReadonlyMap<string, GuardedSmartHost>,
    readonly policy: PolicyEngine,
    /** Order matters: the policy judges what the client sent, the route's rewrites come next, DKIM signs last. */
    readonly filters: MessageFilter[],
  ) {}

  start(): Promise<void> {
    return this.policy.start();
  }

  /** Closes the smart hosts `successor` does not keep (their sends under way finish first) and stops the policy. */
  async retire(successor: Live): Promise<void> {
    for (const [name, host] of this.smarthosts) if (successor.smarthosts.get(name) !== host) host.close();
    if (successor.policy !== this.policy) await this.policy.stop();
  }
}

/**
 * The composition root: builds every stage from the config, wires them, starts and stops them, and
 * builds what a reload swaps in. Nothing else constructs a stage, and no stage reaches for a global.
 */
export class Relay {
  readonly metrics = new Metrics();
  readonly logger: Logger;
  readonly store: SpoolStore;
  private live: Live;
  private readonly observer: RelayObserver;
  private readonly activity = new ClientActivity();
  private readonly scheduler: Scheduler;
  private readonly dispatcher: Dispatcher;
  private readonly queue: QueueAdmin;
  private readonly listeners: SmtpListener[];
  private readonly http: HttpEndpoints | null;
  private readonly reloader: Reloader<Live>;
  private readonly state: RelayState;
  /** EHLO name towards smart hosts; `hostname` needs a restart, so this never changes. */
  private readonly heloName: string;
  /** Where smart-host connections live with `delivery.worker_thread` (a restart setting); null: on the event loop. */
  private readonly deliveryThread: DeliveryThread | null;
  /** Where the window counters live (`state:`); they outlive reloads, so a reload hands no client a fresh window. */
  private readonly counterStores: CounterStores;
  private readonly quotaCounters: WindowCounters;
  private readonly policyCounters: WindowCounters;
  private addresses: RelayAddresses | null = null;
  private stopping = false;

  constructor(config: RelayConfig, options: RelayOptions = {}) {
    // The libraries used below their public API must be the versions their adapters were written for.
    for (const library of [NODEMAILER, SMTP_SERVER]) checkPinnedVersion(library);
    this.logger = options.logger ?? createLogger(config.log.level);
    this.heloName = config.hostname;
    this.deliveryThread = config.delivery.worker_thread ? new DeliveryThread(config.hostname, this.logger) : null;
    this.observer = new RelayObserver({ metrics: this.metrics, logger: this.logger, outputs: buildEventOutputs(config.events, { metrics: this.metrics, logger: this.logger }), activity: this.activity });
    this.store = new SpoolStore(config.spool.dir);
    this.counterStores = new CounterStores(config.state, {
      onBackendChange: (change) => this.observer.emit({ type: 'state_backend', ...change }),
      log: this.logger,
    });
    // Provider quotas and per-client windows each get a bounded store of their own; neither shares
    // an LRU (or a Redis namespace) with the per-address guards, whose keys strangers can create.
    this.quotaCounters = this.counterStores.counters('quota', Math.max(1000, config.smarthosts.length * 16));
    this.policyCounters = this.counterStores.counters('policy', 10_000);
    this.live = this.build(config);
    const current = () => this.live;
    this.reloader = new Reloader<Live>({
      source: options.configSource ?? null,
      running: current,
      build: (next, running) => this.build(next, running),
      install: (next) => this.install(next),
      observer: this.observer,
    });

    const dispatcher = new Dispatcher({
      store: this.store, current, observer: this.observer,
      bouncer: new Bouncer({ store: this.store, hostname: config.hostname, copyTo: config.bounce_copy_to }),
      onGenerated: (meta) => this.scheduler.enqueue(meta.id, meta.receivedAt),
      onOutcomeUnwritable: (id, err, retryInMs) => {
        const reason = err instanceof Error ? err.message : String(err);
        const seconds = Math.round(retryInMs / 1000);
        const line = `${id}: the spool cannot take the outcome of its delivery attempt (${reason}); it delivered to `
          + `some recipients, so the attempt writes it again in ${seconds}s and does not end before`;
        this.logger.error({ err, queue_id: id }, line);
      },
    });
    this.dispatcher = dispatcher;
    this.scheduler = new Scheduler((id) => dispatcher.attempt(id), config.delivery.concurrency, (id, err) => {
      this.logger.error({ err, queue_id: id }, `${id}: delivery attempt failed unexpectedly, will retry: ${(err as Error).message}`);
      return this.live.config.spool.retry.initial;
    });
    const inline = new InlineDelivery({ attempt: (id, claim) => dispatcher.attempt(id, claim), scheduler: this.scheduler });
    this.queue = new QueueAdmin({ store: this.store, scheduler: this.scheduler, log: (id, line) => this.logger.info({ event: 'admin', queue_id: id || undefined }, line) });

    const guard = new AddressGuard({
      limits: config.limits,
      // Up to three windows per address: connection rate, AUTH failures, lockout.
      counters: this.counterStores.counters('address', config.limits.max_tracked_addresses * 3),
      // Failures per username, and the addresses each username authenticated from.
      usernameCounters: this.counterStores.counters('username', config.limits.max_tracked_addresses),
      observer: this.observer,
    });
    const sessions = new IngressSessions({
      current,
      guard,
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
    this.state = new RelayState({
      hostname: () => this.live.config.hostname,
      version: VERSION,
      startedAt: Date.now(),
      schedule: () => this.scheduler.snapshot(),
      spool: this.store,
      smarthosts: () => this.live.smarthosts.values(),
      topClients: (limit, now) => this.activity.top(limit, now),
      lastReload: () => this.reloader.last,
      accepting: () => !this.stopping,
    });
    const api = new AdminApi({
      queue: this.queue,
      status: () => this.state.status(),
      smarthosts: () => this.state.smarthosts(),
      reload: () => this.reload('api'),
      token: () => this.live.config.http?.token,
    });
    const http = config.http;
    const hostCheck = http ? new HostCheck(http.address.host, http.allowed_hosts) : null;
    this.http = http ? new HttpEndpoints(this.metrics, { ready: () => this.state.readiness() }, api, hostCheck) : null;

    this.metrics.bindQueue(() => {
      const snapshot = this.scheduler.snapshot();
      return { ready: snapshot.ready, deferred: snapshot.deferred, held: this.store.heldCount, dead: this.store.deadCount, oldestReceivedAt: snapshot.oldestReceivedAt };
    });
    this.metrics.bindSmartHosts(() => [...this.live.smarthosts.values()].map((host) => ({ name: host.name, up: host.up() })));
    this.metrics.bindQuotas(async () => {
      const now = Date.now();
      const samples = await Promise.all([...this.live.smarthosts.values()].map(async (host) => (await host.quotaRemaining(now)).map((sample) => ({ smarthost: host.name, ...sample }))));
      return samples.flat();
    });
    this.metrics.bindDisk({ freeBytes: () => this.store.freeBytes(), minFreeBytes: config.spool.min_free_disk });
    this.metrics.bindStateBackend(() => this.counterStores.backend);
    const deliveryThread = this.deliveryThread;
    if (deliveryThread) this.metrics.bindDeliveryThreadHeap(() => deliveryThread.heapSpaces());
    this.metrics.initialise(this.labelNames(this.live));
  }

  /** The configuration running now (after any reloads). */
  get config(): RelayConfig {
    return this.live.config;
  }

  /** Recovery first (the normal path, not a special one), then the listeners. */
  async start(): Promise<RelayAddresses> {
    const { config } = this.live;
    await this.store.open();
    this.deliveryThread?.start();
    await this.live.start();
    await this.counterStores.start();
    const recovered = await this.store.recover((id, problem) => this.logger.warn({ queue_id: id }, `${id}: recovery: ${problem}`));
    for (const meta of recovered) this.scheduler.enqueue(meta.id, meta.receivedAt, meta.nextAttemptAt);
    if (recovered.length > 0) this.logger.info(`recovered ${recovered.length} queued message(s) from ${config.spool.dir}`);
    if (this.store.heldCount > 0) this.logger.info(`${this.store.heldCount} message(s) on hold in ${config.spool.dir} (release with smarthop queue release)`);

    const listeners: Record<string, AddressInfo> = {};
    for (const [i, listener] of this.listeners.entries()) {
      const address = await listener.listen();
      listeners[config.listeners[i].name] = address;
      this.logger.info(`listener ${config.listeners[i].name} on ${formatAddress(address)} (tls ${config.listeners[i].tls}, auth ${config.listeners[i].auth})`);
    }
    const http = this.http && config.http ? await this.http.listen(config.http.address.host, config.http.address.port) : null;
    if (http) this.logger.info(`http endpoints (/metrics, /healthz, /readyz, /api/) on ${formatAddress(http)}${config.http?.token ? ' (admin API needs the bearer token)' : ''}`);
    this.addresses = { listeners, http };
    return this.addresses;
  }

  /**
   * Stops taking mail (new connections refused, idle sessions 421) and starting deliveries, lets
   * sessions in DATA finish within `shutdown_grace` and deliveries under way finish, then closes
   * the rest. /readyz says 503 and /metrics keeps answering while it drains.
   */
  async stop(): Promise<void> {
    this.stopping = true;
    const reloads = this.reloader.stop();
    // Listeners first: a session still in DATA may commit and (inline delivery) start an attempt;
    // the scheduler stops after them, so it waits for every attempt that could have started.
    await Promise.all(this.listeners.map((listener) => listener.close()));
    // An attempt waiting for the disk to take its outcome gives up instead of holding the stop.
    this.dispatcher.stop();
    await this.scheduler.stop();
    await reloads;
    await this.live.policy.stop();
    for (const host of this.live.smarthosts.values()) host.close();
    await this.deliveryThread?.stop();
    await this.http?.close();
    this.metrics.close();
    this.counterStores.stop();
    await this.observer.close();
    await this.store.close();
  }

  /** Re-reads the configuration (SIGHUP, POST /api/reload): see lifecycle/reloader.ts. */
  reload(trigger: ReloadTrigger): Promise<ReloadResult> {
    return this.reloader.reload(trigger);
  }

  get started(): RelayAddresses {
    if (!this.addresses) throw new Error('relay not started');
    return this.addresses;
  }

  /**
   * Everything that a reload replaces, built from one config. Smart hosts whose config did not
   * change are kept (their pools, breakers and quota windows with them).
   */
  private build(config: RelayConfig, running?: Live): Live {
    // Keys are read now: a missing or wrong key stops the start (or the reload) instead of leaving mail unsigned.
    const dkim = loadRouteKeys(config.routes);
    if (dkim.errors.length > 0) throw new Error(`DKIM keys: ${dkim.errors.join('; ')}`);
    const policy = new PolicyEngine({
      policies: config.policies,
      counters: this.policyCounters,
      observer: this.observer,
      log: { info: (message) => this.logger.info(message), warn: (message) => this.logger.warn(message) },
    });
    const { hosts } = reconcileSmartHosts(running?.config.smarthosts ?? [], running?.smarthosts ?? new Map(), config.smarthosts, (host) => this.createSmartHost(host));
    const filters: MessageFilter[] = [policy.filter(), new ReenvelopeFilter({ routes: config.routes, hostname: config.hostname })];
    if ([...dkim.keys.values()].some((keys) => keys.length > 0)) filters.push(new DkimSigningFilter(dkim.keys));
    return new Live(config, new ClientDirectory(config.clients), hosts, policy, filters);
  }

  /** A reload's new generation takes over. */
  private install(next: Live): void {
    this.live = next;
    this.logger.level = next.config.log.level;
    this.metrics.initialise(this.labelNames(next));
  }

  private createSmartHost(config: SmartHostConfig): GuardedSmartHost {
    return new GuardedSmartHost(config, this.transport(config), new SmartHostQuota(config.name, config.rate_limits, this.quotaCounters), this.observer);
  }

  private transport(config: SmartHostConfig): SmartHostTransport {
    // Graph hosts stay on the event loop whatever delivery.worker_thread says (see GraphSmartHost).
    if (config.type === 'graph') return new GraphSmartHost(config);
    if (this.deliveryThread) return this.deliveryThread.transport(config);
    return new NodemailerSmartHost(config, this.heloName);
  }

  private labelNames(live: Live): { listeners: string[]; clients: string[]; smarthosts: string[]; rateLimits: { client: string; limit: string }[] } {
    const { config } = live;
    return {
      listeners: config.listeners.map((l) => l.name),
      clients: config.clients.map((c) => c.name),
      smarthosts: config.smarthosts.map((s) => s.name),
      rateLimits: live.policy.rateLimitLabels(config.clients),
    };
  }
}

function formatAddress(address: AddressInfo): string {
  return address.family === 'IPv6' ? `[${address.address}]:${address.port}` : `${address.address}:${address.port}`;
}
