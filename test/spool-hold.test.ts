import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import type { MessageMeta } from '../src/spool/message';
import { recoverAll, spoolPerTest } from './helpers/spool-fixtures';
import { queuedMeta } from './helpers/queued-meta';

/**
 * Hold and release are durable: every point a crash can interrupt them at is recovered to exactly
 * one of "held" or "queued", never lost, never both, and a held message is never scheduled.
 */
describe('spool: hold, release and delete survive a crash at any step', () => {
  const spool = spoolPerTest();
  const id = '0MWTKRH6D3728F1EC18';

  /** A version 1 message (`.eml` + `.json`) attempted once, its next attempt a minute away. */
  const meta = (extra: Partial<MessageMeta> = {}): MessageMeta =>
    queuedMeta(id, 10, {
      version: 1,
      receivedAt: Date.now() - 1000,
      attempts: 1,
      nextAttemptAt: Date.now() + 60_000,
      ...extra,
    });

  function put(folder: 'queue' | 'hold', ext: '.eml' | '.json', content: string): void {
    writeFileSync(path.join(spool.store.dirOf(folder), `${id}${ext}`), content);
  }

  const files = spool.files;
  const problems: string[] = [];
  const recover = () => recoverAll(spool.store, (_id, problem) => problems.push(problem));

  test('moveToHold then release move both files and keep the count', async () => {
    put('queue', '.eml', 'Subject: x\r\n\r\nbody');
    put('queue', '.json', JSON.stringify(meta()));
    await spool.store.moveToHold(await spool.store.read(id), Date.now());
    expect(files('queue')).toEqual([]);
    expect(files('hold')).toEqual([`${id}.eml`, `${id}.json`]);
    expect(spool.store.heldCount).toBe(1);
    expect(await spool.store.locate(id)).toBe('hold');

    await spool.store.release(await spool.store.readIn('hold', id), 42);
    expect(files('hold')).toEqual([]);
    expect(files('queue')).toEqual([`${id}.eml`, `${id}.json`]);
    const released = await spool.store.read(id);
    expect(released.held).toBeUndefined();
    expect(released.nextAttemptAt).toBe(42);
    expect(spool.store.heldCount).toBe(0);
  });

  test('crash after the hold was committed in queue/: recovery finishes the move and schedules nothing', async () => {
    put('queue', '.eml', 'm');
    put('queue', '.json', JSON.stringify(meta({ held: { at: 1 } })));
    expect(await recover()).toEqual([]);
    expect(files('hold')).toEqual([`${id}.eml`, `${id}.json`]);
    expect(files('queue')).toEqual([]);
    expect(spool.store.heldCount).toBe(1);
  });

  test('crash after the message file moved to hold/: recovery moves the metadata after it', async () => {
    put('hold', '.eml', 'm');
    put('queue', '.json', JSON.stringify(meta({ held: { at: 1 } })));
    expect(await recover()).toEqual([]);
    expect(files('hold')).toEqual([`${id}.eml`, `${id}.json`]);
    expect(files('queue')).toEqual([]);
  });

  test('a held message stays held across a restart', async () => {
    put('hold', '.eml', 'm');
    put('hold', '.json', JSON.stringify(meta({ held: { at: 1 } })));
    expect(await recover()).toEqual([]);
    expect(files('hold')).toEqual([`${id}.eml`, `${id}.json`]);
  });

  test('crash after the release was committed in hold/: recovery finishes it and schedules the message', async () => {
    put('hold', '.eml', 'm');
    put('hold', '.json', JSON.stringify(meta()));
    const recovered = await recover();
    expect(recovered.map((m) => m.id)).toEqual([id]);
    expect(files('queue')).toEqual([`${id}.eml`, `${id}.json`]);
    expect(files('hold')).toEqual([]);
    expect(spool.store.heldCount).toBe(0);
  });

  test('crash after the message file went back to queue/: it is not taken for an unacknowledged orphan', async () => {
    put('queue', '.eml', 'm');
    put('hold', '.json', JSON.stringify(meta()));
    const recovered = await recover();
    expect(recovered.map((m) => m.id)).toEqual([id]);
    expect(readFileSync(path.join(spool.dir, 'spool', 'queue', `${id}.eml`), 'utf8')).toBe('m');
  });

  test('crash in the middle of deleting a held message: the orphan file is removed', async () => {
    put('hold', '.eml', 'm');
    expect(await recover()).toEqual([]);
    expect(files('hold')).toEqual([]);
    expect(problems.some((p) => p.includes('interrupted delete'))).toBe(true);
  });

  test('delete removes a message from any folder and keeps the counts', async () => {
    put('hold', '.eml', 'm');
    put('hold', '.json', JSON.stringify(meta({ held: { at: 1 } })));
    mkdirSync(path.join(spool.dir, 'spool', 'dead'), { recursive: true });
    await recover();
    expect(spool.store.heldCount).toBe(1);
    await spool.store.delete('hold', id);
    expect(spool.store.heldCount).toBe(0);
    expect(await spool.store.locate(id)).toBeNull();
    expect(existsSync(path.join(spool.dir, 'spool', 'hold', `${id}.eml`))).toBe(false);
  });

  test('ids that are not spool ids never become paths', async () => {
    expect(await spool.store.locate('../../etc/passwd')).toBeNull();
    expect(await spool.store.locate('0mwtkrh6d3728f1ec18')).toBeNull();
    expect(await spool.store.locate(id)).toBeNull();
  });
});
