import { PassThrough } from 'node:stream';
import { dkimSign, type DKIMSignResult } from 'mailauth';
import type { HeaderBlock } from '../ingress/header-block';
import type { BodyInspector, MessageContext, MessageFilter, Outgoing, Refusal } from '../ingress/filters';
import type { DkimKey, RouteKeys } from './dkim-keys';

const CRLF = Buffer.from('\r\n');

/**
 * DKIM signing at ingest, once per message. The last filter: it sees the header block with every
 * rewrite applied, feeds mailauth's signer exactly the bytes the spool file will hold (our Received
 * line, the final header block, the body as DataGuard normalised it to CRLF) while they stream to
 * disk, so the body hash is computed without reading the file back and no body is held in memory.
 * At the end of DATA the signature lines go into the message's metadata, to be sent above the
 * stored file; the body on disk is never rewritten.
 */
export class DkimSigningFilter implements MessageFilter {
  constructor(private readonly keys: RouteKeys) {}

  body(context: MessageContext, final: HeaderBlock): BodyInspector | undefined {
    const keys = this.keys.get(context.outgoing.route);
    if (!keys || keys.length === 0) return undefined;
    const head = Buffer.concat([Buffer.from(context.trace, 'latin1'), final.toBuffer(), CRLF]);
    // The inspector is first handed the header block as the client sent it (plus the blank line): skip it.
    const originalHead = context.original.toBuffer().length + CRLF.length;
    return new DkimBodyInspector(keys, head, originalHead, context.outgoing);
  }
}

type SignOutcome = { ok: true; result: DKIMSignResult } | { ok: false; error: Error };

class DkimBodyInspector implements BodyInspector {
  private readonly input = new PassThrough();
  private readonly signing: Promise<SignOutcome>;

  constructor(
    private readonly keys: readonly DkimKey[],
    head: Buffer,
    private skip: number,
    private readonly outgoing: Outgoing,
  ) {
    this.signing = dkimSign(this.input, {
      // mailauth signs once per signatureData entry; its types also ask for one signature at the top level.
      signingDomain: keys[0].domain,
      selector: keys[0].selector,
      privateKey: keys[0].privateKeyPem,
      canonicalization: 'relaxed/relaxed',
      signatureData: keys.map((key) => ({ signingDomain: key.domain, selector: key.selector, privateKey: key.privateKeyPem, algorithm: key.algorithm })),
    }).then((result): SignOutcome => ({ ok: true, result }), (error: Error): SignOutcome => ({ ok: false, error }));
    this.input.write(head);
  }

  write(chunk: Buffer): void {
    if (this.skip >= chunk.length) {
      this.skip -= chunk.length;
      return;
    }
    // The signer hashes synchronously as chunks arrive, so what this buffers is drained before the next network read.
    this.input.write(this.skip > 0 ? chunk.subarray(this.skip) : chunk);
    this.skip = 0;
  }

  async end(): Promise<Refusal | undefined> {
    this.input.end();
    const outcome = await this.signing;
    let problem: string | null = null;
    if (!outcome.ok) problem = outcome.error.message;
    else if (outcome.result.errors.length > 0) problem = describe(outcome.result.errors);
    else if (outcome.result.signatures.trim() === '') problem = 'no signature produced';
    if (problem !== null || !outcome.ok) {
      // Keys are checked at start, so this is unexpected; unsigned mail could fail DMARC, so the client retries.
      return { code: 451, message: `4.3.0 Message could not be DKIM-signed, try again later (${problem})`, reason: 'signing' };
    }
    this.outgoing.prependHeaders = outcome.result.signatures;
    return undefined;
  }
}

function describe(errors: readonly unknown[]): string {
  return errors.map((entry) => {
    const err = (entry as { err?: Error }).err ?? entry;
    return err instanceof Error ? err.message : String(err);
  }).join('; ');
}
