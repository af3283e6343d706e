import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { parseConfig } from '../src/config/load';
import type { RelayConfig } from '../src/config/schema';
import { runDoctor } from '../src/tools/doctor/doctor';
import { senderIdentities } from '../src/tools/doctor/identities';
import { alignedTable, exitCode, formatReport } from '../src/tools/doctor/report';
import { loadRouteKeys } from '../src/forward/reenvelope/dkim-keys';
import { CLI } from './helpers/child-relay';
import { makeDkimKey, zoneResolver, type TestKey } from './helpers/dkim';
import { TestDnsServer, type Zone } from './helpers/dns-server';
import { removeDir, tempDir } from './helpers/temp-dir';

function config(routes: Record<string, unknown>, smarthostHost = 'smtp.provider.test'): Record<string, unknown> {
  return {
    hostname: 'relay.test',
    spool: { dir: './spool' },
    listeners: [{ name: 'smtp', address: '127.0.0.1:2525' }],
    clients: [{ name: 'lan', networks: ['10.0.0.0/8'] }],
    routes,
    smarthosts: [{ name: 'provider', host: smarthostHost, port: 587 }],
  };
}

function parsed(raw: Record<string, unknown>): RelayConfig {
  const result = parseConfig(raw, '/', {});
  if (!result.ok) throw new Error(result.errors.join('\n'));
  return result.config;
}

describe('doctor: which sender identities a route has', () => {
  test.each<[string, Record<string, unknown>, [string | null, string | null, string][]]>([
    [
      'rewrite_from with envelope_from: the rewritten domain; literal unless domains keep theirs',
      {
        smarthosts: ['provider'],
        envelope_from: 'bounces@mail.corp.example',
        rewrite_from: {
          unless: ['*@corp.example', '*@*.corp.example', 'ceo@Board.Example'],
          to: 'noreply@corp.example',
        },
      },
      [
        ['corp.example', 'mail.corp.example', 'rewrite_from.to'],
        ['board.example', 'mail.corp.example', 'rewrite_from.unless'],
      ],
    ],
    [
      "rewrite_from without envelope_from: rewritten mail keeps the client's envelope",
      { smarthosts: ['provider'], rewrite_from: { unless: ['*@corp.example'], to: 'noreply@corp.example' } },
      [['corp.example', null, 'rewrite_from.to']],
    ],
    [
      'sender_domains: From and envelope in that domain, unless rewrite_from replaces it',
      {
        smarthosts: ['provider'],
        sender_domains: ['shop.example', 'old.example'],
        rewrite_from: { unless: ['*@shop.example'], to: 'noreply@corp.example' },
      },
      [
        ['corp.example', null, 'rewrite_from.to'],
        ['shop.example', 'shop.example', 'rewrite_from.unless'],
      ],
    ],
    [
      'sender_domains without rewrite_from',
      { smarthosts: ['provider'], sender_domains: ['shop.example'], envelope_from: 'bounces@corp.example' },
      [['shop.example', 'corp.example', 'sender_domains']],
    ],
    ['a route that names no domain', { smarthosts: ['provider'] }, [[null, null, 'unknown']]],
  ])('%s', (_case, route, expected) => {
    const identities = senderIdentities({ routes: parsed(config({ default: route })).routes });
    expect(identities.map((i) => [i.fromDomain, i.envelopeDomain, i.source])).toEqual(expected);
  });

  test('the table is aligned on every column but the last', () => {
    expect(
      alignedTable(
        ['A', 'BB', 'C'],
        [
          ['long', 'x', 'last cell'],
          ['s', 'yyy', 'z'],
        ],
      ).split('\n'),
    ).toEqual(['A     BB   C', 'long  x    last cell', 's     yyy  z']);
  });
});

describe('doctor: DKIM, SPF and DMARC against DNS', () => {
  let dir: string;
  let corpRsa: TestKey;
  let corpEd: TestKey;
  let shopKey: TestKey;
  let stranger: TestKey;
  let zone: Zone;

  beforeAll(() => {
    dir = tempDir('smarthop-doctor-');
    // corp.example signs with the run's shared test keys; shop.example's two must differ from them.
    corpRsa = makeDkimKey(dir, 'rsa');
    corpEd = makeDkimKey(dir, 'ed25519');
    shopKey = makeDkimKey(dir, 'rsa', 'shop');
    stranger = makeDkimKey(dir, 'rsa', 'stranger');
    zone = {
      'smtp.provider.test': { A: ['192.0.2.25'] },
      'corp.example': { TXT: ['v=spf1 ip4:192.0.2.0/24 -all'] },
      '_dmarc.corp.example': { TXT: ['v=DMARC1; p=reject; rua=mailto:dmarc@corp.example'] },
      's1._domainkey.corp.example': { TXT: [corpRsa.record] },
      'e1._domainkey.corp.example': { TXT: [corpEd.record] },
      // The failing domain: a stale key published, SPF for other addresses, DMARC enforcing.
      'shop.example': { TXT: ['v=spf1 ip4:198.51.100.0/24 -all'] },
      '_dmarc.shop.example': { TXT: ['v=DMARC1; p=quarantine'] },
      'k1._domainkey.shop.example': { TXT: [stranger.record] },
      // Published, but no DMARC record.
      'nodmarc.example': { TXT: ['v=spf1 ip4:192.0.2.0/24 -all'] },
    };
  });
  afterAll(() => removeDir(dir));

  const corpRoute = () => ({
    smarthosts: ['provider'],
    envelope_from: 'bounces@corp.example',
    rewrite_from: { unless: ['*@corp.example'], to: 'noreply@corp.example' },
    dkim: [
      { domain: 'corp.example', selector: 's1', private_key: corpRsa.file },
      { domain: 'corp.example', selector: 'e1', private_key: corpEd.file },
    ],
  });
  const shopRoute = () => ({
    smarthosts: ['provider'],
    sender_domains: ['shop.example'],
    dkim: { domain: 'shop.example', selector: 'k1', private_key: shopKey.file },
  });

  async function doctor(routes: Record<string, unknown>, smarthostHost?: string) {
    const relayConfig = parsed(config(routes, smarthostHost));
    const { keys, errors } = loadRouteKeys(relayConfig.routes);
    expect(errors).toEqual([]);
    return runDoctor({ config: relayConfig, keys, resolver: zoneResolver(zone) });
  }

  test('a passing domain: both keys published and matching, SPF passes, DMARC aligned by both', async () => {
    const rows = await doctor({ default: corpRoute() });
    expect(
      rows.map((r) => [
        r.identity.fromDomain,
        r.dkim.map((d) => d.status),
        r.spf.status,
        r.dmarc?.result,
        r.dmarc?.alignedBy,
        r.verdict,
      ]),
    ).toEqual([['corp.example', ['pass', 'pass'], 'pass', 'pass', ['dkim', 'spf'], 'pass']]);
    expect(exitCode(rows)).toBe(0);
    expect(formatReport(rows)).toContain('no sender identity would fail DMARC (1 checked)');
  });

  test('a failing domain: the report names the stale DKIM record, what to publish, the SPF and DMARC', async () => {
    const rows = await doctor({ default: corpRoute(), shop: shopRoute() });
    const shop = rows.find((r) => r.identity.route === 'shop');
    expect(shop?.verdict).toBe('fail');
    expect(shop?.dkim[0].status).toBe('mismatch');
    expect(shop?.spf.status).toBe('fail');
    expect(exitCode(rows)).toBe(1);
    const report = formatReport(rows);
    expect(report).toContain(`found:   "${stranger.record}"`);
    expect(report).toContain(`publish: k1._domainkey.shop.example TXT "${shopKey.record}"`);
    expect(report).toContain('SPF shop.example "v=spf1 ip4:198.51.100.0/24 -all": fail for the route\'s smart hosts');
    expect(report).toContain('provider [192.0.2.25]: fail');
    expect(report).toContain(
      'DMARC _dmarc.shop.example "v=DMARC1; p=quarantine": From shop.example aligns with neither ' +
        'a verifying DKIM d= (none verifies) nor an SPF-passing envelope domain (shop.example)',
    );
    expect(report).toContain('1 of 2 sender identities would fail DMARC');
  });

  test('no DMARC record fails; a missing selector record says what to publish', async () => {
    const rows = await doctor({
      default: {
        smarthosts: ['provider'],
        sender_domains: ['nodmarc.example'],
        dkim: { domain: 'nodmarc.example', selector: 'x1', private_key: corpRsa.file },
      },
    });
    expect(rows[0].verdict).toBe('fail');
    expect(rows[0].dkim[0].status).toBe('missing');
    expect(rows[0].problems.join('\n')).toContain(`publish: x1._domainkey.nodmarc.example TXT "${corpRsa.record}"`);
    expect(rows[0].problems.join('\n')).toContain('DMARC _dmarc.nodmarc.example: no record');
  });

  test('a smart host on a LAN address: SPF cannot be told; DKIM alone passes, SPF alone is a warning', async () => {
    const signed = await doctor({ default: corpRoute() }, '127.0.0.1');
    expect([signed[0].spf.status, signed[0].verdict]).toEqual(['cannot tell', 'pass']);
    expect(signed[0].spf.findings).toEqual([
      'provider [127.0.0.1]: a loopback address, the public sending address is not known here: cannot tell',
    ]);

    const unsigned = await doctor(
      { default: { smarthosts: ['provider'], sender_domains: ['corp.example'] } },
      '10.20.0.25',
    );
    expect([unsigned[0].spf.status, unsigned[0].verdict]).toEqual(['cannot tell', 'warn']);
    expect(unsigned[0].problems.join('\n')).toContain(
      'aligns only through SPF of corp.example, which cannot be told from here',
    );

    const unresolvable = await doctor({ default: corpRoute() }, 'smtp.nowhere.test');
    expect(unresolvable[0].spf.findings).toEqual(['provider: cannot resolve smtp.nowhere.test: cannot tell']);
  });

  test('a route that names no sender domain is skipped, not failed', async () => {
    const rows = await doctor({ default: { smarthosts: ['provider'] } });
    expect(rows[0].verdict).toBe('skip');
    expect(exitCode(rows)).toBe(0);
  });

  describe('smarthop doctor -c FILE --dns SERVER (a DNS server on loopback)', () => {
    let dns: TestDnsServer;
    beforeAll(async () => {
      dns = new TestDnsServer(zone);
      await dns.listen();
    });
    afterAll(() => dns.close());

    /** Asynchronously: the DNS server answers from this process, so it must not be blocked by a sync spawn. */
    async function run(
      routes: Record<string, unknown>,
    ): Promise<{ status: number | null; stdout: string; stderr: string }> {
      const file = path.join(dir, `doctor-${Object.keys(routes).join('-')}.json`);
      writeFileSync(file, JSON.stringify(config(routes)));
      const child = spawn(process.execPath, [CLI, 'doctor', '-c', file, '--dns', `127.0.0.1:${dns.port}`], {
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
      child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
      const [status] = (await once(child, 'close')) as [number | null];
      return { status, stdout, stderr };
    }

    // One run with a passing and a failing route: the table, both rows, the failing record and exit 1. What
    // each verdict and exit code is for is tested above, without a process.
    test('a passing and a failing domain: a PASS row, a FAIL row with the record that fails, exit 1', async () => {
      const result = await run({ default: corpRoute(), shop: shopRoute() });
      expect(result.stderr).toBe('');
      expect(result.status).toBe(1);
      const lines = result.stdout.split('\n');
      expect(lines[0]).toMatch(/^ROUTE\s+FROM\s+ENVELOPE\s+DKIM\s+SPF\s+DMARC\s+VERDICT$/);
      expect(lines[1]).toMatch(
        new RegExp(
          /^default\s+corp\.example\s+corp\.example\s+corp\.example\/s1 pass, corp\.example\/e1 pass\s+/.source +
            /pass\s+pass p=reject \(dkim\+spf\)\s+PASS$/.source,
        ),
      );
      expect(result.stdout).toMatch(
        /^shop\s+shop\.example\s+shop\.example\s+shop\.example\/k1 mismatch\s+fail\s+fail p=quarantine\s+FAIL$/m,
      );
      // The long RSA record came in 255-byte pieces over DNS and is shown whole.
      expect(result.stdout).toContain(`found:   "${stranger.record}"`);
      expect(result.stdout).toContain('1 of 2 sender identities would fail DMARC');
    });
  });
});
