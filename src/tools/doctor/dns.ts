import { Resolver } from 'node:dns/promises';
import type { DNSResolver } from 'mailauth';

/**
 * mailauth's resolver hook over node:dns: the system's resolvers, or one server (`--dns 127.0.0.1:5353`,
 * `--dns [::1]:53`, `--dns 192.0.2.53`) so the doctor can ask an authoritative or a test server.
 * Errors keep node's codes (ENOTFOUND, ENODATA), which is what mailauth's SPF and DMARC code expects.
 */
export function dnsResolver(server?: string): DNSResolver {
  const resolver = new Resolver({ timeout: 3000, tries: 2 });
  if (server !== undefined) resolver.setServers([server]);
  // The same call as mailauth's default (dns.promises.resolve), so every record type keeps the shape it expects.
  return (name: string, rrtype: string) => resolver.resolve(name, rrtype) as Promise<string[] | string[][]>;
}
