import { spawnSync } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { dkimVerify, type DNSResolver } from 'mailauth';
import { dkimRecord } from '../../src/forward/reenvelope/dkim-keys';

export interface TestKey {
  file: string;
  /** The TXT record that publishes its public half. */
  record: string;
}

/** A fresh DKIM key for this test run (node:crypto), written as a PKCS#8 PEM file. */
export function makeDkimKey(dir: string, kind: 'rsa' | 'ed25519', name: string = kind): TestKey {
  const pair = kind === 'rsa' ? generateKeyPairSync('rsa', { modulusLength: 2048 }) : generateKeyPairSync('ed25519');
  const file = path.join(dir, `${name}.pem`);
  writeFileSync(file, pair.privateKey.export({ type: 'pkcs8', format: 'pem' }));
  return { file, record: dkimRecord(pair.publicKey) };
}

function notFound(name: string): Error {
  return Object.assign(new Error(`queryTxt ENOTFOUND ${name}`), { code: 'ENOTFOUND' });
}

/** mailauth's resolver hook over a fixed zone: `{ 'name': { TXT: [...], A: [...] } }`; anything else is NXDOMAIN. */
export function zoneResolver(zone: Record<string, Partial<Record<'TXT' | 'A' | 'AAAA' | 'MX', string[]>>>): DNSResolver {
  const lower = new Map(Object.entries(zone).map(([name, records]) => [name.toLowerCase(), records]));
  return async (name: string, rrtype: string) => {
    const records = lower.get(name.toLowerCase().replace(/\.$/, ''));
    if (!records) throw notFound(name);
    const values = records[rrtype as 'TXT' | 'A' | 'AAAA' | 'MX'];
    if (!values) throw Object.assign(new Error(`query ENODATA ${name}`), { code: 'ENODATA' });
    return rrtype === 'TXT' ? values.map((value) => [value]) : values;
  };
}

/** Every DKIM signature of a message as `domain/selector algorithm result`, verified by mailauth against the resolver. */
export async function verifyDkim(message: Buffer, resolver: DNSResolver): Promise<string[]> {
  const { results } = await dkimVerify(message, { resolver });
  // mailauth 4.13's shipped types call it `algorithm`; the result object has `algo`.
  return results.map((result) => `${result.signingDomain}/${result.selector ?? ''} ${(result as { algo?: string }).algo ?? ''} ${result.status.result}`);
}

/**
 * dkimpy (Debian's python3-dkim), a second verifier written apart from mailauth: mailauth's own
 * verifier shares its signer's reading of byte 0xA0 as whitespace, so it cannot catch that mistake.
 * null when /usr/bin/python3 cannot import it.
 */
export const DKIMPY: string | null = (() => {
  const probe = spawnSync('/usr/bin/python3', ['-c', 'import dkim, nacl'], { encoding: 'utf8' });
  return probe.status === 0 ? '/usr/bin/python3' : null;
})();

const DKIMPY_VERIFY = `
import dkim, json, sys
records = json.loads(sys.argv[1])
message = sys.stdin.buffer.read()
def dns(name, timeout=5):
    return records.get(name.decode().rstrip('.').lower(), '').encode()
d = dkim.DKIM(message)
count = len([l for l in message.split(b'\\r\\n\\r\\n', 1)[0].split(b'\\r\\n') if l.lower().startswith(b'dkim-signature:')])
print(json.dumps([d.verify(idx=i, dnsfunc=dns) for i in range(count)]))
`;

/** dkimpy's verdict on each DKIM-Signature of a message, top to bottom; `records` maps `<selector>._domainkey.<domain>` to its TXT record. */
export function verifyWithDkimpy(message: Buffer, records: Record<string, string>): boolean[] {
  if (DKIMPY === null) throw new Error('dkimpy is not installed (apt-get install python3-dkim)');
  const run = spawnSync(DKIMPY, ['-c', DKIMPY_VERIFY, JSON.stringify(records)], { input: message, encoding: 'utf8' });
  if (run.status !== 0) throw new Error(`dkimpy failed: ${run.stderr}`);
  return JSON.parse(run.stdout) as boolean[];
}
