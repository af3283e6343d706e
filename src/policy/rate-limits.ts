import type { WindowLimit } from '../limits/window-counters';

/**
 * Per-client rate limits, planned once per config: each `{ window, messages?, recipients?, bytes? }`
 * entry becomes one WindowLimit per dimension it names, with the bounded metric label
 * (`messages_1m`) and the words of its 451 reply. Counting itself is the WindowCounters' job.
 */

export type RateDimension = 'messages' | 'recipients' | 'bytes';
export const RATE_DIMENSIONS: readonly RateDimension[] = ['messages', 'recipients', 'bytes'];

export interface RateLimitConfig {
  window: number;
  messages?: number;
  recipients?: number;
  bytes?: number;
}

export interface RatePlan {
  limits: WindowLimit[];
  /** `messages_1m`: the `limit` label of smarthop_rate_limited_total, from config values only. */
  labels: string[];
  /** `60 messages per 1m`, for the reply text. */
  descriptions: string[];
}

export function planRateLimits(entries: readonly RateLimitConfig[]): Record<RateDimension, RatePlan> {
  const plan = {} as Record<RateDimension, RatePlan>;
  for (const dimension of RATE_DIMENSIONS) {
    const limits: WindowLimit[] = [];
    const labels: string[] = [];
    const descriptions: string[] = [];
    for (const entry of entries) {
      const max = entry[dimension];
      if (max === undefined) continue;
      limits.push({ windowMs: entry.window, max });
      labels.push(rateLimitLabel(dimension, entry.window));
      descriptions.push(`${max} ${dimension} per ${formatWindow(entry.window)}`);
    }
    plan[dimension] = { limits, labels, descriptions };
  }
  return plan;
}

export function rateLimitLabel(dimension: string, windowMs: number): string {
  return `${dimension}_${formatWindow(windowMs)}`;
}

/** The largest unit that writes the window exactly: 60000 → `1m`, 90000 → `90s`, 1500 → `1500ms`. */
export function formatWindow(ms: number): string {
  for (const [unit, factor] of [
    ['d', 86_400_000],
    ['h', 3_600_000],
    ['m', 60_000],
    ['s', 1000],
  ] as const) {
    if (ms >= factor && ms % factor === 0) return `${ms / factor}${unit}`;
  }
  return `${ms}ms`;
}

/** Whole seconds to wait, never 0: "try again in 0s" would invite an immediate, useless retry. */
export function retryAfterSeconds(retryAfterMs: number): number {
  return Math.max(1, Math.ceil(retryAfterMs / 1000));
}

/** `4.7.1 Rate limit for client erp: 60 messages per 1m; try again in 37s` (the 451 reply text). */
export function rateLimitText(client: string, description: string, retryAfterMs: number, share?: number): string {
  return (
    `4.7.1 Rate limit for client ${client}: ${limitWording(description, share)}; ` +
    `try again in ${retryAfterSeconds(retryAfterMs)}s`
  );
}

/**
 * A limit as a reply names it: `60 messages per 1m`, or, when this relay refused at its share of a
 * fleet limit (shared counters unreachable, see FallbackWindowCounters),
 * `30 of the fleet's 60 messages per 1m on this relay while shared limits are unreachable`.
 */
export function limitWording(description: string, share?: number): string {
  return share === undefined
    ? description
    : `${share} of the fleet's ${description} on this relay while shared limits are unreachable`;
}
