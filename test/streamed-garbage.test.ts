import { constants, PerformanceObserver, type PerformanceEntry } from 'node:perf_hooks';
import { Worker } from 'node:worker_threads';
import { StreamedGarbage } from '../src/memory/streamed-garbage';

describe('StreamedGarbage', () => {
  test('asks for one minor collection per `everyBytes` streamed, carrying nothing over', () => {
    const calls: unknown[] = [];
    const garbage = new StreamedGarbage(1000, (options) => calls.push(options));
    garbage.streamed(600);
    expect(calls).toEqual([]);
    garbage.streamed(600); // 1,200: past the mark
    expect(calls).toEqual([{ type: 'minor' }]);
    garbage.streamed(999); // counted from zero again
    expect(calls).toHaveLength(1);
    garbage.streamed(1);
    expect(calls).toHaveLength(2);
    expect(garbage.collections).toBe(2);
  });

  test("runs V8's own scavenge without node --expose-gc on the command line", async () => {
    const minorCollections: PerformanceEntry[] = [];
    const observer = new PerformanceObserver((list) => {
      for (const entry of list.getEntries()) if ((entry as PerformanceEntry & { detail?: { kind?: number } }).detail?.kind === constants.NODE_PERFORMANCE_GC_MINOR) minorCollections.push(entry);
    });
    observer.observe({ entryTypes: ['gc'] });
    try {
      const garbage = new StreamedGarbage(64 * 1024);
      for (let i = 0; i < 8; i++) garbage.streamed(64 * 1024);
      expect(garbage.collections).toBe(8);
      await new Promise((resolve) => setTimeout(resolve, 50)); // gc entries are delivered asynchronously
      expect(minorCollections.length).toBeGreaterThanOrEqual(8);
    } finally {
      observer.disconnect();
    }
  });

  test('a thread started after the first load finds `gc` on its own global: it never has to set the process-wide flag', async () => {
    expect(new StreamedGarbage().available).toBe(true);
    const worker = new Worker("require('node:worker_threads').parentPort.postMessage(typeof globalThis.gc)", { eval: true });
    try {
      const seen = await new Promise((resolve, reject) => {
        worker.once('message', resolve);
        worker.once('error', reject);
      });
      expect(seen).toBe('function');
    } finally {
      await worker.terminate();
    }
  });
});
