import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';

const ROOT = path.resolve(__dirname, '../..');

/**
 * Tests run the TypeScript under test/ and src/ through swc, but a worker thread (the delivery
 * thread) and a child process (the CLI, bench, soak) load the compiled JavaScript in dist/, which
 * swc never writes. When dist/ is older than the source, `npx jest` alone would test yesterday's
 * delivery code; this is the check, done the way make does: a source newer than its output.
 */
export function staleSources(root = ROOT): string[] {
  const stale: string[] = [];
  for (const source of ['src', 'bench'].flatMap((top) => typeScriptFiles(path.join(root, top)))) {
    const built = path.join(root, 'dist', path.relative(root, source)).replace(/\.ts$/, '.js');
    if (!existsSync(built) || statSync(built).mtimeMs < statSync(source).mtimeMs)
      stale.push(path.relative(root, source));
  }
  return stale;
}

function typeScriptFiles(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { recursive: true, encoding: 'utf8' })
    .filter((name) => name.endsWith('.ts') && !name.endsWith('.d.ts'))
    .map((name) => path.join(dir, name));
}

/**
 * jest's globalSetup, before any test starts: dist/ is built when stale, and the run gets a directory
 * of its own (SMARTHOP_TEST_RUN_DIR, removed by global-teardown.ts) for what its test files share,
 * such as the certificates test/helpers/harness.ts makes once. Workers start later and inherit it.
 */
export default function globalSetup(): void {
  buildIfStale();
  process.env.SMARTHOP_TEST_RUN_DIR = mkdtempSync(path.join(tmpdir(), 'smarthop-test-run-'));
}

/**
 * Builds dist/ when any source is newer. `npm test` has just built, so there it only checks. The
 * build here is a whole one (`--incremental false`): an incremental build skips a source whose
 * content its build info already has (a file touched, or checked out again unchanged) and an output
 * deleted by hand, and either would leave dist/ looking stale. Type errors do not stop the run (tsc
 * still writes every file, so dist/ is the current source); `npm run build` and CI report them.
 */
function buildIfStale(): void {
  const stale = staleSources();
  if (stale.length === 0) return;
  const shown = stale.slice(0, 3).join(', ') + (stale.length > 3 ? ', …' : '');
  process.stderr.write(
    `\ndist/ is older than ${stale.length} source file(s) (${shown}): running a whole build first\n`,
  );
  const build = spawnSync('npm', ['run', '--silent', 'build', '--', '--incremental', 'false'], {
    cwd: ROOT,
    encoding: 'utf8',
  });
  if (build.status !== 0) process.stderr.write(`npm run build reported errors:\n${build.stdout}${build.stderr}\n`);
  const still = staleSources();
  if (still.length > 0) throw new Error(`dist/ is still older than ${still.join(', ')} after npm run build`);
}
