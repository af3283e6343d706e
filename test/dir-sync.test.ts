import { DirectorySyncer } from '../src/spool/dir-sync';
import { removeDir, tempDir } from './helpers/harness';

/** Counts the real fsyncs it makes. */
class CountingSyncer extends DirectorySyncer {
  fsyncs: number[] = [];
  protected override async fsyncOnce(): Promise<void> {
    this.fsyncs.push(Date.now());
    await super.fsyncOnce();
  }
}

describe('DirectorySyncer (group commit)', () => {
  test('concurrent callers share fsyncs, and each waits for one that started after its call', async () => {
    const dir = tempDir();
    const syncer = new CountingSyncer(dir);
    try {
      const order: string[] = [];
      const first = syncer.sync().then(() => order.push('first'));
      const rest = Array.from({ length: 50 }, (_, i) => syncer.sync().then(() => order.push(`later-${i}`)));
      await Promise.all([first, ...rest]);
      // One fsync was already running for the first caller; the 50 that came while it ran share the next one.
      expect(syncer.fsyncs).toHaveLength(2);
      expect(order[0]).toBe('first');
      await syncer.sync();
      expect(syncer.fsyncs).toHaveLength(3);
    } finally {
      // The syncer keeps its directory open between fsyncs; left to the collector, node warns (DEP0137).
      await syncer.close();
      removeDir(dir);
    }
  });
});
