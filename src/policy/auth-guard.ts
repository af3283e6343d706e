import { createHash } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import type { LimitsConfig } from '../config/schema';
import type { Refusal } from '../ingress/filters';
import type { AuthAttempt, AuthOutcome } from '../ingress/ports';
import type { ConsumeResult, WindowCounters, WindowLimit } from '../limits/window-counters';
import type { Observer } from '../observe/events';
import { addressKeys } from '../limits/address-key';
import { PasswordCheckGate } from './password-check-gate';
import { retryAfterSeconds } from './rate-limits';

/**
 * The AUTH budgets: per source address (`limits.auth_failures`: slowed, then locked out) and per
 * username across addresses (`limits.auth_failures_per_username`: slowed, then refused for a while).
 *
 * A failure is counted *before* its password is checked (a reservation) and given back when the
 * check succeeds. Counted after the ~30 ms scrypt check, every AUTH already in flight passed the gate
 * before the first failure landed: 190 connections sending AUTH at once all got their password
 * checked. With the reservation, at most `max` checks can run before the lockout, however many
 * arrive at once and on however many relays (Redis counts atomically). The lockout then takes over
 * from the failures: when it ends, the address starts a fresh window. On top, this relay checks one
 * AUTH per address at a time: a burst of *right* passwords from one address (an app opening a pool
 * of connections) then waits its turn instead of being refused because of the others' reservations.
 *
 * The per-username budget stops a guesser spread over many addresses. Its refusal is temporary
 * (454) and never applies to an address the username authenticated from before, so an attacker
 * cannot lock the real user out of its usual host, only out of new ones for a while.
 *
 * An IPv6 stranger is counted as itself and, together with the other strangers of its prefix
 * (`limits.ipv6_prefix`), against `limits.ipv6_hosts_per_prefix` times the budget: one host of an
 * office /64 cannot lock its neighbours out, and one that rotates through the /64 gets a few hosts'
 * worth of guesses, not one per address. Addresses in some client's networks are counted as
 * themselves only.
 *
 * Every password check waits for its place in the relay-wide PasswordCheckGate (see there).
 */

/** How long an address stays "known" for a username after a successful AUTH from it. */
export const KNOWN_ADDRESS_MS = 30 * 86_400_000;

export interface AuthGuardDeps {
  limits: LimitsConfig;
  /** Per-address windows: failures and lockouts (shared with the connection guard's store). */
  addressCounters: WindowCounters;
  /** Per-username windows. */
  usernameCounters: WindowCounters;
  /**
   * The addresses each username authenticated from. A store of their own: only a successful AUTH
   * writes one, so a flood of made-up usernames (each a window in usernameCounters) cannot push a
   * real user's known address out of a bounded memory. Defaults to usernameCounters.
   */
  knownCounters?: WindowCounters;
  observer: Observer;
  now?: () => number;
}

/** The keys one attempt is counted under (see address-key.ts). */
interface AttemptKeys {
  /** The address itself. */
  host: string;
  /** A stranger's IPv6 prefix, counted against ipv6_hosts_per_prefix times the budget. */
  prefix?: string;
  /** Where a username's known addresses are kept: the prefix for IPv6, so a host's changing addresses stay known. */
  known: string;
}

export class AuthGuard {
  private readonly now: () => number;
  private readonly failures: WindowLimit[];
  private readonly prefixFailures: WindowLimit[];
  private readonly lockout: WindowLimit[];
  private readonly userFailures: WindowLimit[];
  private readonly knownCounters: WindowCounters;
  /** The relay-wide bound on password checks at once (see PasswordCheckGate). */
  readonly checks: PasswordCheckGate;
  private readonly known: WindowLimit[] = [{ windowMs: KNOWN_ADDRESS_MS, max: 1 }];
  /** The tail of each address's queue of AUTHs waiting for their check; entries live only while some wait. */
  private readonly queues = new Map<string, Promise<void>>();
  /**
   * Lockouts this relay set, address key -> when they end, kept beside the counters. With shared
   * (Redis) counters a lockout lives in Redis, and the local counters a relay falls back to while
   * Redis is unreachable start empty: an address this relay had just locked out would get a fresh
   * round of guesses from the outage on. A lockout another relay of the fleet set is still seen only
   * through Redis. Bounded like the counters.
   */
  private readonly lockedHere: LRUCache<string, number>;

  constructor(private readonly deps: AuthGuardDeps) {
    this.now = deps.now ?? Date.now;
    const { auth_failures: auth, auth_failures_per_username: user } = deps.limits;
    this.failures = [{ windowMs: auth.window, max: auth.max }];
    this.prefixFailures = [{ windowMs: auth.window, max: auth.max * deps.limits.ipv6_hosts_per_prefix }];
    this.knownCounters = deps.knownCounters ?? deps.usernameCounters;
    this.checks = new PasswordCheckGate(deps.limits.password_checks);
    // A lockout is a window of one that the failure which reaches the limit fills.
    this.lockout = [{ windowMs: auth.lockout, max: 1 }];
    this.userFailures = [{ windowMs: user.window, max: user.max }];
    // A count bound, not `max` (which allocates for every entry up front: see MemoryWindowCounters).
    this.lockedHere = new LRUCache<string, number>({
      maxSize: Math.max(1, deps.limits.max_tracked_addresses),
      sizeCalculation: () => 1,
    });
  }

  /**
   * The lockout refusal for an address that is locked out now, else undefined. A stranger's IPv6
   * address is also locked out while its prefix is.
   */
  async locked(remoteAddress: string, client: string, networkClient = false): Promise<Refusal | undefined> {
    return this.lockedKeys(this.keys(remoteAddress, networkClient), remoteAddress, client);
  }

  authenticate<T>(attempt: AuthAttempt, check: () => Promise<T | undefined>): Promise<AuthOutcome<T>> {
    const keys = this.keys(attempt.remoteAddress, attempt.networkClient === true);
    return this.oneAtATime(keys.host, () => this.guarded(keys, attempt, check));
  }

  private async guarded<T>(
    keys: AttemptKeys,
    attempt: AuthAttempt,
    check: () => Promise<T | undefined>,
  ): Promise<AuthOutcome<T>> {
    const { client } = attempt;
    // A locked-out address gets no answer about any password, right or wrong.
    const ended = await this.endedBeforeCheck(keys, attempt);
    if (ended) return ended;

    const user = usernameKey(attempt.username);
    const known = await this.knownAddress(user, keys.known, this.now());
    if (!known) {
      const budget = await this.deps.usernameCounters.peek(`userfail\u0000${user}`, this.userFailures, 1, this.now());
      if (!budget.ok) return { kind: 'refused', refusal: this.usernameRefused(client, budget.retryAfterMs) };
    }
    const place = await this.checks.acquire(known || attempt.networkClient === true, attempt.closed);
    if (place.kind === 'abandoned') return { kind: 'abandoned' };
    if (place.kind === 'full') return { kind: 'refused', refusal: this.busy(client) };
    try {
      return await this.checked(keys, attempt, user, known, check);
    } finally {
      place.release();
    }
  }

  /** An attempt that ends without a check: its client is gone, or its address (or prefix) is locked out. */
  private async endedBeforeCheck(keys: AttemptKeys, attempt: AuthAttempt): Promise<AuthOutcome<never> | undefined> {
    if (attempt.closed?.aborted) return { kind: 'abandoned' };
    const locked = await this.lockedKeys(keys, attempt.remoteAddress, attempt.client);
    return locked ? { kind: 'refused', refusal: locked } : undefined;
  }

  /** With a place to check in: the reservations, the check, and what it says. */
  private async checked<T>(
    keys: AttemptKeys,
    attempt: AuthAttempt,
    user: string,
    known: boolean,
    check: () => Promise<T | undefined>,
  ): Promise<AuthOutcome<T>> {
    const { remoteAddress, client } = attempt;
    // The wait for a place may have been long: a lockout set meanwhile, or a client gone, ends it here.
    const ended = await this.endedBeforeCheck(keys, attempt);
    if (ended) return ended;
    const now = this.now();
    const reserved = await this.reserveFailure(keys, now);
    // The window holds `max` failures (or checks under way elsewhere in the fleet): no check until it ends.
    if (!reserved.ok) {
      const refusal = this.lockedOut(client, reserved.where ?? remoteAddress, reserved.retryAfterMs);
      return { kind: 'refused', refusal };
    }
    if (!known) {
      const userReserved = await this.deps.usernameCounters.consume(`userfail\u0000${user}`, this.userFailures, 1, now);
      if (!userReserved.ok) {
        await this.releaseFailure(keys, 1, now);
        return { kind: 'refused', refusal: this.usernameRefused(client, userReserved.retryAfterMs) };
      }
    }

    let value: T | undefined;
    try {
      value = await check();
    } catch (err) {
      await this.giveBack(keys, user, known, now);
      throw err;
    }
    if (value !== undefined) {
      await this.giveBack(keys, user, known, now);
      if (!known) await this.knownCounters.consume(`known\u0000${user}\u0000${keys.known}`, this.known, 1, now);
      return { kind: 'success', value };
    }
    return this.failed(keys, attempt, user, known, now);
  }

  /** A checked, wrong password: its reservations stay as failures. */
  private async failed(
    keys: AttemptKeys,
    attempt: AuthAttempt,
    user: string,
    known: boolean,
    now: number,
  ): Promise<AuthOutcome<never>> {
    const { remoteAddress, client } = attempt;
    const { auth_failures: auth, auth_failures_per_username: perUser } = this.deps.limits;
    const [addressLeft] = await this.deps.addressCounters.remaining(`authfail\u0000${keys.host}`, this.failures, now);
    let lockedWhere: string | undefined;
    if (addressLeft === 0) {
      await this.lock(keys.host, this.failures, now);
      lockedWhere = remoteAddress;
    }
    if (keys.prefix !== undefined) {
      const prefixKey = `authfail\u0000${keys.prefix}`;
      const [prefixLeft] = await this.deps.addressCounters.remaining(prefixKey, this.prefixFailures, now);
      if (prefixLeft === 0) {
        await this.lock(keys.prefix, this.prefixFailures, now);
        lockedWhere ??= keys.prefix;
      }
    }
    if (lockedWhere !== undefined) {
      return { kind: 'failure', refusal: this.lockedOut(client, lockedWhere, auth.lockout), delayMs: 0 };
    }
    let delayMs = 0;
    // The first failure from an address is a typo; from the second on, each answer is held back.
    if (auth.max - addressLeft > 1 && auth.delay > 0) {
      delayMs = auth.delay;
      this.deps.observer.emit({ type: 'auth_delayed', scope: 'address', remote: remoteAddress, delayMs: auth.delay });
    }
    if (!known && perUser.delay > 0) {
      const [userLeft] = await this.deps.usernameCounters.remaining(`userfail\u0000${user}`, this.userFailures, now);
      if (perUser.max - userLeft > perUser.slow_after) {
        delayMs = Math.max(delayMs, perUser.delay);
        this.deps.observer.emit({
          type: 'auth_delayed',
          scope: 'username',
          remote: remoteAddress,
          delayMs: perUser.delay,
        });
      }
    }
    return { kind: 'failure', delayMs };
  }

  /** Locks `key` (an address or a prefix) out; the lockout takes over from its failures, so it starts afresh after. */
  private async lock(key: string, failures: WindowLimit[], now: number): Promise<void> {
    this.lockedHere.set(key, now + this.deps.limits.auth_failures.lockout);
    await this.deps.addressCounters.consume(`lock\u0000${key}`, this.lockout, 1, now);
    await this.deps.addressCounters.release(`authfail\u0000${key}`, failures, failures[0].max, now);
  }

  /** One failure reserved for the address and a stranger's IPv6 prefix; `where` names the one that is full. */
  private async reserveFailure(keys: AttemptKeys, now: number): Promise<ConsumeResult & { where?: string }> {
    const host = await this.deps.addressCounters.consume(`authfail\u0000${keys.host}`, this.failures, 1, now);
    if (!host.ok || keys.prefix === undefined) return host;
    const prefix = await this.deps.addressCounters.consume(`authfail\u0000${keys.prefix}`, this.prefixFailures, 1, now);
    if (prefix.ok) return prefix;
    await this.deps.addressCounters.release(`authfail\u0000${keys.host}`, this.failures, 1, now);
    return { ...prefix, where: keys.prefix };
  }

  private async releaseFailure(keys: AttemptKeys, amount: number, now: number): Promise<void> {
    await this.deps.addressCounters.release(`authfail\u0000${keys.host}`, this.failures, amount, now);
    if (keys.prefix !== undefined) {
      await this.deps.addressCounters.release(`authfail\u0000${keys.prefix}`, this.prefixFailures, amount, now);
    }
  }

  private async giveBack(keys: AttemptKeys, user: string, known: boolean, now: number): Promise<void> {
    await this.releaseFailure(keys, 1, now);
    if (!known) await this.deps.usernameCounters.release(`userfail\u0000${user}`, this.userFailures, 1, now);
  }

  /** Whether `username` authenticated from this address within KNOWN_ADDRESS_MS (a full window of one). */
  private async knownAddress(user: string, key: string, now: number): Promise<boolean> {
    const seen = await this.knownCounters.peek(`known\u0000${user}\u0000${key}`, this.known, 1, now);
    return !seen.ok;
  }

  /** Runs `task` after every earlier one for the same address has finished. */
  private async oneAtATime<R>(key: string, task: () => Promise<R>): Promise<R> {
    const before = this.queues.get(key) ?? Promise.resolve();
    let done!: () => void;
    const mine = new Promise<void>((resolve) => {
      done = resolve;
    });
    const tail = before.then(() => mine);
    this.queues.set(key, tail);
    await before;
    try {
      return await task();
    } finally {
      done();
      if (this.queues.get(key) === tail) this.queues.delete(key);
    }
  }

  private keys(remoteAddress: string, networkClient: boolean): AttemptKeys {
    const { host, prefix } = addressKeys(remoteAddress, this.deps.limits.ipv6_prefix);
    return { host, prefix: networkClient ? undefined : prefix, known: prefix ?? host };
  }

  private async lockedKeys(keys: AttemptKeys, remoteAddress: string, client: string): Promise<Refusal | undefined> {
    const hostLock = await this.lockLeft(keys.host);
    if (hostLock !== undefined) return this.lockedOut(client, remoteAddress, hostLock);
    if (keys.prefix === undefined) return undefined;
    const prefixLock = await this.lockLeft(keys.prefix);
    return prefixLock === undefined ? undefined : this.lockedOut(client, keys.prefix, prefixLock);
  }

  /** Milliseconds left of a lockout of `key` (an address or a prefix), or undefined when there is none. */
  private async lockLeft(key: string): Promise<number | undefined> {
    const now = this.now();
    const own = this.ownLockout(key, now);
    if (own !== undefined) return own;
    const lock = await this.deps.addressCounters.peek(`lock\u0000${key}`, this.lockout, 1, now);
    return lock.ok ? undefined : lock.retryAfterMs;
  }

  /** Milliseconds left of a lockout this relay set on the key, or undefined when there is none. */
  private ownLockout(key: string, now: number): number | undefined {
    const until = this.lockedHere.get(key);
    if (until === undefined) return undefined;
    if (until > now) return until - now;
    this.lockedHere.delete(key);
    return undefined;
  }

  /** `where`: the address, or the IPv6 prefix whose strangers together spent the budget. */
  private lockedOut(client: string, where: string, retryAfterMs: number): Refusal {
    this.deps.observer.emit({ type: 'rate_limited', client, limit: 'auth_lockout' });
    const seconds = retryAfterSeconds(retryAfterMs);
    return {
      code: 421,
      message: `4.7.0 Too many failed authentications from [${where}]; try again in ${seconds}s`,
      reason: 'rate_limited',
    };
  }

  private usernameRefused(client: string, retryAfterMs: number): Refusal {
    this.deps.observer.emit({ type: 'rate_limited', client, limit: 'auth_username' });
    const seconds = retryAfterSeconds(retryAfterMs);
    return {
      code: 454,
      message: `4.7.0 Too many failed authentications for this username; try again in ${seconds}s`,
      reason: 'rate_limited',
    };
  }

  /** No place to check the password now (PasswordCheckGate's line is full): temporary, nothing counted. */
  private busy(client: string): Refusal {
    this.deps.observer.emit({ type: 'rate_limited', client, limit: 'auth_busy' });
    return {
      code: 454,
      message: '4.7.0 Too many authentications in progress; try again later',
      reason: 'rate_limited',
    };
  }
}

/**
 * Usernames are counted by digest: bounded keys whatever length a client sends, and a password typed
 * into the username field never sits in Redis or memory in clear.
 */
function usernameKey(username: string): string {
  return createHash('sha256').update(username).digest('base64url').slice(0, 22);
}
