/**
 * Types for the part of mailauth below its public API that the tests use as the oracle for
 * dkim-signer.ts's RelaxedBodyHash: mailauth's relaxed body hasher, as mailauth 4.13.3 has it
 * (package.json pins that version exactly). The relay does not load it (it rescans the unfinished
 * line with every chunk: quadratic in a line without a break); src/ uses mailauth's public API only.
 */

declare module 'mailauth/lib/dkim/body' {
  export interface BodyHasher {
    update(chunk: Buffer): void;
    digest(encoding: 'base64'): string;
  }
  export function dkimBody(canonicalization: string, hashAlgorithm: string, maxBodyLength: number | false): BodyHasher;
}
