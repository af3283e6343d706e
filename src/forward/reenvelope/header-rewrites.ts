import { rfc5322Date } from '../../message/date';
import type { HeaderBlock } from '../../message/header-block';
import { formatMailbox, parseMailboxes, readAddressField, type Mailbox } from '../../message/mailbox';

/**
 * The header edits of re-enveloping, each a pure function over one message's header block (table
 * tested in test/reenvelope-headers.test.ts). They run once, at ingest, before the block is written
 * to the spool; our own Received line is written above the block and never passes through here.
 */

/** Client-side topology that never leaves the LAN, whatever the route says. */
export const ALWAYS_STRIPPED = ['Received', 'X-Originating-IP'] as const;

export function stripHeaders(headers: HeaderBlock, extra: readonly string[]): number {
  return headers.remove(...ALWAYS_STRIPPED, ...extra);
}

export interface FromRewrite {
  /** True for an address that may leave as it is (the route's `rewrite_from.unless`). */
  allowed: (address: string) => boolean;
  to: string;
}

/**
 * Replaces every From (and Sender) address that is not allowed with `rule.to`, keeping the display
 * name; the replaced From mailboxes go into a new Reply-To unless the message has one, so replies
 * still reach the person. Sender follows the same rule, and is dropped where it would only repeat
 * the single From (RFC 5322 §3.6.2); several From mailboxes keep (or get) a Sender, as required.
 * Returns whether anything changed.
 */
export function rewriteFrom(headers: HeaderBlock, rule: FromRewrite): boolean {
  const fromValue = headers.value('from');
  const read = fromValue === undefined ? undefined : readAddressField(fromValue);
  if (read === undefined || read.mailboxes.length === 0) {
    // RFC 5322 requires a From; a route that names its sender can supply one.
    headers.set('From', formatMailbox({ name: fromValue ?? '', address: rule.to }));
    return true;
  }

  const original = read.mailboxes;
  // An address the parser did not return but another reader would (a comment after the `@`, a
  // fullwidth `＠`) cannot be replaced in place: the whole From becomes the route's sender.
  const parsed = new Set(original.map((mailbox) => mailbox.address.toLowerCase()));
  if (read.mentioned.some((address) => !parsed.has(address.toLowerCase()) && !rule.allowed(address))) {
    headers.set('From', formatMailbox({ name: '', address: rule.to }));
    rewriteSender(headers, rule, [{ name: '', address: rule.to }], true);
    return true;
  }
  const replaced: Mailbox[] = [];
  const from = dedupe(
    original.map((mailbox) => {
      if (rule.allowed(mailbox.address)) return mailbox;
      if (mailbox.address !== '') replaced.push(mailbox);
      return { name: mailbox.name, address: rule.to };
    }),
  );
  const fromChanged = replaced.length > 0 || original.some((mailbox) => mailbox.address === '');
  if (fromChanged) {
    headers.set('From', from.map(formatMailbox).join(', '));
    if (replaced.length > 0 && !headers.has('reply-to'))
      headers.add('Reply-To', replaced.map(formatMailbox).join(', '));
  }

  const senderChanged = rewriteSender(headers, rule, from, fromChanged);
  return fromChanged || senderChanged;
}

/** Sender gets the same rule as From; only what this rewrite made redundant or required is dropped or added. */
function rewriteSender(headers: HeaderBlock, rule: FromRewrite, from: Mailbox[], fromChanged: boolean): boolean {
  const senderValue = headers.value('sender');
  const sender = senderValue === undefined ? undefined : parseMailboxes(senderValue)[0];
  const rewritten = sender !== undefined && !rule.allowed(sender.address);
  if (!fromChanged && !rewritten) return false;
  const address = rewritten ? rule.to : sender?.address;
  if (address !== undefined && from.length === 1 && from[0].address.toLowerCase() === address.toLowerCase()) {
    headers.remove('sender');
    return true;
  }
  if (rewritten) {
    headers.set('Sender', formatMailbox({ name: sender.name, address: rule.to }));
    return true;
  }
  if (address === undefined && from.length > 1) {
    headers.add('Sender', formatMailbox({ name: '', address: rule.to }));
    return true;
  }
  return false;
}

function dedupe(mailboxes: Mailbox[]): Mailbox[] {
  const seen = new Set<string>();
  return mailboxes.filter((mailbox) => {
    const key = mailbox.address.toLowerCase();
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

/** Envelope sender for the smart host: the route's, except that the null sender stays null (it marks a bounce). */
export function rewriteEnvelopeFrom(clientFrom: string, envelopeFrom: string | undefined): string {
  if (clientFrom === '' || envelopeFrom === undefined) return clientFrom;
  return envelopeFrom;
}

/** `<queue id@hostname>`: unique (the id is unguessable) and traceable to our logs. */
export function ensureMessageId(headers: HeaderBlock, queueId: string, hostname: string): boolean {
  if ((headers.value('message-id') ?? '') !== '') return false;
  headers.remove('message-id');
  headers.add('Message-ID', `<${queueId}@${hostname}>`);
  return true;
}

export function ensureDate(headers: HeaderBlock, now: Date): boolean {
  if ((headers.value('date') ?? '') !== '') return false;
  headers.remove('date');
  headers.add('Date', rfc5322Date(now));
  return true;
}
