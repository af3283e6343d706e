import { createHash } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import type { LimitsConfig } from '../config/schema';
import type { Refusal } from '../ingress/filters';
import type { AuthAttempt, AuthOutcome } from '../ingress/ports';
import type { WindowCounters, WindowLimit } from '../limits/window-counters';
import type { Observer } from '../observe/events';
import { addressKey } from './address-key';
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
 */

/** How long an address stays "known" for a username after a successful AUTH from it. */
export const KNOWN_ADDRESS_MS = 30 * 86_400_000;

export interface AuthGuardDeps {
  limits: LimitsConfig;
  /** Per-address windows: failures and lockouts (shared with the connection guard's store). */
  addressCounters: WindowCounters;
  /** Per-username windows and the addresses each username authenticated from. */
  usernameCounters: WindowCounters;
  observer: Observer;
  now?: () => number;
}

export class AuthGuard {
  private readonly now: () => number;
  private readonly failures: WindowLimit[];
  private readonly lockout: WindowLimit[];
  private readonly userFailures: WindowLimit[];
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
    // A lockout is a window of one that the failure which reaches the limit fills.
    this.lockout = [{ windowMs: auth.lockout, max: 1 }];
    this.userFailures = [{ windowMs: user.window, max: user.max }];
    // A count bound, not `max` (which allocates for every entry up front: see MemoryWindowCounters).
    this.lockedHere = new LRUCache<string, number>({
      maxSize: Math.max(1, deps.limits.max_tracked_addresses),
      sizeCalculation: () => 1,
    });
  }

  /** The lockout refusal for an address that is locked out now, else undefined. */
  async locked(remoteAddress: string, client: string): Promise<Refusal | undefined> {
    const key = this.key(remoteAddress);
    const now = this.now();
    let retryAfterMs = this.ownLockout(key, now);
    if (retryAfterMs === undefined) {
      const lock = await this.deps.addressCounters.peek(`lock\u0000${key}`, this.lockout, 1, now);
      if (lock.ok) return undefined;
      retryAfterMs = lock.retryAfterMs;
    }
    return this.lockedOut(client, remoteAddress, retryAfterMs);
  }

  authenticate<T>(attempt: AuthAttempt, check: () => Promise<T | undefined>): Promise<AuthOutcome<T>> {
    const key = this.key(attempt.remoteAddress);
    return this.oneAtATime(key, () => this.guarded(key, attempt, check));
  }

  private async guarded<T>(
    key: string,
    attempt: AuthAttempt,
    check: () => Promise<T | undefined>,
  ): Promise<AuthOutcome<T>> {
    const { remoteAddress, client } = attempt;
    // A locked-out address gets no answer about any password, right or wrong.
    const locked = await this.locked(remoteAddress, client);
    if (locked) return { kind: 'refused', refusal: locked };

    const now = this.now();
    const user = usernameKey(attempt.username);
    const known = await this.knownAddress(user, key, now);
    if (!known) {
      const budget = await this.deps.usernameCounters.peek(`userfail\u0000${user}`, this.userFailures, 1, now);
      if (!budget.ok) return { kind: 'refused', refusal: this.usernameRefused(client, budget.retryAfterMs) };
    }
    const reserved = await this.deps.addressCounters.consume(`authfail\u0000${key}`, this.failures, 1, now);
    // The window holds `max` failures (or checks under way elsewhere in the fleet): no check until it ends.
    if (!reserved.ok) return { kind: 'refused', refusal: this.lockedOut(client, remoteAddress, reserved.retryAfterMs) };
    if (!known) {
      const userReserved = await this.deps.usernameCounters.consume(`userfail\u0000${user}`, this.userFailures, 1, now);
      if (!userReserved.ok) {
        await this.deps.addressCounters.release(`authfail\u0000${key}`, this.failures, 1, now);
        return { kind: 'refused', refusal: this.usernameRefused(client, userReserved.retryAfterMs) };
      }
    }

    let value: T | undefined;
    try {
      value = await check();
    } catch (err) {
      await this.giveBack(key, user, known, now);
      throw err;
    }
    if (value !== undefined) {
      await this.giveBack(key, user, known, now);
      if (!known) await this.deps.usernameCounters.consume(`known\u0000${user}\u0000${key}`, this.known, 1, now);
      return { kind: 'success', value };
    }
    return this.failed(key, attempt, user, known, now);
  }

  /** A checked, wrong password: its reservations stay as failures. */
  private async failed(
    key: string,
    attempt: AuthAttempt,
    user: string,
    known: boolean,
    now: number,
  ): Promise<AuthOutcome<never>> {
    const { remoteAddress, client } = attempt;
    const { auth_failures: auth, auth_failures_per_username: perUser } = this.deps.limits;
    const [addressLeft] = await this.deps.addressCounters.remaining(`authfail\u0000${key}`, this.failures, now);
    if (addressLeft === 0) {
      this.lockedHere.set(key, now + auth.lockout);
      await this.deps.addressCounters.consume(`lock\u0000${key}`, this.lockout, 1, now);
      // The lockout takes over from the failures: once it ends, the address starts a fresh window.
      await this.deps.addressCounters.release(`authfail\u0000${key}`, this.failures, auth.max, now);
      return { kind: 'failure', refusal: this.lockedOut(client, remoteAddress, auth.lockout), delayMs: 0 };
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

  private async giveBack(key: string, user: string, known: boolean, now: number): Promise<void> {
    await this.deps.addressCounters.release(`authfail\u0000${key}`, this.failures, 1, now);
    if (!known) await this.deps.usernameCounters.release(`userfail\u0000${user}`, this.userFailures, 1, now);
  }

  /** Whether `username` authenticated from this address within KNOWN_ADDRESS_MS (a full window of one). */
  private async knownAddress(user: string, key: string, now: number): Promise<boolean> {
    const seen = await this.deps.usernameCounters.peek(`known\u0000${user}\u0000${key}`, this.known, 1, now);
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

  private key(remoteAddress: string): string {
    return addressKey(remoteAddress, this.deps.limits.ipv6_prefix);
  }

  /** Milliseconds left of a lockout this relay set on the address, or undefined when there is none. */
  private ownLockout(key: string, now: number): number | undefined {
    const until = this.lockedHere.get(key);
    if (until === undefined) return undefined;
    if (until > now) return until - now;
    this.lockedHere.delete(key);
    return undefined;
  }

  private lockedOut(client: string, remoteAddress: string, retryAfterMs: number): Refusal {
    this.deps.observer.emit({ type: 'rate_limited', client, limit: 'auth_lockout' });
    const seconds = retryAfterSeconds(retryAfterMs);
    return {
      code: 421,
      message: `4.7.0 Too many failed authentications from [${remoteAddress}]; try again in ${seconds}s`,
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
}

/**
 * Usernames are counted by digest: bounded keys whatever length a client sends, and a password typed
 * into the username field never sits in Redis or memory in clear.
 */
function usernameKey(username: string): string {
  return createHash('sha256').update(username).digest('base64url').slice(0, 22);
}
