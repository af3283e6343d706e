import { parseConfig } from '../src/config/load';
import { AddressGuard } from '../src/policy/address-guard';
import type { RelayEvent } from '../src/observe/events';
import { MemoryWindowCounters } from '../src/limits/window-counters';

function minimal(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    hostname: 'relay.test',
    max_message_size: '10MiB',
    spool: { dir: './spool' },
    listeners: [{ name: 'smtp', address: '127.0.0.1:2525' }],
    clients: [{ name: 'erp', networks: ['10.0.0.0/8'], policy: 'legacy' }],
    routes: { default: { smarthosts: ['primary'] } },
    smarthosts: [{ name: 'primary', host: 'smtp.example', port: 587 }],
    ...overrides,
  };
}

describe('policy and limits config', () => {
  test('a full policy parses: globs and regexes compiled once, units converted, paths resolved against the config file', () => {
    const result = parseConfig(minimal({
      policies: {
        legacy: {
          allowed_senders: ['*@corp.example'],
          denied_recipients: ['*@competitor.example'],
          max_message_size: '5MiB',
          max_recipients: 50,
          rate_limits: [{ window: '1m', messages: 60 }, { window: '1h', recipients: 2000, bytes: '100MiB' }],
          blocked_attachments: ['EXE', '.js'],
          header_rules: [{ header: 'Subject', match: 'lottery', action: 'reject' }],
          suppressed_recipients: 'lists/suppressed.txt',
        },
      },
    }), '/etc/smarthop', {});
    if (!result.ok) throw new Error(result.errors.join('\n'));
    const policy = result.config.policies.legacy;
    expect(policy.max_message_size).toBe(5 * 1024 * 1024);
    expect(policy.rate_limits).toEqual([{ window: 60_000, messages: 60 }, { window: 3_600_000, recipients: 2000, bytes: 100 * 1024 * 1024 }]);
    expect(policy.blocked_attachments).toEqual(['exe', 'js']);
    expect(policy.header_rules[0].match.source).toBe('lottery');
    expect(policy.header_rules[0].match.test('You won the LOTTERY')).toBe(true);
    expect(policy.suppressed_recipients).toBe('/etc/smarthop/lists/suppressed.txt');
    expect(policy.allowed_senders?.patterns).toEqual(['*@corp.example']);
    expect(result.config.limits).toEqual({
      connections_per_stranger: 10,
      auth_failures: { max: 10, window: 600_000, lockout: 900_000, delay: 1000 },
      auth_failures_per_username: { slow_after: 10, max: 50, window: 3_600_000, delay: 2000 },
      max_tracked_addresses: 100_000,
      ipv6_prefix: 64,
    });
  });

  test('every policy error is reported with its path', () => {
    const result = parseConfig(minimal({
      policies: {
        legacy: {
          allowed_senders: ['*@corp.example', 'bü*.example'],
          denied_recipients: ['!x@y'],
          max_recipients: 5000,
          rate_limits: [{ window: '1m' }, { window: 'soon', messages: 1 }],
          blocked_attachments: ['a b'],
          header_rules: [{ header: 'Subject', match: '(unclosed', action: 'reject' }, { header: 'Bad Name', match: 'x', action: 'drop' }],
        },
      },
      limits: { connection_rate: { window: '1m', max: 0 }, surprise: 1 },
    }), '/etc', {});
    const errors = result.ok ? [] : result.errors;
    const expected = [
      /^policies\.legacy\.allowed_senders\[1\]: a glob inside the non-ASCII label "bü\*"/,
      /^policies\.legacy\.denied_recipients\[0\]: negated patterns are not supported/,
      /^policies\.legacy\.max_recipients: /,
      /^policies\.legacy\.rate_limits\[0\]: a rate limit needs messages, recipients or bytes/,
      /^policies\.legacy\.rate_limits\[1\]\.window: expected a duration/,
      /^policies\.legacy\.blocked_attachments\[0\]: expected a file-name extension/,
      /^policies\.legacy\.header_rules\[0\]\.match: invalid regular expression: /,
      /^policies\.legacy\.header_rules\[1\]\.header: expected a header field name/,
      /^policies\.legacy\.header_rules\[1\]\.action: /,
      /^limits\.connection_rate\.max: /,
      /^limits: .*surprise/,
    ];
    for (const pattern of expected) expect(errors.some((e) => pattern.test(e))).toBe(true);
  });

  test('header rules are RE2 patterns: nested repeats load (RE2 runs them in linear time), lookaround is refused with its path', () => {
    const rules = [
      { header: 'Subject', match: '^(a+)+$', action: 'reject' },
      { header: 'Subject', match: '(?<!re: )lottery', action: 'reject' },
      { header: 'X-Mailer', match: '^PHPMailer [0-9.]+', action: 'strip' },
    ];
    const result = parseConfig(minimal({ policies: { legacy: { header_rules: rules } } }), '/etc', {});
    const errors = result.ok ? [] : result.errors;
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatch(/^policies\.legacy\.header_rules\[1\]\.match: invalid regular expression: .*\(header rules use RE2 syntax: no lookaround, no backreferences\)$/);

    const loaded = parseConfig(minimal({ policies: { legacy: { header_rules: [rules[0], rules[2]] } } }), '/etc', {});
    if (!loaded.ok) throw new Error(loaded.errors.join('\n'));
    expect(loaded.config.policies.legacy.header_rules.map((rule) => rule.match.source)).toEqual(['^(a+)+$', '^PHPMailer [0-9.]+']);
  });

  test('cross-checks: a policy may only lower max_message_size; one limit per dimension and window', () => {
    const result = parseConfig(minimal({
      policies: { legacy: { max_message_size: '20MiB', rate_limits: [{ window: '1m', messages: 10 }, { window: '60s', messages: 20 }] } },
    }), '/etc', {});
    expect(result.ok ? [] : result.errors).toEqual([
      "policies.legacy.max_message_size: a policy may only lower max_message_size (the relay's is 10485760 bytes)",
      'policies.legacy.rate_limits[1]: a second messages limit for the same window',
    ]);
  });
});

describe('AddressGuard with a clock of its own', () => {
  function guard(limits: Record<string, unknown> = {}) {
    let now = 1_000_000;
    const events: RelayEvent[] = [];
    const result = parseConfig(minimal({ policies: { legacy: {} }, limits }), '/etc', {});
    if (!result.ok) throw new Error(result.errors.join('\n'));
    const g = new AddressGuard({
      limits: result.config.limits, counters: new MemoryWindowCounters(), usernameCounters: new MemoryWindowCounters(),
      observer: { emit: (e) => events.push(e) }, now: () => now,
    });
    return { g, events, advance: (ms: number) => { now += ms; } };
  }
  const wrong = () => Promise.resolve(undefined);
  const right = () => Promise.resolve('webshop');
  const from = (remoteAddress: string, username = 'webshop', client = 'lan') => ({ remoteAddress, username, client });

  test('failures lock the address out at the limit, for the lockout, then it may try again', async () => {
    const { g, advance } = guard({ auth_failures: { max: 3, window: '1m', lockout: '5m', delay: '2s' } });
    expect(await g.authenticate(from('192.0.2.9'), wrong)).toEqual({ kind: 'failure', delayMs: 0 });
    expect(await g.authenticate(from('192.0.2.9'), wrong)).toEqual({ kind: 'failure', delayMs: 2000 });
    const third = await g.authenticate(from('192.0.2.9'), wrong);
    expect(third).toEqual({
      kind: 'failure', delayMs: 0,
      refusal: { code: 421, message: '4.7.0 Too many failed authentications from [192.0.2.9]; try again in 300s', reason: 'rate_limited' },
    });
    advance(60_000);
    const refused = await g.authenticate(from('192.0.2.9'), right);
    expect(refused.kind === 'refused' && refused.refusal.message).toBe('4.7.0 Too many failed authentications from [192.0.2.9]; try again in 240s');
    expect((await g.connect('192.0.2.9', '(unknown)', false))?.code).toBe(421);
    // A network client on that address still connects for its own mail; only its AUTH is refused.
    expect(await g.connect('192.0.2.9', 'lan', true)).toBeUndefined();
    expect(await g.authenticate(from('192.0.2.10'), right)).toEqual({ kind: 'success', value: 'webshop' });
    advance(240_000);
    expect(await g.authenticate(from('192.0.2.9'), right)).toEqual({ kind: 'success', value: 'webshop' });
    expect(await g.connect('192.0.2.9', '(unknown)', false)).toBeUndefined();
  });

  test('a success gives its reserved failure back: right passwords never add up to a lockout', async () => {
    const { g } = guard({ auth_failures: { max: 2, window: '1m', lockout: '5m', delay: '0s' } });
    for (let i = 0; i < 10; i++) expect((await g.authenticate(from('192.0.2.20'), right)).kind).toBe('success');
    expect(await g.authenticate(from('192.0.2.20'), wrong)).toEqual({ kind: 'failure', delayMs: 0 });
    expect((await g.authenticate(from('192.0.2.20'), right)).kind).toBe('success');
  });

  test('AUTHs arriving at once from one address: at most max checks, one at a time', async () => {
    const { g } = guard({ auth_failures: { max: 5, window: '1m', lockout: '5m', delay: '0s' } });
    let running = 0;
    let most = 0;
    let checks = 0;
    const slowWrong = async () => {
      checks++;
      most = Math.max(most, ++running);
      await new Promise((resolve) => setImmediate(resolve));
      running--;
      return undefined;
    };
    const outcomes = await Promise.all(Array.from({ length: 50 }, () => g.authenticate(from('192.0.2.30'), slowWrong)));
    expect(checks).toBe(5);
    expect(most).toBe(1);
    expect(outcomes.filter((o) => o.kind === 'refused')).toHaveLength(45);
  });

  test('a username guessed from many addresses is slowed past slow_after and refused (454) past max, except from an address it authenticated from', async () => {
    const { g, events, advance } = guard({
      auth_failures: { max: 5, window: '1m', lockout: '1m', delay: '0s' },
      auth_failures_per_username: { slow_after: 2, max: 4, window: '1h', delay: '3s' },
    });
    expect((await g.authenticate(from('192.0.2.99'), right)).kind).toBe('success');
    const answers = [];
    for (let i = 1; i <= 5; i++) answers.push(await g.authenticate(from(`192.0.2.${i}`), wrong));
    expect(answers.slice(0, 4)).toEqual([
      { kind: 'failure', delayMs: 0 }, { kind: 'failure', delayMs: 0 }, { kind: 'failure', delayMs: 3000 }, { kind: 'failure', delayMs: 3000 },
    ]);
    expect(answers[4]).toEqual({
      kind: 'refused', refusal: { code: 454, message: '4.7.0 Too many failed authentications for this username; try again in 3600s', reason: 'rate_limited' },
    });
    // The right password from a new address is refused too (no check: nothing to learn from it) …
    expect((await g.authenticate(from('192.0.2.50'), right)).kind).toBe('refused');
    // … but not from the address it authenticated from, nor for another username.
    expect(await g.authenticate(from('192.0.2.99'), right)).toEqual({ kind: 'success', value: 'webshop' });
    expect((await g.authenticate(from('192.0.2.50', 'other'), right)).kind).toBe('success');
    expect(events.filter((e) => e.type === 'auth_delayed').map((e) => e.type === 'auth_delayed' && e.scope)).toEqual(['username', 'username']);
    advance(3_600_000);
    expect((await g.authenticate(from('192.0.2.50'), right)).kind).toBe('success');
  });

  test('an IPv6 attacker cannot escape the lockout by moving within its /64', async () => {
    const { g } = guard({ auth_failures: { max: 2 } });
    await g.authenticate(from('2001:db8:1:2::1', 'x', '(unknown)'), wrong);
    const second = await g.authenticate(from('2001:db8:1:2::2', 'x', '(unknown)'), wrong);
    expect(second.kind === 'failure' && second.refusal?.code).toBe(421);
    expect((await g.connect('2001:db8:1:2:dead:beef:0:1', '(unknown)', false))?.code).toBe(421);
    expect(await g.connect('2001:db8:1:3::1', '(unknown)', false)).toBeUndefined();
  });

  test('a stranger has a connection cap by default; a network client has none unless connections_per_address says so', async () => {
    const { g } = guard();
    for (let i = 0; i < 10; i++) expect(await g.connect('192.0.2.40', '(unknown)', false)).toBeUndefined();
    expect((await g.connect('192.0.2.40', '(unknown)', false))?.message).toBe('4.7.0 Too many connections from [192.0.2.40] (at most 10 at once); try again later');
    for (let i = 0; i < 50; i++) expect(await g.connect('10.0.0.1', 'erp', true)).toBeUndefined();
    const capped = guard({ connections_per_address: 4, connections_per_stranger: 20 });
    for (let i = 0; i < 4; i++) expect(await capped.g.connect('192.0.2.41', '(unknown)', false)).toBeUndefined();
    expect((await capped.g.connect('192.0.2.41', '(unknown)', false))?.message).toMatch(/at most 4 at once/);
  });

  test('concurrent connections are counted until disconnect; a refused connection holds no slot', async () => {
    const { g, events } = guard({ connections_per_address: 2, connection_rate: { window: '1m', max: 3 } });
    expect(await g.connect('192.0.2.1', 'lan', true)).toBeUndefined();
    expect(await g.connect('192.0.2.1', 'lan', true)).toBeUndefined();
    expect((await g.connect('192.0.2.1', 'lan', true))?.message).toBe('4.7.0 Too many connections from [192.0.2.1] (at most 2 at once); try again later');
    g.disconnect('192.0.2.1');
    expect(await g.connect('192.0.2.1', 'lan', true)).toBeUndefined();
    g.disconnect('192.0.2.1');
    expect((await g.connect('192.0.2.1', 'lan', true))?.message).toBe('4.7.0 Connection rate limit for [192.0.2.1]: 3 connections per 1m; try again in 60s');
    // Each refusal is counted under its own bounded label.
    expect(events.filter((e) => e.type === 'rate_limited').map((e) => e.type === 'rate_limited' && e.limit)).toEqual(['connections_concurrent', 'connections_1m']);
  });
});
