import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

/**
 * Collects the garbage a streamed message leaves behind, a few MiB at a time.
 *
 * Streaming allocates Buffers (every socket read, smtp-server's copy of it, every read of a queue
 * file) but hardly any JS objects. V8 scavenges when its young generation fills with objects, and
 * frees the memory behind dead Buffers only then, or when external memory passes a soft limit of
 * 64 MiB over the last full collection. So a 50 MiB message grew the relay by 31-65 MiB of Buffers
 * nothing referenced any more, although no session ever held more than 64 KiB of it. A minor
 * collection (a scavenge: it only visits what is alive in the young generation, 0.6-5 ms here) every
 * few MiB of streamed data frees them as they go. Near the heap limit V8 may turn it into a full
 * collection, as it would its own next scavenge. At 10 KiB a message that is one extra
 * scavenge per ~400 messages, next to the hundreds V8 runs on its own in the same time.
 *
 * Each thread (the event loop, the delivery thread) has its own heap and its own instance of this
 * module, so each counts and collects its own.
 */

/** Collect after this much streamed data: a few 64 KiB reads of slack, far below V8's 64 MiB limit. */
export const STREAMED_BYTES_PER_COLLECTION = 4 * 1024 * 1024;

type GcFunction = (options?: { type?: 'minor' | 'major'; execution?: 'sync' | 'async' }) => void;

/**
 * V8's `gc` function without `node --expose-gc` on the command line: the flag is set, and a new
 * context has `gc` on its global (the way jest's leak detector gets it). The flag is process-wide
 * and stays set: unsetting it again raced between the event loop and the delivery thread, each
 * loading at its first use (measured: 34 of 2,000 concurrent loads came back without `gc`), and a
 * thread that lost would never collect. Left set, contexts created later (the delivery thread's)
 * simply have `gc`. The event loop's own global never gets it. Undefined if this V8 refuses (the
 * relay then leaves collection to V8, as before).
 */
function loadGc(): GcFunction | undefined {
  const exposed = (globalThis as { gc?: unknown }).gc;
  if (typeof exposed === 'function') return exposed as GcFunction;
  try {
    setFlagsFromString('--expose-gc');
    const gc: unknown = runInNewContext('gc');
    return typeof gc === 'function' ? (gc as GcFunction) : undefined;
  } catch {
    return undefined;
  }
}

export class StreamedGarbage {
  private sinceCollection = 0;
  /** Minor collections run so far (for tests and the record). */
  collections = 0;

  /** False when V8 would not give us its `gc`: streamed Buffers are then left to V8's own schedule. */
  get available(): boolean {
    return this.gc !== undefined;
  }

  constructor(
    private readonly everyBytes: number = STREAMED_BYTES_PER_COLLECTION,
    private readonly gc: GcFunction | undefined = loadGc(),
  ) {}

  /** `bytes` more of a message passed through this thread in Buffers that are now garbage or soon will be. */
  streamed(bytes: number): void {
    this.sinceCollection += bytes;
    if (this.sinceCollection < this.everyBytes || !this.gc) return;
    this.sinceCollection = 0;
    this.collections++;
    this.gc({ type: 'minor' });
  }
}

let shared: StreamedGarbage | undefined;

/** This thread's counter, created at its first use. */
export function streamedGarbage(): StreamedGarbage {
  shared ??= new StreamedGarbage();
  return shared;
}
