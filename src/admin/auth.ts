import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';

/**
 * The one check behind the admin API and the status page when `http.token` is set: the token as a
 * bearer token (scripts, the CLI), or as the password of HTTP Basic authentication (a browser asks
 * for it and sends it with every request, so it never has to appear in a URL). The user name is
 * not checked. Without a token every request passes here (the endpoint is then on loopback only).
 */
export function adminAuthorised(req: IncomingMessage, token: string | undefined): boolean {
  if (token === undefined) return true;
  const header = req.headers.authorization ?? '';
  const bearer = /^Bearer\s+(\S+)\s*$/i.exec(header);
  if (bearer) return sameSecret(bearer[1], token);
  const basic = /^Basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(header);
  if (!basic) return false;
  const decoded = Buffer.from(basic[1], 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  return colon !== -1 && sameSecret(decoded.slice(colon + 1), token);
}

/** Digests compared: equal length whatever was sent, and constant time. */
function sameSecret(given: string, expected: string): boolean {
  return timingSafeEqual(digest(given), digest(expected));
}

function digest(value: string): Buffer {
  return createHash('sha256').update(value).digest();
}
