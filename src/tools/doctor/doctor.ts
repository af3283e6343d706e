import type { DNSResolver } from 'mailauth';
import type { RelayConfig } from '../../config/schema';
import type { RouteKeys } from '../../forward/reenvelope/dkim-keys';
import { checkDkimKey, checkDmarc, checkSpf, type DkimCheck, type DmarcCheck, type SpfCheck } from './checks';
import { senderIdentities, type SenderIdentity } from './identities';

export type Verdict = 'pass' | 'warn' | 'fail' | 'skip';

export interface DoctorRow {
  identity: SenderIdentity;
  dkim: DkimCheck[];
  spf: SpfCheck;
  /** null when the From domain is not known from the config. */
  dmarc: DmarcCheck | null;
  verdict: Verdict;
  /** What is wrong, each with the record involved and what to publish instead. */
  problems: string[];
}

export interface DoctorDeps {
  config: Pick<RelayConfig, 'routes' | 'smarthosts' | 'hostname'>;
  keys: RouteKeys;
  resolver: DNSResolver;
}

/**
 * `smarthop doctor`: would mail from each route and sender domain pass DMARC at the receiver?
 * DKIM (key published and matching), SPF (envelope domain authorises the smart hosts, or cannot be
 * told), DMARC (record exists; From aligns with a verifying DKIM d= or an SPF-passing envelope domain).
 */
export async function runDoctor(deps: DoctorDeps): Promise<DoctorRow[]> {
  const dkimCache = new Map<string, Promise<DkimCheck>>();
  const spfCache = new Map<string, Promise<SpfCheck>>();
  const rows: DoctorRow[] = [];
  for (const identity of senderIdentities(deps.config)) {
    const keys = deps.keys.get(identity.route) ?? [];
    const dkim = await Promise.all(
      keys.map((key) => {
        const id = `${key.selector}._domainkey.${key.domain}/${key.algorithm}`;
        if (!dkimCache.has(id)) dkimCache.set(id, checkDkimKey(key, deps.resolver));
        return dkimCache.get(id) as Promise<DkimCheck>;
      }),
    );
    // A Graph host's address says nothing of SPF: Exchange Online sends from its own (spf.protection.outlook.com).
    const hosts = deps.config.routes[identity.route].smarthosts
      .map((name) => deps.config.smarthosts.find((host) => host.name === name))
      .filter((host) => host !== undefined && host.type === 'smtp')
      .map((host) => ({ smarthost: host.name, host: host.host }));
    const spfId = `${identity.envelopeDomain}|${hosts.map((h) => h.host).join(',')}`;
    if (!spfCache.has(spfId))
      spfCache.set(spfId, checkSpf(identity.envelopeDomain, hosts, deps.resolver, deps.config.hostname));
    const spf = await (spfCache.get(spfId) as Promise<SpfCheck>);
    rows.push(await judge(identity, dkim, spf, deps.resolver));
  }
  return rows;
}

async function judge(
  identity: SenderIdentity,
  dkim: DkimCheck[],
  spf: SpfCheck,
  resolver: DNSResolver,
): Promise<DoctorRow> {
  const problems = [...dkim.filter((check) => check.status !== 'pass').map(describeDkim), ...describeSpf(spf)];
  const componentTrouble = problems.length > 0;
  if (identity.fromDomain === null) {
    problems.unshift(
      `From: route ${identity.route} keeps the client's From and names no domain ` +
        '(set sender_domains or rewrite_from to have it checked)',
    );
    return { identity, dkim, spf, dmarc: null, verdict: componentTrouble ? 'warn' : 'skip', problems };
  }
  const from = identity.fromDomain;
  const signing = dkim.filter((check) => check.status === 'pass').map((check) => check.key.domain);
  const envelope = identity.envelopeDomain === null ? [] : [identity.envelopeDomain];
  const dmarc = await checkDmarc(from, signing, spf.status === 'pass' ? envelope : [], resolver);

  let verdict: Verdict;
  if (dmarc.result === 'pass') {
    verdict = componentTrouble ? 'warn' : 'pass';
  } else if (
    dmarc.result === 'fail' &&
    spf.status === 'cannot tell' &&
    (await checkDmarc(from, signing, envelope, resolver)).result === 'pass'
  ) {
    // Only SPF could align it, and whether it passes depends on addresses the doctor cannot see.
    verdict = 'warn';
    problems.push(
      `DMARC _dmarc.${from} "${dmarc.record ?? ''}": From ${from} aligns only through SPF of ${envelope[0]}, ` +
        `which cannot be told from here; a DKIM key for ${from} would make it certain`,
    );
  } else {
    verdict = 'fail';
    problems.push(describeDmarc(from, dmarc, signing, identity.envelopeDomain));
  }
  return { identity, dkim, spf, dmarc, verdict, problems };
}

function describeDkim(check: DkimCheck): string {
  const lines = [`DKIM ${check.name}: ${check.detail ?? check.status}`];
  if (check.record !== undefined) lines.push(`  found:   "${check.record}"`);
  lines.push(`  publish: ${check.name} TXT "${check.expected}"`);
  return lines.join('\n');
}

function describeSpf(spf: SpfCheck): string[] {
  if (spf.status === 'pass' || spf.status === 'cannot tell' || spf.status === 'n/a') return [];
  const where = spf.domain === null ? 'SPF' : `SPF ${spf.domain}${spf.record ? ` "${spf.record}"` : ''}`;
  const reason = spf.status === 'none' ? 'no SPF record' : `${spf.status} for the route's smart hosts`;
  return [[`${where}: ${reason}`, ...spf.findings.map((finding) => `  ${finding}`)].join('\n')];
}

function describeDmarc(from: string, dmarc: DmarcCheck, signing: string[], envelope: string | null): string {
  if (dmarc.result === 'none')
    return (
      `DMARC _dmarc.${from}: no record (nor at the organisational domain); ` +
      `receivers such as Gmail and Yahoo require one, e.g. "v=DMARC1; p=quarantine; rua=mailto:dmarc@${from}"`
    );
  if (dmarc.result === 'temperror') return `DMARC _dmarc.${from}: DNS error, cannot evaluate`;
  const dkim =
    signing.length > 0
      ? `a verifying DKIM d= (${[...new Set(signing)].join(', ')})`
      : 'a verifying DKIM d= (none verifies)';
  const spf =
    envelope === null ? "the envelope domain (the client's own)" : `an SPF-passing envelope domain (${envelope})`;
  return `DMARC _dmarc.${from} "${dmarc.record ?? ''}": From ${from} aligns with neither ${dkim} nor ${spf}`;
}
