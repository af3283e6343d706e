import { createHash, sign, type KeyObject } from 'node:crypto';
import { dkimBody, type BodyHasher } from 'mailauth/lib/dkim/body';
import type { HeaderBlock, HeaderField } from '../message/header-block';
import type { BodyInspector, MessageContext, MessageFilter, Outgoing, Refusal } from '../ingress/filters';
import { signedField, signedFields, unsignedSignature } from './dkim-header';
import type { DkimKey, RouteKeys } from './dkim-keys';

const CRLF = Buffer.from('\r\n');

/**
 * DKIM signing at ingest, once per message. The last filter: it sees the header block with every
 * rewrite applied and hashes the body as it streams to disk (DataGuard has made it CRLF, as stored
 * and sent), so there is no second read of the file and no body in memory. At the end of DATA it
 * signs the final header block's fields, exactly as the spool file holds them (our Received line
 * above them is a trace field, which is not signed), and the signature lines go into the message's
 * metadata, to be sent above the stored file; the body on disk is never rewritten. mailauth hashes
 * the body; dkim-header.ts canonicalises the header and formats the field; node:crypto signs with
 * the keys parsed at start (see mailauth-internals.d.ts for why not mailauth's `dkimSign`).
 */
export class DkimSigningFilter implements MessageFilter {
  constructor(
    private readonly keys: RouteKeys,
    private readonly now: () => Date = () => new Date(),
  ) {}

  body(context: MessageContext, final: HeaderBlock): BodyInspector | undefined {
    const keys = this.keys.get(context.outgoing.route);
    if (!keys || keys.length === 0) return undefined;
    // The inspector is first handed the header block as the client sent it (plus the blank line): skip it.
    const originalHead = context.original.byteLength() + CRLF.length;
    // A copy of the list: the fields as they are now are what the spool file holds.
    return new DkimBodyInspector(keys, [...final.fields], originalHead, context.outgoing, this.now);
  }
}

class DkimBodyInspector implements BodyInspector {
  private readonly hasher = new LineAlignedBodyHash();

  constructor(
    private readonly keys: readonly DkimKey[],
    private readonly fields: readonly HeaderField[],
    private skip: number,
    private readonly outgoing: Outgoing,
    private readonly now: () => Date,
  ) {}

  write(chunk: Buffer): void {
    if (this.skip >= chunk.length) {
      this.skip -= chunk.length;
      return;
    }
    this.hasher.update(this.skip > 0 ? chunk.subarray(this.skip) : chunk);
    this.skip = 0;
  }

  async end(): Promise<Refusal | undefined> {
    try {
      this.outgoing.prependHeaders = await signatures(this.keys, this.fields, this.hasher.digest(), this.now());
      return undefined;
    } catch (err) {
      // Keys are checked at start, so this is unexpected; unsigned mail could fail DMARC, so the client retries.
      return { code: 451, message: `4.3.0 Message could not be DKIM-signed, try again later (${(err as Error).message})`, reason: 'signing' };
    }
  }
}

/**
 * mailauth's relaxed body hash, fed whole lines. Given a chunk that ends inside a line, mailauth
 * keeps that end as a view of the chunk and, on the next update, Buffer.concat()s it with the whole
 * next chunk: every 64 KiB socket read was copied once more and each chunk stayed alive until the
 * next one arrived, ~50 MiB of extra Buffers for a 50 MiB message, left for the garbage collector
 * on the event loop. Here only the partial line (a copy, usually under 1000 bytes) is carried over
 * and joined with the first line of the next chunk. Relaxed canonicalisation works line by line
 * (mailauth's own carry-over is there to see whole lines), so the hash does not depend on where
 * the chunks are cut.
 */
export class LineAlignedBodyHash {
  /** Both rsa-sha256 and ed25519-sha256 hash the body with SHA-256, so one hash serves every signature. */
  private readonly hasher: BodyHasher = dkimBody('relaxed', 'sha256', false);
  /** What followed the last LF so far (a copy), hashed with the rest of its line. */
  private partial: Buffer | null = null;

  update(chunk: Buffer): void {
    const last = chunk.lastIndexOf(LF);
    if (last === -1) {
      // No line end in this chunk (a tiny chunk or a long line); past MAX_PARTIAL mailauth carries it.
      const joined = this.partial ? Buffer.concat([this.partial, chunk]) : Buffer.from(chunk);
      this.partial = null;
      if (joined.length <= MAX_PARTIAL) this.partial = joined;
      else this.hasher.update(joined);
      return;
    }
    let start = 0;
    if (this.partial) {
      start = chunk.indexOf(LF) + 1;
      this.hasher.update(Buffer.concat([this.partial, chunk.subarray(0, start)]));
    }
    if (start <= last) this.hasher.update(chunk.subarray(start, last + 1));
    this.partial = last + 1 < chunk.length ? Buffer.from(chunk.subarray(last + 1)) : null;
  }

  digest(): string {
    if (this.partial) this.hasher.update(this.partial);
    this.partial = null;
    return this.hasher.digest('base64');
  }
}

const LF = 0x0a;
/** Longest partial line carried over here; RFC 5322 lines are at most 1000 bytes. */
const MAX_PARTIAL = 64 * 1024;

/** `DKIM-Signature:` lines (CRLF-terminated) over a header's fields and a body hash, one per key, as RFC 6376 and RFC 8463 sign. */
export async function signatures(keys: readonly DkimKey[], fields: readonly HeaderField[], bodyHash: string, signTime: Date): Promise<string> {
  const signed = signedFields(fields);
  const lines = await Promise.all(keys.map(async (key) => {
    const unsigned = unsignedSignature({ algorithm: key.algorithm, domain: key.domain, selector: key.selector, signTime, bodyHash, signed });
    // Header fields are latin1 strings (one char per byte), so this is the bytes as they are sent.
    const data = Buffer.from(unsigned.data, 'latin1');
    const signature = key.algorithm === 'rsa-sha256'
      ? await signInPool('sha256', data, key.privateKey)
      // Ed25519 (RFC 8463) signs the SHA-256 hash of the canonicalised header with PureEdDSA.
      : await signInPool(null, createHash('sha256').update(data).digest(), key.privateKey);
    return signedField(unsigned, signature);
  }));
  return lines.join('');
}

/**
 * An RSA-2048 signature costs about a millisecond of CPU; with a callback, node:crypto computes it on
 * libuv's thread pool, so the event loop goes on answering clients meanwhile.
 */
function signInPool(algorithm: string | null, data: Buffer, key: KeyObject): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    sign(algorithm, data, key, (err, signature) => (err ? reject(err) : resolve(signature)));
  });
}
