import * as ipaddr from 'ipaddr.js';
import { LRUCache } from 'lru-cache';
import type { LimitsConfig } from '../config/schema';
import type { Refusal } from '../ingress/filters';
import type { ConnectionGuard } from '../ingress/ports';
import type { WindowCounters, WindowLimit } from '../limits/window-counters';
import type { Observer } from '../observe/events';
import { formatWindow, limitWording, rateLimitLabel, retryAfterSeconds } from './rate-limits';

/**
 * Guards per source address, before anyone is identified: concurrent connections, new
 * connections per window, and the AUTH brute-force lockout. Window state goes through
 * WindowCounters (bounded, a shared store can implement it); open connections are a plain map
 * because each entry is a live socket, so it can never outgrow the listeners' max_clients.
 */

export interface AddressGuardDeps {
  limits: LimitsConfig;
  /** Per-address counters: their own instance, so a flood of addresses only evicts other addresses. */
  counters: WindowCounters;
  observer: Observer;
  now?: () => number;
}

/**
 * The key an address is counted under: IPv4 as is (IPv4-mapped IPv6 too), IPv6 by its prefix,
 * since one host is routinely handed a whole /64 and could otherwise rotate through it forever.
 */
export function addressKey(remoteAddress: string, ipv6Prefix: number): string {
  let address: ipaddr.IPv4 | ipaddr.IPv6;
  try {
    address = ipaddr.process(remoteAddress.replace(/%.*$/, ''));
  } catch {
    return remoteAddress;
  }
  if (address.kind() === 'ipv4') return address.toString();
  const bytes = address.toByteArray();
  for (let bit = ipv6Prefix; bit < 128; bit++) bytes[bit >> 3] &= ~(0x80 >> (bit & 7));
  return `${ipaddr.fromByteArray(bytes).toString()}/${ipv6Prefix}`;
}

export class AddressGuard implements ConnectionGuard {
  private readonly open = new Map<string, number>();
  private readonly now: () => number;
  private readonly rate: { limits: WindowLimit[]; label: string } | null;
  private readonly failures: WindowLimit[];
  private readonly lockout: WindowLimit[];
  /**
   * Lockouts this relay set, address key -> when they end, kept beside the counters. With shared
   * (Redis) counters a lockout lives in Redis, and the local counters a relay falls back to while
   * Redis is unreachable start empty: an address this relay had just locked out would get a fresh
   * round of guesses from the outage on. A lockout another relay of the fleet set is still seen only
   * through Redis. Bounded like the counters.
   */
  private readonly lockedHere: LRUCache<string, number>;

  constructor(private readonly deps: AddressGuardDeps) {
    this.now = deps.now ?? Date.now;
    // A count bound, not `max` (which allocates for every entry up front: see MemoryWindowCounters).
    this.lockedHere = new LRUCache<string, number>({ maxSize: Math.max(1, deps.limits.max_tracked_addresses), sizeCalculation: () => 1 });
    const { connection_rate: rate, auth_failures: auth } = deps.limits;
    this.rate = rate ? { limits: [{ windowMs: rate.window, max: rate.max }], label: rateLimitLabel('connections', rate.window) } : null;
    this.failures = [{ windowMs: auth.window, max: auth.max }];
    // A lockout is a window of one that the failure which reaches the limit fills.
    this.lockout = [{ windowMs: auth.lockout, max: 1 }];
  }

  async connect(remoteAddress: string, client: string, networkClient: boolean): Promise<Refusal | undefined> {
    const key = this.key(remoteAddress);
    // A locked-out address hears why first, whatever else it is over. A network client is the
    // exception: its own mail needs no AUTH, and one misconfigured app sharing its host must not
    // stop it; its AUTH attempts are still refused until the lockout ends (authAllowed).
    const locked = networkClient ? undefined : await this.locked(key, remoteAddress, client);
    if (locked) return locked;
    const max = this.deps.limits.connections_per_address;
    const open = this.open.get(key) ?? 0;
    if (max !== undefined && open >= max) {
      return this.refuse(client, 'connections_concurrent', `4.7.0 Too many connections from [${remoteAddress}] (at most ${max} at once); try again later`);
    }
    // Check and take in one synchronous step, so two connections arriving together cannot both pass.
    this.open.set(key, open + 1);
    const refusal = await this.consumeRate(key, remoteAddress, client);
    if (refusal) this.disconnect(remoteAddress);
    return refusal;
  }

  disconnect(remoteAddress: string): void {
    const key = this.key(remoteAddress);
    const open = (this.open.get(key) ?? 0) - 1;
    if (open > 0) this.open.set(key, open);
    else this.open.delete(key);
  }

  async authAllowed(remoteAddress: string, client: string): Promise<Refusal | undefined> {
    return this.locked(this.key(remoteAddress), remoteAddress, client);
  }

  async authFailed(remoteAddress: string, client: string): Promise<{ refusal?: Refusal; delayMs: number }> {
    const key = this.key(remoteAddress);
    const now = this.now();
    const counted = await this.deps.counters.consume(`authfail\u0000${key}`, this.failures, 1, now);
    const [left] = await this.deps.counters.remaining(`authfail\u0000${key}`, this.failures, now);
    if (!counted.ok || left === 0) {
      this.lockedHere.set(key, now + this.deps.limits.auth_failures.lockout);
      await this.deps.counters.consume(`lock\u0000${key}`, this.lockout, 1, now);
      const seconds = retryAfterSeconds(this.deps.limits.auth_failures.lockout);
      return { refusal: this.refuse(client, 'auth_lockout', `4.7.0 Too many failed authentications from [${remoteAddress}]; try again in ${seconds}s`), delayMs: 0 };
    }
    // The first failure is a typo; from the second on, each answer is held back.
    const failures = this.deps.limits.auth_failures.max - left;
    return { delayMs: failures > 1 ? this.deps.limits.auth_failures.delay : 0 };
  }

  private key(remoteAddress: string): string {
    return addressKey(remoteAddress, this.deps.limits.ipv6_prefix);
  }

  private async locked(key: string, remoteAddress: string, client: string): Promise<Refusal | undefined> {
    const now = this.now();
    let retryAfterMs = this.ownLockout(key, now);
    if (retryAfterMs === undefined) {
      const lock = await this.deps.counters.peek(`lock\u0000${key}`, this.lockout, 1, now);
      if (lock.ok) return undefined;
      retryAfterMs = lock.retryAfterMs;
    }
    return this.refuse(client, 'auth_lockout', `4.7.0 Too many failed authentications from [${remoteAddress}]; try again in ${retryAfterSeconds(retryAfterMs)}s`);
  }

  /** Milliseconds left of a lockout this relay set on the address, or undefined when there is none. */
  private ownLockout(key: string, now: number): number | undefined {
    const until = this.lockedHere.get(key);
    if (until === undefined) return undefined;
    if (until > now) return until - now;
    this.lockedHere.delete(key);
    return undefined;
  }

  private async consumeRate(key: string, remoteAddress: string, client: string): Promise<Refusal | undefined> {
    if (!this.rate) return undefined;
    const result = await this.deps.counters.consume(`conn\u0000${key}`, this.rate.limits, 1, this.now());
    if (result.ok) return undefined;
    const { max, windowMs } = this.rate.limits[0];
    return this.refuse(client, this.rate.label, `4.7.0 Connection rate limit for [${remoteAddress}]: ${limitWording(`${max} connections per ${formatWindow(windowMs)}`, result.share)}; try again in ${retryAfterSeconds(result.retryAfterMs)}s`);
  }

  private refuse(client: string, limit: string, message: string): Refusal {
    this.deps.observer.emit({ type: 'rate_limited', client, limit });
    return { code: 421, message, reason: 'rate_limited' };
  }
}
