import { dkimBody } from 'mailauth/lib/dkim/body';
import type { PinnedLibrary } from '../pinned-library';

/**
 * mailauth as the DKIM signer uses it, and the only module that reaches below its public API.
 * package.json pins mailauth to exactly this version, and the relay refuses to start with another
 * (checkPinnedVersion), because a private module can change in any release.
 *
 * The private use: `mailauth/lib/dkim/body`, its relaxed body hasher (RFC 6376 §3.4.4), fed the
 * body as it streams to the spool. The public `dkimSign` takes the whole message and re-parses the
 * PEM key for every message (about 1.5-3 ms, more than the signature itself), and its header
 * canonicalisation reads byte 0xA0 as whitespace (see dkim-header.ts), so the signer hashes the body
 * with this and does the rest itself. It goes when mailauth exports a body-hash stream (or
 * `dkimSign` accepts a parsed key and a precomputed body hash). mailauth's own `dkimVerify` and
 * dkimpy check the signer's output in the tests, so a change in this internal shows up there.
 */
export const MAILAUTH: PinnedLibrary = {
  name: 'mailauth',
  supported: '4.13.3',
  adapter: 'src/reenvelope/mailauth-adapter.ts uses its DKIM body hasher below the public API',
};

/** A DKIM body hash being computed: the body's bytes in order, then the hash. */
export interface BodyHasher {
  update(chunk: Buffer): void;
  digest(encoding: 'base64'): string;
}

/**
 * The relaxed/SHA-256 body hash, without a length limit (`l=` is never signed). Both rsa-sha256 and
 * ed25519-sha256 hash the body with SHA-256, so one hasher serves every signature of a message.
 */
export function relaxedBodyHasher(): BodyHasher {
  return dkimBody('relaxed', 'sha256', false);
}
