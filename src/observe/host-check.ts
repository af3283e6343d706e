import { isIP } from 'node:net';

/**
 * Which `Host` headers the HTTP endpoints answer (DNS rebinding). A web page can point a name it
 * controls at 127.0.0.1 and then read a loopback admin API as its own origin; the one thing it
 * cannot change is the Host header, which carries its own name. So a request is answered only when
 * its Host is:
 * - an IP literal (`127.0.0.1:9465`, `[::1]:9465`, `10.0.0.5`): a browser sends one only for a page
 *   loaded from that very address, which is then the relay's own origin, not somebody else's;
 * - `localhost` (a browser resolves it to loopback itself, never through DNS);
 * - the configured `http.address` host when it is a name, and the names in `http.allowed_hosts`.
 * The port is not compared: a rebound name reaches only the port it was rebound on.
 * A request without Host (HTTP/1.0 tools) is answered: a browser always sends one.
 */
export class HostCheck {
  private readonly names: ReadonlySet<string>;

  constructor(configuredHost: string, allowedHosts: readonly string[] = []) {
    this.names = new Set(
      ['localhost', ...allowedHosts, configuredHost].map((name) => name.toLowerCase().replace(/\.$/, '')),
    );
  }

  allows(header: string | undefined): boolean {
    if (header === undefined) return true;
    const host = hostOf(header.trim().toLowerCase());
    if (host === null) return false;
    return isIP(host) !== 0 || this.names.has(host);
  }
}

/** The host part of a Host header (`name`, `name:port`, `[v6]`, `[v6]:port`), or null when it is malformed. */
function hostOf(header: string): string | null {
  let host: string;
  let rest: string;
  if (header.startsWith('[')) {
    const end = header.indexOf(']');
    if (end === -1) return null;
    host = header.slice(1, end);
    if (isIP(host) !== 6) return null;
    rest = header.slice(end + 1);
  } else {
    const colon = header.indexOf(':');
    host = colon === -1 ? header : header.slice(0, colon);
    rest = colon === -1 ? '' : header.slice(colon);
  }
  if (rest !== '' && !/^:\d{1,5}$/.test(rest)) return null;
  host = host.replace(/\.$/, '');
  return host === '' ? null : host;
}
