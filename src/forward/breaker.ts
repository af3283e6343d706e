import type { BreakerConfig } from '../config/schema';
import type { Outcome } from './outcome';

/**
 * The circuit breaker of one smart host, as pure transitions over a small state (clock passed in):
 *
 *   closed ──(failures consecutive connection-level failures)──▶ open
 *   open ──(cooldown over, next delivery asks)──▶ half_open (that delivery is the one probe)
 *   half_open ──probe ok──▶ closed        half_open ──probe failed──▶ open (another cooldown)
 *   open or half_open ──admin flush or retry──▶ half_open for everyone (probeNow)
 *
 * Only failures to talk SMTP at all (refused, TLS, timeout, AUTH) count: a host that answers 4xx or
 * 5xx for a recipient is up, and skipping it would only hide the provider's verdict.
 */
export type BreakerState =
  | { kind: 'closed'; failures: number }
  | { kind: 'open'; until: number; failures: number }
  /**
   * One probe is under way since `probeAt`; if it never reports, another may go after a cooldown.
   * `everyone`: an admin asked for the queue now, so every delivery is a probe until one reports.
   */
  | { kind: 'half_open'; probeAt: number; failures: number; everyone?: true };

export const CLOSED: BreakerState = { kind: 'closed', failures: 0 };

export type BreakerAdmission = { admitted: true; state: BreakerState } | { admitted: false; retryAt: number };

/** The earliest time a delivery may go to this host (`now` or earlier: it may go now). */
export function eligibleAt(state: BreakerState, config: BreakerConfig): number {
  switch (state.kind) {
    case 'closed':
      return -Infinity;
    case 'open':
      return state.until;
    case 'half_open':
      return state.everyone ? -Infinity : state.probeAt + config.cooldown;
  }
}

/**
 * An admin's flush or retry: the host is tried at once instead of after its cooldown, and by every
 * delivery rather than one probe, so the flushed messages go to it (not past it to a host further
 * down the list). The first delivery that reports decides, as a probe does: one that gets through
 * closes the breaker, one that fails to connect opens it for another cooldown.
 */
export function probeNow(state: BreakerState, now: number): BreakerState {
  if (state.kind === 'closed') return state;
  return { kind: 'half_open', probeAt: now, failures: state.failures, everyone: true };
}

/** Asks to send one delivery now; an open breaker whose cooldown is over lets exactly this one through as the probe. */
export function admit(state: BreakerState, now: number, config: BreakerConfig): BreakerAdmission {
  if (state.kind === 'closed' || (state.kind === 'half_open' && state.everyone)) return { admitted: true, state };
  const at = eligibleAt(state, config);
  if (now < at) return { admitted: false, retryAt: at };
  return { admitted: true, state: { kind: 'half_open', probeAt: now, failures: state.failures } };
}

/** `credentials_refused`: the host refused our credentials; no count of failures is needed to know it is down. */
export type DeliveryResult = 'ok' | 'connection_failure' | 'credentials_refused';

export function record(state: BreakerState, result: DeliveryResult, now: number, config: BreakerConfig): BreakerState {
  if (result === 'ok') return CLOSED;
  const failures = state.failures + 1;
  switch (state.kind) {
    case 'closed':
      if (result === 'credentials_refused') return { kind: 'open', until: now + config.cooldown, failures };
      return failures >= config.failures
        ? { kind: 'open', until: now + config.cooldown, failures }
        : { kind: 'closed', failures };
    case 'half_open':
      return { kind: 'open', until: now + config.cooldown, failures };
    case 'open':
      // A delivery that started before the breaker opened: it changes nothing about the cooldown.
      return { ...state, failures };
  }
}

/** `smarthop_smarthost_up`: 1 only while the breaker is closed (a probe has not yet proved anything). */
export function isUp(state: BreakerState): boolean {
  return state.kind === 'closed';
}

const CONNECTION_CAUSES = new Set(['connect', 'tls', 'timeout', 'credentials']);

/**
 * What a transaction says about the host itself: it failed at the connection level for every
 * recipient (its credentials refused, if that was the reason for all of them), or it talked SMTP.
 */
export function classify(outcomes: ReadonlyMap<string, Outcome>): DeliveryResult {
  if (outcomes.size === 0) return 'ok';
  let refused = true;
  for (const outcome of outcomes.values()) {
    if (outcome.kind !== 'transient' || !CONNECTION_CAUSES.has(outcome.cause)) return 'ok';
    refused &&= outcome.cause === 'credentials';
  }
  return refused ? 'credentials_refused' : 'connection_failure';
}
