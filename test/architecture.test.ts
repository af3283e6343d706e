import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { architectureViolations, LAYERS } from '../scripts/check-architecture';
import { removeDir, tempDir } from './helpers/temp-dir';

/**
 * docs/architecture.md's import rules hold for the source (scripts/check-architecture.ts), the rules
 * themselves admit no cycle, the document states the same table as the check, and the check finds
 * every kind of import it promises to.
 */

const root = path.resolve(__dirname, '..');

describe('the source', () => {
  test('follows every rule', () => {
    const found = architectureViolations(path.join(root, 'src')).map((v) => `src/${v.file}:${v.line}: ${v.message}`);
    expect(found).toEqual([]);
  });
});

describe('the layers', () => {
  test('each folder imports only folders above it, so the import graph between folders has no cycle', () => {
    const seen: string[] = [];
    for (const layer of LAYERS) {
      for (const imported of layer.mayImport) expect(seen).toContain(imported);
      seen.push(layer.folder);
    }
  });

  test('docs/architecture.md states the same table', () => {
    const doc = readFileSync(path.join(root, 'docs/architecture.md'), 'utf8');
    const rows = new Map<string, string[]>();
    for (const [, folder, imports] of doc.matchAll(/^\| `(\w+)\/` \|[^|]+\|([^|]*)\|$/gm)) {
      rows.set(
        folder,
        [...imports.matchAll(/`(\w+)\/`/g)].map(([, name]) => name),
      );
    }
    const table = Object.fromEntries(LAYERS.map((layer) => [layer.folder, [...layer.mayImport]]));
    expect(Object.fromEntries(rows)).toEqual(table);
  });
});

describe('the check', () => {
  let dir: string;

  beforeEach(() => {
    dir = tempDir();
  });

  afterEach(() => {
    removeDir(dir);
  });

  function write(file: string, text: string): void {
    mkdirSync(path.dirname(path.join(dir, file)), { recursive: true });
    writeFileSync(path.join(dir, file), text);
  }

  test('finds imports against the layers, of every form, and lets the allowed ones pass', () => {
    write('spool/store.ts', "import type { Observer } from '../observe/events';\nexport class SpoolStore {}\n");
    write('observe/events.ts', 'export interface Observer { emit(): void }\n');
    write(
      'ingress/session.ts',
      [
        "import type { Dispatcher } from '../forward/dispatcher';",
        "export { chooseRoute } from '../forward/router';",
        "export * from '../policy/engine';",
        "type Later = typeof import('../lifecycle/reload');",
        "import { SpoolStore } from '../spool/store';",
        "import { VERSION } from '../version';",
        "import { Relay } from '../relay';",
        '',
      ].join('\n'),
    );
    write('config/schema.ts', "import type { AddressMatcher } from '../policy/address-match';\n");
    write('version.ts', "export const VERSION = '1';\n");
    write('relay.ts', "import { SpoolStore } from './spool/store';\nimport './cli';\n");
    write('cli.ts', "import('./relay.js');\n");
    expect(architectureViolations(dir).map((v) => `${v.file}:${v.line}: ${v.message.split(';')[0]}`)).toEqual([
      'config/schema.ts:1: config/ may not import policy/ (../policy/address-match)',
      'ingress/session.ts:1: ingress/ may not import forward/ (../forward/dispatcher)',
      'ingress/session.ts:2: ingress/ may not import forward/ (../forward/router)',
      'ingress/session.ts:3: ingress/ may not import policy/ (../policy/engine)',
      'ingress/session.ts:4: ingress/ may not import lifecycle/ (../lifecycle/reload)',
      'ingress/session.ts:7: relay.ts wires the relay: nothing below it imports it',
      'relay.ts:2: nothing imports cli.ts',
    ]);
  });

  test('finds lazy loads, run-time tricks, private entry points outside their adapter, stray files', () => {
    write(
      'policy/engine.ts',
      [
        "const scan = require('./mime-scan') as typeof import('./mime-scan');",
        "const later = import('./rules');",
        'for (const file of Object.keys(require.cache)) delete require.cache[file];',
        "import { setFlagsFromString } from 'node:v8';",
        "import addressparser from 'nodemailer/lib/addressparser';",
        "const resolved = require.resolve('yaml');",
        '',
      ].join('\n'),
    );
    write('nodemailer-adapter.ts', "import MimeNode from 'nodemailer/lib/mime-node';\n");
    write('memory/streamed-garbage.ts', 'export {};\n');
    expect(architectureViolations(dir).map((v) => `${v.file}:${v.line}: ${v.message.split(':')[0]}`)).toEqual([
      'memory/streamed-garbage.ts:1: memory/streamed-garbage.ts is outside the layout',
      "policy/engine.ts:1: require('./mime-scan')",
      "policy/engine.ts:2: import('./rules')",
      'policy/engine.ts:3: require.cache',
      'policy/engine.ts:3: require.cache',
      'policy/engine.ts:4: setFlagsFromString from node',
      "policy/engine.ts:5: nodemailer/lib/addressparser is below the library's public API",
    ]);
  });
});
