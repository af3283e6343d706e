import type { ClientConfig } from '../config/schema';
import type { RejectReason } from '../observe/events';
import type { HeaderBlock } from './header-block';
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
  /** An inspector for this message's body, or undefined when this filter has no interest in it. */
  body?(context: MessageContext): BodyInspector | undefined;
}
