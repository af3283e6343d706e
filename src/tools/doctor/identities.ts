import type { RelayConfig } from '../../config/schema';
import { domainOf, normalizeAddress } from '../../message/address';
import { AddressMatcher } from '../../message/address-pattern';

/**
 * What the doctor checks: for every route, each header-From domain its mail can leave with after
 * the rewrites, and the envelope domain that goes with it. Pure: table tested.
 */

export interface SenderIdentity {
  route: string;
  /** The header From domain after the rewrites; null when the route leaves From to the client and names no domain. */
  fromDomain: string | null;
  /** The MAIL FROM domain at the smart host; null when it is the client's own, which the config does not tell. */
  envelopeDomain: string | null;
  /** Why this domain: `rewrite_from.to`, `rewrite_from.unless`, `sender_domains`, or `unknown`. */
  source: 'rewrite_from.to' | 'rewrite_from.unless' | 'sender_domains' | 'unknown';
}

/**
 * `*@corp.example`, `info@corp.example` and a bare `corp.example` (a domain pattern, as in
 * allowed_senders) name a domain; `*@*.corp.example` cannot be enumerated.
 */
function literalDomain(pattern: string): string | null {
  const trimmed = pattern.trim();
  const domain = trimmed.slice(trimmed.lastIndexOf('@') + 1);
  return /^[A-Za-z0-9.-]+$/.test(domain) && domain.includes('.') ? domain.toLowerCase() : null;
}

export function senderIdentities(config: Pick<RelayConfig, 'routes'>): SenderIdentity[] {
  const identities: SenderIdentity[] = [];
  for (const [route, settings] of Object.entries(config.routes)) {
    const envelopeFrom = settings.envelope_from === undefined ? null : domainOf(settings.envelope_from);
    const seen = new Set<string>();
    const add = (fromDomain: string, source: SenderIdentity['source'], envelopeDomain: string | null) => {
      if (seen.has(fromDomain)) return;
      seen.add(fromDomain);
      identities.push({ route, fromDomain, envelopeDomain, source });
    };
    const rewrite = settings.rewrite_from;
    const allowed = AddressMatcher.of(rewrite?.unless ?? []);
    // Rewritten mail: From is `to`; the envelope is the route's, or whatever the client sent.
    if (rewrite) add(domainOf(rewrite.to), 'rewrite_from.to', envelopeFrom);
    // Mail that keeps its From: clients normally send it with an envelope in the same domain.
    for (const glob of rewrite?.unless ?? []) {
      const domain = literalDomain(glob);
      if (domain !== null) add(domain, 'rewrite_from.unless', envelopeFrom ?? domain);
    }
    // Routed here by its envelope domain; its From is that domain unless rewrite_from replaces it (the `to` row
    // covers that).
    for (const domain of settings.sender_domains) {
      if (!rewrite || allowed.matches(normalizeAddress(`postmaster@${domain}`)))
        add(domain, 'sender_domains', envelopeFrom ?? domain);
    }
    if (seen.size === 0) identities.push({ route, fromDomain: null, envelopeDomain: envelopeFrom, source: 'unknown' });
  }
  return identities;
}
