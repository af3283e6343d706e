import { parseConfig } from '../src/config/load';
import { MemoryWindowCounters } from '../src/limits/window-counters';
import { AddressGuard } from '../src/policy/address-guard';

/**
 * Attack: on an IPv6 LAN, one host spends the budgets of every other host.
 *
 * Every per-address guard counts an IPv6 address by its /64 (`limits.ipv6_prefix`, default 64:
 * src/policy/address-key.ts). That is right for a server on the internet, where one host is handed a
 * whole /64; on a LAN the /64 is the whole LAN: every host of the office shares it. So one host that
 * sends 10 wrong passwords locks out every stranger of the LAN (a web shop or a scanner that
 * authenticates with its own credential) for `lockout` at connect, and one host holding
 * `connections_per_stranger` (10) idle connections leaves none for any other stranger of the LAN.
 *
 * This test drives the guard the listener uses (AddressGuard) directly: loopback has one IPv6
 * address (::1), so two hosts of one /64 cannot be had over real sockets on this machine without
 * changing its network configuration. Over sockets on a dual-stack LAN the same replies come back
 * (421 4.7.0 at connect).
 */

function guard() {
  const result = parseConfig(
    {
      hostname: 'relay.test',
      spool: { dir: './spool' },
      listeners: [{ name: 'smtp', address: '[::]:2525' }],
      clients: [{ name: 'erp', networks: ['2001:db8:1::10/128'] }],
      routes: { default: { smarthosts: ['primary'] } },
      smarthosts: [{ name: 'primary', host: 'smtp.example', port: 587 }],
    },
    '/etc',
    {},
  );
  if (!result.ok) throw new Error(result.errors.join('\n'));
  return new AddressGuard({
    limits: result.config.limits,
    counters: new MemoryWindowCounters(),
    usernameCounters: new MemoryWindowCounters(),
    observer: { emit: () => undefined },
  });
}

const attacker = '2001:db8:1::66';
const webshop = '2001:db8:1::20';

describe("attack: one IPv6 host spends its /64 neighbours' budgets", () => {
  test('ten wrong passwords from one host do not lock another host of the LAN out', async () => {
    const g = guard();
    for (let i = 0; i < 10; i++) {
      const attempt = { remoteAddress: attacker, username: `guess${i}`, client: '(unknown)' };
      await g.authenticate(attempt, async () => undefined);
    }
    expect(await g.connect(attacker, '(unknown)', false)).toMatchObject({ code: 421 });
    // A different host: its own budget is untouched, it has not failed once.
    expect(await g.connect(webshop, '(unknown)', false)).toBeUndefined();
  });

  test('ten idle connections from one host leave room for another host of the LAN', async () => {
    const g = guard();
    for (let i = 0; i < 10; i++) expect(await g.connect(attacker, '(unknown)', false)).toBeUndefined();
    expect(await g.connect(attacker, '(unknown)', false)).toMatchObject({ code: 421 });
    expect(await g.connect(webshop, '(unknown)', false)).toBeUndefined();
  });
});
