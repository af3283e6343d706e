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
}

export interface MessageMeta {
  version: 1;
  id: string;
  receivedAt: number;
  client: string;
  listener: string;
  remote: string;
  route: string;
  /** Envelope sender; '' for the null sender `<>`. */
  from: string;
  recipients: RecipientState[];
  /** Bytes of the stored message file (our Received header included). */
  size: number;
  attempts: number;
  nextAttemptAt: number;
  /** Set while the message is (being) moved to hold/ by an admin; cleared to release it. */
  held?: { at: number };
  /** Set when the message is (being) moved to dead/: why it will not be delivered. */
  dead?: { reason: 'rejected' | 'expired'; at: number; response: string };
}

export function pendingRecipients(meta: MessageMeta): RecipientState[] {
  return meta.recipients.filter((r) => r.status === 'pending');
}
