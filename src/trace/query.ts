import { parseDuration } from '../config/units';
import { AddressPattern } from './address-pattern';
import { normalizeMessageId } from './trace-event';

/**
 * What `smarthop trace` and `GET /api/trace` ask for:
 *
 *   /api/trace?queue_id=&message_id=&sender=&recipient=&client=&smarthost=&outcome=bounced,deferred
 *             &since=2h | &from=2026-11-01T15:00Z&until=2026-11-01T16:00Z  &limit=20
 *
 * Every criterion given must hold for a message to be listed; the time range selects messages by
 * when they were received. The CLI builds this same query string from its options and parses it
 * with this same function when it reads the events files itself, so both paths answer alike.
 */

export const TRACE_STATES = ['delivered', 'deferred', 'bounced', 'expired', 'rejected', 'queued'] as const;
export type TraceState = (typeof TRACE_STATES)[number];

export const DEFAULT_TRACE_LIMIT = 20;
export const MAX_TRACE_LIMIT = 1000;

export interface TraceQuery {
  queueId?: string;
  /** Without angle brackets (normalizeMessageId). */
  messageId?: string;
  sender?: AddressPattern;
  recipient?: AddressPattern;
  client?: string;
  smarthost?: string;
  states?: TraceState[];
  /** Received at or after (ms since the epoch). */
  from?: number;
  /** Received at or before. */
  until?: number;
  limit: number;
}

export type TraceQueryResult = { ok: true; query: TraceQuery } | { ok: false; error: string };

/** The parameters a trace query understands, for an API that lists them in an error. */
export const TRACE_PARAMETERS = [
  'queue_id',
  'message_id',
  'sender',
  'recipient',
  'client',
  'smarthost',
  'outcome',
  'since',
  'from',
  'until',
  'limit',
];

export function parseTraceQuery(params: URLSearchParams, now: number): TraceQueryResult {
  const unknown = [...params.keys()].filter((key) => !TRACE_PARAMETERS.includes(key));
  if (unknown.length > 0)
    return { ok: false, error: `unknown parameter ${unknown.join(', ')} (expected ${TRACE_PARAMETERS.join(', ')})` };
  const query: TraceQuery = { limit: DEFAULT_TRACE_LIMIT };
  const text = (key: string) => {
    const value = params.get(key)?.trim();
    return value === undefined || value === '' ? undefined : value;
  };
  query.queueId = text('queue_id');
  const messageId = text('message_id');
  if (messageId !== undefined) query.messageId = normalizeMessageId(messageId);
  for (const key of ['sender', 'recipient'] as const) {
    const value = text(key);
    if (value === undefined) continue;
    const compiled = AddressPattern.compile(value);
    if (!compiled.ok) return { ok: false, error: `${key}: ${compiled.error}` };
    query[key] = compiled.pattern;
  }
  query.client = text('client');
  query.smarthost = text('smarthost');
  const outcome = text('outcome');
  if (outcome !== undefined) {
    const states = outcome
      .split(',')
      .map((s) => s.trim())
      .filter((s) => s !== '');
    const wrong = states.filter((s) => !(TRACE_STATES as readonly string[]).includes(s));
    if (wrong.length > 0)
      return { ok: false, error: `outcome: unknown ${wrong.join(', ')} (expected ${TRACE_STATES.join(', ')})` };
    query.states = states as TraceState[];
  }
  const since = text('since');
  const from = text('from');
  if (since !== undefined && from !== undefined)
    return { ok: false, error: 'since and from both set: give one of them' };
  if (since !== undefined) {
    const ms = parseDuration(since);
    if (ms === undefined)
      return { ok: false, error: `since: expected a duration like 30m, 2h or 1d, got ${JSON.stringify(since)}` };
    query.from = now - ms;
  }
  for (const key of ['from', 'until'] as const) {
    const value = text(key);
    if (value === undefined) continue;
    const ms = parseTimestamp(value);
    if (ms === undefined)
      return {
        ok: false,
        error: `${key}: expected a time like 2026-11-01T15:00 or 2026-11-01 15:00:30Z, got ${JSON.stringify(value)}`,
      };
    query[key] = ms;
  }
  if (query.from !== undefined && query.until !== undefined && query.until < query.from)
    return { ok: false, error: 'until is before from' };
  const limit = text('limit');
  if (limit !== undefined) {
    const n = Number(limit);
    if (!Number.isInteger(n) || n < 1 || n > MAX_TRACE_LIMIT)
      return { ok: false, error: `limit: expected a whole number from 1 to ${MAX_TRACE_LIMIT}` };
    query.limit = n;
  }
  return { ok: true, query };
}

const TIMESTAMP =
  /^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,3}))?)?)?\s*(Z|[+-]\d{2}:?\d{2})?$/i;

/**
 * `2026-11-01`, `2026-11-01T15:00`, `2026-11-01 15:00:30.250`, each with an optional `Z` or
 * `+01:00`. Without a zone it is the local time of the machine that reads it (the admin's shell for
 * the CLI, which sends the API an absolute time). Undefined for anything else, or a day that does
 * not exist.
 */
export function parseTimestamp(input: string): number | undefined {
  const match = TIMESTAMP.exec(input.trim());
  if (!match) return undefined;
  const [year, month, day, hour, minute, second] = match
    .slice(1, 7)
    .map((part) => (part === undefined ? 0 : Number(part)));
  const ms = match[7] === undefined ? 0 : Number(match[7].padEnd(3, '0'));
  if (month < 1 || month > 12 || day < 1 || day > 31 || hour > 23 || minute > 59 || second > 59) return undefined;
  const zone = match[8];
  let time: number;
  if (zone === undefined) {
    const local = new Date(year, month - 1, day, hour, minute, second, ms);
    if (local.getDate() !== day) return undefined;
    time = local.getTime();
  } else {
    time = Date.UTC(year, month - 1, day, hour, minute, second, ms);
    if (new Date(time).getUTCDate() !== day) return undefined;
    if (zone.toUpperCase() !== 'Z') {
      const sign = zone.startsWith('-') ? -1 : 1;
      const digits = zone.slice(1).replace(':', '');
      time -= sign * (Number(digits.slice(0, 2)) * 60 + Number(digits.slice(2))) * 60_000;
    }
  }
  return time;
}
