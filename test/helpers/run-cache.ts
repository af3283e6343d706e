import { copyFileSync, existsSync, mkdtempSync, renameSync, rmSync } from 'node:fs';
import * as path from 'node:path';

/**
 * Files that cost CPU to make and that every test may share (key pairs: openssl or node:crypto spend
 * 0.1-0.5 s on each RSA key): within one jest run each `name` is made once, in the run's directory
 * (test/setup/global-setup.ts), and its `files` are copied into the asking test's `dir`. Outside such
 * a run they are made in `dir` directly.
 */
export function madeOncePerRun(dir: string, name: string, files: string[], make: (into: string) => void): void {
  const runDir = process.env.SMARTHOP_TEST_RUN_DIR;
  if (!runDir || !existsSync(runDir)) return make(dir);
  const made = path.join(runDir, name);
  if (!existsSync(made)) {
    const scratch = mkdtempSync(path.join(runDir, `${name}.`));
    make(scratch);
    try {
      renameSync(scratch, made);
    } catch {
      // another worker made it first: theirs is as good
      rmSync(scratch, { recursive: true, force: true });
    }
  }
  for (const file of files) copyFileSync(path.join(made, file), path.join(dir, file));
}
