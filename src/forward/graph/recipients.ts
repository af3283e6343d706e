import { normalizeAddress } from '../../message/address';
import { fieldValue, type HeaderBlock, type HeaderField } from '../../message/header-block';
import { addressesMentioned } from '../../message/mentions';
import { formatMailbox, parseMailboxes, type Mailbox } from '../../message/mailbox';

/**
 * Graph has no envelope: Exchange Online mails whoever the MIME's To, Cc and Bcc name. The copy of
 * a message sent through Graph therefore names exactly the envelope recipients of that send, each
 * once, and nobody else:
 *
 * - a To or Cc field whose every address (and every text a lenient reader could take for one) is
 *   an envelope recipient not named before keeps its bytes;
 * - any other To or Cc field is rewritten with only those recipients, one per line; a display name
 *   that itself looks like some other address is dropped; a field left empty goes;
 * - every Bcc field goes; the envelope recipients that no To or Cc names go in one new Bcc field
 *   (Exchange Online sends Bcc recipients the message without that field, as an SMTP server would);
 * - when this leaves no To or Cc at all, `To: undisclosed-recipients:;` takes the place of the first
 *   (an empty group: it names nobody, and it mails nobody).
 *
 * So a header recipient that was only there to be shown (a list address, a colleague who got the
 * message another way) is not shown through Graph: showing it would mail it. Pure: table tested.
 */

export interface RecipientEdit {
  /** The fields rewritten or removed (`To`, `Cc`, `Bcc`, as the message named them): for the log. */
  rewritten: string[];
  /** The envelope recipients that the new Bcc field names. */
  bcc: string[];
}

/**
 * One key per mailbox: case-insensitive (as Exchange reads addresses), IDN domains in their ASCII form
 * (message/address.ts).
 */
export function recipientKey(address: string): string {
  return normalizeAddress(address).address;
}

function fieldName(field: HeaderField): string {
  return field.raw.slice(0, field.raw.indexOf(':')).trim();
}

/** A header field of mailboxes, each on its own folded line (a long list must not make a line over 998 bytes). */
function mailboxField(name: string, mailboxes: readonly Mailbox[]): HeaderField {
  const value = mailboxes.map(formatMailbox).join(',\r\n ');
  return { key: name.toLowerCase(), raw: `${name}: ${Buffer.from(value, 'utf8').toString('latin1')}` };
}

/** A display name that reads as some other address is dropped: a lenient reader might mail it. */
function withSafeName(mailbox: Mailbox): Mailbox {
  const own = recipientKey(mailbox.address);
  return addressesMentioned(mailbox.name).every((address) => recipientKey(address) === own)
    ? mailbox
    : { name: '', address: mailbox.address };
}

/** Rewrites `headers` (To, Cc, Bcc) so that the message names exactly `recipients`. */
export function sendOnlyToEnvelope(headers: HeaderBlock, recipients: readonly string[]): RecipientEdit {
  const wanted = new Map<string, string>();
  for (const address of recipients) if (!wanted.has(recipientKey(address))) wanted.set(recipientKey(address), address);
  const named = new Set<string>();
  const rewritten: string[] = [];
  const fields: HeaderField[] = [];
  let firstRecipientField = -1;
  for (const field of headers.fields) {
    if (field.key === 'bcc') {
      rewritten.push(fieldName(field));
      continue;
    }
    if (field.key !== 'to' && field.key !== 'cc') {
      fields.push(field);
      continue;
    }
    if (firstRecipientField === -1) firstRecipientField = fields.length;
    const value = fieldValue(field);
    const kept: Mailbox[] = [];
    let changed = addressesMentioned(value).some((address) => !wanted.has(recipientKey(address)));
    for (const mailbox of parseMailboxes(value)) {
      const key = mailbox.address === '' ? '' : recipientKey(mailbox.address);
      // A name without an address mails nobody through SMTP, but Exchange may resolve it in its address book.
      if (key === '' || !wanted.has(key) || named.has(key)) {
        changed = true;
        continue;
      }
      named.add(key);
      kept.push(mailbox);
    }
    if (!changed) {
      fields.push(field);
      continue;
    }
    rewritten.push(fieldName(field));
    if (kept.length > 0) fields.push(mailboxField(fieldName(field), kept.map(withSafeName)));
  }
  if (firstRecipientField !== -1 && !fields.some((field) => field.key === 'to' || field.key === 'cc')) {
    fields.splice(firstRecipientField, 0, { key: 'to', raw: 'To: undisclosed-recipients:;' });
  }
  const bcc = [...wanted].filter(([key]) => !named.has(key)).map(([, address]) => address);
  if (bcc.length > 0) {
    fields.push(
      mailboxField(
        'Bcc',
        bcc.map((address) => ({ name: '', address })),
      ),
    );
  }
  headers.fields = fields;
  return { rewritten, bcc };
}

/** The first address of the From field: the mailbox that sends with `send_as: from`. */
export function fromAddress(headers: HeaderBlock): string | undefined {
  const value = headers.value('from');
  return value === undefined ? undefined : parseMailboxes(value).find((mailbox) => mailbox.address !== '')?.address;
}
