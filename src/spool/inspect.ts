import { open } from 'node:fs/promises';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { messageBytes, type MessageMeta, type RecipientStatus } from './message';
import { FolderWalk, SLICE_MS } from './queue-walk';
import type { ScheduleState } from './scheduler';
import type { SpoolFolder, SpoolStore } from './store';

/**
 * Read-only views of the spool for people: what `mailq` and `postcat -h` show. Everything here works
 * from the files alone, so `smarthop queue list` can read a spool whose relay is not running; a
 * running relay adds what only its scheduler knows (which message is being attempted right now).
 */

/** The states of `smarthop_queue_messages{state}`; `active` messages count as ready there too. */
export type QueueState = 'ready' | 'deferred' | 'held' | 'dead';
export const QUEUE_STATES: readonly QueueState[] = ['ready', 'deferred', 'held', 'dead'];

export interface RecipientView {
  address: string;
  status: RecipientStatus;
  response: string | null;
  smarthost: string | null;
}

export interface QueueEntry {
  id: string;
  state: QueueState;
  /** Being attempted right now (only a running relay knows). */
  active: boolean;
  client: string;
  listener: string;
  route: string;
  from: string;
  recipients: RecipientView[];
  size: number;
  received_at: string;
  age_seconds: number;
  attempts: number;
  next_attempt_at: string | null;
  last_response: string | null;
  held_at: string | null;
  dead: { reason: string; at: string; response: string } | null;
}

export interface HeaderField {
  name: string;
  value: string;
}

export interface MessageDetail extends QueueEntry {
  remote: string;
  headers: HeaderField[];
  /** The header block was longer than what is read for display. */
  headers_truncated: boolean;
}

export interface QueueFilter {
  states?: readonly QueueState[];
  /** Exact client name. */
  client?: string;
  /** Case-insensitive substring of any recipient address (`@example.com`, `boss@`). */
  recipient?: string;
  /** Older than this many ms. */
  minAgeMs?: number;
  /** Younger than this many ms. */
  maxAgeMs?: number;
  limit?: number;
}

export const DEFAULT_LIST_LIMIT = 1000;
const FOLDER_STATES: Record<SpoolFolder, readonly QueueState[]> = {
  queue: ['ready', 'deferred'],
  hold: ['held'],
  dead: ['dead'],
};

/** The state a person should see; without the scheduler, a message with a retry time to come is deferred. */
export function stateOf(folder: SpoolFolder, meta: MessageMeta, now: number, scheduled?: ScheduleState): QueueState {
  if (folder === 'hold') return 'held';
  if (folder === 'dead') return 'dead';
  if (scheduled === 'deferred') return 'deferred';
  if (scheduled !== undefined) return 'ready';
  return meta.attempts > 0 && meta.nextAttemptAt > now ? 'deferred' : 'ready';
}

export function entryOf(folder: SpoolFolder, meta: MessageMeta, now: number, scheduled?: ScheduleState): QueueEntry {
  const state = stateOf(folder, meta, now, scheduled);
  const lastResponse = [...meta.recipients].reverse().find((r) => r.response !== undefined)?.response ?? null;
  return {
    id: meta.id,
    state,
    active: scheduled === 'active',
    client: meta.client,
    listener: meta.listener,
    route: meta.route,
    from: meta.from,
    recipients: meta.recipients.map((r) => ({
      address: r.address,
      status: r.status,
      response: r.response ?? null,
      smarthost: r.smarthost ?? null,
    })),
    size: meta.size,
    received_at: new Date(meta.receivedAt).toISOString(),
    age_seconds: Math.max(0, Math.round((now - meta.receivedAt) / 1000)),
    attempts: meta.attempts,
    next_attempt_at: state === 'ready' || state === 'deferred' ? new Date(meta.nextAttemptAt).toISOString() : null,
    last_response: lastResponse,
    held_at: meta.held ? new Date(meta.held.at).toISOString() : null,
    dead: meta.dead
      ? { reason: meta.dead.reason, at: new Date(meta.dead.at).toISOString(), response: meta.dead.response }
      : null,
  };
}

export function matchesFilter(entry: QueueEntry, filter: QueueFilter): boolean {
  if (filter.states && !filter.states.includes(entry.state)) return false;
  if (filter.client !== undefined && entry.client !== filter.client) return false;
  if (filter.recipient !== undefined) {
    const needle = filter.recipient.toLowerCase();
    if (!entry.recipients.some((r) => r.address.toLowerCase().includes(needle))) return false;
  }
  const ageMs = entry.age_seconds * 1000;
  if (filter.minAgeMs !== undefined && ageMs < filter.minAgeMs) return false;
  if (filter.maxAgeMs !== undefined && ageMs > filter.maxAgeMs) return false;
  return true;
}

export interface QueueListing {
  messages: QueueEntry[];
  /** More messages matched than `limit`. */
  truncated: boolean;
}

/** A folder holding at most this many messages is listed oldest first; a larger one in the order it is read. */
export const SORTED_LISTING_MAX = 10_000;

/**
 * Every committed message that matches, folder by folder (queue, hold, dead), as it is found: a
 * listing of a deep queue never holds more than a slice of it, and the first rows come at once.
 * A folder of up to SORTED_LISTING_MAX messages is listed oldest first (ids are time-ordered); a
 * larger one in the order the folder is read, since sorting it would mean holding it. Files that
 * vanish while being read were delivered or moved in the meantime and are skipped. Metadata is read
 * synchronously in slices (see queue-walk.ts): a recipient search reads every message.
 */
export async function* walkSpool(
  store: SpoolStore,
  filter: QueueFilter,
  now: number,
  scheduled?: (id: string) => ScheduleState | undefined,
): AsyncGenerator<QueueEntry> {
  for (const folder of ['queue', 'hold', 'dead'] as const) {
    if (filter.states && !FOLDER_STATES[folder].some((state) => filter.states?.includes(state))) continue;
    let walk: FolderWalk;
    try {
      walk = new FolderWalk(store.dirOf(folder));
    } catch {
      continue;
    }
    try {
      const head: string[] = [];
      let name: string | null;
      while (head.length <= SORTED_LISTING_MAX && (name = walk.next()) !== null) {
        const id = store.idOfName(folder, name);
        if (id !== null) head.push(id);
      }
      const large = head.length > SORTED_LISTING_MAX;
      if (!large) head.sort();
      let next = 0;
      const nextId = (): string | null => {
        if (next < head.length) return head[next++];
        for (let found = large ? walk.next() : null; found !== null; found = walk.next()) {
          const id = store.idOfName(folder, found);
          if (id !== null) return id;
        }
        return null;
      };
      for (;;) {
        const batch = readSlice(store, folder, nextId, filter, now, scheduled);
        for (const entry of batch.entries) yield entry;
        if (batch.done) break;
        await nextTurn();
      }
    } finally {
      walk.close();
    }
  }
}

/** What one slice of the event loop reads: the matching entries, and whether the folder is done. */
function readSlice(
  store: SpoolStore,
  folder: SpoolFolder,
  nextId: () => string | null,
  filter: QueueFilter,
  now: number,
  scheduled?: (id: string) => ScheduleState | undefined,
): { entries: QueueEntry[]; done: boolean } {
  const entries: QueueEntry[] = [];
  const sliceEnd = performance.now() + SLICE_MS;
  while (performance.now() < sliceEnd) {
    const id = nextId();
    if (id === null) return { entries, done: true };
    let meta: MessageMeta;
    try {
      meta = store.readInSync(folder, id);
    } catch {
      continue;
    }
    const entry = entryOf(folder, meta, now, scheduled?.(id));
    if (matchesFilter(entry, filter)) entries.push(entry);
  }
  return { entries, done: false };
}

/** Up to the limit of what walkSpool finds, and whether more matched. */
export async function listSpool(
  store: SpoolStore,
  filter: QueueFilter,
  now: number,
  scheduled?: (id: string) => ScheduleState | undefined,
): Promise<QueueListing> {
  const limit = filter.limit ?? DEFAULT_LIST_LIMIT;
  const messages: QueueEntry[] = [];
  for await (const entry of walkSpool(store, filter, now, scheduled)) {
    if (messages.length === limit) return { messages, truncated: true };
    messages.push(entry);
  }
  return { messages, truncated: false };
}

/** One message as `postcat -h` would show it: its state plus the header block of the stored file. */
export async function showMessage(
  store: SpoolStore,
  id: string,
  now: number,
  scheduled?: ScheduleState,
): Promise<MessageDetail | null> {
  const folder = await store.locate(id);
  if (!folder) return null;
  const meta = await store.readIn(folder, id).catch(() => null);
  if (!meta) return null;
  const { headers, truncated } = await readHeaders(store.messagePath(folder, id), messageBytes(meta)).catch(() => ({
    headers: [],
    truncated: false,
  }));
  return { ...entryOf(folder, meta, now, scheduled), remote: meta.remote, headers, headers_truncated: truncated };
}

/**
 * The header fields of a stored message, reading at most `maxBytes` (a header block can be made
 * huge; the body is never read, so it is never shown). Folded lines are unfolded.
 */
export async function readHeaders(
  file: string,
  messageLength: number | undefined,
  maxBytes = 64 * 1024,
  maxFields = 200,
  maxValue = 2000,
): Promise<{ headers: HeaderField[]; truncated: boolean }> {
  const handle = await open(file, 'r');
  let text: string;
  try {
    // Never past the message's own bytes: a committed file carries its metadata behind them.
    const length = Math.min(maxBytes, messageLength ?? maxBytes);
    const buffer = Buffer.alloc(length);
    const { bytesRead } = await handle.read(buffer, 0, length, 0);
    text = buffer.subarray(0, bytesRead).toString('utf8');
  } finally {
    await handle.close();
  }
  const end = text.search(/\r?\n\r?\n/);
  let truncated = end === -1 && text.length > 0 && Buffer.byteLength(text) >= maxBytes;
  const block = end === -1 ? text : text.slice(0, end);
  const headers: HeaderField[] = [];
  for (const line of block.split(/\r?\n/)) {
    if (/^[ \t]/.test(line) && headers.length > 0) {
      const last = headers[headers.length - 1];
      last.value = `${last.value} ${line.trim()}`.slice(0, maxValue);
      continue;
    }
    const colon = line.indexOf(':');
    if (colon <= 0) continue;
    if (headers.length === maxFields) {
      truncated = true;
      break;
    }
    headers.push({
      name: line.slice(0, colon).trim(),
      value: line
        .slice(colon + 1)
        .trim()
        .slice(0, maxValue),
    });
  }
  return { headers, truncated };
}
