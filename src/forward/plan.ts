import type { RetryConfig } from '../config/schema';

/** Pure planning: which smart hosts to try in which order, and when to try again. */

export interface Candidate {
  name: string;
  priority: number;
  weight: number;
}

/** Per host, how far it is "owed" the lead among its equals (smooth weighted round robin state). */
export type Rotation = ReadonlyMap<string, number>;

/**
 * Lowest priority first. Among equal priorities, smooth weighted round robin (as nginx balances
 * upstreams): over any run of messages each host leads in proportion to its weight, interleaved
 * rather than in bursts, and the others follow in the order they are due, so failover also spreads.
 * Deterministic, so an operator (and a test) can predict the split exactly; the caller keeps the
 * returned rotation for the next message.
 */
export function orderSmartHosts<T extends Candidate>(
  candidates: readonly T[],
  rotation: Rotation = new Map(),
): { order: T[]; rotation: Map<string, number> } {
  const next = new Map(rotation);
  const byPriority = new Map<number, T[]>();
  for (const candidate of candidates) {
    const group = byPriority.get(candidate.priority) ?? [];
    group.push(candidate);
    byPriority.set(candidate.priority, group);
  }
  const order = [...byPriority.keys()]
    .sort((a, b) => a - b)
    .flatMap((priority) => rotate(byPriority.get(priority) as T[], next));
  return { order, rotation: next };
}

function rotate<T extends Candidate>(group: T[], state: Map<string, number>): T[] {
  if (group.length === 1) return group;
  const total = group.reduce((sum, c) => sum + c.weight, 0);
  for (const c of group) state.set(c.name, (state.get(c.name) ?? 0) + c.weight);
  // Stable sort: on a tie the host listed first in the config leads.
  const ordered = [...group].sort((a, b) => (state.get(b.name) as number) - (state.get(a.name) as number));
  state.set(ordered[0].name, (state.get(ordered[0].name) as number) - total);
  return ordered;
}

/** Delay before attempt `attempts + 1`: initial × factor^(attempts − 1), capped at max. */
export function retryDelay(attempts: number, retry: RetryConfig): number {
  const exponent = Math.max(0, attempts - 1);
  return Math.min(retry.max, Math.round(retry.initial * retry.factor ** exponent));
}

/**
 * When a message that was not delivered should be tried again: after the backoff if a smart host
 * was actually tried, but no later than the moment a host that was skipped (breaker open, quota
 * exhausted) becomes eligible again; a message that reached no host at all waits exactly for that.
 */
export function nextAttemptAt(input: {
  now: number;
  tried: boolean;
  attempts: number;
  retry: RetryConfig;
  skippedUntil: readonly number[];
}): number {
  const { now, tried, attempts, retry, skippedUntil } = input;
  const backoff = now + retryDelay(Math.max(1, attempts), retry);
  const eligibleAgain = skippedUntil.length > 0 ? Math.max(now, Math.min(...skippedUntil)) : Infinity;
  if (!tried && eligibleAgain !== Infinity) return eligibleAgain;
  return Math.min(backoff, eligibleAgain);
}

/**
 * When a message with these pending recipients is due: each recipient at the planned time, or later
 * when a smart host asked it to wait (Retry-After, `notBefore`); the message when its first
 * recipient is. One recipient without such a request makes the planned time stand.
 */
export function firstDue(planned: number, notBefore: readonly (number | undefined)[]): number {
  let due = Infinity;
  for (const at of notBefore) due = Math.min(due, Math.max(planned, at ?? -Infinity));
  return due === Infinity ? planned : due;
}
