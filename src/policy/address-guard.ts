import type { LimitsConfig } from '../config/schema';
import type { Refusal } from '../ingress/filters';
import type { AuthAttempt, AuthOutcome, ConnectionGuard } from '../ingress/ports';
import type { WindowCounters, WindowLimit } from '../limits/window-counters';
import type { Observer } from '../observe/events';
import { addressKeys } from '../limits/address-key';
import { OpenCounts } from '../limits/open-counts';
import { AuthGuard } from './auth-guard';
import { formatWindow, limitWording, rateLimitLabel, retryAfterSeconds } from './rate-limits';

export { addressKey, addressKeys } from '../limits/address-key';

/**
 * Guards per source address, before anyone is identified: concurrent connections (with a cap of
 * their own for strangers, addresses outside every client's networks), new connections per window
 * (with a rate of their own for strangers), and the AUTH budgets (AuthGuard). An IPv6 stranger is
 * counted as itself and, with the other strangers of its prefix, against `ipv6_hosts_per_prefix`
 * times each budget (see address-key.ts). Window state goes through WindowCounters (bounded, a
 * shared store can implement it); open connections are a plain map because each entry is a live
 * socket, so it can never outgrow the listeners' max_clients.
 */

export interface AddressGuardDeps {
  limits: LimitsConfig;
  /** Per-address counters: their own instance, so a flood of addresses only evicts other addresses. */
  counters: WindowCounters;
  /** Per-username AUTH counters: their own instance too (usernames are the client's choice). */
  usernameCounters: WindowCounters;
  /** The addresses each username authenticated from (see AuthGuardDeps.knownCounters). */
  knownCounters?: WindowCounters;
  observer: Observer;
  now?: () => number;
}

/** One connection rate: its window, its metric label, and the counter key's lead. */
interface ConnectionRate {
  limit: WindowLimit;
  label: string;
  key: string;
}

/** What one counted key of a connection is: the address or a prefix, and the name its reply gives it. */
interface CountedKey {
  key: string;
  where: string;
  /** How many hosts' budgets this key holds (1 for an address). */
  hosts: number;
}

export class AddressGuard implements ConnectionGuard {
  private readonly open = new OpenCounts();
  private readonly now: () => number;
  private readonly rate: ConnectionRate | null;
  private readonly strangerRate: ConnectionRate;
  private readonly auth: AuthGuard;

  constructor(private readonly deps: AddressGuardDeps) {
    this.now = deps.now ?? Date.now;
    const { connection_rate: rate, connection_rate_per_stranger: stranger } = deps.limits;
    this.rate = rate
      ? {
          limit: { windowMs: rate.window, max: rate.max },
          label: rateLimitLabel('connections', rate.window),
          key: 'conn',
        }
      : null;
    this.strangerRate = {
      limit: { windowMs: stranger.window, max: stranger.max },
      label: rateLimitLabel('stranger_connections', stranger.window),
      key: 'sconn',
    };
    this.auth = new AuthGuard({
      limits: deps.limits,
      addressCounters: deps.counters,
      usernameCounters: deps.usernameCounters,
      knownCounters: deps.knownCounters,
      observer: deps.observer,
      now: this.now,
    });
  }

  /** Password checks running and waiting now, relay-wide (the smarthop_password_checks gauge). */
  get passwordChecks(): { running: number; waiting: number } {
    return this.auth.checks.counts;
  }

  async connect(remoteAddress: string, client: string, networkClient: boolean): Promise<Refusal | undefined> {
    // A locked-out address hears why first, whatever else it is over. A network client is the
    // exception: its own mail needs no AUTH, and one misconfigured app sharing its host must not
    // stop it; its AUTH attempts are still refused until the lockout ends.
    const locked = networkClient ? undefined : await this.auth.locked(remoteAddress, client);
    if (locked) return locked;
    const counted = this.counted(remoteAddress, networkClient);
    const max = this.connectionCap(networkClient);
    if (max !== undefined) {
      const full = counted.find((entry) => this.open.get(entry.key) >= max * entry.hosts);
      if (full) {
        const most = max * full.hosts;
        const message = `4.7.0 Too many connections from [${full.where}] (at most ${most} at once); try again later`;
        return this.refuse(client, 'connections_concurrent', message);
      }
    }
    // Check and take in one synchronous step, so two connections arriving together cannot both pass.
    for (const entry of counted) this.open.add(entry.key);
    const refusal = await this.consumeRates(counted, networkClient, client);
    if (refusal) this.disconnect(remoteAddress, networkClient);
    return refusal;
  }

  disconnect(remoteAddress: string, networkClient: boolean): void {
    for (const { key } of this.counted(remoteAddress, networkClient)) this.open.remove(key);
  }

  authenticate<T>(attempt: AuthAttempt, check: () => Promise<T | undefined>): Promise<AuthOutcome<T>> {
    return this.auth.authenticate(attempt, check);
  }

  /** A stranger may hold `connections_per_stranger` at most, and never more than `connections_per_address`. */
  private connectionCap(networkClient: boolean): number | undefined {
    const { connections_per_address: all, connections_per_stranger: stranger } = this.deps.limits;
    if (networkClient) return all;
    return all === undefined ? stranger : Math.min(all, stranger);
  }

  /** The address; for a stranger's IPv6 address also its prefix, with ipv6_hosts_per_prefix hosts' budgets. */
  private counted(remoteAddress: string, networkClient: boolean): CountedKey[] {
    const { host, prefix } = addressKeys(remoteAddress, this.deps.limits.ipv6_prefix);
    const keys: CountedKey[] = [{ key: host, where: remoteAddress, hosts: 1 }];
    if (prefix !== undefined && !networkClient) {
      keys.push({ key: prefix, where: prefix, hosts: this.deps.limits.ipv6_hosts_per_prefix });
    }
    return keys;
  }

  /** Every connection rate that applies, for every counted key; all or nothing is counted. */
  private async consumeRates(
    counted: CountedKey[],
    networkClient: boolean,
    client: string,
  ): Promise<Refusal | undefined> {
    const rates = [...(this.rate ? [this.rate] : []), ...(networkClient ? [] : [this.strangerRate])];
    const taken: { key: string; limits: WindowLimit[] }[] = [];
    const now = this.now();
    for (const rate of rates) {
      for (const entry of counted) {
        const limits = [{ windowMs: rate.limit.windowMs, max: rate.limit.max * entry.hosts }];
        const key = `${rate.key}\u0000${entry.key}`;
        const result = await this.deps.counters.consume(key, limits, 1, now);
        if (!result.ok) {
          for (const done of taken) await this.deps.counters.release(done.key, done.limits, 1, now);
          const { max, windowMs } = limits[0];
          const wording = limitWording(`${max} connections per ${formatWindow(windowMs)}`, result.share);
          const wait = retryAfterSeconds(result.retryAfterMs);
          const message = `4.7.0 Connection rate limit for [${entry.where}]: ${wording}; try again in ${wait}s`;
          return this.refuse(client, rate.label, message);
        }
        taken.push({ key, limits });
      }
    }
    return undefined;
  }

  private refuse(client: string, limit: string, message: string): Refusal {
    this.deps.observer.emit({ type: 'rate_limited', client, limit });
    return { code: 421, message, reason: 'rate_limited' };
  }
}
