import type { Refusal } from '../ingress/filters';
import { normalizeAddress, type NormalizedAddress } from '../message/address';
import type { AddressMatcher } from '../message/address-pattern';
import { decodeWords } from '../message/encoded-words';
import { fieldValue, type HeaderBlock } from '../message/header-block';
import type { HeaderPattern } from '../message/header-pattern';
import { readAddressField } from '../message/mailbox';

/**
 * The policy's decisions as pure functions of (compiled policy, input): no sockets, no clocks,
 * no counters, so each rule has a table test. The engine calls them at the SMTP stage that can
 * decide first and adds the stateful parts (rate limits, suppression file).
 */

export interface PolicyRules {
  readonly allowedSenders?: AddressMatcher;
  readonly allowedRecipients?: AddressMatcher;
  readonly deniedRecipients?: AddressMatcher;
  readonly maxMessageSize?: number;
  readonly maxRecipients?: number;
  readonly headerRules: readonly HeaderRule[];
  readonly blockedExtensions: ReadonlySet<string>;
}

/** A header rule of the config with its pattern compiled (engine.ts compiles them when the policy is built). */
export interface HeaderRule {
  readonly header: string;
  readonly match: HeaderPattern;
  readonly action: 'reject' | 'strip';
}

/** How a recipient suppression lookup is asked (the list itself lives in suppression.ts). */
export interface Suppression {
  has(address: NormalizedAddress): boolean;
}

export function senderRefusal(rules: PolicyRules, client: string, from: string): Refusal | undefined {
  if (!rules.allowedSenders || rules.allowedSenders.matches(normalizeAddress(from))) return undefined;
  return {
    code: 550,
    message: `5.7.1 Sender <${from}> not allowed for client ${client}`,
    reason: 'sender_not_allowed',
  };
}

/** A `SIZE=` declared at MAIL that is over the policy's maximum: refused before a byte of DATA. */
export function declaredSizeRefusal(
  rules: PolicyRules,
  client: string,
  declared: number | undefined,
): Refusal | undefined {
  if (declared === undefined || rules.maxMessageSize === undefined || declared <= rules.maxMessageSize)
    return undefined;
  return tooBig(rules.maxMessageSize, client);
}

export function tooBig(max: number, client: string): Refusal {
  return {
    code: 552,
    message: `5.3.4 Message size exceeds maximum message size of ${max} bytes for client ${client}`,
    reason: 'too_big',
  };
}

/**
 * One RCPT: not allowed (denied wins over allowed) → 550 5.7.1; suppressed → 550 5.1.1; one too
 * many → 452 4.5.3 (the client may send the rest in another transaction).
 */
export function recipientRefusal(
  rules: PolicyRules,
  client: string,
  to: string,
  acceptedSoFar: number,
  suppression?: Suppression,
): Refusal | undefined {
  const address = normalizeAddress(to);
  const denied = rules.deniedRecipients?.matches(address) ?? false;
  const allowed = rules.allowedRecipients?.matches(address) ?? true;
  if (denied || !allowed)
    return {
      code: 550,
      message: `5.7.1 Recipient <${to}> not allowed for client ${client}`,
      reason: 'recipient_not_allowed',
    };
  if (suppression?.has(address))
    return { code: 550, message: `5.1.1 Recipient <${to}> is on the suppression list`, reason: 'suppressed' };
  if (rules.maxRecipients !== undefined && acceptedSoFar >= rules.maxRecipients) {
    return {
      code: 452,
      message: `4.5.3 Too many recipients for client ${client} (at most ${rules.maxRecipients} per message)`,
      reason: 'too_many_recipients',
    };
  }
  return undefined;
}

export interface HeaderAddresses {
  /** Number of fields of that name (RFC 5322 allows one From; every one is checked). */
  fields: number;
  /** Mailboxes the parser found, as written. */
  mailboxes: string[];
  /** Every address-looking text anywhere in the fields, as a lenient reader finds it (message/mentions.ts). */
  mentioned: string[];
}

/** What every `From` (or `Sender`) field names, as a parser and as a reader sees it. */
export function headerAddresses(headers: HeaderBlock, name: 'from' | 'sender'): HeaderAddresses {
  const fields = headers.all(name);
  const mailboxes: string[] = [];
  const mentioned: string[] = [];
  for (const field of fields) {
    const read = readAddressField(fieldValue(field));
    for (const mailbox of read.mailboxes) if (mailbox.address !== '') mailboxes.push(mailbox.address);
    mentioned.push(...read.mentioned);
  }
  return { fields: fields.length, mailboxes, mentioned };
}

export function headerFromRefusal(rules: PolicyRules, client: string, headers: HeaderBlock): Refusal | undefined {
  // `*` restricts nothing, so it has no reason to insist on a From either.
  const allowed = rules.allowedSenders;
  if (!allowed || allowed.matchesEverything) return undefined;
  const refuse = (what: string): Refusal => ({
    code: 550,
    message: `5.7.1 ${what} not allowed for client ${client}`,
    reason: 'sender_not_allowed',
  });
  const disallowed = ({ mailboxes, mentioned }: HeaderAddresses) =>
    [...mailboxes, ...mentioned].find((address) => !allowed.matches(normalizeAddress(address)));
  const from = headerAddresses(headers, 'from');
  // Without a From there is nothing to hold to the policy, and whatever the smart host or the
  // recipient's software would fill in is out of our hands: refuse rather than guess.
  if (from.fields === 0) return refuse('Message without a From header');
  if (from.mailboxes.length === 0) return refuse('Header From without an address');
  const foreignFrom = disallowed(from);
  if (foreignFrom !== undefined) return refuse(`Header From <${foreignFrom}>`);
  // Sender is shown too ("on behalf of"): every one of them is held to the same rule.
  const foreignSender = disallowed(headerAddresses(headers, 'sender'));
  if (foreignSender !== undefined) return refuse(`Header Sender <${foreignSender}>`);
  return undefined;
}

/**
 * Runs the header rules in order over the (editable) header block: `strip` removes the matching
 * fields, the first matching `reject` refuses the message. A rule matches the value as sent or
 * with RFC 2047 encoded words decoded, so encoding a Subject does not slip past a rule.
 */
export function applyHeaderRules(rules: PolicyRules, client: string, headers: HeaderBlock): Refusal | undefined {
  for (const rule of rules.headerRules) {
    const key = rule.header.toLowerCase();
    const matching = new Set(
      headers.fields.filter((field) => field.key === key && valueMatches(rule.match, fieldValue(field))),
    );
    if (matching.size === 0) continue;
    if (rule.action === 'reject') {
      return {
        code: 550,
        message: `5.7.1 Message refused by a header rule on ${rule.header} for client ${client}`,
        reason: 'content_rule',
      };
    }
    headers.fields = headers.fields.filter((field) => !matching.has(field));
  }
  return undefined;
}

function valueMatches(pattern: HeaderPattern, value: string): boolean {
  if (pattern.test(value)) return true;
  const decoded = decodeWords(value);
  return decoded !== value && pattern.test(decoded);
}

/**
 * The blocked extension a file name carries, if any. Every reading a mail app might use is tried:
 * as given and RFC 2047-decoded, whole and cut at the first control character (some apps stop at
 * a NUL); trailing dots and spaces dropped (Windows ignores them: `invoice.exe.` runs as .exe).
 */
export function blockedExtension(names: readonly string[], blocked: ReadonlySet<string>): string | undefined {
  if (blocked.size === 0) return undefined;
  for (const name of names) {
    for (const decoded of new Set([name, decodeWords(name)])) {
      for (const candidate of new Set([decoded, decoded.split(/[\u0000-\u001f]/)[0]])) {
        const trimmed = withoutTrailingDotsAndSpaces(candidate);
        const dot = trimmed.lastIndexOf('.');
        if (dot === -1) continue;
        const ext = trimmed.slice(dot + 1).toLowerCase();
        if (blocked.has(ext)) return ext;
      }
    }
  }
  return undefined;
}

/**
 * The name without the trailing dots, whitespace and control characters Windows ignores. A loop,
 * not /[\s.]+$/: a regular expression retries that from every position of a long run of dots and
 * spaces inside a name (80 KB of them in a Content-Disposition took 9 s).
 */
function withoutTrailingDotsAndSpaces(name: string): string {
  let end = name.length;
  while (end > 0 && /[\s.\u0000-\u001f]/u.test(name[end - 1])) end--;
  return name.slice(0, end);
}

export function attachmentRefusal(ext: string, client: string): Refusal {
  return {
    code: 550,
    message: `5.7.1 Attachment type .${ext} not allowed for client ${client}`,
    reason: 'content_rule',
  };
}
