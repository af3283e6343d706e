import type { Outcome } from './outcome';

/**
 * Reading a smart host's `452` replies to RCPT (RFC 5321 §4.5.3.1.10): a host that has taken as many
 * recipients as it takes in one transaction answers 452 to the RCPTs after them, and the client
 * sends those in another transaction. Other 452s (a full mailbox, a host short of storage) are
 * about the recipient or the host and wait for a later attempt like any 4xx.
 */

/**
 * `452` to a recipient, read as the host's limit of recipients per transaction: with the enhanced
 * code 4.5.3 that says so, or with none. `452 4.2.2` (mailbox full) and `452 4.3.1` (out of
 * storage) are not the transaction's limit.
 */
export function isRecipientLimit(outcome: Outcome | undefined): boolean {
  if (outcome?.kind !== 'transient' || outcome.cause !== 'reply' || outcome.reply?.code !== 452) return false;
  const enhanced = /^452[ -](\d\.\d{1,3}\.\d{1,3})\b/.exec(outcome.reply.text)?.[1];
  return enhanced === undefined || enhanced === '4.5.3';
}

/**
 * The recipients at the end of a transaction, in RCPT order, that all met the host's limit. Only
 * the end: a 452 followed by a recipient the host took was not the limit. So a recipient sent again
 * at the head of the next transaction, and refused again while others behind it are taken, waits
 * for the next attempt instead of riding along in every transaction of a long envelope.
 */
export function recipientLimitTail<T>(rcptOrder: readonly T[], outcomeOf: (recipient: T) => Outcome | undefined): T[] {
  let start = rcptOrder.length;
  while (start > 0 && isRecipientLimit(outcomeOf(rcptOrder[start - 1]))) start--;
  return rcptOrder.slice(start);
}
