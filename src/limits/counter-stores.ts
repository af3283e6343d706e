import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { StateConfig } from '../config/schema';
import { FallbackWindowCounters } from './fallback-counters';
import { createRedisClient, redisLocation } from './redis-client';
import { RedisWindowCounters } from './redis-window-counters';
import { SharedStateHealth, type StateBackend } from './shared-state-health';
import { MemoryWindowCounters, type WindowCounters } from './window-counters';

/** Which kind of counter a store holds; each gets its own Redis namespace and its own bounded memory. */
export type CounterNamespace = 'policy' | 'quota' | 'address' | 'username' | 'known';

/** A switch between Redis and the local fallback (`state_backend` event), with where Redis is. */
export interface BackendChange {
  backend: 'redis' | 'local_fallback';
  location: string;
  fleetSize: number;
  detail: string;
}

export interface CounterStoresDeps {
  onBackendChange: (change: BackendChange) => void;
  log: Pick<Logger, 'debug' | 'info'>;
}

/** With `state.store: redis`: the one connection every fleet-wide counter shares, and its health. */
interface SharedState {
  redis: Redis;
  health: SharedStateHealth;
  location: string;
  fleetSize: number;
  keyPrefix: string;
}

/**
 * Where the relay's window counters live (`state:`): in memory, or in Redis with this relay's memory
 * as the fallback while Redis cannot be reached. One Redis connection serves every counter; its
 * events drive the switch to the fallback (connection lost) and back (ready and a PING answered).
 */
export class CounterStores {
  private readonly shared: SharedState | null;

  constructor(
    state: StateConfig,
    private readonly deps: CounterStoresDeps,
  ) {
    this.shared =
      state.store === 'redis' && state.redis && state.fleet_size !== undefined
        ? connect(state.redis, state.fleet_size, deps)
        : null;
  }

  /**
   * A bounded store for one kind of counter: memory, or Redis under `state.redis.key_prefix` +
   * `namespace` with a local fallback.
   */
  counters(namespace: CounterNamespace, maxKeys: number): WindowCounters {
    const local = new MemoryWindowCounters(maxKeys);
    const shared = this.shared;
    if (!shared) return local;
    const remote = new RedisWindowCounters(shared.redis, `${shared.keyPrefix}${namespace}:`);
    return new FallbackWindowCounters(remote, local, shared.health, shared.fleetSize);
  }

  /** The store in use right now (`smarthop_state_backend`). */
  get backend(): StateBackend {
    return this.shared ? this.shared.health.backend : 'memory';
  }

  /** Connects to Redis; a Redis that is down at start is an outage like any other: the relay starts on the fallback. */
  async start(): Promise<void> {
    if (!this.shared) return;
    const { redis, health, location, fleetSize } = this.shared;
    await redis.connect().catch(() => undefined);
    await health.start();
    if (!health.usingShared()) return;
    const fleet = `fleet of ${fleetSize}`;
    this.deps.log.info(`state: rate limits, quotas and lockouts shared through Redis at ${location} (${fleet})`);
  }

  stop(): void {
    this.shared?.health.stop();
    this.shared?.redis.disconnect();
  }
}

function connect(config: NonNullable<StateConfig['redis']>, fleetSize: number, deps: CounterStoresDeps): SharedState {
  const redis = createRedisClient(config);
  const location = redisLocation(config.url);
  const health = new SharedStateHealth({
    probe: () => redis.ping(),
    probeIntervalMs: 1_000,
    onChange: (backend, detail) => deps.onBackendChange({ backend, location, fleetSize, detail }),
  });
  let lastError = '';
  // Every reconnect attempt fails with an error while Redis is down; the transition is what is logged.
  redis.on('error', (err: Error) => {
    lastError = err.message;
    deps.log.debug({ err }, `state: Redis at ${location}: ${err.message}`);
  });
  redis.on('close', () => {
    health.failed(new Error(lastError ? `connection closed: ${lastError}` : 'connection closed'));
  });
  redis.on('ready', () => {
    lastError = '';
    void health.probeNow();
  });
  return { redis, health, location, fleetSize, keyPrefix: config.key_prefix };
}
