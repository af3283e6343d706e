import { randomBytes } from 'node:crypto';
import { closeSync, mkdirSync, openSync, readFileSync, renameSync, statSync } from 'node:fs';
import { access, open, readdir, readFile, rename, rm, statfs, unlink, utimes, writeFile } from 'node:fs/promises';
import * as path from 'node:path';
import { BoundedMap } from './bounded-map';
import { DirectorySyncer } from './dir-sync';
import { IncomingFile, WRITE_BUFFER_BYTES } from './incoming';
import type { MessageMeta } from './message';
import { forEachName } from './queue-walk';
import { encodeTrailer, readTrailer, readTrailerSync, type TrailerRead } from './trailer';

/**
 * The durable queue on disk. A message is committed as one file, `<id>.eml`: its bytes (immutable
 * once queued) followed by its metadata at commit (see trailer.ts); the file landing in `queue/` is
 * the commit point. Its first state change writes `<id>.json` beside it (envelope and delivery
 * state), which from then on wins over the trailer; moves to `hold/` and `dead/` always carry one.
 * A `.eml` in `queue/` with neither a `.json` nor a trailer was never acknowledged (a version
 * before trailers renamed the file in first) and is removed on recovery.
 *
 *   tmp/     being received (and state rewrites before their rename)
 *   queue/   accepted, waiting or being delivered
 *   hold/    kept aside by an admin until released (never scheduled)
 *   dead/    permanent failures, with the reason in the .json
 *   corrupt/ files recovery could not make sense of, kept for a human
 *
 * A queued message's `.eml` carries a hint in its modification time: the time its next attempt is
 * due (set whenever its state is written; at commit it is the commit, due at once). The queue scan
 * (queue-scan.ts) reads it with one stat instead of reading the metadata of messages not yet due.
 * It is only a hint: the metadata decides.
 */
/** What the store remembers of a message it just committed, until its first read. */
interface CommittedCopy {
  json: string;
  /** The message's bytes, when small enough to have been held whole (see IncomingFile.seal). */
  message?: Buffer;
}

/** The folders a committed message can be in. */
export type SpoolFolder = 'queue' | 'hold' | 'dead';

export class SpoolStore {
  readonly tmpDir: string;
  readonly queueDir: string;
  readonly holdDir: string;
  readonly deadDir: string;
  readonly corruptDir: string;
  /** Messages in `dead/`, counted at open and kept up to date by every move in or out. */
  deadCount = 0;
  /** Messages in `hold/`, kept the same way. */
  heldCount = 0;
  /**
   * Messages in `queue/`: every commit adds one, every removal or move takes one away, and recovery
   * adds the ones it finds (spool/recovery.ts). Exact, so the scheduler can keep most of a deep queue
   * on disk and still count it.
   */
  queuedCount = 0;
  private readonly syncers: Record<SpoolFolder, DirectorySyncer>;
  /**
   * The metadata of messages just committed to `queue/`, as written, for their first read (the
   * first delivery attempt follows the commit within milliseconds): the file's own bytes without
   * four file operations. Taken once; every change to a message goes through this store and drops
   * its entry, so it never disagrees with the disk. Bounded: a backed-up queue reads from disk.
   */
  private readonly justCommitted = new BoundedMap<string, CommittedCopy>(1000, {
    // The message bytes kept for a first delivery are bounded in total, whatever the queue does.
    maxWeight: 8 * 1024 * 1024,
    weigh: (copy) => copy.json.length + (copy.message?.length ?? 0) + 1,
  });
  /**
   * Queued messages known to have no `.json` (committed or read as one file, state never changed
   * since): removing them skips a failed unlink. Only this store writes a `.json`, and it drops the
   * id first; an id not in here is removed the careful way. Bounded: a deep queue's messages wait on
   * disk, and one forgotten here costs one unlink that finds nothing.
   */
  private readonly withoutStateFile = new BoundedMap<string, true>(10_000);
  /**
   * Received messages between the rename into `queue/` and the session handing them to the scheduler
   * (handedOver). A queue scan in that moment must leave them alone: the scheduler would start an
   * attempt of its own first, and an inline listener's attempt could then not run (the client would
   * get 250 instead of the smart hosts' 5xx), nor could a failed folder fsync take the message back
   * before it went out (the client, told 452, sends it again).
   */
  private readonly arriving = new Set<string>();
  private readonly idRandom = new RandomHex(ID_RANDOM_BYTES);

  constructor(readonly root: string) {
    this.tmpDir = path.join(root, 'tmp');
    this.queueDir = path.join(root, 'queue');
    this.holdDir = path.join(root, 'hold');
    this.deadDir = path.join(root, 'dead');
    this.corruptDir = path.join(root, 'corrupt');
    this.syncers = {
      queue: new DirectorySyncer(this.queueDir),
      hold: new DirectorySyncer(this.holdDir),
      dead: new DirectorySyncer(this.deadDir),
    };
  }

  /**
   * Creates the folders and sets aside what a crash left half-written in `tmp/`: the folder is
   * renamed (one call, however many files it holds) and a fresh one made, so new messages can be
   * received at once; recovery removes the old one in the background (`removeStaleTmp`). Never
   * acknowledged, nothing in it is needed.
   */
  open(): void {
    for (const dir of [this.root, this.queueDir, this.holdDir, this.deadDir, this.corruptDir])
      mkdirSync(dir, { recursive: true });
    try {
      renameSync(this.tmpDir, path.join(this.root, `${STALE_TMP_PREFIX}${randomBytes(4).toString('hex')}`));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    mkdirSync(this.tmpDir, { recursive: true });
  }

  /** Removes the `tmp/` folders set aside at this start and at earlier ones a crash interrupted. */
  async removeStaleTmp(): Promise<void> {
    for (const name of await readdir(this.root)) {
      if (name.startsWith(STALE_TMP_PREFIX)) await rm(path.join(this.root, name), { recursive: true, force: true });
    }
  }

  /** Time-ordered (so `ls` sorts by arrival) and unguessable; safe as a file name. */
  newId(): string {
    return Date.now().toString(36).toUpperCase().padStart(9, '0') + this.idRandom.next().toUpperCase();
  }

  /** A new message file in `tmp/`, for DATA to stream into. */
  createIncoming(id: string): Promise<IncomingFile> {
    return IncomingFile.create(this.tmpPath(id, '.eml'));
  }

  /**
   * Makes a fully received message durable in `queue/`: its metadata appended behind its bytes, one
   * fsync, the rename, the folder's fsync. Only after this resolves may the client be told 250.
   */
  async commit(meta: MessageMeta, incoming: IncomingFile): Promise<void> {
    const json = JSON.stringify(meta);
    const message = await incoming.seal(json);
    // Closing is one more trip to the thread pool, and the file is durable already: it runs beside
    // the folder's fsync instead of before the rename. A failed close after a successful
    // fsync loses nothing, so it must not turn a committed message into a 4xx (the client would send
    // it again and it would go out twice).
    const closing = incoming.close().catch(() => undefined);
    // Until the session calls handedOver; a failed publish forgets it.
    this.arriving.add(meta.id);
    try {
      await this.publish(meta.id, { json, message });
    } finally {
      await closing;
    }
  }

  /**
   * Queues a message the relay wrote itself (a DSN) exactly like a received one: bytes and
   * metadata fsync'd in `tmp/`, and the file landing in `queue/` is the commit, so it survives a crash.
   */
  async commitGenerated(meta: MessageMeta, body: Buffer): Promise<void> {
    const json = JSON.stringify(meta);
    const file = this.tmpPath(meta.id, '.eml');
    try {
      await writeFile(file, Buffer.concat([body, encodeTrailer(json)]), { flush: true });
      await this.publish(meta.id, { json, message: body.length <= WRITE_BUFFER_BYTES ? body : undefined });
    } catch (err) {
      await rm(file, { force: true }).catch(() => undefined);
      throw err;
    }
  }

  private async publish(id: string, copy: CommittedCopy): Promise<void> {
    // Known before the file is visible in queue/: an admin action in the moment between the rename
    // and the end of the fsync (the message is listed already) drops them, and nothing adds them back.
    this.justCommitted.set(id, copy);
    this.withoutStateFile.set(id, true);
    try {
      // On the event loop, like the seal's last write (incoming.ts): a rename within one local file
      // system takes microseconds of kernel time, and a trip through the thread pool waited ~1.5 ms
      // at the median under load, on the way to the 250.
      renameSync(this.tmpPath(id, '.eml'), this.queuePath(id, '.eml'));
    } catch (err) {
      this.forget(id);
      throw err;
    }
    this.queuedCount++;
    try {
      await this.syncDir('queue');
    } catch (err) {
      // The client will be told 452 and send again: the copy in queue/ must not be delivered too.
      this.forget(id);
      if (await unlinkIfPresent(this.queuePath(id, '.eml')).catch(() => false)) this.queuedCount--;
      await this.syncDir('queue').catch(() => undefined);
      throw err;
    }
  }

  private forget(id: string): void {
    this.justCommitted.delete(id);
    this.withoutStateFile.delete(id);
    this.arriving.delete(id);
  }

  /** A received message committed and not yet handed to the scheduler: queue scans skip it. */
  isArriving(id: string): boolean {
    return this.arriving.has(id);
  }

  /** The session has handed a committed message to the scheduler (or failed to): scans may load it now. */
  handedOver(id: string): void {
    this.arriving.delete(id);
  }

  /**
   * The header block of a queued message (up to the blank line, at most `limit` bytes, cut at a line
   * end), for a DSN's text/rfc822-headers part. Reads only the head of the file, never past the
   * message's own `size` bytes (the metadata follows them).
   */
  async readHeaders(id: string, size: number | undefined, limit = 64 * 1024): Promise<Buffer> {
    const handle = await open(this.queuePath(id, '.eml'), 'r');
    try {
      limit = Math.min(limit, size ?? limit);
      const buffer = Buffer.alloc(limit);
      const { bytesRead } = await handle.read(buffer, 0, limit, 0);
      const head = buffer.subarray(0, bytesRead);
      const end = head.indexOf('\r\n\r\n');
      if (end !== -1) return head.subarray(0, end + 2);
      const lastLine = head.lastIndexOf('\r\n');
      return bytesRead < limit || lastLine === -1 ? head : head.subarray(0, lastLine + 2);
    } finally {
      await handle.close();
    }
  }

  /**
   * Rewrites a queued message's state atomically: temp file, fsync, rename. Then the message file's
   * modification time is set to the next attempt (the queue scan's hint; not made durable, as a
   * hint need not be: after a crash an older one at worst makes the scan read the metadata early).
   */
  async update(meta: MessageMeta): Promise<void> {
    await this.writeAtomically('queue', meta);
    const due = new Date(meta.nextAttemptAt);
    await utimes(this.queuePath(meta.id, '.eml'), due, due).catch(() => undefined);
  }

  private async writeAtomically(folder: SpoolFolder, meta: MessageMeta): Promise<void> {
    this.justCommitted.delete(meta.id);
    this.withoutStateFile.delete(meta.id);
    const temp = this.tmpPath(`${meta.id}.${randomBytes(3).toString('hex')}`, '.json');
    await this.writeMetaFile(temp, meta);
    await rename(temp, this.path(folder, meta.id, '.json'));
    await this.syncDir(folder);
  }

  async read(id: string): Promise<MessageMeta> {
    return (await this.readForDelivery(id)).meta;
  }

  /**
   * The metadata, and for a small message read for the first time since its commit, its bytes as
   * the file starts with them (kept from the commit), so the first attempt reads nothing from disk.
   */
  async readForDelivery(id: string): Promise<{ meta: MessageMeta; message?: Buffer }> {
    const copy = this.justCommitted.get(id);
    if (copy === undefined) return { meta: await this.readIn('queue', id) };
    this.justCommitted.delete(id);
    return { meta: JSON.parse(copy.json) as MessageMeta, ...(copy.message ? { message: copy.message } : {}) };
  }

  /** readIn with synchronous reads, for the walks of recovery and the queue scan (see queue-walk.ts). */
  readInSync(folder: SpoolFolder, id: string): MessageMeta {
    return this.readSourcedSync(folder, id).meta;
  }

  /** readInSync, and whether the metadata came from a `.json` (else from the message file's trailer). */
  readSourcedSync(folder: SpoolFolder, id: string): { meta: MessageMeta; stateFile: boolean } {
    const stateFile = this.path(folder, id, '.json');
    // Most queued messages have no `.json`: a stat that says so costs less than a failed open's exception.
    if (folder !== 'queue' || statSync(stateFile, { throwIfNoEntry: false }) !== undefined) {
      try {
        return { meta: JSON.parse(readFileSync(stateFile, 'utf8')) as MessageMeta, stateFile: true };
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || folder !== 'queue') throw err;
      }
    }
    const found = this.readCommittedSync(this.queuePath(id, '.eml'));
    if (found.kind !== 'committed')
      throw new Error(
        `${id}: the message file carries no usable metadata (${found.kind === 'damaged' ? found.reason : 'none'})`,
      );
    return { meta: found.meta, stateFile: false };
  }

  /**
   * The metadata of a queued message just read from disk by the queue scan or recovery, kept for its
   * delivery attempt that follows soon (as after a commit): the attempt then reads nothing but the
   * message bytes. Same bounded cache, same rule: any change through this store drops it.
   */
  rememberForDelivery(meta: MessageMeta, stateFile: boolean): void {
    this.justCommitted.set(meta.id, { json: JSON.stringify(meta) });
    if (!stateFile) this.withoutStateFile.set(meta.id, true);
  }

  /**
   * The trailer of a message file, read synchronously; throws (ENOENT when the file is gone) when it cannot be
   * read.
   */
  readCommittedSync(file: string): TrailerRead {
    const fd = openSync(file, 'r');
    try {
      return readTrailerSync(fd);
    } finally {
      closeSync(fd);
    }
  }

  /** The `.json` when the message has one, else (in `queue/`) the trailer of its file; ENOENT when neither exists. */
  async readIn(folder: SpoolFolder, id: string): Promise<MessageMeta> {
    try {
      return JSON.parse(await readFile(this.path(folder, id, '.json'), 'utf8')) as MessageMeta;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || folder !== 'queue') throw err;
    }
    const found = await this.readCommitted(this.queuePath(id, '.eml'));
    if (found.kind !== 'committed')
      throw new Error(
        `${id}: the message file carries no usable metadata (${found.kind === 'damaged' ? found.reason : 'none'})`,
      );
    return found.meta;
  }

  /** The trailer of a message file; throws (ENOENT when the file is gone) when it cannot be read. */
  private async readCommitted(file: string): Promise<TrailerRead> {
    const handle = await open(file, 'r');
    try {
      return await readTrailer(handle);
    } finally {
      await handle.close();
    }
  }

  /** The folder holding a committed message, or null when there is none (delivered, deleted, unknown). */
  async locate(id: string): Promise<SpoolFolder | null> {
    if (!isSpoolId(id)) return null;
    for (const folder of ['queue', 'hold', 'dead'] as const) {
      if (
        await access(this.path(folder, id, '.json')).then(
          () => true,
          () => false,
        )
      )
        return folder;
      if (
        folder === 'queue' &&
        (await access(this.queuePath(id, '.eml')).then(
          () => true,
          () => false,
        ))
      )
        return folder;
    }
    return null;
  }

  /**
   * The id a file name in `folder` stands for, or null: in `queue/` every message has an `.eml` (most
   * have only that), in `hold/` and `dead/` every message has a `.json`. One name per message.
   */
  idOfName(folder: SpoolFolder, name: string): string | null {
    const ext = folder === 'queue' ? '.eml' : '.json';
    if (!name.endsWith(ext)) return null;
    const id = name.slice(0, -ext.length);
    return isSpoolId(id) ? id : null;
  }

  /** Counts the messages in `hold/` or `dead/` with a walk (the folder may be large); `skip` leaves some out. */
  async count(folder: 'hold' | 'dead', skip: (id: string) => boolean = () => false): Promise<number> {
    let count = 0;
    await forEachName(this.dirOf(folder), (name) => {
      const id = this.idOfName(folder, name);
      if (id !== null && !skip(id)) count++;
    });
    return count;
  }

  dirOf(folder: SpoolFolder): string {
    return { queue: this.queueDir, hold: this.holdDir, dead: this.deadDir }[folder];
  }

  messagePath(folder: SpoolFolder, id: string): string {
    return this.path(folder, id, '.eml');
  }

  bodyPath(id: string): string {
    return this.queuePath(id, '.eml');
  }

  /**
   * Every recipient is done. The message file goes first: it carries the metadata it was committed
   * with, so left behind it would be delivered again; a `.json` left behind is only set aside.
   * `durable`: the removal itself must survive a crash (the client was told the message was
   * refused, so it must not come back); after a delivery, a crash at worst repeats it.
   */
  async remove(id: string, options: { durable?: boolean } = {}): Promise<void> {
    this.justCommitted.delete(id);
    const noStateFile = this.withoutStateFile.delete(id);
    if (await unlinkIfPresent(this.queuePath(id, '.eml'))) this.queuedCount--;
    if (noStateFile) {
      if (options.durable) await this.syncDir('queue');
      return;
    }
    // Refused mail must not come back: the .eml's removal is durable before its .json goes.
    if (options.durable) await this.syncDir('queue');
    await unlinkIfPresent(this.queuePath(id, '.json'));
    if (options.durable) await this.syncDir('queue');
  }

  /**
   * Moves a message to `dead/`. The reason is committed in `queue/` first, so recovery can finish a
   * move that a crash interrupted instead of delivering the message again.
   */
  async moveToDead(meta: MessageMeta): Promise<void> {
    await this.update(meta);
    await rename(this.queuePath(meta.id, '.eml'), path.join(this.deadDir, `${meta.id}.eml`));
    this.queuedCount--;
    // Durable before the .json follows: a .json gone from queue/ with its .eml still there would
    // bring the message back from its trailer.
    await this.syncDir('dead');
    await this.syncDir('queue');
    await rename(this.queuePath(meta.id, '.json'), path.join(this.deadDir, `${meta.id}.json`));
    // Counted as soon as it is visible in dead/, so the gauge never lags what `ls` shows.
    this.deadCount++;
    await this.syncDir('dead');
    await this.syncDir('queue');
  }

  /**
   * Moves a queued message (not being delivered: the caller withdrew it from the scheduler) to
   * `hold/`, in the order moveToDead uses: the hold is committed in `queue/` first, so recovery
   * finishes an interrupted move instead of scheduling the message.
   */
  async moveToHold(meta: MessageMeta, now: number): Promise<void> {
    meta.held = { at: now };
    await this.update(meta);
    await rename(this.queuePath(meta.id, '.eml'), this.path('hold', meta.id, '.eml'));
    this.queuedCount--;
    // As in moveToDead: the .eml's move is durable before the .json leaves queue/.
    await this.syncDir('hold');
    await this.syncDir('queue');
    await rename(this.queuePath(meta.id, '.json'), this.path('hold', meta.id, '.json'));
    this.heldCount++;
    await this.syncDir('hold');
    await this.syncDir('queue');
  }

  /**
   * Moves a held message back to `queue/`, due now. The release is committed in `hold/` first (the
   * metadata loses its `held` mark), and recovery scans `hold/` before `queue/`, so a crash half way
   * never leaves a message file in `queue/` that looks unacknowledged.
   */
  async release(meta: MessageMeta, now: number): Promise<void> {
    delete meta.held;
    meta.nextAttemptAt = now;
    await this.writeAtomically('hold', meta);
    await rename(this.path('hold', meta.id, '.eml'), this.queuePath(meta.id, '.eml'));
    await rename(this.path('hold', meta.id, '.json'), this.queuePath(meta.id, '.json'));
    this.heldCount--;
    this.queuedCount++;
    await this.syncDir('queue');
    await this.syncDir('hold');
  }

  /**
   * Deletes a message for good (an admin's decision). In `hold/` and `dead/` the `.json` goes first,
   * so a crash leaves only an orphan file; in `queue/` the message file does (see remove).
   */
  async delete(folder: SpoolFolder, id: string): Promise<void> {
    this.justCommitted.delete(id);
    this.withoutStateFile.delete(id);
    if (folder === 'queue') {
      await unlink(this.queuePath(id, '.eml'));
      this.queuedCount--;
      // Deleted mail must not come back: the .eml's removal is durable before its .json goes.
      await this.syncDir('queue');
      await unlinkIfPresent(this.queuePath(id, '.json'));
    } else {
      await unlink(this.path(folder, id, '.json'));
      if (folder === 'hold') this.heldCount--;
      if (folder === 'dead') this.deadCount--;
      await unlinkIfPresent(this.path(folder, id, '.eml'));
    }
    await this.syncDir(folder);
  }

  async freeBytes(): Promise<number> {
    const stats = await statfs(this.root);
    return stats.bavail * stats.bsize;
  }

  private async writeMetaFile(file: string, meta: MessageMeta): Promise<void> {
    await writeFile(file, JSON.stringify(meta), { flush: true });
  }

  // The folders are normalised once (constructor) and a file name adds no separator or dot segment of
  // its own, so these run on every message without path.join's normalising of the whole path each time.
  private tmpPath(id: string, ext: string): string {
    return `${this.tmpDir}${path.sep}${id}${ext}`;
  }

  private queuePath(id: string, ext: string): string {
    return `${this.queueDir}${path.sep}${id}${ext}`;
  }

  /** Releases the directory handles kept for fsyncs. */
  async close(): Promise<void> {
    await Promise.all(Object.values(this.syncers).map((syncer) => syncer.close()));
  }

  /** Group-committed (see DirectorySyncer): concurrent renames into one folder share an fsync. */
  syncDir(folder: SpoolFolder): Promise<void> {
    return this.syncers[folder].sync();
  }

  path(folder: SpoolFolder, id: string, ext: string): string {
    return path.join(this.dirOf(folder), `${id}${ext}`);
  }
}

/** Ids come from newId(); anything else (an admin typo, `../x`) never becomes a path. */
export function isSpoolId(id: string): boolean {
  return /^[0-9A-Z]{9,}$/.test(id);
}

/** The time an id was made (its first nine characters, base 36 milliseconds). */
export function idTime(id: string): number {
  return parseInt(id.slice(0, 9), 36);
}

/** The unguessable part of an id: 40 bits. */
const ID_RANDOM_BYTES = 5;

/**
 * Random hex strings of a fixed size, cut from a batch of random bytes fetched for 1,000 at a time:
 * one call into the crypto library for each id cost as much CPU as the rest of making it. Every
 * byte is used once.
 */
class RandomHex {
  private batch = Buffer.alloc(0);
  private at = 0;

  constructor(private readonly bytes: number) {}

  next(): string {
    if (this.at + this.bytes > this.batch.length) {
      this.batch = randomBytes(this.bytes * 1000);
      this.at = 0;
    }
    this.at += this.bytes;
    return this.batch.toString('hex', this.at - this.bytes, this.at);
  }
}

/** Where `open` sets the previous run's `tmp/` aside until recovery removes it. */
const STALE_TMP_PREFIX = 'tmp.stale-';

/** One unlink, where `rm({ force: true })` would stat the file first; false when there was nothing to remove. */
async function unlinkIfPresent(file: string): Promise<boolean> {
  try {
    await unlink(file);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    return false;
  }
}
