import type { RelayConfig } from '../config/schema';
import { domainOf } from '../message/address';

/**
 * Which route a message takes, decided once at ingest (the route's rewrites and DKIM key are applied
 * then) and stored in its metadata. Pure: table tested in test/router.test.ts.
 *
 * 1. A route whose `sender_domains` holds the envelope sender's domain: the domain decides which
 *    DKIM key and envelope can make the message pass DMARC, so it wins over the policy. Whether the
 *    client may use that sender at all is the policy's `allowed_senders`, checked before this.
 * 2. The route of the client's policy.
 * 3. `default`.
 * The null sender has no domain and goes by 2 and 3.
 */
export function chooseRoute(
  config: Pick<RelayConfig, 'routes' | 'policies'>,
  policy: string | undefined,
  envelopeFrom: string,
): string {
  const domain = domainOf(envelopeFrom);
  if (domain !== '') {
    for (const [name, route] of Object.entries(config.routes)) {
      if (route.sender_domains.includes(domain)) return name;
    }
  }
  return (policy !== undefined ? config.policies[policy]?.route : undefined) ?? 'default';
}
