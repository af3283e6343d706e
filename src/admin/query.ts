import { parseDuration } from '../config/units';
import { QUEUE_STATES, type QueueFilter, type QueueState } from '../spool/inspect';

/**
 * `GET /api/queue?state=deferred,held&client=erp&recipient=@example.com&min_age=1h&max_age=1d&limit=50`.
 * The CLI builds the same query string from its options, and parses it with this same function when
 * it reads a spool directly, so both paths filter identically.
 */

export const MAX_LIST_LIMIT = 10_000;

export type FilterResult = { ok: true; filter: QueueFilter } | { ok: false; error: string };

export function parseQueueQuery(params: URLSearchParams): FilterResult {
  const filter: QueueFilter = {};
  const state = params.get('state');
  if (state) {
    const states = state
      .split(',')
      .map((s) => s.trim())
      .filter((s) => s !== '');
    const unknown = states.filter((s) => !(QUEUE_STATES as readonly string[]).includes(s));
    if (unknown.length > 0)
      return { ok: false, error: `unknown state ${unknown.join(', ')} (expected ${QUEUE_STATES.join(', ')})` };
    filter.states = states as QueueState[];
  }
  const client = params.get('client');
  if (client) filter.client = client;
  const recipient = params.get('recipient');
  if (recipient) filter.recipient = recipient;
  for (const [key, field] of [
    ['min_age', 'minAgeMs'],
    ['max_age', 'maxAgeMs'],
  ] as const) {
    const value = params.get(key);
    if (!value) continue;
    const ms = parseDuration(value);
    if (ms === undefined)
      return { ok: false, error: `${key}: expected a duration like 30s, 5m, 1h or 5d, got ${JSON.stringify(value)}` };
    filter[field] = ms;
  }
  const limit = params.get('limit');
  if (limit) {
    const n = Number(limit);
    if (!Number.isInteger(n) || n < 1 || n > MAX_LIST_LIMIT)
      return { ok: false, error: `limit: expected a whole number from 1 to ${MAX_LIST_LIMIT}` };
    filter.limit = n;
  }
  return { ok: true, filter };
}
