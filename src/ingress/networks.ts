import * as ipaddr from 'ipaddr.js';
import type { Network } from '../config/schema';

/** The address a socket reports, parsed; an IPv4-mapped IPv6 address becomes IPv4, a zone id is dropped. */
export function parseAddress(remoteAddress: string): ipaddr.IPv4 | ipaddr.IPv6 | undefined {
  try {
    return ipaddr.process(remoteAddress.replace(/%.*$/, ''));
  } catch {
    return undefined;
  }
}

/** Whether a parsed address lies in one of the networks (CIDRs parsed once by the config schema). */
export function addressIn(address: ipaddr.IPv4 | ipaddr.IPv6, networks: readonly Network[]): boolean {
  return networks.some(([range, bits]) => range.kind() === address.kind() && address.match(range, bits));
}

export function inNetworks(remoteAddress: string, networks: readonly Network[]): boolean {
  const address = parseAddress(remoteAddress);
  return address !== undefined && addressIn(address, networks);
}
