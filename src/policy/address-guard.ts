import type { LimitsConfig } from '../config/schema';
import type { Refusal } from '../ingress/filters';
import type { AuthAttempt, AuthOutcome, ConnectionGuard } from '../ingress/ports';
import type { WindowCounters, WindowLimit } from '../limits/window-counters';
import type { Observer } from '../observe/events';
import { addressKey } from './address-key';
import { AuthGuard } from './auth-guard';
import { formatWindow, limitWording, rateLimitLabel, retryAfterSeconds } from './rate-limits';

export { addressKey } from './address-key';

/**
 * Guards per source address, before anyone is identified: concurrent connections (with a cap of
 * their own for strangers, addresses outside every client's networks), new connections per window,
 * and the AUTH budgets (AuthGuard). Window state goes through WindowCounters (bounded, a shared store
 * can implement it); open connections are a plain map because each entry is a live socket, so it can
 * never outgrow the listeners' max_clients.
 */

export interface AddressGuardDeps {
  limits: LimitsConfig;
  /** Per-address counters: their own instance, so a flood of addresses only evicts other addresses. */
  counters: WindowCounters;
  /** Per-username AUTH counters: their own instance too (usernames are the client's choice). */
  usernameCounters: WindowCounters;
  observer: Observer;
  now?: () => number;
}

export class AddressGuard implements ConnectionGuard {
  private readonly open = new Map<string, number>();
  private readonly now: () => number;
  private readonly rate: { limits: WindowLimit[]; label: string } | null;
  private readonly auth: AuthGuard;

  constructor(private readonly deps: AddressGuardDeps) {
    this.now = deps.now ?? Date.now;
    const { connection_rate: rate } = deps.limits;
    this.rate = rate ? { limits: [{ windowMs: rate.window, max: rate.max }], label: rateLimitLabel('connections', rate.window) } : null;
    this.auth = new AuthGuard({
      limits: deps.limits,
      addressCounters: deps.counters,
      usernameCounters: deps.usernameCounters,
      observer: deps.observer,
      now: this.now,
    });
  }

  async connect(remoteAddress: string, client: string, networkClient: boolean): Promise<Refusal | undefined> {
    const key = this.key(remoteAddress);
    // A locked-out address hears why first, whatever else it is over. A network client is the
    // exception: its own mail needs no AUTH, and one misconfigured app sharing its host must not
    // stop it; its AUTH attempts are still refused until the lockout ends.
    const locked = networkClient ? undefined : await this.auth.locked(remoteAddress, client);
    if (locked) return locked;
    const max = this.connectionCap(networkClient);
    const open = this.open.get(key) ?? 0;
    if (max !== undefined && open >= max) {
      const message = `4.7.0 Too many connections from [${remoteAddress}] (at most ${max} at once); try again later`;
      return this.refuse(client, 'connections_concurrent', message);
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

  authenticate<T>(attempt: AuthAttempt, check: () => Promise<T | undefined>): Promise<AuthOutcome<T>> {
    return this.auth.authenticate(attempt, check);
  }

  /** A stranger may hold `connections_per_stranger` at most, and never more than `connections_per_address`. */
  private connectionCap(networkClient: boolean): number | undefined {
    const { connections_per_address: all, connections_per_stranger: stranger } = this.deps.limits;
    if (networkClient) return all;
    return all === undefined ? stranger : Math.min(all, stranger);
  }

  private key(remoteAddress: string): string {
    return addressKey(remoteAddress, this.deps.limits.ipv6_prefix);
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
