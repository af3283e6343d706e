import * as ipaddr from 'ipaddr.js';

/**
 * The keys an address is counted under. `host`: the address itself (IPv4, IPv4-mapped IPv6 as IPv4,
 * IPv6 as one host). `prefix`: for IPv6, its `ipv6Prefix` network, since one host on the internet is
 * routinely handed a whole /64 and could rotate through it; on a LAN the /64 is every host of the
 * office, so the prefix gets a budget of several hosts on top of each host's own (see AddressGuard).
 * No prefix for IPv4, for a prefix of 128, or for what does not parse.
 */
export interface AddressKeys {
  host: string;
  prefix?: string;
}

export function addressKeys(remoteAddress: string, ipv6Prefix: number): AddressKeys {
  let address: ipaddr.IPv4 | ipaddr.IPv6;
  try {
    address = ipaddr.process(remoteAddress.replace(/%.*$/, ''));
  } catch {
    return { host: remoteAddress };
  }
  if (address.kind() === 'ipv4') return { host: address.toString() };
  const host = address.toString();
  if (ipv6Prefix >= 128) return { host };
  const bytes = address.toByteArray();
  for (let bit = ipv6Prefix; bit < 128; bit++) bytes[bit >> 3] &= ~(0x80 >> (bit & 7));
  return { host, prefix: `${ipaddr.fromByteArray(bytes).toString()}/${ipv6Prefix}` };
}

/** The key the whole of an address's network is counted under: its IPv6 prefix, else the address itself. */
export function addressKey(remoteAddress: string, ipv6Prefix: number): string {
  const keys = addressKeys(remoteAddress, ipv6Prefix);
  return keys.prefix ?? keys.host;
}
