import { spawnSync } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { parseConfig } from '../src/config/load';
import { HeaderBlock } from '../src/message/header-block';
import { dkimBody } from 'mailauth/lib/dkim/body';
import { loadDkimKey, loadRouteKeys } from '../src/forward/reenvelope/dkim-keys';
import { RelaxedBodyHash, signatures } from '../src/forward/reenvelope/dkim-signer';
import { CLI } from './helpers/child-relay';
import { makeDkimKey, verifyDkim, zoneResolver } from './helpers/dkim';
import { removeDir, tempDir } from './helpers/temp-dir';

function withRoute(route: Record<string, unknown>): Record<string, unknown> {
  return {
    hostname: 'relay.test',
    spool: { dir: './spool' },
    listeners: [{ name: 'smtp', address: '127.0.0.1:2525' }],
    clients: [{ name: 'lan', networks: ['10.0.0.0/8'] }],
    routes: { default: { smarthosts: ['primary'], ...route } },
    smarthosts: [{ name: 'primary', host: 'smtp.example', port: 587 }],
  };
}

describe('route re-enveloping keys in the config contract', () => {
  let dir: string;
  beforeEach(() => {
    dir = tempDir();
  });
  afterEach(() => removeDir(dir));

  test('defaults: no rewrite, no signature; one dkim entry becomes a list, its key path resolved to the config', () => {
    const plain = parseConfig(withRoute({}), '/etc/smarthop', {});
    if (!plain.ok) throw new Error(plain.errors.join('\n'));
    expect(plain.config.routes.default).toEqual({
      smarthosts: ['primary'],
      sender_domains: [],
      strip_headers: [],
      received_include_address: false,
      dkim: [],
    });

    const signed = parseConfig(
      withRoute({ dkim: { domain: 'Corp.Example', selector: 's1', private_key: './keys/s1.pem' } }),
      '/etc/smarthop',
      {},
    );
    if (!signed.ok) throw new Error(signed.errors.join('\n'));
    expect(signed.config.routes.default.dkim).toEqual([
      { domain: 'corp.example', selector: 's1', private_key: '/etc/smarthop/keys/s1.pem' },
    ]);
  });

  test('an inline PEM (say from ${DKIM_KEY}) is taken as the key, not as a path', () => {
    const pem = generateKeyPairSync('ed25519').privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
    const result = parseConfig(
      withRoute({ dkim: { domain: 'corp.example', selector: 'e1', private_key: '${DKIM_KEY}' } }),
      '/etc/smarthop',
      { DKIM_KEY: pem },
    );
    if (!result.ok) throw new Error(result.errors.join('\n'));
    const { keys, errors } = loadRouteKeys(result.config.routes);
    expect(errors).toEqual([]);
    expect(keys.get('default')?.[0]).toMatchObject({
      domain: 'corp.example',
      selector: 'e1',
      algorithm: 'ed25519-sha256',
    });
  });

  test('bad values are reported with their paths', () => {
    const result = parseConfig(
      withRoute({
        envelope_from: 'Bounces <bounces@corp.example>',
        rewrite_from: { unless: ['*@corp.example'] },
        sender_domains: ['not a domain'],
        strip_headers: ['X Bad'],
        dkim: [{ domain: 'corp.example', selector: 's1', private_key: 'k.pem', algorithm: 'rsa-sha1' }],
      }),
      '/etc',
      {},
    );
    expect(result.ok).toBe(false);
    if (result.ok) return;
    expect(result.errors).toEqual(
      expect.arrayContaining([
        'routes.default.envelope_from: expected an address like bounces@corp.example',
        'routes.default.rewrite_from.to: Invalid input: expected string, received undefined',
        'routes.default.sender_domains[0]: expected a domain like corp.example',
        'routes.default.strip_headers[0]: expected a header field name like X-Mailer',
      ]),
    );
    expect(result.errors.some((e) => e.startsWith('routes.default.dkim'))).toBe(true);
  });

  test('check-config reads the DKIM keys: a missing or too short key is an error with its path; good passes', () => {
    // The RSA key the other tests of the run sign with (made once per run).
    const good = makeDkimKey(dir, 'rsa');
    const short = path.join(dir, 'short.pem');
    writeFileSync(
      short,
      generateKeyPairSync('rsa', { modulusLength: 512 }).privateKey.export({ type: 'pkcs8', format: 'pem' }),
    );
    const write = (name: string, keyFiles: string[]) => {
      const file = path.join(dir, name);
      const dkim = keyFiles.map(
        (key, i) => `{ domain: corp.example, selector: s${i}, private_key: ${JSON.stringify(key)} }`,
      );
      writeFileSync(
        file,
        [
          'hostname: relay.test',
          'spool: { dir: ./spool }',
          'listeners: [{ name: smtp, address: "127.0.0.1:2525" }]',
          'clients: [{ name: lan, networks: [10.0.0.0/8] }]',
          `routes: { default: { smarthosts: [primary], dkim: [${dkim.join(', ')}] } }`,
          'smarthosts: [{ name: primary, host: smtp.example, port: 587 }]',
        ].join('\n'),
      );
      return spawnSync(process.execPath, [CLI, 'check-config', '-c', file], { encoding: 'utf8' });
    };
    // Both mistakes in one file: check-config reports every key it cannot use, each with its path.
    const bad = write('bad.yaml', ['./keys/nope.pem', short]);
    expect(bad.status).toBe(1);
    expect(bad.stderr).toContain(
      `routes.default.dkim[0].private_key: cannot read ${path.join(dir, 'keys', 'nope.pem')} (ENOENT)`,
    );
    expect(bad.stderr).toContain('routes.default.dkim[1].private_key: a 512-bit RSA key is too short');
    const ok = write('good.yaml', [good.file]);
    expect(ok.stderr).toBe('');
    expect(ok.status).toBe(0);
  });
});

describe('signatures(): keys parsed once, header canonicalised by dkim-header.ts', () => {
  test('rsa-sha256 and ed25519-sha256 over a head and body hash verify with mailauth; t= as given', async () => {
    const dir = tempDir();
    try {
      const rsa = makeDkimKey(dir, 'rsa');
      const ed = makeDkimKey(dir, 'ed25519');
      const keys = [
        loadDkimKey({ domain: 'corp.example', selector: 's1', private_key: rsa.file }),
        loadDkimKey({ domain: 'corp.example', selector: 'e1', private_key: ed.file }),
      ];
      const head = Buffer.from(
        'Received: from app (client lan)\r\n\tby relay.test; Mon, 23 Nov 2026 10:00:00 +0000\r\n' +
          'From: a@corp.example\r\nSubject: hi\r\n',
      );
      const body = Buffer.from('Hello  \r\nworld\r\n\r\n\r\n');
      const hasher = dkimBody('relaxed', 'sha256', false);
      hasher.update(body);
      const lines = await signatures(
        keys,
        HeaderBlock.parse(head.subarray(0, -2)).fields,
        hasher.digest('base64'),
        new Date(Date.UTC(2026, 10, 23, 10, 0, 0)),
      );
      expect(lines.match(/^DKIM-Signature: /gm)).toHaveLength(2);
      expect(lines).toContain('t=1795428000;');
      expect(lines).toMatch(/h=Subject:\s*From:\s*From;/);
      const resolver = zoneResolver({
        's1._domainkey.corp.example': { TXT: [rsa.record] },
        'e1._domainkey.corp.example': { TXT: [ed.record] },
      });
      expect(await verifyDkim(Buffer.concat([Buffer.from(lines), head, Buffer.from('\r\n'), body]), resolver)).toEqual([
        'corp.example/s1 rsa-sha256 pass',
        'corp.example/e1 ed25519-sha256 pass',
      ]);
    } finally {
      removeDir(dir);
    }
  });
});

describe('RelaxedBodyHash: the relaxed body hash, streamed', () => {
  const wholeBodyHash = (body: Buffer) => {
    const hasher = dkimBody('relaxed', 'sha256', false);
    hasher.update(body);
    return hasher.digest('base64');
  };

  test("the hash is mailauth's for the whole body, however the body is cut into chunks", () => {
    const long = 'x'.repeat(70 * 1024);
    const bodies = [
      'Hello  \r\nworld\t \r\n\r\n\r\n',
      'no final line break',
      'a\r\n\r\n  b  \r\nbare\nlf\r\n\r\n',
      `before\r\n${long}\r\nafter \t\r\n`,
      '\r\n\r\n',
      '',
      ' \t \r\n  lead\r\n\t\r\n',
      `one line of 200 KiB without a break ${'y \t'.repeat(70 * 1024)}`,
    ].map((text) => Buffer.from(text, 'latin1'));
    let seed = 7;
    const random = (n: number) => {
      seed = (seed * 1103515245 + 12345) % 2147483648;
      return seed % n;
    };
    for (const body of bodies) {
      const expected = wholeBodyHash(body);
      for (let round = 0; round < 50; round++) {
        const hash = new RelaxedBodyHash();
        // Cuts anywhere, including between CR and LF and inside the 70 KiB line; round 0 of a short body is
        // one byte at a time.
        for (let at = 0; at < body.length;) {
          const size = round === 0 && body.length < 1000 ? 1 : 1 + random(round % 2 === 0 ? 64 : 80 * 1024);
          hash.update(body.subarray(at, at + size));
          at += size;
        }
        expect(hash.digest()).toBe(expected);
      }
    }
  });

  // Each ends with a line end, as SMTP DATA does: on a last line without one, mailauth and dkimpy disagree
  // about trailing spaces.
  test("random bodies of words, spaces, tabs and line ends, cut at random: mailauth's hash (2000 bodies)", () => {
    const pieces = ['a', 'bc', ' ', '  ', '\t', ' \t ', '\r\n', '\r\n\r\n', '\n', '.', '\u00a0'];
    let seed = 20;
    const random = (n: number) => {
      seed = (seed * 1103515245 + 12345) % 2147483648;
      return seed % n;
    };
    for (let i = 0; i < 2000; i++) {
      let text = '';
      for (let k = random(40); k > 0; k--) text += pieces[random(pieces.length)];
      text += '\r\n';
      const body = Buffer.from(text, 'latin1');
      // Whole (lines hashed as they are where they need no change) and in cuts of 1 to 8 bytes (mostly byte by byte).
      const whole = new RelaxedBodyHash();
      whole.update(body);
      const cut = new RelaxedBodyHash();
      for (let at = 0; at < body.length;) {
        const size = 1 + random(8);
        cut.update(body.subarray(at, at + size));
        at += size;
      }
      const expected = wholeBodyHash(body);
      expect([text, whole.digest(), cut.digest()]).toEqual([text, expected, expected]);
    }
  });
});
