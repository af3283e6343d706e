import { parseAddressList, type Address, type MailboxAddress } from '../nodemailer-adapter';
import { addressesMentioned } from './mentions';

/**
 * Mailboxes in originator headers (From, Sender, Reply-To): parsed with nodemailer's addressparser
 * (no hand-written RFC 5322 parser; it tokenises in one pass, comments and quotes included),
 * formatted back so the display name survives as it was meant.
 */

export interface Mailbox {
  /** The display name as written, quotes removed; RFC 2047 encoded words are left encoded. */
  name: string;
  /** '' when the field had a name but no address (`From: ERP System`). */
  address: string;
}

/** Every mailbox of a header value; group syntax is flattened (RFC 6854 allows it in From). */
export function parseMailboxes(value: string): Mailbox[] {
  const flat: Mailbox[] = [];
  const visit = (entries: Address[]) => {
    for (const entry of entries) {
      if ('group' in entry && Array.isArray(entry.group)) visit(entry.group);
      else flat.push({ name: (entry as MailboxAddress).name ?? '', address: (entry as MailboxAddress).address ?? '' });
    }
  };
  visit(parseAddressList(value));
  return flat.filter((mailbox) => mailbox.name !== '' || mailbox.address !== '');
}

const ATOM_PHRASE = /^[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+(?: [A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+)*$/;
const ENCODED_WORD = /^=\?[^?\s]+\?[BbQq]\?[^?\s]*\?=$/;

/**
 * The display name as a phrase: left bare when it is atoms and encoded words (an encoded word must
 * not be quoted, or decoders show it raw), quoted otherwise. UTF-8 names stay UTF-8 (RFC 6532):
 * the client chose to send them that way, and re-encoding is not ours to decide.
 */
export function formatDisplayName(name: string): string {
  const words = name.trim().split(/\s+/);
  if (words.every((word) => ENCODED_WORD.test(word) || ATOM_PHRASE.test(word))) return words.join(' ');
  return `"${name
    .trim()
    .replace(/[\r\n]+/g, ' ')
    .replace(/(["\\])/g, '\\$1')}"`;
}

export function formatMailbox(mailbox: Mailbox): string {
  if (mailbox.name.trim() === '') return `<${mailbox.address}>`;
  return `${formatDisplayName(mailbox.name)} <${mailbox.address}>`;
}

/** What one address field (From, Sender) names: as its parser reads it, and as any reader could (mentions.ts). */
export interface FieldAddresses {
  readonly mailboxes: readonly Readonly<Mailbox>[];
  readonly mentioned: readonly string[];
}

/**
 * The field read last and what it names. The policy's From check and the route's From rewrite read
 * the same From of a message one after the other, and parsing it is the costliest step of either;
 * the answer is read-only, so the two can share it.
 */
let lastRead: { value: string; addresses: FieldAddresses } | null = null;

export function readAddressField(value: string): FieldAddresses {
  if (lastRead?.value !== value) {
    lastRead = { value, addresses: { mailboxes: parseMailboxes(value), mentioned: addressesMentioned(value) } };
  }
  return lastRead.addresses;
}
