import type { LimitsConfig } from '../config/schema';
import { addressKeys } from '../limits/address-key';
import { OpenCounts } from '../limits/open-counts';

/**
 * Connections that smtp-server holds before their session begins: on an implicit-TLS listener
 * until the TLS handshake is done, on a `proxy_protocol` listener until the PROXY header is read.
 * smtp-server keeps them in a pool of its own capped at `max_clients` and destroys every new socket
 * past it, trusted or not, and the relay's stranger guards only run once the session begins. So
 * strangers (addresses outside every client's networks, and not a listener's trusted proxy) are
 * counted here already: each may hold `connections_per_stranger` of them (never more than
 * `connections_per_address`), the strangers of one IPv6 prefix `ipv6_hosts_per_prefix` times that,
 * and all strangers together `max_unidentified_clients` of the listener, so the rest of the pool is
 * always left to trusted clients. A socket past a bound is dropped at once (nothing can be written
 * to it before the handshake).
 */

export interface HandshakeGuardDeps {
  limits: Pick<
    LimitsConfig,
    'connections_per_address' | 'connections_per_stranger' | 'ipv6_prefix' | 'ipv6_hosts_per_prefix'
  >;
  /** Strangers' pending connections on this listener at once. */
  maxStrangers: number;
  /** Whether the peer is exempt: in some client's networks, or a trusted proxy of the listener. */
  trusted(peer: string): boolean;
}

export class HandshakeGuard {
  private readonly open = new OpenCounts();
  private strangers = 0;

  constructor(private readonly deps: HandshakeGuardDeps) {}

  /** A new connection from `peer`: the function that gives its place back, or null when it must be dropped. */
  admit(peer: string): (() => void) | null {
    if (this.deps.trusted(peer)) return () => undefined;
    if (this.strangers >= this.deps.maxStrangers) return null;
    const counted = this.counted(peer);
    if (counted.some(({ key, max }) => this.open.get(key) >= max)) return null;
    this.strangers++;
    for (const { key } of counted) this.open.add(key);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.strangers--;
      for (const { key } of counted) this.open.remove(key);
    };
  }

  /** The address, and for IPv6 its prefix, each with its bound. */
  private counted(peer: string): { key: string; max: number }[] {
    const { connections_per_address: all, connections_per_stranger: stranger } = this.deps.limits;
    const max = all === undefined ? stranger : Math.min(all, stranger);
    const { host, prefix } = addressKeys(peer, this.deps.limits.ipv6_prefix);
    const counted = [{ key: host, max }];
    if (prefix !== undefined) counted.push({ key: prefix, max: max * this.deps.limits.ipv6_hosts_per_prefix });
    return counted;
  }
}
