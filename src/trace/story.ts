import type { TraceQuery, TraceState } from './query';
import { normalizeMessageId, recipientsOf, type LocatedEvent, type TraceEvent } from './trace-event';

/**
 * One message's story, put together from its events: how it came in, what happened to each
 * recipient, every smart-host attempt, and the DSNs it caused (with what became of them). A
 * transaction the relay refused (a `rejected` event) is a story of one event without a queue id.
 */
export interface Story {
  queue_id: string | null;
  /**
   * Where the message stands: `deferred` while some recipient waits for a retry, `queued` while
   * some recipient has no outcome yet, else `delivered` when all were, else `bounced` (some
   * recipient refused for good) or `expired`.
   */
  state: TraceState;
  /** Time of its first event: when it was received, or refused. */
  first_at: string;
  received: {
    at: string;
    client: string | null;
    remote: string | null;
    listener: string | null;
    from: string | null;
    to: string[];
    size: number | null;
    message_id: string | null;
  } | null;
  recipients: {
    address: string;
    state: TraceState;
    at: string | null;
    smarthost: string | null;
    response: string | null;
    attempt: number | null;
  }[];
  dsns: { queue_id: string; at: string; to: string[]; about: string[]; state: TraceState; response: string | null }[];
  rejected: { reason: string | null; response: string | null } | null;
  /** Every event of the story in the order it happened (at most MAX_STORY_EVENTS: the oldest are kept). */
  events: TraceEvent[];
  events_truncated: boolean;
}

export const MAX_STORY_EVENTS = 5000;

const OUTCOME_TYPES = new Set(['delivered', 'deferred', 'bounced', 'expired']);

/**
 * The DSN links among these events: a DSN's queue id maps to the message it reports on (from the
 * `dsn` event, or from a DSN outcome's `dsn_of`). Every other id is its own root.
 */
export function dsnLinks(events: readonly LocatedEvent[]): Map<string, string> {
  const links = new Map<string, string>();
  for (const { event } of events) {
    if (event.type === 'dsn' && event.dsn_id !== undefined && event.queue_id !== null)
      links.set(event.dsn_id, event.queue_id);
    if (event.dsn_of !== undefined && event.queue_id !== null) links.set(event.queue_id, event.dsn_of);
  }
  return links;
}

/** The story an event belongs to: its message's root id, or its own place for a refused transaction. */
export function storyKey(event: LocatedEvent, links: ReadonlyMap<string, string>): string | null {
  if (event.event.type === 'rejected') return `rejected@${event.at}`;
  const id = event.event.dsn_of ?? event.event.queue_id;
  if (id === null) return null;
  return links.get(id) ?? id;
}

/** Assembles one story from its events (any order; they are sorted by time, then by place in the files). */
export function buildStory(key: string, located: readonly LocatedEvent[]): Story {
  const ordered = [...located].sort((a, b) => a.time - b.time);
  const events = ordered.slice(0, MAX_STORY_EVENTS).map((e) => e.event);
  const first = events[0];
  if (first?.type === 'rejected') {
    return {
      queue_id: null,
      state: 'rejected',
      first_at: first.ts,
      received: null,
      recipients: recipientsOf(first).map((address) => ({
        address,
        state: 'rejected',
        at: first.ts,
        smarthost: null,
        response: first.response,
        attempt: null,
      })),
      dsns: [],
      rejected: { reason: first.reason ?? null, response: first.response },
      events,
      events_truncated: false,
    };
  }
  const receivedEvent = events.find((e) => e.type === 'received' && e.queue_id === key);
  const recipients = new Map<string, Story['recipients'][number]>();
  for (const address of receivedEvent ? recipientsOf(receivedEvent) : []) {
    recipients.set(address, { address, state: 'queued', at: null, smarthost: null, response: null, attempt: null });
  }
  const dsns = new Map<string, Story['dsns'][number]>();
  for (const event of events) {
    if (event.type === 'dsn' && event.dsn_id !== undefined) {
      dsns.set(event.dsn_id, {
        queue_id: event.dsn_id,
        at: event.ts,
        to: recipientsOf(event),
        about: event.recipients ?? [],
        state: 'queued',
        response: null,
      });
      continue;
    }
    if (!OUTCOME_TYPES.has(event.type)) continue;
    const state = event.type as TraceState;
    if (event.dsn_of !== undefined && event.queue_id !== null) {
      const dsn = dsns.get(event.queue_id) ?? {
        queue_id: event.queue_id,
        at: event.ts,
        to: recipientsOf(event),
        about: [],
        state,
        response: null,
      };
      dsns.set(event.queue_id, { ...dsn, state, response: event.response });
      continue;
    }
    for (const address of recipientsOf(event)) {
      recipients.set(address, {
        address,
        state,
        at: event.ts,
        smarthost: event.smarthost,
        response: event.response,
        attempt: event.attempt,
      });
    }
  }
  const list = [...recipients.values()];
  return {
    queue_id: key,
    state: overallState(list.map((r) => r.state)),
    first_at: first?.ts ?? '',
    received: receivedEvent
      ? {
          at: receivedEvent.ts,
          client: receivedEvent.client,
          remote: receivedEvent.remote ?? null,
          listener: receivedEvent.listener ?? null,
          from: receivedEvent.from,
          to: recipientsOf(receivedEvent),
          size: receivedEvent.size ?? null,
          message_id: receivedEvent.message_id ?? null,
        }
      : null,
    recipients: list,
    dsns: [...dsns.values()],
    rejected: null,
    events,
    events_truncated: ordered.length > MAX_STORY_EVENTS,
  };
}

function overallState(states: readonly TraceState[]): TraceState {
  if (states.length === 0) return 'queued';
  if (states.includes('deferred')) return 'deferred';
  if (states.includes('queued')) return 'queued';
  if (states.every((s) => s === 'delivered')) return 'delivered';
  return states.includes('bounced') ? 'bounced' : 'expired';
}

/** Whether a whole story meets every criterion of the query. */
export function storyMatches(story: Story, query: TraceQuery): boolean {
  const first = Date.parse(story.first_at);
  if (query.from !== undefined && !(first >= query.from)) return false;
  if (query.until !== undefined && !(first <= query.until)) return false;
  const own = story.events.filter(
    (e) => e.dsn_of === undefined && (e.type !== 'attempt' || e.queue_id === story.queue_id),
  );
  if (
    query.queueId !== undefined &&
    story.queue_id !== query.queueId &&
    !story.dsns.some((d) => d.queue_id === query.queueId)
  )
    return false;
  if (query.messageId !== undefined) {
    const messageId = story.received?.message_id;
    if (typeof messageId !== 'string' || normalizeMessageId(messageId) !== query.messageId) return false;
  }
  if (query.sender) {
    const sender = story.received?.from ?? own.find((e) => e.from !== null && e.type !== 'dsn')?.from ?? null;
    if (sender === null || !query.sender.matches(sender)) return false;
  }
  if (query.recipient) {
    const pattern = query.recipient;
    if (!story.recipients.some((r) => pattern.matches(r.address))) return false;
  }
  if (query.client !== undefined) {
    const client = story.received?.client ?? own.find((e) => e.client !== null)?.client ?? null;
    if (client !== query.client) return false;
  }
  if (query.smarthost !== undefined && !own.some((e) => e.smarthost === query.smarthost)) return false;
  if (query.states !== undefined) {
    const states = query.states;
    if (!states.includes(story.state) && !story.recipients.some((r) => states.includes(r.state))) return false;
  }
  return true;
}
