import { BloomFilter, hashKey, type KeyHash } from './bloom';
import { idsOf, normalizeMessageId, recipientsOf, type TraceEvent } from './trace-event';

/**
 * What the trace index knows about one stretch of an events file (a block of whole lines, about
 * half a MiB): where it lies, the time it covers, which senders, recipients, clients, smart hosts
 * and event types occur in it exactly, and a Bloom filter of its queue ids and Message-IDs. A query
 * reads only the blocks that can hold what it looks for.
 */
export interface BlockSummary {
  /** Byte range of the events file, [start, end), starting and ending on a line boundary. */
  start: number;
  end: number;
  lines: number;
  /** Earliest and latest event time in the block (ms); 0 and 0 when no line had one. */
  ts0: number;
  ts1: number;
  types: string[];
  clients: string[];
  hosts: string[];
  /**
   * Senders and recipients exactly as the events spell them (the query normalises when it compares).
   * The bulk of the index: read from disk only by a query that looks for an address.
   */
  addresses(): Addresses;
  ids: BloomFilter;
}

export interface Addresses {
  from: string[];
  to: string[];
}

/**
 * A block is cut once it holds this many bytes or lines: small enough to read whole, large enough
 * that the index stays a few % of the events.
 */
export const BLOCK_BYTES = 512 * 1024;
export const BLOCK_LINES = 4096;

export function queueIdKey(id: string): KeyHash {
  return hashKey(`q:${id}`);
}

export function messageIdKey(messageId: string): KeyHash {
  return hashKey(`m:${normalizeMessageId(messageId)}`);
}

export class BlockBuilder {
  private lines = 0;
  private end: number;
  private ts0 = 0;
  private ts1 = 0;
  private readonly types = new Set<string>();
  private readonly clients = new Set<string>();
  private readonly hosts = new Set<string>();
  private readonly from = new Set<string>();
  private readonly to = new Set<string>();
  private readonly keys = new Set<string>();

  constructor(readonly start: number) {
    this.end = start;
  }

  get bytes(): number {
    return this.end - this.start;
  }

  get full(): boolean {
    return this.bytes >= BLOCK_BYTES || this.lines >= BLOCK_LINES;
  }

  get empty(): boolean {
    return this.lines === 0;
  }

  /** One line of `length` bytes (its newline included); `event` is null for a line that is no event. */
  add(length: number, event: TraceEvent | null, time: number): void {
    this.lines++;
    this.end += length;
    if (!event) return;
    if (Number.isFinite(time)) {
      if (this.ts0 === 0 || time < this.ts0) this.ts0 = time;
      if (time > this.ts1) this.ts1 = time;
    }
    this.types.add(event.type);
    if (event.client !== null) this.clients.add(event.client);
    if (event.smarthost !== null) this.hosts.add(event.smarthost);
    if (event.from !== null) this.from.add(event.from);
    for (const address of recipientsOf(event)) this.to.add(address);
    for (const id of idsOf(event)) this.keys.add(`q:${id}`);
    if (typeof event.message_id === 'string' && event.message_id !== '')
      this.keys.add(`m:${normalizeMessageId(event.message_id)}`);
  }

  finish(): BlockSummary {
    const ids = BloomFilter.forKeys(this.keys.size);
    for (const key of this.keys) ids.add(hashKey(key));
    return {
      start: this.start,
      end: this.end,
      lines: this.lines,
      ts0: this.ts0,
      ts1: this.ts1,
      types: [...this.types],
      clients: [...this.clients],
      hosts: [...this.hosts],
      addresses: constant({ from: [...this.from], to: [...this.to] }),
      ids,
    };
  }
}

/**
 * One line of the index file: the summary as JSON, a tab, then the addresses as JSON. JSON never
 * holds a raw tab, so the split is certain; the head records how long the tail is, so a line torn
 * by a crash is known without parsing its tail.
 */
export function serializeBlock(block: BlockSummary): string {
  const { ids, addresses, ...rest } = block;
  const tail = JSON.stringify(addresses());
  return `${JSON.stringify({ ...rest, bits: ids.bits, bloom: ids.toBase64(), tail: tail.length })}\t${tail}`;
}

/** A block as serializeBlock wrote it; null for anything else (a torn or foreign line). */
export function parseBlock(line: string): BlockSummary | null {
  const tab = line.indexOf('\t');
  if (tab === -1) return null;
  let value: unknown;
  try {
    value = JSON.parse(line.slice(0, tab));
  } catch {
    return null;
  }
  if (value === null || typeof value !== 'object') return null;
  const v = value as Record<string, unknown>;
  const numbers = [v.start, v.end, v.lines, v.ts0, v.ts1, v.bits, v.tail];
  if (!numbers.every((n) => typeof n === 'number' && Number.isInteger(n) && n >= 0)) return null;
  const lists = [v.types, v.clients, v.hosts];
  if (!lists.every((list) => Array.isArray(list) && list.every((item) => typeof item === 'string'))) return null;
  if (typeof v.bloom !== 'string' || (v.end as number) <= (v.start as number)) return null;
  if (line.length - tab - 1 !== v.tail) return null;
  const ids = BloomFilter.fromBase64(v.bits as number, v.bloom);
  if (!ids) return null;
  return {
    start: v.start as number,
    end: v.end as number,
    lines: v.lines as number,
    ts0: v.ts0 as number,
    ts1: v.ts1 as number,
    types: v.types as string[],
    clients: v.clients as string[],
    hosts: v.hosts as string[],
    addresses: lazily(() => parseAddresses(line.slice(tab + 1))),
    ids,
  };
}

/** The addresses part of a line whose length checked out; a part that still does not parse reads as none. */
function parseAddresses(text: string): Addresses {
  try {
    const value = JSON.parse(text) as Partial<Addresses>;
    const strings = (list: unknown) => Array.isArray(list) && list.every((item) => typeof item === 'string');
    if (strings(value.from) && strings(value.to)) return { from: value.from as string[], to: value.to as string[] };
  } catch {
    // fall through
  }
  return { from: [], to: [] };
}

function constant<T>(value: T): () => T {
  return () => value;
}

function lazily<T>(compute: () => T): () => T {
  let value: T | undefined;
  return () => (value ??= compute());
}
