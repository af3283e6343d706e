/** What the spool keeps beside each message: the only interface between receiving and delivering. */

export type RecipientStatus = 'pending' | 'delivered' | 'failed';

export interface RecipientState {
  address: string;
  status: RecipientStatus;
  /** The last reply (or connection error) seen for this recipient. */
  response?: string;
  /** The smart host that delivered it, or gave the last reply. */
  smarthost?: string;
  /** How many smart hosts answered 5xx for it; two make the failure permanent. */
  permanentRejections?: number;
  /** The smart hosts that answered 5xx for it: never offered it again (the next host is tried once instead). */
  rejectedBy?: string[];
  /** A smart host asked (Retry-After) not to be sent it before this time (ms since the epoch). */
  notBefore?: number;
}

/**
 * 2: committed as one file with its metadata as a trailer, so the message is exactly the first
 * `size` bytes of the file. 1: written before trailers (`.eml` + `.json`): the whole file is the
 * message, and `size` was counted by an older rule, so it is not used to cut the file.
 */
export type MetaVersion = 1 | 2;

export interface MessageMeta {
  version: MetaVersion;
  id: string;
  receivedAt: number;
  client: string;
  listener: string;
  remote: string;
  route: string;
  /** Envelope sender sent to the smart host (after the route's `envelope_from`); '' for the null sender `<>`. */
  from: string;
  /** The client's MAIL FROM, when the route rewrote it. */
  clientFrom?: string;
  /** Header lines sent above the stored file (DKIM-Signature, computed at the end of DATA). */
  prependHeaders?: string;
  recipients: RecipientState[];
  /** Bytes of the stored message file (our Received header included). */
  size: number;
  attempts: number;
  nextAttemptAt: number;
  /** Set on a delivery status notification the relay generated: the queue id it reports on. Never bounced itself. */
  dsnOf?: string;
  /** Set while the message is (being) moved to hold/ by an admin; cleared to release it. */
  held?: { at: number };
  /** Set when the message is (being) moved to dead/: why it will not be delivered. */
  dead?: { reason: 'rejected' | 'expired'; at: number; response: string };
}

/** How many bytes of the message file are the message; undefined: all of them (a version 1 file). */
export function messageBytes(meta: MessageMeta): number | undefined {
  return meta.version === 2 ? meta.size : undefined;
}

export function pendingRecipients(meta: MessageMeta): RecipientState[] {
  return meta.recipients.filter((r) => r.status === 'pending');
}
