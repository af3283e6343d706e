import { DirectorySyncer } from '../src/spool/dir-sync';
import { removeDir, tempDir } from './helpers/temp-dir';

/** Counts the real fsyncs it makes, which have ended, and how many ran at once. */
class CountingSyncer extends DirectorySyncer {
  started = 0;
  readonly ended = new Set<number>();
  running = 0;
  mostAtOnce = 0;
  protected override async fsyncOnce(): Promise<void> {
    const index = this.started++;
    this.running++;
    this.mostAtOnce = Math.max(this.mostAtOnce, this.running);
    try {
      await super.fsyncOnce();
    } finally {
      this.running--;
      this.ended.add(index);
    }
  }
}

describe('DirectorySyncer (group commit)', () => {
  test('callers share fsyncs, at most two run at once, each waits for one that started after its call', async () => {
    const dir = tempDir();
    const syncer = new CountingSyncer(dir);
    try {
      const covered: boolean[] = [];
      const call = (i: number): Promise<void> => {
        // Only an fsync that starts after this call covers a rename made just before it.
        const firstThatCounts = syncer.started;
        return syncer.sync().then(() => {
          covered[i] = [...syncer.ended].some((index) => index >= firstThatCounts);
        });
      };
      await Promise.all(Array.from({ length: 51 }, (_, i) => call(i)));
      // The first two callers each start one; the 49 that come while both run share a third.
      expect(syncer.started).toBe(3);
      expect(syncer.mostAtOnce).toBe(2);
      expect(covered).toHaveLength(51);
      expect(covered.every(Boolean)).toBe(true);
      await call(51);
      expect(syncer.started).toBe(4);
      expect(covered[51]).toBe(true);
    } finally {
      // The syncer keeps its directory open between fsyncs; left to the collector, node warns (DEP0137).
      await syncer.close();
      removeDir(dir);
    }
  });

  test('a failed fsync fails every caller that shared it, and the next caller gets a fresh one', async () => {
    const dir = tempDir();
    class FailingOnce extends CountingSyncer {
      failNext = true;
      protected override async fsyncOnce(): Promise<void> {
        if (this.failNext) {
          this.failNext = false;
          this.started++;
          throw Object.assign(new Error('EIO: i/o error, fsync'), { code: 'EIO' });
        }
        await super.fsyncOnce();
      }
    }
    const syncer = new FailingOnce(dir);
    try {
      const results = await Promise.allSettled([syncer.sync(), syncer.sync(), syncer.sync(), syncer.sync()]);
      // The first caller's fsync failed; the second had its own; the last two shared the third.
      expect(results.map((result) => result.status)).toEqual(['rejected', 'fulfilled', 'fulfilled', 'fulfilled']);
      expect((results[0] as PromiseRejectedResult).reason.code).toBe('EIO');
      await expect(syncer.sync()).resolves.toBeUndefined();
      expect(syncer.started).toBe(4);
      expect(syncer.running).toBe(0);
    } finally {
      await syncer.close();
      removeDir(dir);
    }
  });
});
