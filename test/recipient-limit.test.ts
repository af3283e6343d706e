import type { Outcome } from '../src/forward/outcome';
import { isRecipientLimit, recipientLimitTail } from '../src/forward/recipient-limit';

const reply = (text: string): Outcome => ({
  kind: 'transient',
  cause: 'reply',
  reply: { code: Number(text.slice(0, 3)), text },
  detail: text,
});
const delivered: Outcome = { kind: 'delivered', reply: { code: 250, text: '250 2.1.5 Ok' } };

describe("a smart host's 452 to RCPT", () => {
  test.each([
    ['452 4.5.3 Too many recipients', true],
    ['452 Too many recipients', true],
    ['452-4.5.3 Too many recipients', true],
    ['452 4.2.2 Mailbox full', false],
    ['452 4.3.1 Insufficient system storage', false],
    ['451 4.5.3 Too many recipients', false],
    ['552 5.5.3 Too many recipients', false],
  ])('%s → the transaction limit: %s', (text, limit) => {
    expect(isRecipientLimit(reply(text))).toBe(limit);
  });

  test('a connection failure or no outcome is not a recipient limit', () => {
    expect(isRecipientLimit({ kind: 'transient', cause: 'connect', detail: 'ECONNREFUSED' })).toBe(false);
    expect(isRecipientLimit(undefined)).toBe(false);
  });

  const outcomes: Record<string, Outcome> = {
    a: delivered,
    b: delivered,
    full: reply('452 4.2.2 Mailbox full'),
    odd: reply('452 4.5.3 Too many recipients'),
    x: reply('452 4.5.3 Too many recipients'),
    y: reply('452 Too many recipients'),
  };
  const tail = (order: string[]) => recipientLimitTail(order, (r) => outcomes[r]);

  test('only the recipients at the end of the RCPT order that all met the limit', () => {
    expect(tail(['a', 'b', 'x', 'y'])).toEqual(['x', 'y']);
    expect(tail(['a', 'odd', 'b', 'x'])).toEqual(['x']);
    expect(tail(['a', 'x', 'full'])).toEqual([]);
    expect(tail(['a', 'b'])).toEqual([]);
    expect(tail(['x', 'y'])).toEqual(['x', 'y']);
    expect(tail([])).toEqual([]);
  });
});
