import { admit, classify, CLOSED, eligibleAt, isUp, probeNow, record, type BreakerState } from '../src/forward/breaker';
import { clientReply } from '../src/forward/inline';
import type { Outcome } from '../src/forward/outcome';
import { decideQuota, formatWindow, SmartHostQuota } from '../src/forward/quota';
import { MemoryWindowCounters } from '../src/limits/window-counters';

/** The pure decisions behind the smart-host contract, as tables (the clock is a parameter). */

describe('circuit breaker transitions', () => {
  const config = { failures: 3, cooldown: 1000 };
  const fail = (state: BreakerState, now: number) => record(state, 'connection_failure', now, config);

  test.each<[string, BreakerState, 'ok' | 'connection_failure', number, BreakerState]>([
    [
      'closed + failure below the threshold counts it',
      { kind: 'closed', failures: 1 },
      'connection_failure',
      50,
      { kind: 'closed', failures: 2 },
    ],
    [
      'closed + the threshold-th failure opens for a cooldown',
      { kind: 'closed', failures: 2 },
      'connection_failure',
      50,
      { kind: 'open', until: 1050, failures: 3 },
    ],
    [
      'closed + success resets the count (failures must be consecutive)',
      { kind: 'closed', failures: 2 },
      'ok',
      50,
      CLOSED,
    ],
    [
      'half open + probe failed opens again for a new cooldown',
      { kind: 'half_open', probeAt: 2000, failures: 3 },
      'connection_failure',
      2100,
      { kind: 'open', until: 3100, failures: 4 },
    ],
    ['half open + probe ok closes', { kind: 'half_open', probeAt: 2000, failures: 3 }, 'ok', 2100, CLOSED],
    [
      'open + late failure of an older delivery keeps the cooldown',
      { kind: 'open', until: 1050, failures: 3 },
      'connection_failure',
      60,
      { kind: 'open', until: 1050, failures: 4 },
    ],
    [
      'open + late success of an older delivery closes (the host works)',
      { kind: 'open', until: 1050, failures: 3 },
      'ok',
      60,
      CLOSED,
    ],
  ])('%s', (_what, state, result, now, expected) => {
    expect(record(state, result, now, config)).toEqual(expected);
  });

  test.each<[string, BreakerState, number, ReturnType<typeof admit>]>([
    ['closed admits', CLOSED, 0, { admitted: true, state: CLOSED }],
    [
      'open during the cooldown refuses until its end',
      { kind: 'open', until: 1050, failures: 3 },
      1049,
      { admitted: false, retryAt: 1050 },
    ],
    [
      'open after the cooldown admits exactly one probe',
      { kind: 'open', until: 1050, failures: 3 },
      1050,
      { admitted: true, state: { kind: 'half_open', probeAt: 1050, failures: 3 } },
    ],
    [
      'half open with a probe under way refuses the rest',
      { kind: 'half_open', probeAt: 1050, failures: 3 },
      1500,
      { admitted: false, retryAt: 2050 },
    ],
    [
      'half open whose probe never reported lets another probe go after a cooldown',
      { kind: 'half_open', probeAt: 1050, failures: 3 },
      2050,
      { admitted: true, state: { kind: 'half_open', probeAt: 2050, failures: 3 } },
    ],
  ])('%s', (_what, state, now, expected) => {
    expect(admit(state, now, config)).toEqual(expected);
  });

  test('a whole cycle: three failures open it, the probe after the cooldown closes it; up only while closed', () => {
    let state: BreakerState = CLOSED;
    for (const now of [0, 10, 20]) state = fail(state, now);
    expect(state).toEqual({ kind: 'open', until: 1020, failures: 3 });
    expect(isUp(state)).toBe(false);
    expect(eligibleAt(state, config)).toBe(1020);
    const probe = admit(state, 1020, config);
    if (!probe.admitted) throw new Error('probe refused');
    expect(admit(probe.state, 1021, config).admitted).toBe(false);
    expect(isUp(probe.state)).toBe(false);
    state = record(probe.state, 'ok', 1030, config);
    expect(isUp(state)).toBe(true);
  });

  const delivered: Outcome = { kind: 'delivered', reply: { code: 250, text: '250 ok' } };
  const refused: Outcome = { kind: 'transient', cause: 'connect', detail: 'ECONNREFUSED' };
  const tls: Outcome = { kind: 'transient', cause: 'tls', detail: 'ETLS' };
  const deferred: Outcome = {
    kind: 'transient',
    cause: 'reply',
    reply: { code: 451, text: '451 4.7.0 later' },
    detail: '451',
  };
  const rejected: Outcome = { kind: 'permanent', reply: { code: 550, text: '550 5.1.1 no' } };
  test.each<[string, Outcome[], 'ok' | 'connection_failure']>([
    ['all refused at connect', [refused, refused], 'connection_failure'],
    ['TLS failure', [tls], 'connection_failure'],
    ['a 4xx is the host talking', [deferred], 'ok'],
    ['a 5xx is the host talking', [rejected], 'ok'],
    ['some delivered', [delivered, deferred], 'ok'],
  ])('classify: %s → %s', (_what, outcomes, expected) => {
    expect(classify(new Map(outcomes.map((o, i) => [`r${i}@x`, o])))).toBe(expected);
  });

  test('an admin flush (probeNow): every delivery is admitted as a probe at once; the first report decides', () => {
    const open: BreakerState = { kind: 'open', until: 1_000_000, failures: 3 };
    const probing = probeNow(open, 500);
    expect(probing).toEqual({ kind: 'half_open', probeAt: 500, failures: 3, everyone: true });
    expect(eligibleAt(probing, config)).toBe(-Infinity);
    expect(admit(probing, 501, config)).toEqual({ admitted: true, state: probing });
    expect(admit(probing, 502, config)).toEqual({ admitted: true, state: probing });
    expect(record(probing, 'ok', 600, config)).toEqual(CLOSED);
    expect(record(probing, 'connection_failure', 600, config)).toEqual({ kind: 'open', until: 1600, failures: 4 });
    // A probe already under way: the others may go too. A closed breaker is left as it is.
    expect(probeNow({ kind: 'half_open', probeAt: 400, failures: 3 }, 500)).toMatchObject({
      kind: 'half_open',
      everyone: true,
    });
    expect(probeNow(CLOSED, 500)).toBe(CLOSED);
  });
});

describe('quota decisions', () => {
  test.each<[string, number[], number[], number, ReturnType<typeof decideQuota>]>([
    ['no limits', [], [], 5, { kind: 'admit', recipients: 5 }],
    ['room everywhere', [3], [100], 5, { kind: 'admit', recipients: 5 }],
    ['message window full', [0, 10], [100], 5, { kind: 'exhausted', unit: 'messages' }],
    ['recipient window smaller than the message: part of it now', [3], [2, 50], 5, { kind: 'admit', recipients: 2 }],
    ['recipient window full', [3], [0], 1, { kind: 'exhausted', unit: 'recipients' }],
  ])('%s', (_what, messages, recipients, wanted, expected) => {
    expect(decideQuota(messages, recipients, wanted)).toEqual(expected);
  });

  test.each([
    [60_000, '1m'],
    [86_400_000, '1d'],
    [90_000, '90s'],
    [2000, '2s'],
    [1500, '1500ms'],
    [3_600_000, '1h'],
  ])('window %p ms is labelled %p', (ms, label) => {
    expect(formatWindow(ms)).toBe(label);
  });

  test('SmartHostQuota counts messages and recipients in their windows and says when the full one frees', async () => {
    const quota = new SmartHostQuota(
      'm365',
      [
        { window: 60_000, messages: 2 },
        { window: 86_400_000, recipients: 5 },
      ],
      new MemoryWindowCounters(),
    );
    expect(await quota.admit(3, 0)).toEqual({ ok: true, recipients: 3 });
    expect(await quota.admit(3, 1000)).toEqual({ ok: true, recipients: 2 });
    expect(await quota.remaining(1000)).toEqual([
      { window: '1m', unit: 'messages', remaining: 0 },
      { window: '1d', unit: 'recipients', remaining: 0 },
    ]);
    const full = await quota.admit(1, 2000);
    expect(full).toMatchObject({ ok: false, retryAt: 60_000 });
    expect(full.ok ? '' : full.detail).toMatch(/^m365 quota exhausted \(2 messages per 1m\) until /);
    // The minute frees; the day's recipients do not, and the refused message costs no message quota.
    expect(await quota.admit(1, 60_000)).toMatchObject({ ok: false, retryAt: 86_400_000 });
    expect(await quota.remaining(60_000)).toEqual([
      { window: '1m', unit: 'messages', remaining: 2 },
      { window: '1d', unit: 'recipients', remaining: 0 },
    ]);
  });
});

describe('inline verdict reply line', () => {
  test.each([
    [
      { code: 550, text: '550 5.1.1 <x@example.com>: Recipient address rejected' },
      { code: 550, message: '5.1.1 <x@example.com>: Recipient address rejected' },
    ],
    [
      { code: 554, text: '554 Transaction failed' },
      { code: 554, message: '5.0.0 Transaction failed' },
    ],
    [
      { code: 550, text: '550-5.7.1 Message refused\n550 5.7.1 see https://provider.example/policy' },
      { code: 550, message: '5.7.1 Message refused see https://provider.example/policy' },
    ],
    [
      { code: 550, text: '550 5.7.1 bad\r\nbytes\u00e9' },
      { code: 550, message: '5.7.1 bad bytes?' },
    ],
  ])('%p → %p', (reply, expected) => {
    expect(clientReply(reply)).toEqual(expected);
  });
});
