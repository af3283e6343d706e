import { mkdirSync, readdirSync, readFileSync, readlinkSync, truncateSync, unlinkSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import type { MessageMeta } from '../src/spool/message';
import { WRITE_BUFFER_BYTES } from '../src/spool/incoming';
import { QueueScanner } from '../src/spool/queue-scan';
import { Scheduler } from '../src/spool/scheduler';
import { SpoolStore } from '../src/spool/store';
import { encodeTrailer, FOOTER_BYTES } from '../src/spool/trailer';
import { recoverAll, spoolPerTest } from './helpers/spool-fixtures';
import { queuedMeta } from './helpers/queued-meta';
import { waitFor } from './helpers/wait-for';

/**
 * A message is committed as one file (its bytes, then its metadata): what the relay reads back,
 * recovers after a crash, and removes must agree with that, and a file that does not end in a
 * whole trailer is never taken for an acknowledged message.
 */
const body = Buffer.from('Received: from app.test\r\nSubject: x\r\n\r\nbody line\r\n', 'latin1');

const meta = (id: string, extra: Partial<MessageMeta> = {}): MessageMeta =>
  queuedMeta(id, body.length, { receivedAt: 1_700_000_000_000, nextAttemptAt: 1_700_000_000_000, ...extra });

/** Receives `body` into `store` through the same path DATA takes: stream into tmp/, then commit. */
async function receiveInto(store: SpoolStore, id: string, extra: Partial<MessageMeta> = {}): Promise<MessageMeta> {
  const incoming = await store.createIncoming(id);
  await new Promise<void>((resolve, reject) =>
    incoming.stream.end(body, (err?: Error | null) => (err ? reject(err) : resolve())),
  );
  const committed = meta(id, { size: incoming.bytesWritten, ...extra });
  await store.commit(committed, incoming);
  return committed;
}

describe('spool: one file per committed message', () => {
  const spool = spoolPerTest();

  const files = spool.files;
  const recover = async () => {
    const problems: string[] = [];
    const recovered = await recoverAll(spool.store, (_id, problem) => problems.push(problem));
    return { recovered, problems };
  };

  const receive = (id: string, extra: Partial<MessageMeta> = {}) => receiveInto(spool.store, id, extra);

  test('a received message is one file in queue/: its bytes, then metadata that reads back as committed', async () => {
    const id = spool.store.newId();
    const committed = await receive(id);
    expect(files('queue')).toEqual([`${id}.eml`]);
    expect(files('tmp')).toEqual([]);
    const file = readFileSync(path.join(spool.store.queueDir, `${id}.eml`));
    expect(file.subarray(0, committed.size)).toEqual(body);
    expect(file.subarray(committed.size).toString('latin1')).toBe(
      encodeTrailer(JSON.stringify(committed)).toString('latin1'),
    );
    // Read twice: the first read may come from memory, the second comes from the disk.
    expect(await spool.store.read(id)).toEqual(committed);
    expect(await spool.store.read(id)).toEqual(committed);
    expect(files('queue')).toEqual([`${id}.eml`]);
    expect(await spool.store.locate(id)).toBe('queue');
  });

  test("a small message's first delivery read comes from the commit; later reads, large ones: the file", async () => {
    const id = spool.store.newId();
    const committed = await receive(id);
    const first = await spool.store.readForDelivery(id);
    expect(first.meta).toEqual(committed);
    expect(first.message).toEqual(
      readFileSync(path.join(spool.store.queueDir, `${id}.eml`)).subarray(0, committed.size),
    );
    expect((await spool.store.readForDelivery(id)).message).toBeUndefined();

    const large = spool.store.newId();
    const incoming = await spool.store.createIncoming(large);
    await new Promise<void>((resolve) => incoming.stream.end(Buffer.alloc(100 * 1024, 0x42), () => resolve()));
    await spool.store.commit(meta(large, { size: incoming.bytesWritten }), incoming);
    const read = await spool.store.readForDelivery(large);
    expect(read.meta.size).toBe(100 * 1024);
    expect(read.message).toBeUndefined();
  });

  test('a streamed message lands byte for byte: batches as it streams, the last at the seal, metadata', async () => {
    const id = spool.store.newId();
    const pattern = Buffer.alloc(3 * WRITE_BUFFER_BYTES + 12_345);
    for (let i = 0; i < pattern.length; i++) pattern[i] = (i * 31 + (i >> 8)) & 0xff;
    const incoming = await spool.store.createIncoming(id);
    // Odd chunk sizes, so batches end mid-chunk and the last write starts wherever the batches stopped.
    for (let offset = 0, size = 1; offset < pattern.length; offset += size, size = ((size * 7 + 3) % 9_001) + 1) {
      const chunk = pattern.subarray(offset, Math.min(offset + size, pattern.length));
      if (!incoming.stream.write(chunk)) await new Promise((resolve) => incoming.stream.once('drain', resolve));
    }
    await new Promise<void>((resolve, reject) =>
      incoming.stream.end((err?: Error | null) => (err ? reject(err) : resolve())),
    );
    const committed = meta(id, { size: incoming.bytesWritten });
    await spool.store.commit(committed, incoming);
    const file = readFileSync(path.join(spool.store.queueDir, `${id}.eml`));
    expect(file.subarray(0, pattern.length).equals(pattern)).toBe(true);
    expect(file.subarray(pattern.length).toString('latin1')).toBe(
      encodeTrailer(JSON.stringify(committed)).toString('latin1'),
    );
  });

  test('after a restart the committed file alone is recovered, with its metadata', async () => {
    const id = spool.store.newId();
    const committed = await receive(id);
    const fresh = new SpoolStore(path.join(spool.dir, 'spool'));
    fresh.open();
    const problems: string[] = [];
    expect(await recoverAll(fresh, (_id, problem) => problems.push(problem))).toEqual([committed]);
    expect(problems).toEqual([]);
    expect(await fresh.read(id)).toEqual(committed);
    await fresh.close();
  });

  test('a state change writes a .json that wins over the trailer; removal takes both files', async () => {
    const id = spool.store.newId();
    const committed = await receive(id);
    await spool.store.update({
      ...committed,
      attempts: 1,
      recipients: [{ address: 'user@example.com', status: 'pending', response: '451 4.3.0 later' }],
    });
    expect(files('queue')).toEqual([`${id}.eml`, `${id}.json`]);
    expect((await spool.store.read(id)).attempts).toBe(1);
    const { recovered } = await recover();
    expect(recovered.map((m) => m.attempts)).toEqual([1]);
    await spool.store.remove(id);
    expect(files('queue')).toEqual([]);
  });

  test('a DSN the relay writes itself is committed the same way', async () => {
    const id = spool.store.newId();
    const dsn = meta(id, { from: '', dsnOf: 'X', size: body.length });
    await spool.store.commitGenerated(dsn, body);
    expect(files('queue')).toEqual([`${id}.eml`]);
    expect(await spool.store.read(id)).toEqual(dsn);
    expect(await spool.store.readHeaders(id, dsn.size)).toEqual(
      Buffer.from('Received: from app.test\r\nSubject: x\r\n', 'latin1'),
    );
  });

  test('the header block of a message without a blank line stops at its own bytes, not in its metadata', async () => {
    const id = spool.store.newId();
    const headersOnly = Buffer.from('Subject: no body\r\n', 'latin1');
    await spool.store.commitGenerated(meta(id, { size: headersOnly.length }), headersOnly);
    expect(await spool.store.readHeaders(id, headersOnly.length)).toEqual(headersOnly);
  });

  test('a queue/ file without a footer was never acknowledged: removed; a damaged one goes to corrupt/', async () => {
    const bare = '0MWTKRH6D3728F1EC18';
    writeFileSync(path.join(spool.store.queueDir, `${bare}.eml`), body);
    const truncated = spool.store.newId();
    await receive(truncated);
    truncateSync(path.join(spool.store.queueDir, `${truncated}.eml`), body.length + 5);
    const lying = spool.store.newId();
    // A footer whose metadata says the message has another size is not trusted.
    writeFileSync(
      path.join(spool.store.queueDir, `${lying}.eml`),
      Buffer.concat([body, encodeTrailer(JSON.stringify(meta(lying, { size: body.length + 1 })))]),
    );
    const unreadable = spool.store.newId();
    mkdirSync(path.join(spool.store.queueDir, `${unreadable}.eml`));

    const fresh = new SpoolStore(path.join(spool.dir, 'spool'));
    fresh.open();
    const problems = new Map<string, string>();
    expect(await recoverAll(fresh, (id, problem) => problems.set(id, problem))).toEqual([]);
    expect(problems.get(bare)).toBe('removed message file without metadata (never acknowledged)');
    // Cut inside the footer: nothing says it was ever committed.
    expect(problems.get(truncated)).toBe('removed message file without metadata (never acknowledged)');
    expect(problems.get(lying)).toBe(
      `message file with damaged metadata moved to corrupt/: metadata says ${body.length + 1} message bytes, ` +
        `the file holds ${body.length}`,
    );
    expect(problems.get(unreadable)).toMatch(/^unreadable message file moved to corrupt\/: EISDIR/);
    expect(files('queue')).toEqual([]);
    expect(files('corrupt')).toEqual([`${lying}.eml`, `${unreadable}.eml`].sort());
    await fresh.close();
  });

  test('metadata without its message file (an interrupted removal) is removed; the message not revived', async () => {
    const id = spool.store.newId();
    const committed = await receive(id);
    await spool.store.update({ ...committed, attempts: 1 });
    // remove() takes the .eml first; a crash before the .json goes leaves this.
    unlinkSync(path.join(spool.store.queueDir, `${id}.eml`));
    const { recovered, problems } = await recover();
    expect(recovered).toEqual([]);
    expect(problems).toEqual(['removed metadata whose message file was already removed (an interrupted removal)']);
    expect(files('queue')).toEqual([]);
  });

  test('a message held by an admin while its commit finishes is not delivered from the commit-time copy', async () => {
    // A busy disk: the directory fsync that ends the commit takes 100 ms, while the file is already
    // listed in queue/ (where an admin can see and hold it).
    const syncer = (spool.store as unknown as { syncers: { queue: { fsyncOnce(): Promise<void> } } }).syncers.queue;
    const realFsync = syncer.fsyncOnce.bind(syncer);
    syncer.fsyncOnce = async () => {
      await new Promise((resolve) => setTimeout(resolve, 100));
      return realFsync();
    };
    const id = spool.store.newId();
    const incoming = await spool.store.createIncoming(id);
    await new Promise<void>((resolve) => incoming.stream.end(body, () => resolve()));
    const committing = spool.store.commit(meta(id, { size: incoming.bytesWritten }), incoming);
    while (!files('queue').includes(`${id}.eml`)) await new Promise((resolve) => setTimeout(resolve, 2));
    // What QueueAdmin.hold does: read, then move to hold/.
    await spool.store.moveToHold(await spool.store.read(id), Date.now());
    await committing;
    // The first delivery attempt finds nothing to send, as it would without the copy in memory.
    await expect(spool.store.read(id)).rejects.toMatchObject({ code: 'ENOENT' });
    expect(files('queue')).toEqual([]);
    expect(files('hold')).toEqual([`${id}.eml`, `${id}.json`]);
  });

  test('a message being received is in tmp/ only: discarded it is gone; a start drops what a crash left', async () => {
    const dropped = spool.store.newId();
    const incoming = await spool.store.createIncoming(dropped);
    await new Promise<void>((resolve) => incoming.stream.write(body, () => resolve()));
    expect(files('tmp')).toEqual([`${dropped}.eml`]);
    await incoming.discard();
    expect(files('tmp')).toEqual([]);

    const interrupted = spool.store.newId();
    const left = await spool.store.createIncoming(interrupted);
    await new Promise<void>((resolve) => left.stream.write(body, () => resolve()));
    const fresh = new SpoolStore(path.join(spool.dir, 'spool'));
    fresh.open();
    expect(files('tmp')).toEqual([]);
    expect(await recoverAll(fresh)).toEqual([]);
    await left.discard();
    await fresh.close();
  });

  test('a message dropped part way (some of it on disk) leaves no file and no open descriptor', async () => {
    const openDescriptors = () => readdirSync('/proc/self/fd').length;
    const before = openDescriptors();
    for (let i = 0; i < 5; i++) {
      const incoming = await spool.store.createIncoming(spool.store.newId());
      // Past the write buffer, so writes are under way when it is dropped.
      for (let chunk = 0; chunk < 4; chunk++) incoming.stream.write(Buffer.alloc(40 * 1024, 0x41));
      await incoming.discard();
    }
    expect(files('tmp')).toEqual([]);
    expect(openDescriptors()).toBe(before);
  });

  test('a committed message leaves no descriptor open on its file (closing runs beside the rename)', async () => {
    // This spool's files only: jest runs other suites in the same process, and a delivery thread
    // of theirs may still hold a message file of its own.
    const openMessageFiles = () =>
      readdirSync('/proc/self/fd')
        .flatMap((fd) => {
          try {
            return [readlinkSync(`/proc/self/fd/${fd}`)];
          } catch {
            return []; // the descriptor readdir itself used, closed by now
          }
        })
        .filter(
          (target) => target.startsWith(spool.dir) && (target.endsWith('.eml') || target.endsWith('.eml (deleted)')),
        );
    const ids = await Promise.all([1, 2, 3].map(async () => (await receive(spool.store.newId())).id));
    const large = spool.store.newId();
    const incoming = await spool.store.createIncoming(large);
    for (let chunk = 0; chunk < 4; chunk++) incoming.stream.write(Buffer.alloc(40 * 1024, 0x41));
    await new Promise<void>((resolve, reject) =>
      incoming.stream.end((err?: Error | null) => (err ? reject(err) : resolve())),
    );
    await spool.store.commit(meta(large, { size: incoming.bytesWritten }), incoming);
    expect(files('queue').sort()).toEqual([...ids, large].map((id) => `${id}.eml`).sort());
    expect(openMessageFiles()).toEqual([]);
  });

  test('the footer has a fixed size, so the metadata is found from the end of the file', () => {
    const trailer = encodeTrailer('{"a":1}');
    expect(trailer.toString('latin1')).toBe('{"a":1}\n0000000007 smarthop-meta\n');
    expect(trailer.length - 7).toBe(FOOTER_BYTES);
  });
});

/**
 * A queue scan that runs between a commit's rename and the session handing the message to the
 * scheduler leaves that message to the session: otherwise the scheduler starts an attempt of its
 * own, and an inline listener's attempt cannot run (its client got 250 for a message every smart host
 * refused, and a DSN went to the sender instead).
 */
describe('spool: the queue scan and a message still being handed over', () => {
  const spool = spoolPerTest();

  /** A scheduler that counts the ends of the scan's passes and records its attempts. */
  class WatchedScheduler extends Scheduler {
    passes = 0;
    override diskCounted(due: number, oldest: { at: number; id: string } | null): void {
      this.passes++;
      super.diskCounted(due, oldest);
    }
  }

  test('a pass skips a committed message until handedOver; the next pass loads it', async () => {
    const { store } = spool;
    const attempts: string[] = [];
    const scheduler: WatchedScheduler = new WatchedScheduler({
      attempt: async (id) => {
        attempts.push(id);
        return { kind: 'retry', at: Date.now() + 3_600_000 };
      },
      concurrency: 1,
      onAttemptError: () => 3_600_000,
      queued: () => store.queuedCount,
    });
    const scanner = new QueueScanner({ store, scheduler });
    scheduler.attachBacklog(scanner);
    try {
      scanner.start();
      await waitFor(() => scheduler.passes === 1, 5000, 'the first pass over the empty queue');

      const id = store.newId();
      const now = Date.now();
      await receiveInto(store, id, { receivedAt: now, nextAttemptAt: now });
      expect(store.isArriving(id)).toBe(true);
      scanner.wake({ now: true });
      await waitFor(() => scheduler.passes === 2, 5000, 'a pass while the message is being handed over');
      expect(scheduler.has(id)).toBe(false);
      expect(attempts).toEqual([]);

      // A session that failed before handing it over: the message is on disk, and the scan takes it.
      store.handedOver(id);
      scanner.wake({ now: true });
      await waitFor(() => attempts.length === 1, 5000, 'the attempt of the message the scan loaded');
      expect(attempts).toEqual([id]);
    } finally {
      scanner.stop();
      await scheduler.stop();
    }
  });
});
