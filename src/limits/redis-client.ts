import { Redis } from 'ioredis';
import type { StateConfig } from '../config/schema';

export type RedisStateConfig = NonNullable<StateConfig['redis']>;

/**
 * The ioredis connection behind fleet-wide counters. Every option serves the fallback: calls must
 * fail fast while Redis is away (no offline queue, no retried requests, short command timeout) so
 * that the local counters answer instead of SMTP sessions waiting, while the connection itself keeps
 * reconnecting in the background, forever, so the relay returns to Redis on its own.
 */
export function createRedisClient(config: RedisStateConfig): Redis {
  return new Redis(config.url, {
    lazyConnect: true,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    commandTimeout: config.command_timeout,
    connectTimeout: config.connect_timeout,
    retryStrategy: (attempt) => Math.min(100 * attempt, 2_000),
    // On stop ioredis ends the socket and destroys it after this if it is still open. Its timer is
    // cleared by the socket's close, which never comes again for a socket that had already failed
    // (Redis unreachable), so the default 2 s kept a stopped relay's process alive that long. At stop
    // nothing is left to say to Redis: the counters are shared estimates, not state.
    disconnectTimeout: 200,
  });
}

/** `host:port/db` of a Redis URL, without its credentials: the form that may appear in logs. */
export function redisLocation(url: string): string {
  const parsed = new URL(url);
  const db = parsed.pathname.replace(/^\//, '');
  return `${parsed.protocol === 'rediss:' ? 'rediss://' : ''}${parsed.hostname}:${parsed.port || '6379'}${db ? `/${db}` : ''}`;
}
