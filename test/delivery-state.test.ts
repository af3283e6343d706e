import {
  afterAdmission,
  afterTransaction,
  beginAttempt,
  beginRecipient,
  nextStep,
  PERMANENT_AFTER_REJECTIONS,
  recipientAfter,
  transactionEvents,
  type HostAdmission,
  type RecipientEvent,
  type RecipientInAttempt,
} from '../src/forward/delivery-state';
import { settleAttempt, type VerdictInput } from '../src/forward/delivery-state-verdict';
import type { Outcome } from '../src/forward/outcome';
import { firstDue } from '../src/forward/plan';
import type { RecipientState } from '../src/spool/message';

/**
 * The delivery state machine as tables: recipient × host outcome → next state, then whole attempts
 * and their verdicts.
 */

const ok: Outcome = { kind: 'delivered', reply: { code: 250, text: '250 2.0.0 Ok' } };
const reply = (text: string, retryAfterMs?: number): Outcome => ({
  kind: 'transient',
  cause: 'reply',
  reply: { code: Number(text.slice(0, 3)), text },
  detail: text,
  ...(retryAfterMs !== undefined ? { retryAfterMs } : {}),
});
const later = reply('451 4.7.0 Try again later');
const limit = reply('452 4.5.3 Too many recipients');
const mailboxFull = reply('452 4.2.2 Mailbox full');
const refused: Outcome = { kind: 'permanent', reply: { code: 550, text: '550 5.1.1 No such user' } };
const down: Outcome = { kind: 'transient', cause: 'connect', detail: 'connect ECONNREFUSED 127.0.0.1:25' };
const unreadable: Outcome = { kind: 'transient', cause: 'spool', detail: 'queue file ends at 5 of 22 bytes' };
const throttled = (retryAfterMs: number): Outcome =>
  reply('429 Too Many Requests (ApplicationThrottled)', retryAfterMs);

const pending = (address: string, more: Partial<RecipientState> = {}): RecipientState => ({
  address,
  status: 'pending',
  ...more,
});
const fresh = (state: RecipientState): RecipientInAttempt => ({ state, deferred: false, offered: false, held: false });

describe('one recipient: state × event → next state', () => {
  const at = 10_000;
  test.each<[string, RecipientInAttempt, RecipientEvent, RecipientInAttempt]>([
    [
      '2xx delivers it and names the host and its reply',
      fresh(pending('a')),
      { kind: 'reply', host: 'p', outcome: ok, at },
      {
        ...fresh({ address: 'a', status: 'delivered', response: '250 2.0.0 Ok', smarthost: 'p' }),
        decided: 'delivered',
      },
    ],
    [
      '2xx after a Retry-After earlier in the attempt: the wait is over',
      { ...fresh(pending('a', { notBefore: 99_000 })), deferred: true },
      { kind: 'reply', host: 'b', outcome: ok, at },
      {
        ...fresh({ address: 'a', status: 'delivered', response: '250 2.0.0 Ok', smarthost: 'b' }),
        deferred: true,
        decided: 'delivered',
      },
    ],
    [
      '5xx from a first host: still pending, never offered to that host again',
      fresh(pending('a')),
      { kind: 'reply', host: 'p', outcome: refused, at },
      fresh(
        pending('a', { response: '550 5.1.1 No such user', smarthost: 'p', rejectedBy: ['p'], permanentRejections: 1 }),
      ),
    ],
    [
      `5xx from the ${PERMANENT_AFTER_REJECTIONS}nd host: failed for good now`,
      fresh(pending('a', { rejectedBy: ['p'], permanentRejections: 1 })),
      { kind: 'reply', host: 'b', outcome: refused, at },
      {
        ...fresh({
          address: 'a',
          status: 'failed',
          response: '550 5.1.1 No such user',
          smarthost: 'b',
          rejectedBy: ['p', 'b'],
          permanentRejections: 2,
        }),
        decided: 'rejected',
      },
    ],
    [
      '4xx defers it',
      fresh(pending('a')),
      { kind: 'reply', host: 'p', outcome: later, at },
      { ...fresh(pending('a', { response: '451 4.7.0 Try again later', smarthost: 'p' })), deferred: true },
    ],
    [
      'a connection failure defers it, with the error as its response',
      fresh(pending('a')),
      { kind: 'reply', host: 'p', outcome: down, at },
      { ...fresh(pending('a', { response: 'connect ECONNREFUSED 127.0.0.1:25', smarthost: 'p' })), deferred: true },
    ],
    [
      'a transient reply with Retry-After sets its earliest next attempt',
      fresh(pending('a')),
      { kind: 'reply', host: 'm365', outcome: throttled(30_000), at },
      {
        ...fresh(
          pending('a', {
            response: '429 Too Many Requests (ApplicationThrottled)',
            smarthost: 'm365',
            notBefore: 40_000,
          }),
        ),
        deferred: true,
      },
    ],
    [
      'a shorter Retry-After later in the attempt does not shorten the wait',
      { ...fresh(pending('a', { notBefore: 90_000 })), deferred: true },
      { kind: 'reply', host: 'b', outcome: throttled(1_000), at },
      {
        ...fresh(
          pending('a', { response: '429 Too Many Requests (ApplicationThrottled)', smarthost: 'b', notBefore: 90_000 }),
        ),
        deferred: true,
      },
    ],
    [
      'a 4xx without Retry-After keeps the wait another host asked for',
      { ...fresh(pending('a', { notBefore: 90_000 })), deferred: true },
      { kind: 'reply', host: 'b', outcome: later, at },
      {
        ...fresh(pending('a', { response: '451 4.7.0 Try again later', smarthost: 'b', notBefore: 90_000 })),
        deferred: true,
      },
    ],
    [
      '452 over the transaction limit: recorded, not deferred (it goes in the next transaction)',
      fresh(pending('a')),
      { kind: 'over_limit', host: 'p', outcome: limit },
      fresh(pending('a', { response: '452 4.5.3 Too many recipients', smarthost: 'p' })),
    ],
    [
      '452 over the limit keeps a deferral it had before',
      { ...fresh(pending('a')), deferred: true },
      { kind: 'over_limit', host: 'p', outcome: limit },
      { ...fresh(pending('a', { response: '452 4.5.3 Too many recipients', smarthost: 'p' })), deferred: true },
    ],
    [
      'a host that cannot take it now (breaker, quota, retired, down) defers it',
      fresh(pending('a')),
      { kind: 'not_reached' },
      { ...fresh(pending('a')), deferred: true },
    ],
    [
      'settle: refused by a host and deferred by none fails it',
      fresh(pending('a', { rejectedBy: ['p'], permanentRejections: 1 })),
      { kind: 'settle' },
      { ...fresh({ address: 'a', status: 'failed', rejectedBy: ['p'], permanentRejections: 1 }), decided: 'rejected' },
    ],
    [
      'settle: refused by one host but deferred by another waits (that host has not had its say)',
      { ...fresh(pending('a', { rejectedBy: ['p'] })), deferred: true },
      { kind: 'settle' },
      { ...fresh(pending('a', { rejectedBy: ['p'] })), deferred: true },
    ],
    [
      'settle: only deferred waits',
      { ...fresh(pending('a')), deferred: true },
      { kind: 'settle' },
      { ...fresh(pending('a')), deferred: true },
    ],
    [
      'expire fails it as expired',
      fresh(pending('a')),
      { kind: 'expire' },
      { ...fresh({ address: 'a', status: 'failed' }), decided: 'expired' },
    ],
    [
      'a delivered recipient never moves',
      fresh({ address: 'a', status: 'delivered' }),
      { kind: 'reply', host: 'p', outcome: refused, at },
      fresh({ address: 'a', status: 'delivered' }),
    ],
    [
      'a failed recipient never moves',
      fresh({ address: 'a', status: 'failed' }),
      { kind: 'expire' },
      fresh({ address: 'a', status: 'failed' }),
    ],
  ])('%s', (_what, before, event, after) => {
    expect(recipientAfter(before, event)).toEqual(after);
  });

  test.each<[string, RecipientState, RecipientInAttempt]>([
    [
      'a Retry-After still running holds it (deferred, offered to no host)',
      pending('a', { notBefore: 20_000 }),
      { state: pending('a', { notBefore: 20_000 }), deferred: true, offered: false, held: true },
    ],
    ['a Retry-After that has passed is forgotten', pending('a', { notBefore: 10_000 }), fresh(pending('a'))],
    ['a plain pending recipient starts fresh', pending('a'), fresh(pending('a'))],
  ])('begin: %s', (_what, state, expected) => {
    expect(beginRecipient(state, 10_000)).toEqual(expected);
  });
});

/** A smart host as a script: what it admits, and what it answers each transaction. */
interface HostScript {
  admit?: (wanted: number) => HostAdmission;
  send: (to: readonly string[]) => Outcome[];
}
const each = (outcome: Outcome) => (to: readonly string[]) => to.map(() => outcome);
const by =
  (outcomes: Record<string, Outcome>, otherwise: Outcome = ok) =>
  (to: readonly string[]) =>
    to.map((a) => outcomes[a] ?? otherwise);
/** A host that takes `n` recipients per transaction and answers 452 4.5.3 to the rest (max_recipients set higher). */
const takesAtMost = (n: number) => (to: readonly string[]) => to.map((_, i) => (i < n ? ok : limit));
const upTo =
  (n: number) =>
  (wanted: number): HostAdmission => ({ kind: 'admitted', recipients: Math.min(n, wanted) });

/** Runs the machine to its end against scripted hosts: the transactions it sent, and each recipient after `settle`. */
function drive(
  recipients: RecipientState[],
  hosts: Record<string, HostScript>,
  options: { attempts?: number; now?: number } = {},
) {
  const now = options.now ?? 10_000;
  let state = beginAttempt({ recipients, hosts: Object.keys(hosts), attempts: options.attempts ?? 0, now });
  const transactions: string[] = [];
  for (let step = nextStep(state); step.kind === 'admit'; step = nextStep(state)) {
    const script = hosts[step.host];
    const admitted = afterAdmission(
      state,
      script.admit?.(step.recipients) ?? { kind: 'admitted', recipients: step.recipients },
    );
    state = admitted.state;
    const tx = admitted.transaction;
    if (!tx) continue;
    transactions.push(`${tx.host}: ${tx.to.join(' ')}`);
    const answers = script.send(tx.to);
    state = afterTransaction(state, tx, new Map(tx.to.map((address, i) => [address, answers[i]])), now);
  }
  const settled = state.recipients.map((r) => recipientAfter(r, { kind: 'settle' }));
  const outcome = settled.map(
    (r) => `${r.state.address} ${r.state.status}${r.state.status === 'pending' && r.deferred ? ' deferred' : ''}`,
  );
  return { state, transactions, outcome };
}

describe('one attempt: hosts in order, per recipient', () => {
  const envelope = (...addresses: string[]) => addresses.map((a) => pending(a));
  test.each<[string, RecipientState[], Record<string, HostScript>, string[], string[]]>([
    [
      'one host takes every recipient in one transaction',
      envelope('a', 'b'),
      { p: { send: each(ok) } },
      ['p: a b'],
      ['a delivered', 'b delivered'],
    ],
    [
      'failover order: the first host down, the second deferring, the third takes it',
      envelope('a'),
      { p: { send: each(down) }, q: { send: each(later) }, r: { send: each(ok) } },
      ['p: a', 'q: a', 'r: a'],
      ['a delivered'],
    ],
    [
      'a host that takes some and refuses one: only the refused one goes on to the next host',
      envelope('a', 'b'),
      { p: { send: by({ b: refused }) }, q: { send: each(ok) } },
      ['p: a b', 'q: b'],
      ['a delivered', 'b delivered'],
    ],
    [
      '5xx from two hosts fails it for good; the next host is tried only once',
      envelope('a'),
      { p: { send: each(refused) }, q: { send: each(refused) }, r: { send: each(ok) } },
      ['p: a', 'q: a'],
      ['a failed'],
    ],
    [
      '5xx from the only host: failed at settle (no host deferred it)',
      envelope('a'),
      { p: { send: each(refused) } },
      ['p: a'],
      ['a failed'],
    ],
    [
      '5xx from the first host and the second down: it waits for the second',
      envelope('a'),
      { p: { send: each(refused) }, q: { send: each(down) } },
      ['p: a', 'q: a'],
      ['a pending deferred'],
    ],
    [
      'a recipient refused by a host in an earlier attempt is not offered to it again',
      [pending('a', { rejectedBy: ['p'] }), pending('b')],
      { p: { send: each(ok) }, q: { send: each(ok) } },
      ['p: b', 'q: a'],
      ['a delivered', 'b delivered'],
    ],
    [
      'max_recipients: a big envelope goes to the same host in transactions of at most that many',
      envelope('a', 'b', 'c', 'd', 'e'),
      { p: { admit: upTo(2), send: each(ok) } },
      ['p: a b', 'p: c d', 'p: e'],
      ['a delivered', 'b delivered', 'c delivered', 'd delivered', 'e delivered'],
    ],
    [
      'a 452 tail behind recipients the host took goes in the next transaction of the same attempt',
      envelope('a', 'b', 'c'),
      { p: { send: takesAtMost(2) } },
      ['p: a b c', 'p: c'],
      ['a delivered', 'b delivered', 'c delivered'],
    ],
    [
      'a 452 about one recipient (4.2.2) among others taken is not resent: deferred for the next attempt',
      envelope('a', 'b', 'c'),
      { p: { send: by({ a: mailboxFull }) } },
      ['p: a b c'],
      ['a pending deferred', 'b delivered', 'c delivered'],
    ],
    [
      'a recipient resent after the limit and then refused for good fails in the same attempt',
      envelope('a', 'b'),
      { p: { send: (to) => (to.length === 2 ? [ok, limit] : [refused]) } },
      ['p: a b', 'p: b'],
      ['a delivered', 'b failed'],
    ],
    [
      'a host that defers its first transaction is not offered the rest: the next host takes the whole envelope',
      envelope('a', 'b', 'c'),
      { p: { admit: upTo(2), send: each(later) }, q: { admit: upTo(2), send: each(ok) } },
      ['p: a b', 'q: a b', 'q: c'],
      ['a delivered', 'b delivered', 'c delivered'],
    ],
    [
      'a host refused admission (breaker, quota) is skipped: its recipients go to the next one',
      envelope('a'),
      {
        p: { admit: () => ({ kind: 'refused', retryAt: 70_000, detail: 'p skipped: circuit open' }), send: each(ok) },
        q: { send: each(ok) },
      },
      ['q: a'],
      ['a delivered'],
    ],
    [
      'every host refused admission: nothing sent, the recipient waits (never failed for it)',
      envelope('a'),
      { p: { admit: () => ({ kind: 'refused', retryAt: 70_000, detail: 'p skipped' }), send: each(ok) } },
      [],
      ['a pending deferred'],
    ],
    [
      'a host a reload retired is sent nothing: the next one is',
      envelope('a'),
      { p: { admit: () => ({ kind: 'retired' }), send: each(ok) }, q: { send: each(ok) } },
      ['q: a'],
      ['a delivered'],
    ],
    [
      'our copy unreadable: the attempt ends; one the first host refused before still waits for the next host',
      [pending('a'), pending('b', { rejectedBy: ['p'] })],
      { p: { send: each(unreadable) }, q: { send: each(ok) } },
      ['p: a'],
      ['a pending deferred', 'b pending deferred'],
    ],
    [
      'a Graph-like host throttles the whole request (Retry-After): the SMTP backup takes it in the same attempt',
      envelope('a', 'b'),
      { m365: { send: each(throttled(60_000)) }, smtp: { send: each(ok) } },
      ['m365: a b', 'smtp: a b'],
      ['a delivered', 'b delivered'],
    ],
    [
      'a recipient whose Retry-After still runs is offered to no host; the others go',
      [pending('a', { notBefore: 60_000 }), pending('b')],
      { m365: { send: each(ok) }, smtp: { send: each(ok) } },
      ['m365: b'],
      ['a pending deferred', 'b delivered'],
    ],
  ])('%s', (_what, recipients, hosts, transactions, outcome) => {
    const result = drive(recipients, hosts);
    expect(result.transactions).toEqual(transactions);
    expect(result.outcome).toEqual(outcome);
  });

  test('the attempt counts once, at its first transaction, and names a failover from the host before', () => {
    let state = beginAttempt({ recipients: [pending('a')], hosts: ['p', 'q'], attempts: 3, now: 0 });
    let admitted = afterAdmission(state, { kind: 'admitted', recipients: 1 });
    expect([admitted.state.attempts, admitted.transaction?.failoverFrom]).toEqual([4, null]);
    state = afterTransaction(admitted.state, admitted.transaction!, new Map([['a', down]]), 5);
    admitted = afterAdmission(state, { kind: 'admitted', recipients: 1 });
    expect([admitted.state.attempts, admitted.transaction?.failoverFrom]).toEqual([4, 'p']);
  });

  test('an attempt whose hosts all refused admission does not count as an attempt', () => {
    const { state } = drive(
      [pending('a')],
      { p: { admit: () => ({ kind: 'refused', retryAt: 1, detail: 'x' }), send: each(ok) } },
      { attempts: 2 },
    );
    expect(state.attempts).toBe(2);
    expect(state.skips).toEqual([{ host: 'p', retryAt: 1, detail: 'x' }]);
  });
});

describe('events of one transaction: delivered per recipient, then the attempt', () => {
  const message = { id: 'Q1', client: 'lan', from: 'app@corp.example', receivedAt: 1_000 };
  const eventsFor = (outcomes: Outcome[]) => {
    const to = outcomes.map((_, i) => `r${i}@example.com`);
    const admitted = afterAdmission(
      beginAttempt({ recipients: to.map((a) => pending(a)), hosts: ['p'], attempts: 0, now: 0 }),
      { kind: 'admitted', recipients: to.length },
    );
    const map = new Map(to.map((a, i) => [a, outcomes[i]]));
    const state = afterTransaction(admitted.state, admitted.transaction!, map, 4_000);
    return transactionEvents(message, state, admitted.transaction!, map, {
      relay: 'p[smtp.example]:587',
      durationMs: 30,
      at: 4_000,
    });
  };

  test('the exact fields, in order', () => {
    expect(eventsFor([ok, refused])).toEqual([
      {
        type: 'delivered',
        queueId: 'Q1',
        client: 'lan',
        from: 'app@corp.example',
        to: 'r0@example.com',
        attempt: 1,
        delayMs: 3_000,
        smarthost: 'p',
        relay: 'p[smtp.example]:587',
        response: '250 2.0.0 Ok',
      },
      {
        type: 'attempt',
        queueId: 'Q1',
        smarthost: 'p',
        relay: 'p[smtp.example]:587',
        outcome: 'failed',
        durationMs: 30,
        recipients: ['r0@example.com', 'r1@example.com'],
        response: '550 5.1.1 No such user',
        accepted: 1,
      },
    ]);
  });

  test.each<[string, string, Outcome[]]>([
    ['all taken', 'delivered', [ok, ok]],
    ['a connection failure', 'unreachable', [down]],
    ['a 4xx from the host', 'deferred', [ok, later]],
    ['our unreadable copy (not the host being unreachable)', 'deferred', [unreadable]],
    ['5xx and none deferred', 'failed', [refused]],
  ])('attempt outcome: %s → %s', (_what, expected, outcomes) => {
    expect(eventsFor(outcomes).at(-1)).toMatchObject({ type: 'attempt', outcome: expected });
  });
});

describe('the verdict at the end of an attempt', () => {
  const message = { id: 'Q1', client: 'lan', from: 'app@corp.example', receivedAt: 0 };
  const input = (now: number, more: Partial<VerdictInput> = {}): VerdictInput => ({
    message,
    now,
    maxQueueLifetime: 100_000,
    retry: { initial: 1_000, max: 60_000, factor: 2 },
    relays: new Map([
      ['p', 'p[smtp.example]:587'],
      ['q', 'q[backup.example]:25'],
    ]),
    remoteMtas: new Map([
      ['p', 'smtp.example'],
      ['q', 'backup.example'],
    ]),
    lastRelay: 'p[smtp.example]:587',
    ...more,
  });
  const settle = (
    recipients: RecipientState[],
    hosts: Record<string, HostScript>,
    now = 10_000,
    more: Partial<VerdictInput> = {},
  ) => settleAttempt(drive(recipients, hosts, { now }).state, input(now, more));

  test('every recipient delivered: the message is removed, nothing reported', () => {
    const verdict = settle([pending('a')], { p: { send: each(ok) } });
    expect([verdict.end, verdict.delivered, verdict.failures, verdict.reported, verdict.inlineRejection]).toEqual([
      { kind: 'remove' },
      1,
      [],
      [],
      null,
    ]);
  });

  /** What every outcome event about recipient b of these attempts says (at 10 s, after the first transaction to p). */
  const eventAboutB = {
    queueId: 'Q1',
    client: 'lan',
    from: 'app@corp.example',
    to: 'b',
    attempt: 1,
    delayMs: 10_000,
    smarthost: 'p',
    relay: 'p[smtp.example]:587',
  };

  test('one delivered, one refused: dead/, a DSN, a bounced event; the refused one pending until the DSN', () => {
    const verdict = settle([pending('a'), pending('b')], { p: { send: by({ b: refused }) } });
    expect(verdict.end).toEqual({
      kind: 'dead',
      dead: { reason: 'rejected', at: 10_000, response: '550 5.1.1 No such user' },
    });
    expect(verdict.failures).toEqual([
      { address: 'b', response: '550 5.1.1 No such user', remoteMta: 'smtp.example', reason: 'rejected' },
    ]);
    expect(verdict.reported).toEqual([{ type: 'bounced', ...eventAboutB, response: '550 5.1.1 No such user' }]);
    expect(verdict.recipients.map((r) => r.status)).toEqual(['delivered', 'failed']);
    expect(verdict.untilReported.map((r) => [r.status, r.rejectedBy])).toEqual([
      ['delivered', undefined],
      ['pending', ['p']],
    ]);
    expect(verdict.inlineRejection).toBeNull();
  });

  test('every recipient refused now: an inline client may hear the first refusal', () => {
    expect(settle([pending('a'), pending('b')], { p: { send: each(refused) } }).inlineRejection).toEqual({
      code: 550,
      text: '550 5.1.1 No such user',
    });
  });

  test('deferred: the next attempt after the backoff, with a deferred event per waiting recipient', () => {
    const verdict = settle([pending('a'), pending('b')], { p: { send: by({ b: later }) } });
    expect(verdict.end).toEqual({
      kind: 'retry',
      at: 11_000,
      deferred: [{ type: 'deferred', ...eventAboutB, response: '451 4.7.0 Try again later', nextAttemptAt: 11_000 }],
    });
  });

  const refusedUntil = (retryAt: number): HostScript => ({
    admit: () => ({ kind: 'refused', retryAt, detail: 'p skipped: circuit open' }),
    send: each(ok),
  });
  test.each<[string, RecipientState[], Record<string, HostScript>, number, number]>([
    ['a host tried: the backoff', [pending('a')], { p: { send: each(later) } }, 10_000, 11_000],
    [
      'no host tried, one skipped: when it is eligible again',
      [pending('a')],
      { p: refusedUntil(50_000) },
      10_000,
      50_000,
    ],
    [
      'tried, and a skipped host eligible sooner than the backoff: then',
      [pending('a')],
      { q: refusedUntil(10_500), p: { send: each(later) } },
      10_000,
      10_500,
    ],
    [
      'a Retry-After longer than the backoff: no earlier than it asked',
      [pending('a')],
      { p: { send: each(throttled(30_000)) } },
      10_000,
      40_000,
    ],
    [
      'a Retry-After shorter than the backoff: the backoff',
      [pending('a')],
      { p: { send: each(throttled(200)) } },
      10_000,
      11_000,
    ],
    [
      'one recipient throttled, one merely deferred: due when the first one is',
      [pending('a'), pending('b')],
      { p: { send: by({ a: throttled(30_000), b: later }) } },
      10_000,
      11_000,
    ],
    [
      'never later than the expiry (a breaker cooldown of an hour)',
      [pending('a')],
      { p: refusedUntil(3_600_000) },
      90_000,
      100_000,
    ],
    [
      'never later than the expiry (a Retry-After longer than the message can wait)',
      [pending('a')],
      { p: { send: each(throttled(3_600_000)) } },
      90_000,
      100_000,
    ],
    [
      'a recipient held by Retry-After, no host tried: when its wait ends',
      [pending('a', { notBefore: 25_000 })],
      { p: { send: each(ok) } },
      10_000,
      25_000,
    ],
  ])('next attempt: %s', (_what, recipients, hosts, now, expected) => {
    const verdict = settle(recipients, hosts, now);
    expect(verdict.end).toMatchObject({ kind: 'retry', at: expected });
  });

  test('a reload retired the only host before it was sent anything: due at once; the deferral says why', () => {
    const verdict = settle([pending('a')], { p: { admit: () => ({ kind: 'retired' }), send: each(ok) } }, 10_000, {
      lastRelay: null,
    });
    expect(verdict.end).toMatchObject({
      kind: 'retry',
      at: 10_000,
      deferred: [{ response: 'no smart host available: p retired by a config reload', relay: null, smarthost: null }],
    });
  });

  test('a held recipient keeps its last reply in its deferred event', () => {
    const verdict = settle(
      [pending('a', { notBefore: 25_000, response: '429 Too Many Requests', smarthost: 'm365' })],
      { p: { send: each(ok) } },
      10_000,
      { lastRelay: null },
    );
    expect(verdict.end).toMatchObject({
      kind: 'retry',
      deferred: [{ response: '429 Too Many Requests', smarthost: 'm365' }],
    });
  });

  test('past max_queue_lifetime after this attempt: the waiting recipients expire into dead/ with 4.4.7', () => {
    const verdict = settle([pending('a'), pending('b')], { p: { send: by({ a: later, b: refused }) } }, 100_000);
    expect(verdict.end).toEqual({
      kind: 'dead',
      dead: { reason: 'expired', at: 100_000, response: '451 4.7.0 Try again later' },
    });
    expect(verdict.failures.map((f) => [f.address, f.reason])).toEqual([
      ['b', 'rejected'],
      ['a', 'expired'],
    ]);
    expect(verdict.reported.map((e) => e.type)).toEqual(['bounced', 'expired']);
    expect(verdict.reported[1]).toMatchObject({
      to: 'a',
      relay: null,
      response: '4.4.7 message expired after 100s in the queue; last: 451 4.7.0 Try again later',
    });
    expect(verdict.untilReported.map((r) => r.status)).toEqual(['pending', 'pending']);
  });

  test('an expiry with no host reachable names the skips', () => {
    const verdict = settle([pending('a')], { p: refusedUntil(200_000) }, 100_000, { lastRelay: null });
    expect(verdict.end).toEqual({
      kind: 'dead',
      dead: { reason: 'expired', at: 100_000, response: 'no smart host available: p skipped: circuit open' },
    });
  });

  test('recipients an earlier attempt decided count: a refused one left from before sends the message to dead/', () => {
    const verdict = settle([{ address: 'a', status: 'failed', response: '550 earlier' }, pending('b')], {
      p: { send: each(ok) },
    });
    expect(verdict.end).toEqual({ kind: 'dead', dead: { reason: 'rejected', at: 10_000, response: '550 earlier' } });
    expect([verdict.failures, verdict.delivered]).toEqual([[], 1]);
  });
});

describe('firstDue: Retry-After per recipient, the message when its first recipient is due', () => {
  test.each<[string, number, (number | undefined)[], number]>([
    ['no Retry-After: the plan', 100, [undefined, undefined], 100],
    ['every recipient asked to wait longer: the earliest of them', 100, [300, 200], 200],
    ['one recipient free at the plan: the plan', 100, [300, undefined], 100],
    ['a wait shorter than the plan: the plan', 100, [50], 100],
    ['no recipients: the plan', 100, [], 100],
  ])('%s', (_what, planned, notBefore, expected) => {
    expect(firstDue(planned, notBefore)).toBe(expected);
  });
});

test('an attempt with no recipient to offer, or no host, settles at once', () => {
  expect(nextStep(beginAttempt({ recipients: [], hosts: ['p'], attempts: 0, now: 0 }))).toEqual({ kind: 'settle' });
  expect(nextStep(beginAttempt({ recipients: [pending('a')], hosts: [], attempts: 0, now: 0 }))).toEqual({
    kind: 'settle',
  });
});
