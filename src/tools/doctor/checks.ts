import { createPublicKey } from 'node:crypto';
import * as ipaddr from 'ipaddr.js';
import { dmarc, spf, type DMARCResult, type DNSResolver } from 'mailauth';
import type { DkimKey } from '../../forward/reenvelope/dkim-keys';
import { dkimRecord, publicKeyTags } from '../../forward/reenvelope/dkim-keys';

/**
 * The DNS checks of `smarthop doctor`, one function per record kind. DNS goes through mailauth's
 * resolver hook (tests give a fixed zone or a loopback server); SPF and DMARC are mailauth's own
 * evaluation, not ours.
 */

export type DkimStatus = 'pass' | 'missing' | 'mismatch' | 'revoked' | 'error';

export interface DkimCheck {
  key: DkimKey;
  /** `<selector>._domainkey.<domain>` */
  name: string;
  status: DkimStatus;
  /** The record found, if any. */
  record?: string;
  /** The record to publish. */
  expected: string;
  detail?: string;
}

function dnsCode(err: unknown): string {
  return (err as NodeJS.ErrnoException).code ?? (err as Error).message;
}

function isAbsent(err: unknown): boolean {
  const code = dnsCode(err);
  return code === 'ENOTFOUND' || code === 'ENODATA';
}

function tags(record: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const part of record.split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0) out.set(part.slice(0, eq).trim().toLowerCase(), part.slice(eq + 1).replace(/\s+/g, ''));
  }
  return out;
}

/** Is the selector record published, and is it the public half of this private key? */
export async function checkDkimKey(key: DkimKey, resolver: DNSResolver): Promise<DkimCheck> {
  const name = `${key.selector}._domainkey.${key.domain}`;
  const expected = dkimRecord(key.publicKey);
  let txt: string[];
  try {
    txt = ((await resolver(name, 'TXT')) as string[][]).map((chunks) => chunks.join(''));
  } catch (err) {
    if (isAbsent(err)) return { key, name, status: 'missing', expected, detail: 'no TXT record' };
    return { key, name, status: 'error', expected, detail: `DNS error ${dnsCode(err)}` };
  }
  const record = txt.find((value) => /^\s*v\s*=\s*DKIM1\b/i.test(value)) ?? txt.find((value) => /\bp\s*=/.test(value));
  if (record === undefined)
    return { key, name, status: 'missing', expected, detail: 'no DKIM record among the TXT records' };
  const published = tags(record);
  const p = published.get('p') ?? '';
  if (p === '')
    return { key, name, status: 'revoked', record, expected, detail: 'the record has an empty p= (key revoked)' };
  const mine = publicKeyTags(key.publicKey);
  const k = published.get('k') ?? 'rsa';
  if (k !== mine.k)
    return {
      key,
      name,
      status: 'mismatch',
      record,
      expected,
      detail: `the record is for a ${k} key, the private key is ${mine.k}`,
    };
  if (!samePublicKey(mine.k, p, mine.p))
    return { key, name, status: 'mismatch', record, expected, detail: 'the record does not match the private key' };
  return { key, name, status: 'pass', record, expected };
}

/** RSA records may carry SubjectPublicKeyInfo (the norm) or a bare PKCS#1 key: compare the keys, not the text. */
function samePublicKey(kind: 'rsa' | 'ed25519', published: string, mine: string): boolean {
  if (kind === 'ed25519') return published === mine;
  const der = Buffer.from(published, 'base64');
  for (const type of ['spki', 'pkcs1'] as const) {
    try {
      const spki = createPublicKey({ key: der, format: 'der', type }).export({ type: 'spki', format: 'der' });
      return spki.toString('base64') === mine;
    } catch {
      // not this encoding; try the next
    }
  }
  return false;
}

export type SpfStatus = 'pass' | 'fail' | 'softfail' | 'neutral' | 'none' | 'cannot tell' | 'error' | 'n/a';

export interface SmartHostAddress {
  smarthost: string;
  host: string;
}

export interface SpfCheck {
  domain: string | null;
  status: SpfStatus;
  record?: string;
  /** One line per smart host address: what SPF said, or why it cannot be told. */
  findings: string[];
}

/** Addresses a smart host name resolves to; [] with a reason when it cannot be resolved. */
async function addressesOf(host: string, resolver: DNSResolver): Promise<{ addresses: string[]; problem?: string }> {
  if (ipaddr.isValid(host)) return { addresses: [host] };
  const found: string[] = [];
  const problems: string[] = [];
  for (const type of ['A', 'AAAA'] as const) {
    try {
      found.push(...((await resolver(host, type)) as string[]));
    } catch (err) {
      if (!isAbsent(err)) problems.push(`${type} ${dnsCode(err)}`);
    }
  }
  if (found.length > 0) return { addresses: found };
  return {
    addresses: [],
    problem: problems.length > 0 ? `cannot resolve ${host} (${problems.join(', ')})` : `cannot resolve ${host}`,
  };
}

/** Addresses that never face the internet: a smart host there relays onwards from an address the doctor cannot see. */
const LAN_RANGES = new Set(['private', 'loopback', 'linkLocal', 'uniqueLocal', 'carrierGradeNat', 'unspecified']);

const RANK: SpfStatus[] = ['error', 'fail', 'softfail', 'neutral', 'none', 'cannot tell', 'pass'];

/**
 * Does the envelope domain's SPF authorise the addresses of the route's smart hosts? Only public
 * addresses can be judged: a smart host on a private or loopback address relays onwards from an
 * address the doctor cannot see, and neither can it see a provider's outbound pool behind its
 * submission endpoint, so SPF's verdict on the endpoint is an indication, said as such.
 */
export async function checkSpf(
  domain: string | null,
  smarthosts: SmartHostAddress[],
  resolver: DNSResolver,
  hostname: string,
): Promise<SpfCheck> {
  if (domain === null)
    return {
      domain,
      status: 'n/a',
      findings: ["the envelope sender is the client's own (no envelope_from): SPF cannot be judged from the config"],
    };
  const findings: string[] = [];
  const results: SpfStatus[] = [];
  let record: string | undefined;
  for (const { smarthost, host } of smarthosts) {
    const { addresses, problem } = await addressesOf(host, resolver);
    if (problem) findings.push(`${smarthost}: ${problem}: cannot tell`);
    for (const address of addresses) {
      const range = ipaddr.process(address).range();
      if (LAN_RANGES.has(range)) {
        findings.push(
          `${smarthost} [${address}]: a ${range} address, the public sending address is not known here: cannot tell`,
        );
        continue;
      }
      const result = await spf({
        sender: `postmaster@${domain}`,
        ip: address,
        helo: hostname,
        mta: hostname,
        resolver,
      });
      record ??= result.rr;
      const status = spfStatus(result.status.result);
      results.push(status);
      findings.push(`${smarthost} [${address}]: ${status}${result.rr ? ` by "${result.rr}"` : ''}`);
    }
  }
  const status =
    results.length === 0
      ? 'cannot tell'
      : results.reduce((worst, next) => (RANK.indexOf(next) < RANK.indexOf(worst) ? next : worst), 'pass' as SpfStatus);
  return { domain, status, record, findings };
}

function spfStatus(result: string): SpfStatus {
  switch (result) {
    case 'pass':
    case 'fail':
    case 'softfail':
    case 'neutral':
    case 'none':
      return result;
    case 'permerror':
      return 'fail';
    default:
      return 'error';
  }
}

export interface DmarcCheck {
  /** pass / fail by alignment; none: no record; temperror: DNS trouble. */
  result: 'pass' | 'fail' | 'none' | 'temperror';
  policy?: string;
  record?: string;
  /** Which identifier aligned: the DKIM d= or the SPF (envelope) domain. */
  alignedBy: ('dkim' | 'spf')[];
}

/** DMARC as a receiver would evaluate it, given which DKIM domains verify and which envelope domain passes SPF. */
export async function checkDmarc(
  fromDomain: string,
  dkimDomains: string[],
  spfDomains: string[],
  resolver: DNSResolver,
): Promise<DmarcCheck> {
  const result: DMARCResult | false = await dmarc({
    headerFrom: `postmaster@${fromDomain}`,
    dkimDomains: dkimDomains.map((domain) => ({ domain })),
    spfDomains,
    resolver,
  });
  if (result === false) return { result: 'temperror', alignedBy: [] };
  const status = result.status.result;
  const alignedBy: ('dkim' | 'spf')[] = [];
  if (result.alignment?.dkim?.result) alignedBy.push('dkim');
  if (result.alignment?.spf?.result) alignedBy.push('spf');
  const outcome = status === 'pass' || status === 'fail' || status === 'none' ? status : 'temperror';
  return { result: outcome, policy: result.p, record: result.rr, alignedBy };
}
