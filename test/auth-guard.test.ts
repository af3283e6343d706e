import { parseConfig } from '../src/config/load';
import { MemoryWindowCounters } from '../src/limits/window-counters';
import type { RelayEvent } from '../src/observe/events';
import { AddressGuard } from '../src/policy/address-guard';

/**
 * The per-address guards and AUTH budgets with a clock of their own (the e2e suites run them over
 * sockets: auth-budgets.e2e, limits.e2e, slowloris.e2e).
 */

function minimal(limits: Record<string, unknown>): Record<string, unknown> {
  return {
    hostname: 'relay.test',
    spool: { dir: './spool' },
    listeners: [{ name: 'smtp', address: '127.0.0.1:2525' }],
    clients: [{ name: 'erp', networks: ['10.0.0.0/8'] }],
    routes: { default: { smarthosts: ['primary'] } },
    smarthosts: [{ name: 'primary', host: 'smtp.example', port: 587 }],
    limits,
  };
}

describe('AddressGuard with a clock of its own', () => {
  function guard(limits: Record<string, unknown> = {}) {
    let now = 1_000_000;
    const events: RelayEvent[] = [];
    const result = parseConfig(minimal(limits), '/etc', {});
    if (!result.ok) throw new Error(result.errors.join('\n'));
    const g = new AddressGuard({
      limits: result.config.limits,
      counters: new MemoryWindowCounters(),
      usernameCounters: new MemoryWindowCounters(),
      observer: { emit: (e) => events.push(e) },
      now: () => now,
    });
    return {
      g,
      events,
      advance: (ms: number) => {
        now += ms;
      },
    };
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
      kind: 'failure',
      delayMs: 0,
      refusal: {
        code: 421,
        message: '4.7.0 Too many failed authentications from [192.0.2.9]; try again in 300s',
        reason: 'rate_limited',
      },
    });
    advance(60_000);
    const refused = await g.authenticate(from('192.0.2.9'), right);
    expect(refused.kind === 'refused' && refused.refusal.message).toBe(
      '4.7.0 Too many failed authentications from [192.0.2.9]; try again in 240s',
    );
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

  test('a username guessed from many addresses: slowed, then 454; not from an address it logged in from', async () => {
    const { g, events, advance } = guard({
      auth_failures: { max: 5, window: '1m', lockout: '1m', delay: '0s' },
      auth_failures_per_username: { slow_after: 2, max: 4, window: '1h', delay: '3s' },
    });
    expect((await g.authenticate(from('192.0.2.99'), right)).kind).toBe('success');
    const answers = [];
    for (let i = 1; i <= 5; i++) answers.push(await g.authenticate(from(`192.0.2.${i}`), wrong));
    expect(answers.slice(0, 4)).toEqual([
      { kind: 'failure', delayMs: 0 },
      { kind: 'failure', delayMs: 0 },
      { kind: 'failure', delayMs: 3000 },
      { kind: 'failure', delayMs: 3000 },
    ]);
    expect(answers[4]).toEqual({
      kind: 'refused',
      refusal: {
        code: 454,
        message: '4.7.0 Too many failed authentications for this username; try again in 3600s',
        reason: 'rate_limited',
      },
    });
    // The right password from a new address is refused too (no check: nothing to learn from it) …
    expect((await g.authenticate(from('192.0.2.50'), right)).kind).toBe('refused');
    // … but not from the address it authenticated from, nor for another username.
    expect(await g.authenticate(from('192.0.2.99'), right)).toEqual({ kind: 'success', value: 'webshop' });
    expect((await g.authenticate(from('192.0.2.50', 'other'), right)).kind).toBe('success');
    expect(events.filter((e) => e.type === 'auth_delayed').map((e) => e.type === 'auth_delayed' && e.scope)).toEqual([
      'username',
      'username',
    ]);
    advance(3_600_000);
    expect((await g.authenticate(from('192.0.2.50'), right)).kind).toBe('success');
  });

  test("an IPv6 host moving within its /64 gets ipv6_hosts_per_prefix hosts' guesses, then the /64 locks", async () => {
    const { g } = guard({ auth_failures: { max: 2, delay: '0s' }, ipv6_hosts_per_prefix: 3 });
    for (let i = 1; i <= 5; i++) {
      const outcome = await g.authenticate(from(`2001:db8:1:2::${i}`, `x${i}`, '(unknown)'), wrong);
      expect(outcome).toEqual({ kind: 'failure', delayMs: 0 });
    }
    const sixth = await g.authenticate(from('2001:db8:1:2::6', 'x6', '(unknown)'), wrong);
    expect(sixth.kind === 'failure' && sixth.refusal?.message).toBe(
      '4.7.0 Too many failed authentications from [2001:db8:1:2::/64]; try again in 900s',
    );
    expect((await g.connect('2001:db8:1:2:dead:beef:0:1', '(unknown)', false))?.code).toBe(421);
    const refused = await g.authenticate(from('2001:db8:1:2::99', 'x', '(unknown)'), right);
    expect(refused.kind === 'refused' && refused.refusal.message).toMatch(
      /^4\.7\.0 Too many failed authentications from \[2001:db8:1:2::\/64\]/,
    );
    // Another /64, and a network client inside the locked one, are not affected.
    expect(await g.connect('2001:db8:1:3::1', '(unknown)', false)).toBeUndefined();
    expect(await g.connect('2001:db8:1:2::7', 'lan', true)).toBeUndefined();
    expect(await g.authenticate({ ...from('2001:db8:1:2::7', 'webshop', 'lan'), networkClient: true }, right)).toEqual({
      kind: 'success',
      value: 'webshop',
    });
  });

  test('IPv6: each host has the stranger cap, its /64 ipv6_hosts_per_prefix times it; clients: own count', async () => {
    const { g } = guard({ connections_per_stranger: 2, ipv6_hosts_per_prefix: 2 });
    for (const host of ['::1', '::1', '::2', '::2']) {
      expect(await g.connect(`2001:db8:5:6${host}`, '(unknown)', false)).toBeUndefined();
    }
    expect((await g.connect('2001:db8:5:6::1', '(unknown)', false))?.message).toBe(
      '4.7.0 Too many connections from [2001:db8:5:6::1] (at most 2 at once); try again later',
    );
    expect((await g.connect('2001:db8:5:6::3', '(unknown)', false))?.message).toBe(
      '4.7.0 Too many connections from [2001:db8:5:6::/64] (at most 4 at once); try again later',
    );
    for (let i = 0; i < 5; i++) expect(await g.connect('2001:db8:5:6::10', 'lan', true)).toBeUndefined();
    g.disconnect('2001:db8:5:6::2', false);
    expect(await g.connect('2001:db8:5:6::3', '(unknown)', false)).toBeUndefined();
  });

  test('a stranger has a connection rate by default (connection_rate_per_stranger); network clients none', async () => {
    const { g, advance } = guard({ connection_rate_per_stranger: { window: '1m', max: 3 } });
    for (let i = 0; i < 3; i++) {
      expect(await g.connect('192.0.2.60', '(unknown)', false)).toBeUndefined();
      g.disconnect('192.0.2.60', false);
    }
    expect((await g.connect('192.0.2.60', '(unknown)', false))?.message).toBe(
      '4.7.0 Connection rate limit for [192.0.2.60]: 3 connections per 1m; try again in 60s',
    );
    for (let i = 0; i < 10; i++) {
      expect(await g.connect('10.0.0.9', 'erp', true)).toBeUndefined();
      g.disconnect('10.0.0.9', true);
    }
    advance(60_000);
    expect(await g.connect('192.0.2.60', '(unknown)', false)).toBeUndefined();
  });

  test('a stranger has a connection cap by default; a network client only connections_per_address', async () => {
    const { g } = guard();
    for (let i = 0; i < 10; i++) expect(await g.connect('192.0.2.40', '(unknown)', false)).toBeUndefined();
    expect((await g.connect('192.0.2.40', '(unknown)', false))?.message).toBe(
      '4.7.0 Too many connections from [192.0.2.40] (at most 10 at once); try again later',
    );
    for (let i = 0; i < 50; i++) expect(await g.connect('10.0.0.1', 'erp', true)).toBeUndefined();
    const capped = guard({ connections_per_address: 4, connections_per_stranger: 20 });
    for (let i = 0; i < 4; i++) expect(await capped.g.connect('192.0.2.41', '(unknown)', false)).toBeUndefined();
    expect((await capped.g.connect('192.0.2.41', '(unknown)', false))?.message).toMatch(/at most 4 at once/);
  });

  test('concurrent connections are counted until disconnect; a refused connection holds no slot', async () => {
    const { g, events } = guard({ connections_per_address: 2, connection_rate: { window: '1m', max: 3 } });
    expect(await g.connect('192.0.2.1', 'lan', true)).toBeUndefined();
    expect(await g.connect('192.0.2.1', 'lan', true)).toBeUndefined();
    expect((await g.connect('192.0.2.1', 'lan', true))?.message).toBe(
      '4.7.0 Too many connections from [192.0.2.1] (at most 2 at once); try again later',
    );
    g.disconnect('192.0.2.1', true);
    expect(await g.connect('192.0.2.1', 'lan', true)).toBeUndefined();
    g.disconnect('192.0.2.1', true);
    expect((await g.connect('192.0.2.1', 'lan', true))?.message).toBe(
      '4.7.0 Connection rate limit for [192.0.2.1]: 3 connections per 1m; try again in 60s',
    );
    // Each refusal is counted under its own bounded label.
    expect(events.filter((e) => e.type === 'rate_limited').map((e) => e.type === 'rate_limited' && e.limit)).toEqual([
      'connections_concurrent',
      'connections_1m',
    ]);
  });
});

describe("AUTH budgets: a username's known addresses", () => {
  test('made-up usernames cannot push a known address out of a bounded memory: it stays exempt', async () => {
    const result = parseConfig(
      minimal({
        auth_failures: { max: 1000, delay: '0s' },
        auth_failures_per_username: { slow_after: 1, max: 2, delay: '0s' },
      }),
      '/etc',
      {},
    );
    if (!result.ok) throw new Error(result.errors.join('\n'));
    const g = new AddressGuard({
      limits: result.config.limits,
      counters: new MemoryWindowCounters(10_000),
      // Small on purpose: 50 windows, where a relay keeps max_tracked_addresses.
      usernameCounters: new MemoryWindowCounters(50),
      knownCounters: new MemoryWindowCounters(50),
      observer: { emit: () => undefined },
    });
    const attempt = (remoteAddress: string, username: string) => ({ remoteAddress, username, client: '(unknown)' });
    const right = () => Promise.resolve('webshop');
    const wrong = () => Promise.resolve(undefined);
    expect((await g.authenticate(attempt('192.0.2.80', 'webshop'), right)).kind).toBe('success');
    // 500 made-up usernames, each a window of its own in the username store.
    for (let i = 0; i < 500; i++) await g.authenticate(attempt(`198.51.100.${i % 200}`, `nobody${i}`), wrong);
    // webshop's own budget spent from elsewhere: refused there, still accepted from its known address.
    for (let i = 0; i < 2; i++) await g.authenticate(attempt('203.0.113.1', 'webshop'), wrong);
    expect((await g.authenticate(attempt('203.0.113.2', 'webshop'), right)).kind).toBe('refused');
    expect(await g.authenticate(attempt('192.0.2.80', 'webshop'), right)).toEqual({
      kind: 'success',
      value: 'webshop',
    });
  });
});
