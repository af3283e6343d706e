import { generateKeyPairSync } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { dkimVerify, type DNSResolver } from 'mailauth';
import { dkimRecord } from '../../src/reenvelope/dkim-keys';

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
