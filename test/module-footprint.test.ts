import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { removeDir, tempDir } from './helpers/harness';

const DIST = path.resolve(__dirname, '../dist/src');

/**
 * Packages that only some configurations use, and the resident memory each costs the process that
 * loads it (measured on its own in a bare node 20: ioredis ~19 MB, nodemailer ~13 MB, mailsplit
 * ~11 MB, mailauth ~20 MB). A relay must not carry the ones its config never uses. libmime
 * (encoded words) and re2js (address globs, header rules) belong to the message model every relay
 * reads addresses and headers with, and are imported plainly.
 */
const OPTIONAL = ['nodemailer/dist/cjs/nodemailer.js', 'ioredis/built/index.js', 'mailsplit/index.js', 'mailauth/lib/'];

/** Builds a Relay from `config` in a fresh node (the built code, as `smarthop start` runs it) and lists which OPTIONAL packages it loaded. */
function loadedBy(config: Record<string, unknown>): Promise<string[]> {
  const dir = tempDir();
  const file = path.join(dir, 'relay.config.json');
  writeFileSync(file, JSON.stringify({
    hostname: 'relay.test',
    spool: { dir: './spool', min_free_disk: 0 },
    listeners: [{ name: 'smtp', address: '127.0.0.1:0', tls: 'none' }],
    clients: [{ name: 'lan', networks: ['127.0.0.1/32'] }],
    routes: { default: { smarthosts: ['sink'] } },
    smarthosts: [{ name: 'sink', host: '127.0.0.1', port: 2599, tls: 'none' }],
    ...config,
  }));
  const script = `
    const { loadConfigFile } = require(${JSON.stringify(`${DIST}/config/load.js`)});
    const { Relay } = require(${JSON.stringify(`${DIST}/relay.js`)});
    const result = loadConfigFile(${JSON.stringify(file)});
    if (!result.ok) throw new Error(result.errors.join('; '));
    new Relay(result.config);
    const optional = ${JSON.stringify(OPTIONAL)};
    process.stdout.write(JSON.stringify(optional.filter((p) => Object.keys(require.cache).some((f) => f.includes('/node_modules/' + p)))));
    process.exit(0);
  `;
  return new Promise((resolve, reject) => {
    execFile(process.execPath, ['-e', script], { timeout: 30_000 }, (err, stdout, stderr) => {
      removeDir(dir);
      if (err) reject(new Error(`${err.message}\n${stderr}`));
      else resolve(JSON.parse(stdout) as string[]);
    });
  });
}

describe('the event loop loads only the packages its config uses', () => {
  test('a plain relay (smart hosts on the delivery thread, memory counters, no attachment rules, no DKIM) loads none of them', async () => {
    expect(await loadedBy({})).toEqual([]);
  });

  test('a Graph smart host loads none of them either (mailsplit comes with a message over one request)', async () => {
    const graph = {
      name: 'sink', type: 'graph', tenant: 't.test', client_id: 'app', client_secret: 's', mailbox: 'm@x.test'
    };
    expect(await loadedBy({ smarthosts: [graph] })).toEqual([]);
  });

  test('each is loaded by the config that needs it', async () => {
    expect(await loadedBy({ delivery: { worker_thread: false } })).toEqual(['nodemailer/dist/cjs/nodemailer.js']);
    expect(await loadedBy({ state: { store: 'redis', redis: { url: 'redis://127.0.0.1:6399' }, fleet_size: 2 } })).toEqual(['ioredis/built/index.js']);
    expect(await loadedBy({
      clients: [{ name: 'lan', networks: ['127.0.0.1/32'], policy: 'strict' }],
      policies: { strict: { blocked_attachments: ['exe'] } },
    })).toEqual(['mailsplit/index.js']);
  });
});
