import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { StateBackend } from '../limits/shared-state-health';
import { EventLoopDelay } from './event-loop-delay';
import type { RelayEvent } from './events';

/** What the smart-host up gauge needs about one host. */
export interface SmartHostGaugeSource {
  name: string;
  up: boolean;
}

export interface DiskSource {
  freeBytes(): Promise<number>;
  minFreeBytes: number;
}

export interface QueueSnapshot {
  ready: number;
  deferred: number;
  held: number;
  dead: number;
  /** ms since epoch of the oldest message still to deliver, or null when the queue is empty. */
  oldestReceivedAt: number | null;
}

/** One configured provider quota limit and what is left of its current window. */
export interface QuotaRemaining {
  smarthost: string;
  /** Canonical window (`1m`, `1d`): a config value, so bounded. */
  window: string;
  unit: 'messages' | 'recipients';
  remaining: number;
}

/** One V8 heap space of the delivery thread (`new_space`, `old_space` …): bytes committed and bytes in use. */
export interface HeapSpace {
  space: string;
  size: number;
  used: number;
}

/**
 * The metrics contract (docs/architecture.md) on a registry of this relay's own (tests run many relays in one
 * process, and prom-client throws on duplicate names in one registry).
 */
export class Metrics {
  readonly registry = new Registry();
  private queueSource: () => QueueSnapshot = () => ({
    ready: 0,
    deferred: 0,
    held: 0,
    dead: 0,
    oldestReceivedAt: null,
  });
  private smarthostSource: () => readonly SmartHostGaugeSource[] = () => [];
  private quotaSource: () => Promise<QuotaRemaining[]> = async () => [];
  private diskSource: DiskSource | null = null;
  private stateSource: () => StateBackend = () => 'memory';
  private deliveryThreadHeapSource: () => Promise<HeapSpace[]> = async () => [];
  private passwordCheckSource: () => { running: number; waiting: number } = () => ({ running: 0, waiting: 0 });
  private pendingConnectionSource: () => { listener: string; pending: number }[] = () => [];

  private readonly connections = new Counter({
    name: 'smarthop_connections_total',
    help: 'SMTP connections by listener and whether they were accepted',
    labelNames: ['listener', 'result'],
    registers: [this.registry],
  });
  private readonly connectionsActive = new Gauge({
    name: 'smarthop_connections_active',
    help: 'Open SMTP connections by listener',
    labelNames: ['listener'],
    registers: [this.registry],
  });
  private readonly authAttempts = new Counter({
    name: 'smarthop_auth_attempts_total',
    help: 'SMTP AUTH attempts by result',
    labelNames: ['result'],
    registers: [this.registry],
  });
  private readonly authDelayed = new Counter({
    name: 'smarthop_auth_delayed_total',
    help:
      'Failed AUTHs answered late, by the budget that slowed them: address (limits.auth_failures) or username ' +
      '(limits.auth_failures_per_username)',
    labelNames: ['scope'],
    registers: [this.registry],
  });
  private readonly received = new Counter({
    name: 'smarthop_messages_received_total',
    help: 'Messages accepted (250 after fsync) by client',
    labelNames: ['client'],
    registers: [this.registry],
  });
  private readonly receivedBytes = new Counter({
    name: 'smarthop_received_bytes_total',
    help: 'Bytes of accepted messages by client',
    labelNames: ['client'],
    registers: [this.registry],
  });
  // Down to half a millisecond: on a local SSD a commit is ~1–2 ms, and a disk that slows shows up here before it
  // fills the queue.
  private readonly commitDuration = new Histogram({
    name: 'smarthop_spool_commit_duration_seconds',
    help:
      "Time from the end of DATA's checks until an accepted message is durable in queue/ " +
      "(last write, fsync, rename, directory fsync; the file's close runs beside them): " +
      'what the 250 waits for on the disk. ' +
      'A commit that fails is a 452, counted in smarthop_messages_rejected_total{reason="storage"}',
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers: [this.registry],
  });
  private readonly rejected = new Counter({
    name: 'smarthop_messages_rejected_total',
    help: 'Rejected SMTP transactions by client and reason',
    labelNames: ['client', 'reason'],
    registers: [this.registry],
  });
  private readonly rateLimited = new Counter({
    name: 'smarthop_rate_limited_total',
    help: 'Refusals by a rate limit or address guard, by client and limit',
    labelNames: ['client', 'limit'],
    registers: [this.registry],
  });
  private readonly normalized = new Counter({
    name: 'smarthop_line_endings_normalized_total',
    help: 'Messages whose bare LF line endings were read as CRLF, by client',
    labelNames: ['client'],
    registers: [this.registry],
  });
  private readonly attempts = new Counter({
    name: 'smarthop_delivery_attempts_total',
    help: 'Delivery attempts to smart hosts by outcome',
    labelNames: ['smarthost', 'outcome'],
    registers: [this.registry],
  });
  private readonly attemptDuration = new Histogram({
    name: 'smarthop_delivery_duration_seconds',
    help: 'Duration of one delivery attempt to a smart host',
    labelNames: ['smarthost'],
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
    registers: [this.registry],
  });
  private readonly failovers = new Counter({
    name: 'smarthop_failovers_total',
    help: 'Deliveries that moved from one smart host to the next',
    labelNames: ['from', 'to'],
    registers: [this.registry],
  });
  private readonly delivered = new Counter({
    name: 'smarthop_messages_delivered_total',
    help: 'Messages a smart host accepted (one per transaction with at least one accepted recipient)',
    labelNames: ['smarthost'],
    registers: [this.registry],
  });
  private readonly bounced = new Counter({
    name: 'smarthop_messages_bounced_total',
    help: 'Recipients that failed permanently, by reason',
    labelNames: ['reason'],
    registers: [this.registry],
  });
  private readonly throttled = new Counter({
    name: 'smarthop_smarthost_throttled_total',
    help: 'Times a smart host asked to be sent nothing for a while (HTTP 429/503 with Retry-After) and was skipped',
    labelNames: ['smarthost'],
    registers: [this.registry],
  });
  private readonly credentialsRefused = new Counter({
    name: 'smarthop_smarthost_credentials_refused_total',
    help: "Times a smart host (or its token endpoint) refused the relay's credentials and was marked down: fix them",
    labelNames: ['smarthost'],
    registers: [this.registry],
  });
  private readonly configReloads = new Counter({
    name: 'smarthop_config_reloads_total',
    help: 'Configuration reloads (SIGHUP, POST /api/reload) by result',
    labelNames: ['result'],
    registers: [this.registry],
  });
  private readonly stateFallbacks = new Counter({
    name: 'smarthop_state_fallbacks_total',
    help:
      'Times Redis (state.store: redis) became unreachable and this relay fell back to local counters ' +
      'at 1/fleet_size of each limit',
    registers: [this.registry],
  });
  private readonly eventsDropped = new Counter({
    name: 'smarthop_events_dropped_total',
    help: 'Outcome events that could not be written to an output (file or webhook) and were dropped',
    labelNames: ['output'],
    registers: [this.registry],
  });

  private readonly eventLoopDelay = new EventLoopDelay();

  constructor() {
    collectDefaultMetrics({ register: this.registry });
    const source = () => this.queueSource();
    new Gauge({
      name: 'smarthop_queue_messages',
      help: 'Messages in the spool by state',
      labelNames: ['state'],
      registers: [this.registry],
      collect() {
        const snapshot = source();
        for (const state of ['ready', 'deferred', 'held', 'dead'] as const) this.set({ state }, snapshot[state]);
      },
    });
    new Gauge({
      name: 'smarthop_queue_oldest_age_seconds',
      help: 'Age of the oldest message waiting for delivery (0 when the queue is empty)',
      registers: [this.registry],
      collect() {
        const oldest = source().oldestReceivedAt;
        this.set(oldest === null ? 0 : Math.max(0, (Date.now() - oldest) / 1000));
      },
    });
    const hosts = () => this.smarthostSource();
    // reset() first: a smart host removed by a reload must not linger with its last value.
    new Gauge({
      name: 'smarthop_smarthost_up',
      help: '1 while the smart host circuit breaker is closed, 0 while it is open (skipped) or waiting for its probe',
      labelNames: ['smarthost'],
      registers: [this.registry],
      collect() {
        this.reset();
        for (const host of hosts()) this.set({ smarthost: host.name }, host.up ? 1 : 0);
      },
    });
    const quotas = () => this.quotaSource();
    new Gauge({
      name: 'smarthop_smarthost_quota_remaining',
      help: 'What is left of each smart host rate_limits window (unit: messages or recipients)',
      labelNames: ['smarthost', 'window', 'unit'],
      registers: [this.registry],
      async collect() {
        for (const sample of await quotas())
          this.set({ smarthost: sample.smarthost, window: sample.window, unit: sample.unit }, sample.remaining);
      },
    });
    const state = () => this.stateSource();
    new Gauge({
      name: 'smarthop_state_backend',
      help:
        'Where rate-limit, quota and lockout counters live now: 1 for the backend in use ' +
        '(memory, redis, or local_fallback while Redis is unreachable)',
      labelNames: ['backend'],
      registers: [this.registry],
      collect() {
        const current = state();
        for (const backend of ['memory', 'redis', 'local_fallback'] as const)
          this.set({ backend }, backend === current ? 1 : 0);
      },
    });
    // The names and labels of prom-client's nodejs_heap_space_size_*_bytes{space}, which cover only the
    // event loop's heap; reset() first, so a thread that stopped answering shows no stale figures.
    // One query to the thread per scrape: both gauges collect at once and share its answer, so
    // size and used are of the same moment.
    let heapQuery: Promise<HeapSpace[]> | null = null;
    const threadHeap = () =>
      (heapQuery ??= this.deliveryThreadHeapSource().finally(() => {
        heapQuery = null;
      }));
    new Gauge({
      name: 'smarthop_delivery_thread_heap_space_size_total_bytes',
      help: 'Committed size of each V8 heap space of the delivery thread (delivery.worker_thread)',
      labelNames: ['space'],
      registers: [this.registry],
      async collect() {
        this.reset();
        for (const space of await threadHeap()) this.set({ space: heapSpaceLabel(space.space) }, space.size);
      },
    });
    new Gauge({
      name: 'smarthop_delivery_thread_heap_space_size_used_bytes',
      help: 'Bytes in use in each V8 heap space of the delivery thread (delivery.worker_thread)',
      labelNames: ['space'],
      registers: [this.registry],
      async collect() {
        this.reset();
        for (const space of await threadHeap()) this.set({ space: heapSpaceLabel(space.space) }, space.used);
      },
    });
    const passwordChecks = () => this.passwordCheckSource();
    new Gauge({
      name: 'smarthop_password_checks',
      help:
        'AUTH password checks (scrypt) running and waiting for their place now, relay-wide ' +
        '(limits.password_checks)',
      labelNames: ['state'],
      registers: [this.registry],
      collect() {
        const now = passwordChecks();
        this.set({ state: 'running' }, now.running);
        this.set({ state: 'waiting' }, now.waiting);
      },
    });
    const pendingConnections = () => this.pendingConnectionSource();
    new Gauge({
      name: 'smarthop_connections_pending',
      help:
        'Connections accepted and not yet in their SMTP session (TLS handshake of an implicit-TLS listener, ' +
        'PROXY header), by listener',
      labelNames: ['listener'],
      registers: [this.registry],
      collect() {
        for (const { listener, pending } of pendingConnections()) this.set({ listener }, pending);
      },
    });
    const disk = () => this.diskSource;
    new Gauge({
      name: 'smarthop_spool_free_bytes',
      help: 'Free bytes on the file system of the spool (available to the relay user)',
      registers: [this.registry],
      async collect() {
        const source = disk();
        if (source) this.set(await source.freeBytes().catch(() => Number.NaN));
      },
    });
    new Gauge({
      name: 'smarthop_spool_min_free_bytes',
      help: 'spool.min_free_disk: below this much free space the relay answers 452 4.3.1',
      registers: [this.registry],
      collect() {
        const source = disk();
        if (source) this.set(source.minFreeBytes);
      },
    });
  }

  /** What /metrics answers: the registry's families and the event loop delay histogram (see event-loop-delay.ts). */
  async exposition(): Promise<string> {
    return `${await this.registry.metrics()}\n${this.eventLoopDelay.exposition()}`;
  }

  /** Stops what samples in the background (the event loop delay monitor). */
  close(): void {
    this.eventLoopDelay.close();
  }

  bindDisk(source: DiskSource): void {
    this.diskSource = source;
  }

  /** An output could not keep up (bounded queue full) or gave up retrying. */
  eventsDroppedBy(output: 'file' | 'webhook', count = 1): void {
    this.eventsDropped.inc({ output }, count);
  }

  bindDeliveryThreadHeap(source: () => Promise<HeapSpace[]>): void {
    this.deliveryThreadHeapSource = source;
  }

  bindPendingConnections(source: () => { listener: string; pending: number }[]): void {
    this.pendingConnectionSource = source;
  }

  bindPasswordChecks(source: () => { running: number; waiting: number }): void {
    this.passwordCheckSource = source;
  }

  bindStateBackend(source: () => StateBackend): void {
    this.stateSource = source;
  }

  bindQueue(source: () => QueueSnapshot): void {
    this.queueSource = source;
  }

  bindSmartHosts(source: () => readonly SmartHostGaugeSource[]): void {
    this.smarthostSource = source;
  }

  bindQuotas(source: () => Promise<QuotaRemaining[]>): void {
    this.quotaSource = source;
  }

  /**
   * Makes every configured name visible at 0 before its first event, so rate() and alerts work from
   * the start. Called again after a reload for names it added; existing values are kept.
   */
  initialise(names: {
    listeners: string[];
    clients: string[];
    smarthosts: string[];
    rateLimits?: { client: string; limit: string }[];
  }): void {
    for (const labels of names.rateLimits ?? []) this.rateLimited.inc(labels, 0);
    for (const listener of names.listeners) this.connectionsActive.inc({ listener }, 0);
    for (const result of ['success', 'failure']) this.configReloads.inc({ result }, 0);
    for (const result of ['success', 'failure']) this.authAttempts.inc({ result }, 0);
    for (const scope of ['address', 'username']) this.authDelayed.inc({ scope }, 0);
    for (const output of ['file', 'webhook']) this.eventsDropped.inc({ output }, 0);
    this.stateFallbacks.inc(0);
    for (const client of names.clients) {
      this.received.inc({ client }, 0);
      this.receivedBytes.inc({ client }, 0);
    }
    for (const smarthost of names.smarthosts) {
      this.delivered.inc({ smarthost }, 0);
      this.throttled.inc({ smarthost }, 0);
      this.credentialsRefused.inc({ smarthost }, 0);
    }
    for (const reason of ['rejected', 'expired']) this.bounced.inc({ reason }, 0);
  }

  record(event: RelayEvent): void {
    switch (event.type) {
      case 'connection':
        this.connections.inc({ listener: event.listener, result: event.result });
        if (event.result === 'accepted') this.connectionsActive.inc({ listener: event.listener });
        return;
      case 'connection_closed':
        this.connectionsActive.dec({ listener: event.listener });
        return;
      case 'auth':
        this.authAttempts.inc({ result: event.result });
        return;
      case 'auth_delayed':
        this.authDelayed.inc({ scope: event.scope });
        return;
      case 'received':
        this.received.inc({ client: event.client });
        this.receivedBytes.inc({ client: event.client }, event.size);
        this.commitDuration.observe(event.commitMs / 1000);
        return;
      case 'rejected':
        this.rejected.inc({ client: event.client, reason: event.reason });
        return;
      case 'line_endings_normalized':
        this.normalized.inc({ client: event.client });
        return;
      case 'rate_limited':
        this.rateLimited.inc({ client: event.client, limit: event.limit });
        return;
      case 'attempt':
        this.attempts.inc({ smarthost: event.smarthost, outcome: event.outcome });
        this.attemptDuration.observe({ smarthost: event.smarthost }, event.durationMs / 1000);
        if (event.accepted > 0) this.delivered.inc({ smarthost: event.smarthost });
        return;
      case 'failover':
        this.failovers.inc({ from: event.from, to: event.to });
        return;
      case 'config_reload':
        this.configReloads.inc({ result: event.result });
        return;
      case 'state_backend':
        if (event.backend === 'local_fallback') this.stateFallbacks.inc();
        return;
      case 'bounced':
        this.bounced.inc({ reason: 'rejected' });
        return;
      case 'expired':
        this.bounced.inc({ reason: 'expired' });
        return;
      case 'throttled':
        this.throttled.inc({ smarthost: event.smarthost });
        return;
      case 'credentials_refused':
        this.credentialsRefused.inc({ smarthost: event.smarthost });
        return;
      case 'delivered':
      case 'deferred':
      case 'breaker':
      case 'dsn':
        return;
    }
  }
}

/** `new_space` → `new`, as prom-client labels the event loop's spaces. */
function heapSpaceLabel(v8Name: string): string {
  return v8Name.replace(/_space$/, '');
}
