import { spawnSync } from 'node:child_process';
import { dkimVerify, type DNSResolver } from 'mailauth';

export { makeDkimKey, type TestKey } from './dkim-key';

function notFound(name: string): Error {
  return Object.assign(new Error(`queryTxt ENOTFOUND ${name}`), { code: 'ENOTFOUND' });
}

/** mailauth's resolver hook over a fixed zone: `{ 'name': { TXT: [...], A: [...] } }`; anything else is NXDOMAIN. */
export function zoneResolver(
  zone: Record<string, Partial<Record<'TXT' | 'A' | 'AAAA' | 'MX', string[]>>>,
): DNSResolver {
  const lower = new Map(Object.entries(zone).map(([name, records]) => [name.toLowerCase(), records]));
  return async (name: string, rrtype: string) => {
    const records = lower.get(name.toLowerCase().replace(/\.$/, ''));
    if (!records) throw notFound(name);
    const values = records[rrtype as 'TXT' | 'A' | 'AAAA' | 'MX'];
    if (!values) throw Object.assign(new Error(`query ENODATA ${name}`), { code: 'ENODATA' });
    return rrtype === 'TXT' ? values.map((value) => [value]) : values;
  };
}

/**
 * Every DKIM signature of a message as `domain/selector algorithm result`, verified by mailauth against the
 * resolver.
 */
export async function verifyDkim(message: Buffer, resolver: DNSResolver): Promise<string[]> {
  const { results } = await dkimVerify(message, { resolver });
  // mailauth 4.13's shipped types call it `algorithm`; the result object has `algo`.
  return results.map(
    (result) =>
      `${result.signingDomain}/${result.selector ?? ''} ` +
      `${(result as { algo?: string }).algo ?? ''} ${result.status.result}`,
  );
}

let dkimpyPython: string | null | undefined;

/**
 * dkimpy (Debian's python3-dkim), a second verifier written apart from mailauth: mailauth's own
 * verifier shares its signer's reading of byte 0xA0 as whitespace, so it cannot catch that mistake.
 * The Python that has it, or null when /usr/bin/python3 cannot import it.
 */
export function dkimpy(): string | null {
  // Asked once, by the files that verify with it: not every importer of this helper pays for a Python start.
  dkimpyPython ??=
    spawnSync('/usr/bin/python3', ['-c', 'import dkim, nacl'], { encoding: 'utf8' }).status === 0
      ? '/usr/bin/python3'
      : null;
  return dkimpyPython;
}

/** Reads `{ records, messages: [base64, …] }` on stdin; prints one list of verdicts per message. */
const DKIMPY_VERIFY = `
import base64, dkim, json, sys
job = json.load(sys.stdin)
records = job['records']
def dns(name, timeout=5):
    return records.get(name.decode().rstrip('.').lower(), '').encode()
def verdicts(message):
    d = dkim.DKIM(message)
    head = message.split(b'\\r\\n\\r\\n', 1)[0]
    count = len([l for l in head.split(b'\\r\\n') if l.lower().startswith(b'dkim-signature:')])
    return [d.verify(idx=i, dnsfunc=dns) for i in range(count)]
print(json.dumps([verdicts(base64.b64decode(m)) for m in job['messages']]))
`;

/**
 * dkimpy's verdicts on each DKIM-Signature of each message, top to bottom, from one Python process
 * (starting one per message cost more than the verifying); `records` maps
 * `<selector>._domainkey.<domain>` to its TXT record.
 */
export function verifyAllWithDkimpy(messages: Buffer[], records: Record<string, string>): boolean[][] {
  const python = dkimpy();
  if (python === null) throw new Error('dkimpy is not installed (apt-get install python3-dkim)');
  const input = JSON.stringify({ records, messages: messages.map((m) => m.toString('base64')) });
  const run = spawnSync(python, ['-c', DKIMPY_VERIFY], { input, encoding: 'utf8' });
  if (run.status !== 0) throw new Error(`dkimpy failed: ${run.stderr}`);
  return JSON.parse(run.stdout) as boolean[][];
}

/** dkimpy's verdict on each DKIM-Signature of a message, top to bottom. */
export function verifyWithDkimpy(message: Buffer, records: Record<string, string>): boolean[] {
  return verifyAllWithDkimpy([message], records)[0];
}
