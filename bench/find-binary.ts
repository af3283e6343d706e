import { accessSync, constants } from 'node:fs';
import * as path from 'node:path';

/**
 * The first executable called `name` on PATH, then in `extraDirs` (sbin directories a non-root PATH
 * often lacks), or null. Benchmarks and tests use it to find the real servers they start.
 */
export function findBinary(name: string, extraDirs: readonly string[] = []): string | null {
  const dirs = [...(process.env.PATH ?? '').split(path.delimiter).filter((dir) => dir !== ''), ...extraDirs];
  for (const dir of dirs) {
    const candidate = path.join(dir, name);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return null;
}
