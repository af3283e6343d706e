// @ts-check
const { statSync } = require('node:fs');
const path = require('node:path');
const DefaultSequencer = require('@jest/test-sequencer').default;

/**
 * Files that run whole relay processes, a bench or a browser for tens of seconds, whatever their
 * size. Without a time from an earlier run they start first, so no worker is left with one at the end.
 */
const LONG_RUNNING = new Set([
  'soak.e2e.test.ts',
  'dkim-large.e2e.test.ts',
  'bench-compare.e2e.test.ts',
  'fleet.e2e.test.ts',
  'deep-queue.e2e.test.ts',
  'deep-queue-bench.e2e.test.ts',
  'status-page.e2e.test.ts',
]);

/**
 * The order of the run. Jest starts the slowest files first when its cache has their times from an
 * earlier run, and otherwise the largest files first: in a fresh clone (CI) the soak, 20 lines that
 * run for ~40 s, would start last and finish alone. Here files without a time go first as before,
 * the long-running ones ahead, then the end-to-end files, then the unit files, each by size; files
 * with a time follow in jest's order (one that failed last time first, then the slowest).
 */
class Sequencer extends DefaultSequencer {
  /** @param {import('@jest/test-result').Test[]} tests */
  async sort(tests) {
    const sorted = await super.sort(tests);
    const rank = (/** @type {import('@jest/test-result').Test} */ test) => {
      const name = path.basename(test.path);
      if (LONG_RUNNING.has(name)) return 0;
      return name.endsWith('.e2e.test.ts') ? 1 : 2;
    };
    const size = (/** @type {import('@jest/test-result').Test} */ test) => statSync(test.path).size;
    // jest has set each file's duration from its cache: null is a file it has no time for.
    const unknown = sorted
      .filter((test) => test.duration == null)
      .sort((a, b) => rank(a) - rank(b) || size(b) - size(a));
    return [...unknown, ...sorted.filter((test) => test.duration != null)];
  }
}

module.exports = Sequencer;
