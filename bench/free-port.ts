import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';

/**
 * Where the kernel hands out ports for `listen(0)` and for outgoing connections' source ports. A
 * port bound and released again is only free until one of those takes it: another suite running
 * beside this one, or any connection's source port, could get it between our check and our use. A
 * "down" smart host would then answer, or a relay child started on it would fail with EADDRINUSE
 * (the bench and the tests both start relays on ports picked here). Ports below this range are
 * handed out by nobody but freePort.
 */
function ephemeralPortRange(): [number, number] {
  try {
    const [low, high] = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/).map(Number);
    if (low > 0 && high >= low) return [low, high];
  } catch {
    // not Linux: the IANA dynamic range
  }
  return [49152, 65535];
}

const PORTS_BELOW_EPHEMERAL: [number, number] | null = (() => {
  const [low] = ephemeralPortRange();
  return low > 12_000 ? [10_000, low] : null;
})();

async function listensOn(port: number): Promise<number | null> {
  const server = createServer();
  const bound = await new Promise<boolean>((resolve) => {
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => resolve(true));
  });
  if (!bound) return null;
  const { port: actual } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return actual;
}

/**
 * A port nothing listens on (bound, then released): a smart host that is down, or one a test starts
 * later. Taken below the kernel's ephemeral range when there is room, so no `listen(0)` or outgoing
 * connection elsewhere can take it meanwhile; at random, so parallel suites do not pick alike.
 */
export async function freePort(): Promise<number> {
  if (PORTS_BELOW_EPHEMERAL) {
    const [from, to] = PORTS_BELOW_EPHEMERAL;
    for (let tries = 0; tries < 50; tries++) {
      const port = await listensOn(from + Math.floor(Math.random() * (to - from)));
      if (port !== null) return port;
    }
  }
  const port = await listensOn(0);
  if (port === null) throw new Error('no free port on 127.0.0.1');
  return port;
}
