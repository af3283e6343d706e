import type { ClientConfig } from '../config/schema';
import type { Refusal } from './filters';

/**
 * What ingress asks of the policy stage, at each SMTP step that can decide. Ingress owns the
 * replies and the `rejected` events; these only say yes (undefined) or which refusal. relay.ts
 * passes the implementations in (src/policy/); a relay without them applies only the global limits.
 */

/** Per-client rules and rate limits of the client's policy (none for a client without one). */
export interface SessionPolicy {
  /** The policy's max_message_size when it is lower than the relay's (enforced while DATA streams). */
  maxMessageSize(client: ClientConfig): number | undefined;
  /** Sender allowed, declared SIZE within the policy, message rate limit (counted here). */
  mailFrom(client: ClientConfig, from: string, declaredSize: number | undefined): Promise<Refusal | undefined>;
  /** Recipient allowed and not suppressed, max_recipients, recipient rate limit (counted here). */
  rcptTo(client: ClientConfig, to: string, acceptedSoFar: number): Promise<Refusal | undefined>;
  /** A complete, otherwise acceptable message of `size` bytes: the byte rate limit (counted here). */
  dataComplete(client: ClientConfig, size: number): Promise<Refusal | undefined>;
}

/** One AUTH about to be checked. `client` is only the metric label ("(unknown)" or a network client's name). */
export interface AuthAttempt {
  remoteAddress: string;
  username: string;
  client: string;
  /** The address is in some client's networks: counted as itself only, and its check goes first. */
  networkClient?: boolean;
  /** Aborts when the session closes: a check still waiting for its place is then dropped. */
  closed?: AbortSignal;
}

/**
 * What became of one AUTH under the guards: refused without a password check (lockout, budget
 * spent), or checked: success with the check's value, or failure (a refusal once that failure locks
 * the address out, else how long to hold the 535 back).
 */
export type AuthOutcome<T> =
  | { kind: 'refused'; refusal: Refusal }
  /** The session closed before its password was checked: nothing was checked or counted, nobody to answer. */
  | { kind: 'abandoned' }
  | { kind: 'success'; value: T }
  | { kind: 'failure'; refusal?: Refusal; delayMs: number };

/** Guards per source address, before anyone is identified. */
export interface ConnectionGuard {
  // `client` is only the metric label: the network client's name or "(unknown)".
  /**
   * Lockout, concurrent connections and connection rate; when it answers undefined the connection
   * holds a slot until `disconnect`. `networkClient`: the address is in some client's networks.
   */
  connect(remoteAddress: string, client: string, networkClient: boolean): Promise<Refusal | undefined>;
  /** Gives back the slot of a connection `connect` accepted, with the `networkClient` it was accepted with. */
  disconnect(remoteAddress: string, networkClient: boolean): void;
  /**
   * Runs `check` (the password check: a value on success, undefined on failure) under the AUTH
   * budgets of the address and of the username, or refuses without running it.
   */
  authenticate<T>(attempt: AuthAttempt, check: () => Promise<T | undefined>): Promise<AuthOutcome<T>>;
}
