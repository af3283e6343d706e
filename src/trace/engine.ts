import { setImmediate as yieldToLoop } from 'node:timers/promises';
import { messageIdKey, queueIdKey, type BlockSummary } from './block';
import type { KeyHash } from './bloom';
import { readRange, type EventFile } from './event-files';
import type { TraceQuery } from './query';
import { buildStory, dsnLinks, storyKey, storyMatches, type Story } from './story';
import {
  idsOf,
  normalizeMessageId,
  parseTraceEvent,
  recipientsOf,
  type LocatedEvent,
  type TraceEvent,
} from './trace-event';

/**
 * Answers a trace query over indexed events files in three steps:
 *  1. seeds: walk the blocks newest first, reading only those whose summary can hold the query's
 *     most selective criterion, and inside them only the lines that contain it;
 *  2. stories: gather every event of those messages (and of the DSNs they caused) from the blocks
 *     whose Bloom filter names their queue ids;
 *  3. keep the stories that meet every criterion, newest first.
 * Seeds are taken in batches until `limit` stories matched, so a broad query stops early and a
 * narrow one reads the whole range once. Every block is a separate read, so a query running inside
 * the relay lets SMTP sessions in between.
 */

export interface IndexedFile {
  file: EventFile;
  blocks: BlockSummary[];
}

export interface TraceResult {
  stories: Story[];
  /** More messages match than the limit let through. */
  more: boolean;
  scanned: { files: number; blocks: number; blocks_read: number; bytes_read: number };
}

/** What the first step looks for: the query's most selective criterion. */
interface Seeker {
  blockMayHold(block: BlockSummary): boolean;
  /** Byte strings one of which a witnessing line must contain; null: every line of the block is read. */
  needles(block: BlockSummary): string[] | null;
  witnesses(event: TraceEvent): boolean;
  /** Only `received` and `rejected` events witness: a block that starts after `until` cannot hold a seed. */
  receivedOnly: boolean;
}

/** Past this many needles in one block, reading every line is cheaper than one search per needle. */
const MAX_NEEDLES = 16;
/** Events gathered for one batch of stories at most: a bound on the memory of one query. */
const MAX_BATCH_EVENTS = 200_000;

export async function runTrace(files: readonly IndexedFile[], query: TraceQuery): Promise<TraceResult> {
  const reader = new BlockReader();
  const seeker = chooseSeeker(query);
  const found = new Map<string, Story>();
  const considered = new Set<string>();
  const batchSize = Math.min(1000, Math.max(50, query.limit * 2));
  let batch = new Map<string, LocatedEvent>();
  let exhausted = true;
  const runBatch = async () => {
    for (const story of await storiesOf(files, batch, query, reader)) {
      if (storyMatches(story, query)) found.set(story.queue_id ?? `rejected@${story.first_at}@${found.size}`, story);
    }
    batch = new Map();
  };
  for await (const seed of seeds(files, seeker, query, reader)) {
    const key = seedKey(seed);
    if (key === null || considered.has(key)) continue;
    considered.add(key);
    batch.set(key, seed);
    if (batch.size >= batchSize) {
      await runBatch();
      if (found.size > query.limit) {
        exhausted = false;
        break;
      }
    }
  }
  if (batch.size > 0) await runBatch();
  const stories = [...found.values()].sort((a, b) => Date.parse(b.first_at) - Date.parse(a.first_at));
  return {
    stories: stories.slice(0, query.limit),
    more: stories.length > query.limit || !exhausted,
    scanned: {
      files: files.length,
      blocks: files.reduce((n, f) => n + f.blocks.length, 0),
      blocks_read: reader.reads,
      bytes_read: reader.bytes,
    },
  };
}

function seedKey(seed: LocatedEvent): string | null {
  if (seed.event.type === 'rejected') return `rejected@${seed.at}`;
  return seed.event.dsn_of ?? seed.event.queue_id;
}

async function* seeds(
  files: readonly IndexedFile[],
  seeker: Seeker,
  query: TraceQuery,
  reader: BlockReader,
): AsyncGenerator<LocatedEvent> {
  for (let f = files.length - 1; f >= 0; f--) {
    const { file, blocks } = files[f];
    for (let b = blocks.length - 1; b >= 0; b--) {
      const block = blocks[b];
      if (query.from !== undefined && block.ts1 !== 0 && block.ts1 < query.from) continue;
      if (seeker.receivedOnly && query.until !== undefined && block.ts0 > query.until) continue;
      if (!seeker.blockMayHold(block)) continue;
      const events = await reader.events(file, block, seeker.needles(block));
      for (let i = events.length - 1; i >= 0; i--) {
        if (seeker.witnesses(events[i].event)) yield events[i];
      }
    }
  }
}

/** Steps 2 and 3 for one batch of seeds: their whole stories. */
async function storiesOf(
  files: readonly IndexedFile[],
  batch: ReadonlyMap<string, LocatedEvent>,
  query: TraceQuery,
  reader: BlockReader,
): Promise<Story[]> {
  const rejected = [...batch.entries()].filter(([key]) => key.startsWith('rejected@'));
  const ids = [...batch.keys()].filter((key) => !key.startsWith('rejected@'));
  const events = await gather(files, ids, query, reader);
  const links = dsnLinks(events);
  const byStory = new Map<string, LocatedEvent[]>();
  for (const event of events) {
    const key = storyKey(event, links);
    if (key === null) continue;
    const list = byStory.get(key) ?? [];
    list.push(event);
    byStory.set(key, list);
  }
  const stories: Story[] = rejected.map(([key, seed]) => buildStory(key, [seed]));
  const roots = new Set(ids.map((id) => links.get(id) ?? id));
  for (const root of roots) {
    const list = byStory.get(root);
    if (list) stories.push(buildStory(root, list));
  }
  return stories;
}

/**
 * Every event that names one of `ids`, or a DSN linked to one of them. A DSN learnt from a `dsn`
 * event is looked for in the blocks that follow (its events come later); a message learnt from a
 * DSN's own event (someone traced the DSN's id) needs another pass, since its events came earlier.
 */
async function gather(
  files: readonly IndexedFile[],
  ids: readonly string[],
  query: TraceQuery,
  reader: BlockReader,
): Promise<LocatedEvent[]> {
  const known = new Set(ids);
  const found = new Map<string, LocatedEvent>();
  let searching = new Map(ids.map((id) => [id, queueIdKey(id)] as [string, KeyHash]));
  for (let pass = 0; pass < 3 && searching.size > 0 && found.size < MAX_BATCH_EVENTS; pass++) {
    const earlier = new Map<string, KeyHash>();
    for (const { file, blocks } of files) {
      for (const block of blocks) {
        if (query.from !== undefined && block.ts1 !== 0 && block.ts1 < query.from) continue;
        // A DSN learnt in this block may have its own events in this same block: look again for those.
        let lookFor = [...searching];
        while (lookFor.length > 0) {
          const hits = lookFor.filter(([, key]) => block.ids.mayContain(key)).map(([id]) => id);
          lookFor = [];
          if (hits.length === 0) break;
          // Many ids in one block: reading every line is cheaper than one search per id.
          const needles = hits.length > MAX_NEEDLES ? null : hits.map((id) => JSON.stringify(id));
          for (const located of await reader.events(file, block, needles)) {
            const { event } = located;
            if (!idsOf(event).some((id) => known.has(id))) continue;
            found.set(located.at, located);
            for (const id of idsOf(event)) {
              if (known.has(id)) continue;
              known.add(id);
              // A DSN's id from its `dsn` event: its events follow. Any other link points back in time.
              if (event.type === 'dsn' && id === event.dsn_id) {
                searching.set(id, queueIdKey(id));
                lookFor.push([id, queueIdKey(id)]);
              } else {
                earlier.set(id, queueIdKey(id));
              }
            }
          }
        }
        if (found.size >= MAX_BATCH_EVENTS) break;
      }
    }
    searching = earlier;
  }
  return [...found.values()];
}

function chooseSeeker(query: TraceQuery): Seeker {
  const { queueId, messageId, recipient, sender, client, smarthost, states } = query;
  if (queueId !== undefined) {
    const key = queueIdKey(queueId);
    return {
      blockMayHold: (block) => block.ids.mayContain(key),
      needles: () => [JSON.stringify(queueId)],
      witnesses: (event) => idsOf(event).includes(queueId),
      receivedOnly: false,
    };
  }
  if (messageId !== undefined) {
    const key = messageIdKey(messageId);
    return {
      blockMayHold: (block) => block.ids.mayContain(key),
      needles: () => [JSON.stringify(messageId).slice(1, -1)],
      witnesses: (event) =>
        event.type === 'received' &&
        typeof event.message_id === 'string' &&
        normalizeMessageId(event.message_id) === messageId,
      receivedOnly: true,
    };
  }
  const addressPattern = recipient ?? sender;
  if (addressPattern) {
    const field = recipient ? 'to' : 'from';
    const matching = (block: BlockSummary) =>
      block.addresses()[field].filter((address) => addressPattern.matches(address));
    return {
      blockMayHold: (block) => block.addresses()[field].some((address) => addressPattern.matches(address)),
      needles: (block) => {
        const addresses = matching(block);
        return addresses.length > MAX_NEEDLES ? null : addresses.map((address) => JSON.stringify(address));
      },
      witnesses: (event) =>
        (field === 'to' ? recipientsOf(event) : event.from === null ? [] : [event.from]).some((address) =>
          addressPattern.matches(address),
        ),
      receivedOnly: false,
    };
  }
  const rareStates = states?.filter((s) => s !== 'delivered' && s !== 'queued');
  if (states && rareStates && rareStates.length === states.length) {
    const types = new Set<string>(states);
    return {
      blockMayHold: (block) => block.types.some((type) => types.has(type)),
      needles: () => states.map((state) => `"type":"${state}"`),
      witnesses: (event) => types.has(event.type),
      receivedOnly: false,
    };
  }
  if (smarthost !== undefined) {
    return {
      blockMayHold: (block) => block.hosts.includes(smarthost),
      needles: () => [`"smarthost":${JSON.stringify(smarthost)}`],
      witnesses: (event) => event.smarthost === smarthost,
      receivedOnly: false,
    };
  }
  if (client !== undefined) {
    return {
      blockMayHold: (block) => block.clients.includes(client),
      needles: () => [`"client":${JSON.stringify(client)}`],
      witnesses: (event) => event.client === client && (event.type === 'received' || event.type === 'rejected'),
      receivedOnly: true,
    };
  }
  // Any message: each one's first event (received, or refused) seeds it.
  const types = new Set(states?.includes('rejected') && states.length === 1 ? ['rejected'] : ['received', 'rejected']);
  return {
    blockMayHold: (block) => block.types.some((type) => types.has(type)),
    needles: () => [...types].map((type) => `"type":"${type}"`),
    witnesses: (event) => types.has(event.type),
    receivedOnly: true,
  };
}

/** Reads blocks (a few kept, as steps 1 and 2 often want the same ones) and the events on the lines that matter. */
class BlockReader {
  reads = 0;
  bytes = 0;
  private readonly cache = new Map<string, Buffer>();

  async events(file: EventFile, block: BlockSummary, needles: readonly string[] | null): Promise<LocatedEvent[]> {
    const data = await this.read(file, block);
    const starts = needles === null ? allLineStarts(data) : lineStartsContaining(data, needles);
    const events: LocatedEvent[] = [];
    for (const start of starts) {
      const newline = data.indexOf(0x0a, start);
      const event = parseTraceEvent(data.toString('utf8', start, newline === -1 ? data.length : newline));
      if (event) events.push({ event, time: Date.parse(event.ts), at: `${file.identity}:${block.start + start}` });
    }
    return events;
  }

  private async read(file: EventFile, block: BlockSummary): Promise<Buffer> {
    const key = `${file.identity}:${block.start}`;
    const cached = this.cache.get(key);
    if (cached) return cached;
    const data = await readRange(file.handle, block.start, block.end);
    this.reads++;
    this.bytes += data.length;
    if (this.cache.size >= 16) this.cache.delete(this.cache.keys().next().value as string);
    this.cache.set(key, data);
    // A read from the page cache may not yield: give the loop its turn once per block anyway.
    await yieldToLoop();
    return data;
  }
}

function allLineStarts(data: Buffer): number[] {
  const starts: number[] = [];
  for (let start = 0; start < data.length;) {
    starts.push(start);
    const newline = data.indexOf(0x0a, start);
    if (newline === -1) break;
    start = newline + 1;
  }
  return starts;
}

function lineStartsContaining(data: Buffer, needles: readonly string[]): number[] {
  const starts = new Set<number>();
  for (const needle of needles) {
    const bytes = Buffer.from(needle);
    let position = data.indexOf(bytes);
    while (position !== -1) {
      starts.add(data.lastIndexOf(0x0a, position) + 1);
      const newline = data.indexOf(0x0a, position);
      if (newline === -1) break;
      position = data.indexOf(bytes, newline + 1);
    }
  }
  return [...starts].sort((a, b) => a - b);
}
