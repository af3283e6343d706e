import { createHash, sign, type KeyObject } from 'node:crypto';
import type { HeaderBlock, HeaderField } from '../../message/header-block';
import type { BodyInspector, MessageContext, MessageFilter, Outgoing, Refusal } from '../../ingress/filters';
import { signedField, signedFields, unsignedSignature } from './dkim-header';
import type { DkimKey, RouteKeys } from './dkim-keys';

const CRLF = Buffer.from('\r\n');

/**
 * DKIM signing at ingest, once per message. The last filter: it sees the header block with every
 * rewrite applied and hashes the body as it streams to disk (DataGuard has made it CRLF, as stored
 * and sent), so there is no second read of the file and no body in memory. At the end of DATA it
 * signs the final header block's fields, exactly as the spool file holds them (our Received line
 * above them is a trace field, which is not signed), and the signature lines go into the message's
 * metadata, to be sent above the stored file; the body on disk is never rewritten. RelaxedBodyHash
 * hashes the body; dkim-header.ts canonicalises the header and formats the field; node:crypto signs
 * with the keys parsed at start (mailauth's `dkimSign` re-parses the PEM key for every message).
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
  private readonly hasher = new RelaxedBodyHash();

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
      return {
        code: 451,
        message: `4.3.0 Message could not be DKIM-signed, try again later (${(err as Error).message})`,
        reason: 'signing',
      };
    }
  }
}

const CR = 0x0d;
const LF = 0x0a;
const SP = 0x20;
const HT = 0x09;
/** Line ends owed before the next content are written in pieces of at most this many. */
const LINE_ENDS_BLOCK = 4096;
const CRLF_BLOCK = Buffer.from('\r\n'.repeat(LINE_ENDS_BLOCK), 'latin1');

/**
 * The body hash with relaxed canonicalisation (RFC 6376 §3.4.4), streamed: each chunk is read once
 * and hashed as it comes, with three facts carried to the next (whitespace pending, line ends owed,
 * a CR that may start a CRLF), so the work for a chunk is proportional to it, wherever the lines
 * end. mailauth's hasher, used before and kept as the tests' oracle, holds the rest of a line that
 * has not ended and copies and scans it again with every chunk: a body without a line break (up to
 * max_message_size) took quadratic time on the event loop, 9 s for 8 MB.
 *
 *   - whitespace (SP, HTAB) runs inside a line become one SP; at the end of a line they go;
 *   - empty lines at the end of the body go, and a non-empty body ends with exactly one CRLF;
 *   - a bare LF ends a line like CRLF (DataGuard has made the stored copy CRLF throughout anyway);
 *   - a last line without a line end (SMTP DATA always has one) is read as if it had one.
 */
export class RelaxedBodyHash {
  /** Both rsa-sha256 and ed25519-sha256 hash the body with SHA-256, so one hash serves every signature. */
  private readonly hash = createHash('sha256');
  private spacePending = false;
  private lineEndsOwed = 0;
  private crPending = false;
  /** The chunk before ended inside a line: its rest is read byte by byte. */
  private midLine = false;
  private hashedContent = false;
  /** Canonical bytes the byte-by-byte reader has made, hashed when it stops (or before owed line ends). */
  private out = Buffer.alloc(0);
  private length = 0;

  update(chunk: Buffer): void {
    let pos = 0;
    if (this.midLine || this.crPending) {
      const lf = chunk.indexOf(LF);
      pos = lf === -1 ? chunk.length : lf + 1;
      this.byteByByte(chunk, 0, pos);
    }
    // Whole lines that are canonical already (the usual text) are hashed as they are, many at once;
    // the others are rewritten byte by byte. One pass of comparisons over the chunk finds which is which.
    let run = -1;
    let runEnd = -1;
    let lineStart = pos;
    let dirty = false;
    for (let i = pos; i < chunk.length; i++) {
      const byte = chunk[i];
      // Everything above SP (letters, digits, punctuation, 8-bit) is content as it is.
      if (byte > SP) continue;
      if (byte === LF) {
        if (!dirty && i - lineStart >= 2 && chunk[i - 1] === CR && chunk[i - 2] !== SP) {
          if (run === -1) run = lineStart;
          runEnd = i - 1;
        } else {
          if (run !== -1) this.hashRun(chunk.subarray(run, runEnd));
          run = -1;
          this.byteByByte(chunk, lineStart, i + 1);
        }
        lineStart = i + 1;
        dirty = false;
      } else if (
        byte === HT ||
        (byte === SP && i > lineStart && chunk[i - 1] === SP) ||
        (byte === CR && chunk[i + 1] !== LF)
      ) {
        dirty = true;
      }
    }
    if (run !== -1) this.hashRun(chunk.subarray(run, runEnd));
    if (lineStart < chunk.length) this.byteByByte(chunk, lineStart, chunk.length);
  }

  digest(): string {
    if (this.crPending) {
      // A CR that no LF followed is content of the last line.
      if (this.out.length < 2) this.out = Buffer.allocUnsafe(2);
      this.crPending = false;
      this.content(CR);
      this.flush();
    }
    if (this.hashedContent) this.hash.update(CRLF);
    return this.hash.digest('base64');
  }

  /** Lines that need nothing changed, without the last one's CRLF (owed until more content comes). */
  private hashRun(lines: Buffer): void {
    this.payLineEnds();
    this.hash.update(lines);
    this.hashedContent = true;
    this.lineEndsOwed = 1;
  }

  private byteByByte(chunk: Buffer, from: number, to: number): void {
    // Each byte read gives at most two: a pending space and itself.
    if (this.out.length < 2 * (to - from)) this.out = Buffer.allocUnsafe(Math.max(2 * (to - from), 256));
    for (let i = from; i < to; i++) {
      const byte = chunk[i];
      if (byte === LF) {
        this.crPending = false;
        this.spacePending = false;
        this.lineEndsOwed++;
        continue;
      }
      if (this.crPending) {
        // A CR that no LF follows is content.
        this.crPending = false;
        this.content(CR);
      }
      if (byte === CR) this.crPending = true;
      else if (byte === SP || byte === HT) this.spacePending = true;
      else this.content(byte);
    }
    this.flush();
    this.midLine = to > from && chunk[to - 1] !== LF;
  }

  private content(byte: number): void {
    if (this.lineEndsOwed > 0) {
      this.flush();
      this.payLineEnds();
    }
    if (this.spacePending) this.out[this.length++] = SP;
    this.spacePending = false;
    this.out[this.length++] = byte;
  }

  private payLineEnds(): void {
    for (let owed = this.lineEndsOwed; owed > 0; owed -= LINE_ENDS_BLOCK)
      this.hash.update(CRLF_BLOCK.subarray(0, 2 * Math.min(owed, LINE_ENDS_BLOCK)));
    this.lineEndsOwed = 0;
  }

  private flush(): void {
    if (this.length === 0) return;
    this.hash.update(this.out.subarray(0, this.length));
    this.hashedContent = true;
    this.length = 0;
  }
}

/**
 * `DKIM-Signature:` lines (CRLF-terminated) over a header's fields and a body hash, one per key, as RFC 6376 and
 * RFC 8463 sign.
 */
export async function signatures(
  keys: readonly DkimKey[],
  fields: readonly HeaderField[],
  bodyHash: string,
  signTime: Date,
): Promise<string> {
  const signed = signedFields(fields);
  const lines = await Promise.all(
    keys.map(async (key) => {
      const unsigned = unsignedSignature({
        algorithm: key.algorithm,
        domain: key.domain,
        selector: key.selector,
        signTime,
        bodyHash,
        signed,
      });
      // Header fields are latin1 strings (one char per byte), so this is the bytes as they are sent.
      const data = Buffer.from(unsigned.data, 'latin1');
      const signature =
        key.algorithm === 'rsa-sha256'
          ? await signInPool('sha256', data, key.privateKey)
          : // Ed25519 (RFC 8463) signs the SHA-256 hash of the canonicalised header with PureEdDSA.
            await signInPool(null, createHash('sha256').update(data).digest(), key.privateKey);
      return signedField(unsigned, signature);
    }),
  );
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
