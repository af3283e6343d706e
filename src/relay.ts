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
import { routeGate } from './forward/route-gate';
import { SmartHostQuota } from './forward/quota';
import { DeliveryThread } from './forward/delivery-thread';
import { NodemailerSmartHost, type SmartHostTransport } from './forward/smarthost';
import { ClientDirectory } from './ingress/clients';
import type { MessageFilter } from './ingress/filters';
import { IngressSessions } from './ingress/session';
import { SmtpListener } from './ingress/smtp-listener';
import { SMTP_SERVER } from './ingress/smtp-server-adapter';
import { reconcileSmartHosts, type ReloadResult } from './lifecycle/reload';
import { Reloader, type Generation, type ReloadTrigger } from './lifecycle/reloader';
import { CounterStores } from './limits/counter-stores';
import type { WindowCounters } from './limits/window-counters';
import { NODEMAILER } from './nodemailer-adapter';
import { ClientActivity } from './observe/activity';
import { HostCheck } from './observe/host-check';
import { HttpEndpoints } from './observe/http';
import { createLogger, type Logger } from './observe/logger';
import { Metrics } from './observe/metrics';
import { RelayObserver } from './observe/observer';
import { RecentEvents } from './observe/recent-events';
import { buildEventOutputs } from './observe/outputs';
import { AddressGuard } from './policy/address-guard';
import { PolicyEngine } from './policy/engine';
import { loadRouteKeys } from './forward/reenvelope/dkim-keys';
import { DkimSigningFilter } from './forward/reenvelope/dkim-signer';
import { ReenvelopeFilter } from './forward/reenvelope/filter';
import { checkPinnedVersion } from './pinned-library';
import { FreeSpaceGuard } from './spool/free-space';
import { SpoolLock } from './spool/lock';
import { QueueAdmin } from './spool/queue-admin';
import { QueueScanner } from './spool/queue-scan';
import { recoverSpool } from './spool/recovery';
import { Scheduler } from './spool/scheduler';
import { SpoolStore } from './spool/store';
import { replayRecent } from './trace/replay';
import { TraceService } from './trace/service';
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
  /** The last events, for the status page. */
  private readonly recentEvents = new RecentEvents();
  private readonly scheduler: Scheduler;
  /** Brings queued messages that wait on disk back into the scheduler's window. */
  private readonly backlog: QueueScanner;
  private readonly dispatcher: Dispatcher;
  private readonly queue: QueueAdmin;
  /** One spool, one relay: held from the start until the relay has stopped. */
  private lock: SpoolLock | null = null;
  /** Recovery of the queue after the start, in the background; done once `recovered` is set. */
  private recovery: {
    running: Promise<void>;
    checked: number;
    stop: boolean;
    recovered: boolean;
    failed: string | null;
  } | null = null;
  private readonly listeners: SmtpListener[];
  private readonly http: HttpEndpoints | null;
  /** Message trace over `events.file` (none without one). */
  private readonly trace: TraceService | null;
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
  private readonly startedAt = Date.now();
  private stopping = false;
  private replaying: Promise<void> = Promise.resolve();

  constructor(config: RelayConfig, options: RelayOptions = {}) {
    // The libraries used below their public API must be the versions their adapters were written for.
    for (const library of [NODEMAILER, SMTP_SERVER]) checkPinnedVersion(library);
    this.logger = options.logger ?? createLogger(config.log.level);
    this.heloName = config.hostname;
    this.deliveryThread = config.delivery.worker_thread ? new DeliveryThread(config.hostname, this.logger) : null;
    const files = buildEventOutputs(config.events, { metrics: this.metrics, logger: this.logger });
    this.observer = new RelayObserver({
      metrics: this.metrics,
      logger: this.logger,
      outputs: files,
      recent: this.recentEvents,
      activity: this.activity,
    });
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
      store: this.store,
      current,
      observer: this.observer,
      bouncer: new Bouncer({ store: this.store, hostname: config.hostname, copyTo: config.bounce_copy_to }),
      onGenerated: (meta) => this.scheduler.enqueue(meta, meta.nextAttemptAt),
      onOutcomeUnwritable: (id, err, retryInMs) => {
        const reason = err instanceof Error ? err.message : String(err);
        const seconds = Math.round(retryInMs / 1000);
        const line =
          `${id}: the spool cannot take the outcome of its delivery attempt (${reason}); it delivered to ` +
          `some recipients, so the attempt writes it again in ${seconds}s and does not end before`;
        this.logger.error({ err, queue_id: id }, line);
      },
    });
    this.dispatcher = dispatcher;
    this.scheduler = new Scheduler({
      attempt: (id) => dispatcher.attempt(id),
      concurrency: config.delivery.concurrency,
      onAttemptError: (id, err) => {
        this.logger.error(
          { err, queue_id: id },
          `${id}: delivery attempt failed unexpectedly, will retry: ${(err as Error).message}`,
        );
        return this.live.config.spool.retry.initial;
      },
      gate: routeGate(current),
      window: config.delivery.queue_window,
      queued: () => this.store.queuedCount,
      lifetimeMs: () => this.live.config.spool.max_queue_lifetime,
    });
    this.backlog = new QueueScanner({
      store: this.store,
      scheduler: this.scheduler,
      onUnreadable: (id, err) =>
        this.logger.warn(
          { queue_id: id },
          `${id}: queue scan cannot read its metadata (left for recovery at the next start): ${err.message}`,
        ),
    });
    this.scheduler.attachBacklog(this.backlog);
    const inline = new InlineDelivery({
      attempt: (id, claim) => dispatcher.attempt(id, claim),
      scheduler: this.scheduler,
    });
    this.queue = new QueueAdmin({
      store: this.store,
      scheduler: this.scheduler,
      recovering: () => !this.recovery?.recovered,
      probeSmartHosts: () => {
        const now = Date.now();
        for (const host of this.live.smarthosts.values()) host.probeNow(now);
        this.scheduler.routesChanged();
      },
      log: (id, line) => this.logger.info({ event: 'admin', queue_id: id || undefined }, line),
    });

    const guard = new AddressGuard({
      limits: config.limits,
      // Up to four windows per address: two connection rates, AUTH failures, lockout.
      counters: this.counterStores.counters('address', config.limits.max_tracked_addresses * 4),
      // Failures per username.
      usernameCounters: this.counterStores.counters('username', config.limits.max_tracked_addresses),
      // The addresses each username authenticated from: only successful AUTHs write here.
      knownCounters: this.counterStores.counters('known', config.limits.max_tracked_addresses),
      observer: this.observer,
    });
    this.metrics.bindPasswordChecks(() => guard.passwordChecks);
    const sessions = new IngressSessions({
      current,
      guard,
      store: this.store,
      freeSpace: new FreeSpaceGuard(() => this.store.freeBytes(), config.spool.min_free_disk),
      observer: this.observer,
      // Both take the message into the scheduler before returning, as the session needs (IngressDeps).
      onQueued: async (meta, listener) => {
        if (listener.delivery === 'inline') return inline.deliver(meta, listener.inline_timeout);
        this.scheduler.enqueue(meta, meta.nextAttemptAt);
        return { ok: true };
      },
    });
    this.listeners = config.listeners.map(
      (listener) => new SmtpListener({ listener, config, sessions, logger: this.logger }),
    );
    this.metrics.bindPendingConnections(() =>
      this.listeners.map((one) => ({
        listener: one.name,
        pending: one.pendingConnections,
      })),
    );
    const eventsFile = config.events?.file;
    const indexTrouble = (err: Error) => this.logger.warn({ err }, `trace index of ${eventsFile}: ${err.message}`);
    this.trace = eventsFile === undefined ? null : new TraceService(eventsFile, indexTrouble);
    const trace = this.trace;
    this.state = new RelayState({
      hostname: () => this.live.config.hostname,
      version: VERSION,
      startedAt: this.startedAt,
      schedule: () => this.scheduler.snapshot(),
      spool: this.store,
      smarthosts: () => this.live.smarthosts.values(),
      topClients: (limit, now) => this.activity.top(limit, now),
      lastReload: () => this.reloader.last,
      accepting: () => !this.stopping,
      recovery: () => this.recovery,
    });
    const api = new AdminApi({
      queue: this.queue,
      status: () => this.state.status(),
      smarthosts: () => this.state.smarthosts(),
      reload: () => this.reload('api'),
      recentEvents: () => this.recentEvents.list(),
      trace: trace && ((query) => trace.query(query)),
      token: () => this.live.config.http?.token,
    });
    const http = config.http;
    const hostCheck = http ? new HostCheck(http.address.host, http.allowed_hosts) : null;
    this.http = http ? new HttpEndpoints(this.metrics, { ready: () => this.state.readiness() }, api, hostCheck) : null;

    this.metrics.bindQueue(() => {
      const snapshot = this.scheduler.snapshot();
      return {
        ready: snapshot.ready,
        deferred: snapshot.deferred,
        held: this.store.heldCount,
        dead: this.store.deadCount,
        oldestReceivedAt: snapshot.oldestReceivedAt,
      };
    });
    this.metrics.bindSmartHosts(() =>
      [...this.live.smarthosts.values()].map((host) => ({ name: host.name, up: host.up() })),
    );
    this.metrics.bindQuotas(async () => {
      const now = Date.now();
      const samples = await Promise.all(
        [...this.live.smarthosts.values()].map(async (host) =>
          (await host.quotaRemaining(now)).map((sample) => ({ smarthost: host.name, ...sample })),
        ),
      );
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

  /**
   * The spool's lock first (a second relay on the same spool stops here, before touching anything),
   * then the listeners; recovery of the queue (the normal path, not a special one) runs in the
   * background while new mail is taken and delivered, and /readyz says when it is done.
   */
  async start(): Promise<RelayAddresses> {
    const { config } = this.live;
    const startedAt = Date.now();
    this.lock = await SpoolLock.acquire(config.spool.dir, 'relay');
    try {
      return await this.startHoldingLock(startedAt);
    } catch (err) {
      await this.lock.release();
      this.lock = null;
      throw err;
    }
  }

  private async startHoldingLock(startedAt: number): Promise<RelayAddresses> {
    const { config } = this.live;
    this.store.open();
    this.deliveryThread?.start();
    await this.live.start();
    await this.counterStores.start();

    const listeners: Record<string, AddressInfo> = {};
    for (const [i, listener] of this.listeners.entries()) {
      const address = await listener.listen();
      listeners[config.listeners[i].name] = address;
      this.logger.info(
        `listener ${config.listeners[i].name} on ${formatAddress(address)} ` +
          `(tls ${config.listeners[i].tls}, auth ${config.listeners[i].auth})`,
      );
    }
    const http =
      this.http && config.http ? await this.http.listen(config.http.address.host, config.http.address.port) : null;
    if (http)
      this.logger.info(
        `http endpoints (/metrics, /healthz, /readyz, /api/) on ${formatAddress(http)}` +
          (config.http?.token ? ' (admin API needs the bearer token)' : ''),
      );
    this.addresses = { listeners, http };
    this.startRecovery(startedAt);
    this.trace?.start();
    this.replayEvents();
    return this.addresses;
  }

  private startRecovery(startedAt: number): void {
    const { dir } = this.live.config.spool;
    const state = {
      running: Promise.resolve(),
      checked: 0,
      stop: false,
      recovered: false,
      failed: null as string | null,
    };
    this.recovery = state;
    const began = Date.now();
    state.running = recoverSpool({
      store: this.store,
      startedAt,
      found: (meta, stateFile) => {
        // Into the window if it fits, else counted as waiting on disk for the backlog's passes.
        if (this.scheduler.load(meta, meta.nextAttemptAt, { onDisk: false }))
          this.store.rememberForDelivery(meta, stateFile);
        else this.scheduler.enqueue(meta, meta.nextAttemptAt);
      },
      onProblem: (id, problem) => this.logger.warn({ queue_id: id }, `${id}: recovery: ${problem}`),
      onProgress: (checked) => (state.checked = checked),
      stopped: () => state.stop,
    }).then(
      (result) => {
        if (state.stop) return;
        state.recovered = true;
        this.backlog.start();
        this.logger.info(
          `recovered ${result.queued} queued message(s) from ${dir} in ${((Date.now() - began) / 1000).toFixed(1)}s`,
        );
        if (result.held > 0)
          this.logger.info(`${result.held} message(s) on hold in ${dir} (release with smarthop queue release)`);
      },
      (err: Error) => {
        state.failed = err.message;
        this.logger.error(
          { err },
          `queue recovery failed: ${err.message} ` +
            '(queued mail stays on disk; restart the relay once the cause is fixed)',
        );
      },
    );
  }

  /**
   * Top clients of the last hour and the status page's last events outlive a restart: they are
   * read back from the events file in the background, while new mail is counted as it comes.
   */
  private replayEvents(): void {
    const file = this.live.config.events?.file;
    if (file === undefined) return;
    const before = this.startedAt;
    this.replaying = replayRecent(
      file,
      { since: Date.now() - 3_600_000, before, keep: this.recentEvents.capacity },
      {
        received: (client, recipients, at) => this.activity.record(client, recipients, at, Date.now()),
        recent: (events) => this.recentEvents.prepend(events.map((event) => ({ ...event }))),
      },
    ).catch((err: Error) => {
      const why = `could not read back the last hour (${err.message}); top clients count from now`;
      this.logger.warn({ err }, `events file ${file}: ${why}`);
    });
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
    if (this.recovery) {
      this.recovery.stop = true;
      await this.recovery.running;
    }
    this.backlog.stop();
    // An attempt waiting for the disk to take its outcome gives up instead of holding the stop.
    this.dispatcher.stop();
    await this.scheduler.stop();
    await reloads;
    await this.live.policy.stop();
    for (const host of this.live.smarthosts.values()) host.close();
    await this.deliveryThread?.stop();
    await this.http?.close();
    await this.trace?.stop();
    await this.replaying;
    this.metrics.close();
    this.counterStores.stop();
    await this.observer.close();
    await this.store.close();
    await this.lock?.release();
    this.lock = null;
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
    const { hosts } = reconcileSmartHosts(
      running?.config.smarthosts ?? [],
      running?.smarthosts ?? new Map(),
      config.smarthosts,
      (host) => this.createSmartHost(host),
    );
    const filters: MessageFilter[] = [
      policy.filter(),
      new ReenvelopeFilter({ routes: config.routes, hostname: config.hostname }),
    ];
    if ([...dkim.keys.values()].some((keys) => keys.length > 0)) filters.push(new DkimSigningFilter(dkim.keys));
    return new Live(config, new ClientDirectory(config.clients), hosts, policy, filters);
  }

  /** A reload's new generation takes over. */
  private install(next: Live): void {
    this.live = next;
    this.logger.level = next.config.log.level;
    this.metrics.initialise(this.labelNames(next));
    // New or changed smart hosts may take deliveries that had to wait.
    this.scheduler.routesChanged();
  }

  private createSmartHost(config: SmartHostConfig): GuardedSmartHost {
    return new GuardedSmartHost(
      config,
      this.transport(config),
      new SmartHostQuota(config.name, config.rate_limits, this.quotaCounters),
      this.observer,
    );
  }

  private transport(config: SmartHostConfig): SmartHostTransport {
    // Graph hosts stay on the event loop whatever delivery.worker_thread says (see GraphSmartHost).
    if (config.type === 'graph') return new GraphSmartHost(config);
    if (this.deliveryThread) return this.deliveryThread.transport(config);
    return new NodemailerSmartHost(config, this.heloName);
  }

  private labelNames(live: Live): {
    listeners: string[];
    clients: string[];
    smarthosts: string[];
    rateLimits: { client: string; limit: string }[];
  } {
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
