/**
 * One line of `events.jsonl` as the trace reads it: the shape observe/observer.ts writes
 * (`toJsonEvent`), checked field by field, because a line read back from disk may be torn by a
 * crash, cut by hand, or written by an older version.
 */
export interface TraceEvent {
  ts: string;
  type: string;
  queue_id: string | null;
  client: string | null;
  from: string | null;
  /** An array on `received`, `attempt` and `dsn`; one address on outcomes; null on most rejects. */
  to: string | string[] | null;
  smarthost: string | null;
  response: string | null;
  attempt: number | null;
  size?: number;
  message_id?: string | null;
  remote?: string;
  listener?: string;
  reason?: string;
  /** On a DSN's own outcomes: the message it reports on. */
  dsn_of?: string;
  /** On a `dsn` event: the DSN's own queue id (`queue_id` is the message it reports on). */
  dsn_id?: string;
  recipients?: string[];
  outcome?: string;
  accepted?: number;
  relay?: string;
  duration_ms?: number;
}

/** An event and where its line starts, so one read of the same line twice is seen as one event. */
export interface LocatedEvent {
  event: TraceEvent;
  /** Milliseconds since the epoch, from `ts`. */
  time: number;
  /** `<inode>:<offset>`: unique across the rotated files, whatever name a file has now. */
  at: string;
}

const OPTIONAL_STRINGS = [
  'message_id',
  'remote',
  'listener',
  'reason',
  'dsn_of',
  'dsn_id',
  'outcome',
  'relay',
] as const;
const OPTIONAL_NUMBERS = ['size', 'accepted', 'duration_ms'] as const;

/** The event on one line, or null for a line that is none (torn, foreign, or from a version that changed a field). */
export function parseTraceEvent(line: string): TraceEvent | null {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    return null;
  }
  if (!isRecord(value) || typeof value.ts !== 'string' || typeof value.type !== 'string') return null;
  const event: TraceEvent = {
    ts: value.ts,
    type: value.type,
    queue_id: stringOrNull(value.queue_id),
    client: stringOrNull(value.client),
    from: stringOrNull(value.from),
    to: typeof value.to === 'string' ? value.to : stringArray(value.to),
    smarthost: stringOrNull(value.smarthost),
    response: stringOrNull(value.response),
    attempt: typeof value.attempt === 'number' ? value.attempt : null,
  };
  for (const key of OPTIONAL_STRINGS) {
    const field = value[key];
    if (typeof field === 'string') event[key] = field;
    else if (key === 'message_id' && field === null) event.message_id = null;
  }
  for (const key of OPTIONAL_NUMBERS) {
    if (typeof value[key] === 'number') event[key] = value[key];
  }
  const recipients = stringArray(value.recipients);
  if (recipients) event.recipients = recipients;
  return event;
}

/** Every address in `to`, whichever form it has. */
export function recipientsOf(event: TraceEvent): string[] {
  if (event.to === null) return [];
  return typeof event.to === 'string' ? [event.to] : event.to;
}

/** The queue ids a line names: its own, and the one a DSN links it to. */
export function idsOf(event: TraceEvent): string[] {
  const ids: string[] = [];
  if (event.queue_id !== null) ids.push(event.queue_id);
  if (event.dsn_of !== undefined) ids.push(event.dsn_of);
  if (event.dsn_id !== undefined) ids.push(event.dsn_id);
  return ids;
}

/** `<abc@host>`, ` abc@host `, `abc@host`: one form, so an admin may paste it with or without brackets. */
export function normalizeMessageId(value: string): string {
  return value
    .trim()
    .replace(/^<(.*)>$/, '$1')
    .trim();
}

function stringOrNull(value: unknown): string | null {
  return typeof value === 'string' ? value : null;
}

function stringArray(value: unknown): string[] | null {
  return Array.isArray(value) && value.every((item) => typeof item === 'string') ? (value as string[]) : null;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}
