import type { ClientConfig } from '../config/schema';
import type { RejectReason } from '../observe/events';
import type { HeaderBlock } from '../message/header-block';
import type { SessionState } from './session';

/**
 * How later stages (policy content rules, re-enveloping) take part in DATA without knowing about
 * streams or smtp-server: they see the header block once (and may edit it), may inspect the body
 * as it streams to disk, and answer with a refusal that becomes the reply at end of DATA.
 */

export interface MessageContext {
  readonly queueId: string;
  readonly client: ClientConfig;
  readonly session: SessionState;
  readonly envelope: { readonly from: string; readonly to: readonly string[] };
  /** The header block exactly as the client sent it (filters edit a copy). */
  readonly original: HeaderBlock;
  /** Our Received line(s), written to the spool above the header block (CRLF-terminated). */
  readonly trace: string;
  /** How the message will leave; stored in its metadata at the end of DATA. */
  readonly outgoing: Outgoing;
}

/**
 * What a message leaves with, decided once at ingest: the route (chosen from the client's policy
 * and the envelope sender before any filter runs), and what filters settle on the way.
 */
export interface Outgoing {
  readonly route: string;
  /** The envelope sender for the smart host; starts as the client's ('' is the null sender). */
  from: string;
  /** Header lines to put above the stored file when sending (DKIM-Signature, known only at the end of DATA). */
  prependHeaders: string;
}

export interface Refusal {
  code: number;
  /** Starts with the enhanced status code: `5.7.1 Attachment type .exe not allowed`. */
  message: string;
  reason: RejectReason;
}

export interface BodyInspector {
  /**
   * Gets the original header block first, then every body chunk, in order. A promise holds the
   * message back until it settles: an inspector slower than the network pushes back on the
   * client instead of buffering the message in memory.
   */
  write(chunk: Buffer): void | Promise<void>;
  /** Called at end of DATA: the verdict on everything it saw. */
  end(): Promise<Refusal | undefined>;
}

export interface MessageFilter {
  /** Inspects and may edit the header block before it is written to the spool. */
  headers?(headers: HeaderBlock, context: MessageContext): Refusal | undefined | Promise<Refusal | undefined>;
  /**
   * An inspector for this message's body, or undefined when this filter has no interest in it.
   * `final` is the header block as it will be stored, every filter's edits applied (read only).
   */
  body?(context: MessageContext, final: HeaderBlock): BodyInspector | undefined;
}
