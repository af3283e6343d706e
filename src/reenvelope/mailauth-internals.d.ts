/**
 * Types for the part of mailauth 4.13 (pinned ~4.13.3) below its public API that the tests use as
 * the oracle for dkim-signer.ts's RelaxedBodyHash: mailauth's relaxed body hasher. The relay does not
 * load it (it rescans the unfinished line with every chunk: quadratic in a line without a break).
 */

declare module 'mailauth/lib/dkim/body' {
  export interface BodyHasher {
    update(chunk: Buffer): void;
    digest(encoding: 'base64'): string;
  }
  export function dkimBody(canonicalization: string, hashAlgorithm: string, maxBodyLength: number | false): BodyHasher;
}
