import * as ipaddr from 'ipaddr.js';

/**
 * The key an address is counted under: IPv4 as is (IPv4-mapped IPv6 too), IPv6 by its prefix,
 * since one host is routinely handed a whole /64 and could otherwise rotate through it forever.
 */
export function addressKey(remoteAddress: string, ipv6Prefix: number): string {
  let address: ipaddr.IPv4 | ipaddr.IPv6;
  try {
    address = ipaddr.process(remoteAddress.replace(/%.*$/, ''));
  } catch {
    return remoteAddress;
  }
  if (address.kind() === 'ipv4') return address.toString();
  const bytes = address.toByteArray();
  for (let bit = ipv6Prefix; bit < 128; bit++) bytes[bit >> 3] &= ~(0x80 >> (bit & 7));
  return `${ipaddr.fromByteArray(bytes).toString()}/${ipv6Prefix}`;
}
