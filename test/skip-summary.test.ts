import { appendFileSync } from 'node:fs';
import * as path from 'node:path';

// The reporter is plain JavaScript, loaded by jest itself from jest.config.js.
// eslint-disable-next-line @typescript-eslint/no-require-imports -- a CommonJS file has no ES import here
const SkipSummary = require('./setup/skip-summary.js') as new (config: {
  rootDir: string;
  testNamePattern?: string;
}) => {
  onRunComplete(contexts: unknown, results: { testResults: { testFilePath: string; numPendingTests: number }[] }): void;
};

/** The end of a run with skipped tests: what the reporter of test/setup/skip-summary.js prints. */
function summary(
  testNamePattern: string | undefined,
  recorded: { file: string; reason: string }[],
  results: [string, number][],
): string {
  const runSkips = process.env.SMARTHOP_TEST_SKIPS;
  const printed: string[] = [];
  const write = jest.spyOn(process.stderr, 'write').mockImplementation((chunk) => printed.push(String(chunk)) > 0);
  try {
    const reporter = new SkipSummary({ rootDir: '/repo', testNamePattern });
    // As test/helpers/skip.ts records them, from any worker.
    const dir = process.env.SMARTHOP_TEST_SKIPS as string;
    for (const [i, entry] of recorded.entries())
      appendFileSync(path.join(dir, `${1000 + (i % 2)}.jsonl`), `${JSON.stringify(entry)}\n`);
    reporter.onRunComplete(undefined, {
      testResults: results.map(([file, skipped]) => ({ testFilePath: `/repo/${file}`, numPendingTests: skipped })),
    });
  } finally {
    write.mockRestore();
    process.env.SMARTHOP_TEST_SKIPS = runSkips;
  }
  return printed.join('');
}

describe('the skip summary at the end of a run', () => {
  test('every file with skipped tests, with the reasons its tests recorded, or a note that none was given', () => {
    const printed = summary(
      undefined,
      [
        { file: '/repo/test/fleet.e2e.test.ts', reason: 'haproxy not on PATH' },
        { file: '/repo/test/disk.e2e.test.ts', reason: 'cannot mount a tmpfs here' },
        { file: '/repo/test/fleet.e2e.test.ts', reason: 'haproxy not on PATH' },
      ],
      [
        ['test/fleet.e2e.test.ts', 7],
        ['test/units.test.ts', 0],
        ['test/disk.e2e.test.ts', 3],
        ['test/other.test.ts', 1],
      ],
    );
    expect(printed).toBe(
      [
        '',
        'Skipped on this machine:',
        '  test/fleet.e2e.test.ts: 7 skipped: haproxy not on PATH',
        '  test/disk.e2e.test.ts: 3 skipped: cannot mount a tmpfs here',
        '  test/other.test.ts: 1 skipped: no reason given (use test/helpers/skip.ts)',
        '',
        '',
      ].join('\n'),
    );
  });

  test('nothing when nothing was skipped; with -t only the recorded reasons (the name filter skips the rest)', () => {
    expect(summary(undefined, [], [['test/units.test.ts', 0]])).toBe('');
    expect(
      summary(
        'quota',
        [{ file: '/repo/test/fleet.e2e.test.ts', reason: 'redis-server not on PATH' }],
        [
          ['test/fleet.e2e.test.ts', 7],
          ['test/units.test.ts', 12],
        ],
      ),
    ).toBe('\nSkipped on this machine:\n  test/fleet.e2e.test.ts: 7 skipped: redis-server not on PATH\n\n');
  });
});
