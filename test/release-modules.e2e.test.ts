import { execFile } from 'node:child_process';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { stringify } from 'yaml';
import { useThenRelease } from '../src/memory/release-modules';
import { baseConfig, removeDir, tempDir } from './helpers/harness';

const DIST = path.resolve(__dirname, '../dist/src');
const SRC = path.resolve(__dirname, '../src');

interface Reading {
  ok: boolean;
  /** Modules CONFIG_READER picks that were loaded while the config was read. */
  transient: number;
  /** Those of them a forced collection left alive. */
  alive: string[];
  /** Those of them still in require.cache. */
  cached: number;
  /** Heap used (after a forced collection) once the config is read, minus before. */
  heapGrowth: number;
  listeners: number;
  /** The config's errors, if the read refused it. */
  errors: string[];
}

/**
 * Reads `configFile` in a fresh node (jest keeps its own module registry, not Node's) that has first
 * loaded what `smarthop start` has loaded by then, and reports what is left of the code that read
 * it. `release: false` is the control: the same read without the release, so the test shows that
 * what it measures can be seen.
 */
function readConfigInChild(configFile: string, release: boolean): Promise<Reading> {
  const script = `
    const Module = require('node:module');
    const v8 = require('node:v8');
    for (const loaded of ['relay.js', 'admin/commands.js', 'reenvelope/dkim-keys.js']) require(${JSON.stringify(DIST)} + '/' + loaded);
    const { CONFIG_READER, loadConfigAndRelease } = require(${JSON.stringify(`${DIST}/config/load-and-release.js`)});
    const heapUsed = () => { gc(); gc(); return v8.getHeapStatistics().used_heap_size; };
    const refs = [];
    const load = Module.prototype.load;
    Module.prototype.load = function (filename) {
      load.call(this, filename);
      if (CONFIG_READER.isTransient(filename)) refs.push([filename, new WeakRef(this)]);
    };
    const before = heapUsed();
    const result = ${release
      ? `loadConfigAndRelease(${JSON.stringify(configFile)}, process.env, (err) => { throw err; })`
      : `require(${JSON.stringify(`${DIST}/config/load.js`)}).loadConfigFile(${JSON.stringify(configFile)})`};
    Module.prototype.load = load;
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
        errors: result.ok ? [] : result.errors,
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

/** Every kind of value the schema's transforms build: networks of both families, matchers, header patterns, sizes, a DKIM route. */
function richConfig(dir: string): Record<string, unknown> {
  return baseConfig(dir, [{ name: 'primary', port: 2525 }], {
    listeners: [{ name: 'smtp', address: '127.0.0.1:0', tls: 'none', auth: 'optional', proxy_protocol: true, trusted_proxies: ['10.0.0.0/8'] }],
    clients: [
      { name: 'lan', networks: ['127.0.0.1/32', 'fd00::/64', '::1'], policy: 'apps' },
      { name: 'shop', username: 'shop', password_hash: 'scrypt$16384$8$1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA==' },
    ],
    policies: {
      apps: {
        allowed_senders: ['*@corp.example'],
        allowed_recipients: ['*'],
        denied_recipients: ['*@competitor.example'],
        max_message_size: '512KiB',
        max_recipients: 50,
        rate_limits: [{ window: '1h', messages: 1000, recipients: 5000, bytes: '1GiB' }],
        blocked_attachments: ['exe', '.js'],
        header_rules: [{ header: 'Subject', match: 'lottery|you have won', action: 'reject' }, { header: 'X-Mailer', match: '.', action: 'strip' }],
      },
    },
    routes: {
      default: {
        smarthosts: ['primary'],
        envelope_from: 'bounces@corp.example',
        rewrite_from: { unless: ['*@corp.example'], to: 'noreply@corp.example' },
        strip_headers: ['X-Originating-IP'],
        dkim: { domain: 'corp.example', selector: 's1', private_key: 'dkim-s1.pem' },
      },
    },
  });
}

describe('the relay lets go of the code that read its config', () => {
  let dir: string;
  let configFile: string;

  beforeAll(() => {
    dir = tempDir();
    configFile = path.join(dir, 'relay.yaml');
    writeFileSync(configFile, stringify(richConfig(dir)));
  });
  afterAll(() => removeDir(dir));

  test('zod, yaml and the loader are collected once the config is read; the config is whole', async () => {
    const [released, kept] = await Promise.all([readConfigInChild(configFile, true), readConfigInChild(configFile, false)]);

    expect(released).toMatchObject({ errors: [], ok: true, listeners: 1, alive: [], cached: 0 });
    expect(kept).toMatchObject({ ok: true, listeners: 1 });
    // zod and yaml are well over a hundred files; every one of them is let go.
    expect(released.transient).toBeGreaterThan(100);
    expect(kept.alive.length).toBe(kept.transient);
    expect(kept.cached).toBeGreaterThanOrEqual(kept.transient);
    // Measured: ~5.3 MiB kept against ~0.6 MiB released (the config itself and module bookkeeping).
    expect(kept.heapGrowth - released.heapGrowth).toBeGreaterThan(3 * 1024 * 1024);
  });

  test('in the built relay, only the config reader and the admin target reader load zod, yaml, config/load or config/schema', () => {
    // Anything else that loaded them would keep the reader alive in the relay: the release would
    // then free nothing, and every reload would load a second copy. The built code is what runs,
    // and in it every import, static or lazy, is a require() (dynamic imports included).
    const isReader = (file: string, specifier: string): boolean => {
      if (!specifier.startsWith('.')) return /^(zod|yaml)(\/|$)/.test(specifier);
      const target = path.resolve(path.dirname(path.join(DIST, file)), specifier).replace(/\.js$/, '');
      return target === path.join(DIST, 'config/load') || target === path.join(DIST, 'config/schema');
    };
    const loads: string[] = [];
    for (const file of readdirSync(DIST, { recursive: true, encoding: 'utf8' }).filter((name) => name.endsWith('.js'))) {
      for (const [, specifier] of readFileSync(path.join(DIST, file), 'utf8').matchAll(/\brequire\(\s*["'`]([^"'`]+)["'`]\s*\)/g)) {
        if (isReader(file, specifier)) loads.push(`${file} -> ${specifier}`);
      }
    }
    expect(loads.sort()).toEqual([
      'admin/target.js -> yaml', // lazily, for the admin commands (the relay never calls it)
      'config/load-and-release.js -> ./load', // lazily, released after each read
      'config/load.js -> ./schema',
      'config/load.js -> yaml',
      'config/schema.js -> zod',
    ]);
  });

  test('a release that fails costs memory only: the result stands and the error is reported', () => {
    const errors: unknown[] = [];
    const result = useThenRelease(() => 'the config', { isTransient: () => { throw new Error('no cache here'); } }, (err) => errors.push(err));
    expect(result).toBe('the config');
    expect(errors).toEqual([new Error('no cache here')]);
  });
});
