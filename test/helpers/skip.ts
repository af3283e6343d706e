import { appendFileSync } from 'node:fs';
import * as path from 'node:path';

/**
 * Records why tests of this file cannot run here (a binary missing, no root), for the summary the
 * reporter test/setup/skip-summary.js prints at the end of the run. Run without that reporter, the
 * reason is printed at once instead.
 */
export function recordSkip(reason: string): void {
  const file = expect.getState().testPath ?? 'an unknown test file';
  const dir = process.env.SMARTHOP_TEST_SKIPS;
  if (dir) appendFileSync(path.join(dir, `${process.pid}.jsonl`), `${JSON.stringify({ file, reason })}\n`);
  else process.stderr.write(`SKIPPED ${path.relative(process.cwd(), file)}: ${reason}\n`);
}

/** `test` when nothing is missing (`reason` is null); else `test.skip`, with the reason recorded. */
export function testUnless(reason: string | null): jest.It {
  if (reason === null) return test;
  recordSkip(reason);
  return test.skip;
}
