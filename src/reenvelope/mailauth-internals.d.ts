/**
 * Types for the parts of mailauth 4.13 (pinned ~4.13.3) below its public API that the DKIM signer
 * uses: the body hasher, header parsing and canonicalisation, and the signature formatting. Its
 * public `dkimSign` re-parses the PEM key for every message (about 1.5–3 ms, more than the
 * signature itself), so the signer drives these with keys parsed once at start. mailauth's own
 * `dkimVerify` checks the result in the tests, so a change in these internals shows up there.
 */

declare module 'mailauth/lib/tools' {
  export interface ParsedHeaderLine {
    /** Lower-cased field name. */
    key: string;
    casedKey: string;
    /** The whole field, folded lines included, as bytes. */
    line: Buffer;
  }
  export interface SigningHeaderLines {
    /** The `h=` value. */
    keys: string;
    headers: ParsedHeaderLine[];
  }
  export function parseHeaders(buf: Buffer): { parsed: ParsedHeaderLine[]; original: Buffer };
  /** Without `fieldNames`: mailauth's default list (From, Sender, Reply-To, Subject, Date, Message-ID, To, Cc, MIME-Version, Content-*, …). */
  export function getSigningHeaderLines(parsed: ParsedHeaderLine[], fieldNames?: string, verify?: boolean): SigningHeaderLines;
  export function formatSignatureHeaderLine(type: 'DKIM', values: Record<string, string | number>, folded: boolean): string;
}

declare module 'mailauth/lib/dkim/header' {
  import type { SigningHeaderLines } from 'mailauth/lib/tools';
  export interface CanonicalizeOptions {
    signingDomain: string;
    selector: string;
    algorithm: string;
    canonicalization: string;
    bodyHash: string;
    signTime: Date;
  }
  export function generateCanonicalizedHeader(
    type: 'DKIM',
    signingHeaderLines: SigningHeaderLines,
    options: CanonicalizeOptions,
  ): { canonicalizedHeader: Buffer; dkimHeaderOpts: Record<string, string | number> };
}

declare module 'mailauth/lib/dkim/body' {
  export interface BodyHasher {
    update(chunk: Buffer): void;
    digest(encoding: 'base64'): string;
  }
  export function dkimBody(canonicalization: string, hashAlgorithm: string, maxBodyLength: number | false): BodyHasher;
}
