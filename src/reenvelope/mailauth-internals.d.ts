/**
 * Types for the one module of mailauth below its public API that smarthop uses, and only in
 * mailauth-adapter.ts (see there for why, and for the pinned version these describe).
 */

declare module 'mailauth/lib/dkim/body' {
  export interface BodyHasher {
    update(chunk: Buffer): void;
    digest(encoding: 'base64'): string;
  }
  export function dkimBody(canonicalization: string, hashAlgorithm: string, maxBodyLength: number | false): BodyHasher;
}
