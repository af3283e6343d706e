import { randomBytes } from 'node:crypto';
import { createWriteStream, type WriteStream } from 'node:fs';
import { mkdir, open, readdir, readFile, rename, rm, statfs, unlink, writeFile } from 'node:fs/promises';
import * as path from 'node:path';
import { DirectorySyncer } from './dir-sync';
import type { MessageMeta } from './message';

/**
 * The durable queue on disk. Each message is two files: `<id>.eml` (the bytes to send, immutable once
 * queued) and `<id>.json` (envelope and delivery state). The `.json` landing in a state folder is the
 * commit point: a `.eml` without its `.json` was never acknowledged and is removed on recovery.
 *
 *   tmp/     being received (and state rewrites before their rename)
 *   queue/   accepted, waiting or being delivered
 *   hold/    kept aside by an admin (later issue)
 *   dead/    permanent failures, with the reason in the .json
 *   corrupt/ files recovery could not make sense of, kept for a human
 */
export class SpoolStore {
  readonly tmpDir: string;
  readonly queueDir: string;
  readonly holdDir: string;
  readonly deadDir: string;
  readonly corruptDir: string;
  /** Messages in `dead/`, counted at open and kept up to date by moveToDead. */
  deadCount = 0;
  private readonly queueSync: DirectorySyncer;
  private readonly deadSync: DirectorySyncer;

  constructor(readonly root: string) {
    this.tmpDir = path.join(root, 'tmp');
    this.queueDir = path.join(root, 'queue');
    this.holdDir = path.join(root, 'hold');
    this.deadDir = path.join(root, 'dead');
    this.corruptDir = path.join(root, 'corrupt');
    this.queueSync = new DirectorySyncer(this.queueDir);
    this.deadSync = new DirectorySyncer(this.deadDir);
  }

  /** Creates the folders and removes what a crash left half-written in `tmp/`. */
  async open(): Promise<void> {
    for (const dir of [this.tmpDir, this.queueDir, this.holdDir, this.deadDir, this.corruptDir]) await mkdir(dir, { recursive: true });
    await rm(this.tmpDir, { recursive: true, force: true });
    await mkdir(this.tmpDir, { recursive: true });
    this.deadCount = (await readdir(this.deadDir)).filter((name) => name.endsWith('.json')).length;
  }

  /** Time-ordered (so `ls` sorts by arrival) and unguessable; safe as a file name. */
  newId(): string {
    return Date.now().toString(36).toUpperCase().padStart(9, '0') + randomBytes(5).toString('hex').toUpperCase();
  }

  /** A stream into `tmp/<id>.eml` that fsyncs before it reports `close`. */
  createIncoming(id: string): WriteStream {
    return createWriteStream(this.tmpPath(id, '.eml'), { flush: true });
  }

  async discardIncoming(id: string): Promise<void> {
    await rm(this.tmpPath(id, '.eml'), { force: true });
  }

  /**
   * Makes a fully written (and fsync'd) incoming message durable in `queue/`. Only after this
   * resolves may the client be told 250.
   */
  async commit(meta: MessageMeta): Promise<void> {
    await this.writeMetaFile(this.tmpPath(meta.id, '.json'), meta);
    await rename(this.tmpPath(meta.id, '.eml'), this.queuePath(meta.id, '.eml'));
    await rename(this.tmpPath(meta.id, '.json'), this.queuePath(meta.id, '.json'));
    await this.queueSync.sync();
  }

  /**
   * Queues a message the relay wrote itself (a DSN) exactly like a received one: the bytes are
   * fsync'd in `tmp/` and the metadata landing in `queue/` is the commit, so it survives a crash.
   */
  async commitGenerated(meta: MessageMeta, body: Buffer): Promise<void> {
    try {
      await writeFile(this.tmpPath(meta.id, '.eml'), body, { flush: true });
      await this.commit(meta);
    } catch (err) {
      await this.discardIncoming(meta.id).catch(() => undefined);
      throw err;
    }
  }

  /**
   * The header block of a queued message (up to the blank line, at most `limit` bytes, cut at a line
   * end), for a DSN's text/rfc822-headers part. Reads only the head of the file.
   */
  async readHeaders(id: string, limit = 64 * 1024): Promise<Buffer> {
    const handle = await open(this.queuePath(id, '.eml'), 'r');
    try {
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

  /** Rewrites a queued message's state atomically: temp file, fsync, rename. */
  async update(meta: MessageMeta): Promise<void> {
    const temp = this.tmpPath(`${meta.id}.${randomBytes(3).toString('hex')}`, '.json');
    await this.writeMetaFile(temp, meta);
    await rename(temp, this.queuePath(meta.id, '.json'));
    await this.queueSync.sync();
  }

  async read(id: string): Promise<MessageMeta> {
    return JSON.parse(await readFile(this.queuePath(id, '.json'), 'utf8')) as MessageMeta;
  }

  bodyPath(id: string): string {
    return this.queuePath(id, '.eml');
  }

  /** Every recipient is done: removing the `.json` first means a crash can only leave an orphan `.eml`. */
  async remove(id: string): Promise<void> {
    await unlink(this.queuePath(id, '.json'));
    await rm(this.queuePath(id, '.eml'), { force: true });
  }

  /**
   * Moves a message to `dead/`. The reason is committed in `queue/` first, so recovery can finish a
   * move that a crash interrupted instead of delivering the message again.
   */
  async moveToDead(meta: MessageMeta): Promise<void> {
    await this.update(meta);
    await rename(this.queuePath(meta.id, '.eml'), path.join(this.deadDir, `${meta.id}.eml`));
    await rename(this.queuePath(meta.id, '.json'), path.join(this.deadDir, `${meta.id}.json`));
    await this.deadSync.sync();
    await this.queueSync.sync();
    this.deadCount++;
  }

  /**
   * Scans `queue/` after a start: returns every message to schedule, finishes interrupted moves to
   * `dead/`, removes unacknowledged orphans and sets aside what cannot be read.
   */
  async recover(onProblem: (id: string, problem: string) => void): Promise<MessageMeta[]> {
    const names = new Set(await readdir(this.queueDir));
    const recovered: MessageMeta[] = [];
    for (const name of names) {
      if (name.endsWith('.eml') && !names.has(`${name.slice(0, -4)}.json`)) {
        await unlink(path.join(this.queueDir, name));
        onProblem(name.slice(0, -4), 'removed message file without metadata (never acknowledged)');
        continue;
      }
      if (!name.endsWith('.json')) continue;
      const id = name.slice(0, -5);
      let meta: MessageMeta;
      try {
        meta = JSON.parse(await readFile(path.join(this.queueDir, name), 'utf8')) as MessageMeta;
      } catch (err) {
        await this.setAsideCorrupt(id, names);
        onProblem(id, `unreadable metadata moved to corrupt/: ${(err as Error).message}`);
        continue;
      }
      if (meta.dead) {
        if (names.has(`${id}.eml`)) await rename(path.join(this.queueDir, `${id}.eml`), path.join(this.deadDir, `${id}.eml`));
        await rename(path.join(this.queueDir, name), path.join(this.deadDir, name));
        this.deadCount++;
        onProblem(id, 'finished an interrupted move to dead/');
        continue;
      }
      if (!names.has(`${id}.eml`)) {
        await this.setAsideCorrupt(id, names);
        onProblem(id, 'metadata without message file moved to corrupt/');
        continue;
      }
      recovered.push(meta);
    }
    await this.queueSync.sync();
    return recovered;
  }

  async freeBytes(): Promise<number> {
    const stats = await statfs(this.root);
    return stats.bavail * stats.bsize;
  }

  private async setAsideCorrupt(id: string, names: Set<string>): Promise<void> {
    for (const ext of ['.json', '.eml']) {
      if (names.has(`${id}${ext}`)) await rename(path.join(this.queueDir, `${id}${ext}`), path.join(this.corruptDir, `${id}${ext}`));
    }
  }

  private async writeMetaFile(file: string, meta: MessageMeta): Promise<void> {
    await writeFile(file, JSON.stringify(meta), { flush: true });
  }

  private tmpPath(id: string, ext: string): string {
    return path.join(this.tmpDir, `${id}${ext}`);
  }

  private queuePath(id: string, ext: string): string {
    return path.join(this.queueDir, `${id}${ext}`);
  }
}
