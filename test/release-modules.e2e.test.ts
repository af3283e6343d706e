import { execFile } from 'node:child_process';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { stringify } from 'yaml';
import { baseConfig, removeDir, tempDir } from './helpers/harness';

const DIST = path.resolve(__dirname, '../dist/src');
const SRC = path.resolve(__dirname, '../src');

interface Reading {
  ok: boolean;
  /** Modules CONFIG_READER picks that were loaded while the config was read. */
  transient: number;
  /** Those of them whose exports a forced collection left alive. */
  alive: string[];
  /** Those of them still in require.cache. */
  cached: number;
  /** Heap used (after a forced collection) once the config is read, minus before. */
  heapGrowth: number;
  listeners: number;
}

/**
 * Reads `configFile` in a fresh node process (jest keeps its own module registry, not Node's) and
 * reports what is left of the code that read it. `release: false` is the control: the same read
 * without the release, so the test shows what it measures can be seen.
 */
function readConfigInChild(configFile: string, release: boolean): Promise<Reading> {
  const script = `
    const v8 = require('node:v8');
    const { useThenRelease } = require(${JSON.stringify(`${DIST}/memory/release-modules.js`)});
    const { CONFIG_READER } = require(${JSON.stringify(`${DIST}/config/load-and-release.js`)});
    const heapUsed = () => { gc(); gc(); return v8.getHeapStatistics().used_heap_size; };
    const before = heapUsed();
    const refs = [];
    const read = () => {
      const result = require(${JSON.stringify(`${DIST}/config/load.js`)}).loadConfigFile(${JSON.stringify(configFile)});
      for (const [file, loaded] of Object.entries(require.cache)) {
        const exported = loaded.exports;
        if (CONFIG_READER.isTransient(file) && exported !== null && (typeof exported === 'object' || typeof exported === 'function')) refs.push([file, new WeakRef(exported)]);
      }
      return result;
    };
    const result = ${release ? 'useThenRelease(read, CONFIG_READER)' : 'read()'};
    // A WeakRef keeps its target alive until the job that made it ends: collect in the next one.
    setTimeout(() => {
      const heapGrowth = heapUsed() - before;
      process.stdout.write(JSON.stringify({
        ok: result.ok,
        transient: refs.length,
        alive: refs.filter(([, ref]) => ref.deref() !== undefined).map(([file]) => file),
        cached: Object.keys(require.cache).filter(CONFIG_READER.isTransient).length,
        heapGrowth,
        listeners: result.ok ? result.config.listeners.length : 0,
      }));
    }, 20);
  `;
  return new Promise((resolve, reject) => {
    execFile(process.execPath, ['--expose-gc', '-e', script], { timeout: 30_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${err.message}\n${stderr}`));
      else resolve(JSON.parse(stdout) as Reading);
    });
  });
}

describe('the relay lets go of the code that read its config', () => {
  let dir: string;
  let configFile: string;

  beforeAll(() => {
    dir = tempDir();
    configFile = path.join(dir, 'relay.yaml');
    writeFileSync(configFile, stringify(baseConfig(dir, [{ name: 'primary', port: 2525 }])));
  });
  afterAll(() => removeDir(dir));

  test('zod, yaml and the loader are collected once the config is read; the config is whole', async () => {
    const [released, kept] = await Promise.all([readConfigInChild(configFile, true), readConfigInChild(configFile, false)]);

    expect(released).toMatchObject({ ok: true, listeners: 1, alive: [], cached: 0 });
    expect(kept).toMatchObject({ ok: true, listeners: 1 });
    // zod and yaml are well over a hundred files; every one of them is let go.
    expect(released.transient).toBeGreaterThan(100);
    expect(kept.alive.length).toBe(kept.transient);
    expect(kept.cached).toBeGreaterThanOrEqual(kept.transient);
    // Measured: ~5.3 MiB kept against ~0.6 MiB released (the config itself and module bookkeeping).
    expect(kept.heapGrowth - released.heapGrowth).toBeGreaterThan(3 * 1024 * 1024);
  });

  test('only the config reader itself loads zod, yaml, config/load or config/schema at run time', () => {
    // A static import anywhere else would keep the reader alive in the relay: the release would
    // then free nothing, and every reload would load a second copy.
    const files = readdirSync(SRC, { recursive: true, encoding: 'utf8' }).filter((file) => file.endsWith('.ts'));
    const holders: string[] = [];
    for (const file of files) {
      for (const line of readFileSync(path.join(SRC, file), 'utf8').split('\n')) {
        if (!/^(import|export) /.test(line) || /^(import|export) type /.test(line)) continue;
        if (/from '(zod|yaml)'|from '(\.\.?\/)+(config\/)?(load|schema)'/.test(line)) holders.push(`${file}: ${line}`);
      }
    }
    expect(holders.sort()).toEqual([
      "config/load.ts: import { configSchema, type RelayConfig } from './schema';",
      "config/load.ts: import { parseDocument } from 'yaml';",
      "config/schema.ts: import { z } from 'zod';",
    ]);
  });
});
