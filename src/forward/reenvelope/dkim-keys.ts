import { createPrivateKey, createPublicKey, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { DkimSignatureConfig, RouteConfig } from '../../config/schema';
import { isInlinePem } from '../../config/pem';

/**
 * DKIM private keys, read and checked once when the relay (or `check-config`, or `doctor`) starts:
 * a missing or wrong key must stop the start, not turn up as unsigned mail hours later.
 */

export type DkimAlgorithm = 'rsa-sha256' | 'ed25519-sha256';

export interface DkimKey {
  domain: string;
  selector: string;
  algorithm: DkimAlgorithm;
  /** Parsed once here: parsing a PEM costs more than a signature. */
  privateKey: KeyObject;
  publicKey: KeyObject;
}

/** Receivers ignore shorter RSA keys (RFC 8301); mailauth's verifier refuses them by default. */
const MIN_RSA_BITS = 1024;

export function loadDkimKey(config: DkimSignatureConfig): DkimKey {
  const pem = isInlinePem(config.private_key) ? config.private_key : readKeyFile(config.private_key);
  let privateKey: KeyObject;
  try {
    privateKey = createPrivateKey(pem);
  } catch (err) {
    throw new Error(`not a PEM private key (${(err as Error).message})`, { cause: err });
  }
  const type = privateKey.asymmetricKeyType;
  if (type !== 'rsa' && type !== 'ed25519')
    throw new Error(`a ${type ?? 'unknown'} key cannot sign DKIM; use RSA (rsa-sha256) or Ed25519 (ed25519-sha256)`);
  const algorithm: DkimAlgorithm = config.algorithm ?? (type === 'rsa' ? 'rsa-sha256' : 'ed25519-sha256');
  if (!algorithm.startsWith(`${type}-`))
    throw new Error(`algorithm ${algorithm} needs a ${algorithm.split('-')[0]} key, the file holds a ${type} key`);
  const bits = privateKey.asymmetricKeyDetails?.modulusLength;
  if (type === 'rsa' && bits !== undefined && bits < MIN_RSA_BITS)
    throw new Error(
      `a ${bits}-bit RSA key is too short (receivers ignore DKIM keys under ${MIN_RSA_BITS} bits; use 2048)`,
    );
  return {
    domain: config.domain,
    selector: config.selector,
    algorithm,
    privateKey,
    publicKey: createPublicKey(privateKey),
  };
}

function readKeyFile(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    throw new Error(`cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`, {
      cause: err,
    });
  }
}

export type RouteKeys = ReadonlyMap<string, readonly DkimKey[]>;

/** Every route's keys, or every problem with its config path (`routes.default.dkim[0].private_key: …`). */
export function loadRouteKeys(routes: Readonly<Record<string, RouteConfig>>): { keys: RouteKeys; errors: string[] } {
  const keys = new Map<string, DkimKey[]>();
  const errors: string[] = [];
  for (const [name, route] of Object.entries(routes)) {
    const loaded: DkimKey[] = [];
    route.dkim.forEach((signature, i) => {
      try {
        loaded.push(loadDkimKey(signature));
      } catch (err) {
        errors.push(`routes.${name}.dkim[${i}].private_key: ${(err as Error).message}`);
      }
    });
    if (loaded.length > 0) keys.set(name, loaded);
  }
  return { keys, errors };
}

/** The `p=` and `k=` a selector record must publish for this key (RFC 6376 §3.6.1, RFC 8463). */
export function publicKeyTags(publicKey: KeyObject): { k: 'rsa' | 'ed25519'; p: string } {
  const spki = publicKey.export({ type: 'spki', format: 'der' });
  // Ed25519 records carry the bare 32-byte key, not the SubjectPublicKeyInfo around it.
  if (publicKey.asymmetricKeyType === 'ed25519')
    return { k: 'ed25519', p: spki.subarray(spki.length - 32).toString('base64') };
  return { k: 'rsa', p: spki.toString('base64') };
}

/** The TXT record to publish at `<selector>._domainkey.<domain>`. */
export function dkimRecord(publicKey: KeyObject): string {
  const { k, p } = publicKeyTags(publicKey);
  return `v=DKIM1; k=${k}; p=${p}`;
}
