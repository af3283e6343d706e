import { mkdirSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { removeDir, tempDir } from './helpers/temp-dir';
import { staleSources } from './setup/global-setup';

/**
 * The delivery thread (a worker thread), the CLI and the bench (child processes) run dist/, not the
 * TypeScript jest compiles. jest's globalSetup (test/setup/global-setup.ts) rebuilds dist/ when a
 * source is newer, so `npx jest` alone never tests a stale build.
 */
describe('dist/ is built from the source under test', () => {
  test('in this run: the delivery worker, the CLI and every other file are at least as new as their sources', () => {
    const root = path.resolve(__dirname, '..');
    for (const module of ['forward/delivery-worker', 'forward/delivery-thread', 'forward/smarthost', 'cli']) {
      const built = statSync(path.join(root, 'dist', 'src', `${module}.js`)).mtimeMs;
      expect({ module, fresh: built >= statSync(path.join(root, 'src', `${module}.ts`)).mtimeMs }).toEqual({
        module,
        fresh: true,
      });
    }
    expect(staleSources()).toEqual([]);
  });

  test('a source newer than its output, or without one, is stale; declaration files have no output', () => {
    const root = tempDir();
    try {
      const write = (file: string, ageS: number) => {
        mkdirSync(path.dirname(path.join(root, file)), { recursive: true });
        writeFileSync(path.join(root, file), '');
        const at = Date.now() / 1000 - ageS;
        utimesSync(path.join(root, file), at, at);
      };
      write('src/fresh.ts', 60);
      write('dist/src/fresh.js', 30);
      write('src/edited.ts', 10);
      write('dist/src/edited.js', 30);
      write('bench/new.ts', 10);
      write('src/types/lib.d.ts', 10);
      expect(staleSources(root).sort()).toEqual(['bench/new.ts', 'src/edited.ts']);
    } finally {
      removeDir(root);
    }
  });
});
