import type { RetryConfig } from '../config/schema';

/** Pure planning: which smart hosts to try in which order, and when to try again. */

export interface Candidate {
  name: string;
  priority: number;
  weight: number;
}

/**
 * Lowest priority first; among equal priorities a weighted random order, so equal providers share
 * the load in proportion to their weight. `random` is injectable for table tests.
 */
export function orderSmartHosts<T extends Candidate>(candidates: readonly T[], random: () => number = Math.random): T[] {
  const byPriority = new Map<number, T[]>();
  for (const candidate of candidates) {
    const group = byPriority.get(candidate.priority) ?? [];
    group.push(candidate);
    byPriority.set(candidate.priority, group);
  }
  return [...byPriority.keys()].sort((a, b) => a - b).flatMap((priority) => weightedShuffle(byPriority.get(priority) as T[], random));
}

function weightedShuffle<T extends Candidate>(group: T[], random: () => number): T[] {
  const remaining = [...group];
  const out: T[] = [];
  while (remaining.length > 0) {
    const total = remaining.reduce((sum, c) => sum + c.weight, 0);
    let pick = random() * total;
    let index = 0;
    while (index < remaining.length - 1 && pick >= remaining[index].weight) {
      pick -= remaining[index].weight;
      index++;
    }
    out.push(remaining.splice(index, 1)[0]);
  }
  return out;
}

/** Delay before attempt `attempts + 1`: initial × factor^(attempts − 1), capped at max. */
export function retryDelay(attempts: number, retry: RetryConfig): number {
  const exponent = Math.max(0, attempts - 1);
  return Math.min(retry.max, Math.round(retry.initial * retry.factor ** exponent));
}
