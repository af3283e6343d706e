/**
 * Types for the part of mailauth 4.13 (pinned ~4.13.3) below its public API that the DKIM signer
 * uses: the relaxed body hasher. Its public `dkimSign` re-parses the PEM key for every message
 * (about 1.5–3 ms, more than the signature itself), and its header canonicalisation reads byte 0xA0
 * as whitespace (see dkim-header.ts), so the signer hashes the body with this and does the rest
 * itself. mailauth's `dkimVerify` and dkimpy check the result in the tests, so a change in this
 * internal shows up there.
 */

declare module 'mailauth/lib/dkim/body' {
  export interface BodyHasher {
    update(chunk: Buffer): void;
    digest(encoding: 'base64'): string;
  }
  export function dkimBody(canonicalization: string, hashAlgorithm: string, maxBodyLength: number | false): BodyHasher;
}
