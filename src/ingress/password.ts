import { randomBytes, scrypt, timingSafeEqual, type ScryptOptions } from 'node:crypto';

/**
 * `scrypt$N$r$p$salt$hash` (base64): the only form a password is ever stored in. The parameters
 * travel with the hash so they can be raised later without breaking existing entries.
 */

const DEFAULTS = { N: 16384, r: 8, p: 1, keyLength: 32 };

function derive(password: string, salt: Buffer, keyLength: number, options: ScryptOptions): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    scrypt(password, salt, keyLength, { ...options, maxmem: 256 * options.N! * options.r! }, (err, key) =>
      err ? reject(err) : resolve(key),
    );
  });
}

export async function hashPassword(password: string): Promise<string> {
  const salt = randomBytes(16);
  const { N, r, p, keyLength } = DEFAULTS;
  const key = await derive(password, salt, keyLength, { N, r, p });
  return `scrypt$${N}$${r}$${p}$${salt.toString('base64')}$${key.toString('base64')}`;
}

interface ParsedHash {
  N: number;
  r: number;
  p: number;
  salt: Buffer;
  key: Buffer;
}

function parseHash(stored: string): ParsedHash | null {
  const parts = stored.split('$');
  if (parts.length !== 6 || parts[0] !== 'scrypt') return null;
  const [N, r, p] = parts.slice(1, 4).map(Number);
  if (![N, r, p].every((n) => Number.isInteger(n) && n > 0)) return null;
  return { N, r, p, salt: Buffer.from(parts[4], 'base64'), key: Buffer.from(parts[5], 'base64') };
}

/** A well-formed hash of a password nobody knows: unknown usernames cost the same time as known ones. */
const DECOY_HASH =
  `scrypt$${DEFAULTS.N}$${DEFAULTS.r}$${DEFAULTS.p}$` +
  `${randomBytes(16).toString('base64')}$${randomBytes(32).toString('base64')}`;

/** Constant-time check; a missing or malformed hash is still hashed against so timing tells nothing. */
export async function verifyPassword(password: string, stored: string | undefined): Promise<boolean> {
  const parsed = (stored !== undefined && parseHash(stored)) || (parseHash(DECOY_HASH) as ParsedHash);
  const key = await derive(password, parsed.salt, parsed.key.length, { N: parsed.N, r: parsed.r, p: parsed.p });
  const match = key.length === parsed.key.length && timingSafeEqual(key, parsed.key);
  return match && stored !== undefined && parseHash(stored) !== null;
}
