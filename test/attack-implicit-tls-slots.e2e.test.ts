import { connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { makeCertificate, metricsText, metricValue, relayPerDescribe, waitFor } from './helpers/harness';

/**
 * Attack: slowloris before the TLS handshake of an implicit-TLS listener (port 465 style).
 *
 * smtp-server keeps sockets whose TLS handshake has not finished in a pool of its own, capped at
 * `max_clients` and bounded only by `socket_timeout` (60 s by default); past the cap it destroys every
 * new socket, trusted or not. The relay's stranger guards (`connections_per_stranger`,
 * `max_unidentified_clients`, `identify_timeout`) all ran in onConnect, after the handshake, so one
 * stranger that opened `max_clients` TCP connections and never said a word locked every client out of
 * the listener for `socket_timeout`, and again each time it reconnected.
 *
 * Now (SECURITY.md, "A hostile host on the LAN"): a stranger's connections are counted before their
 * handshake too (at most `connections_per_stranger` each, `max_unidentified_clients` for all strangers
 * together), and every handshake has a deadline of its own (`handshake_timeout`), apart from
 * `socket_timeout`.
 */
jest.setTimeout(60_000);

function rawConnection(port: number, localAddress: string): Promise<Socket> {
  const socket = netConnect({ port, host: '127.0.0.1', localAddress });
  socket.on('error', () => undefined);
  return new Promise((resolve) => socket.once('connect', () => resolve(socket)));
}

/** Resolves once the relay has closed the socket (the relay's own decision: nothing here times it). */
function closedByRelay(socket: Socket): Promise<void> {
  if (socket.destroyed || socket.readableEnded) return Promise.resolve();
  return new Promise((resolve) => {
    socket.once('close', () => resolve());
    socket.once('end', () => resolve());
    socket.resume();
  });
}

/** The first thing a TLS client hears: the 220 greeting, or why there was none. */
function tlsGreeting(port: number, localAddress: string): Promise<string> {
  return new Promise((resolve) => {
    const raw = netConnect({ port, host: '127.0.0.1', localAddress });
    raw.on('error', () => undefined);
    const client = tlsConnect({ socket: raw, rejectUnauthorized: false });
    client.setEncoding('latin1');
    const done = (what: string) => {
      resolve(what);
      client.destroy();
      raw.destroy();
    };
    client.once('data', (data: string) => done(data.split('\r\n')[0]));
    client.once('error', (err) => done(`error: ${err.message}`));
    client.once('close', () => done('closed without a greeting'));
  });
}

describe('attack: implicit TLS handshake slots', () => {
  const t = relayPerDescribe(async (dir) => ({
    tls: makeCertificate(dir),
    // max_clients kept small so the test is light; the default 500 falls the same way.
    listeners: [{ name: 'smtps', address: '127.0.0.1:0', tls: 'implicit', auth: 'optional', max_clients: 20 }],
  }));
  const opened: Socket[] = [];
  afterEach(async () => {
    await leaveAll();
  });

  async function metric(sample: string): Promise<number> {
    return metricValue(await metricsText(t.running.httpPort), sample) ?? 0;
  }

  /** Connections the relay holds before their session, as its gauge says. */
  const pending = () => metric('smarthop_connections_pending{listener="smtps"}');

  async function leaveAll(): Promise<void> {
    for (const socket of opened.splice(0)) socket.destroy();
    await waitFor(async () => (await pending()) === 0, 10_000, 'the relay to let go of the closed connections');
  }

  test('one silent stranger holding max_clients TCP connections does not lock a trusted client out', async () => {
    const port = t.running.portOf('smtps');
    const refusedBefore = await metric('smarthop_rate_limited_total{client="(unknown)",limit="handshakes"}');
    for (let i = 0; i < 20; i++) opened.push(await rawConnection(port, '127.0.0.2'));
    // One more from the stranger: the relay has seen the 20 above once it drops this one (accepts come
    // in order), and it drops it because the stranger holds connections_per_stranger (10) already.
    const probe = await rawConnection(port, '127.0.0.2');
    opened.push(probe);
    await closedByRelay(probe);
    expect(await pending()).toBe(10);
    expect(await tlsGreeting(port, '127.0.0.1')).toMatch(/^220 /);
    // Connections 11 to 21 were dropped before their handshake, each counted.
    expect(await metric('smarthop_rate_limited_total{client="(unknown)",limit="handshakes"}')).toBe(refusedBefore + 11);
  });

  test('strangers together hold at most max_unidentified_clients handshakes; trusted clients: no cap', async () => {
    const port = t.running.portOf('smtps');
    // Ten strangers, one silent connection each: half of max_clients, the strangers' share.
    for (let i = 10; i < 20; i++) opened.push(await rawConnection(port, `127.0.0.${i}`));
    const eleventh = await rawConnection(port, '127.0.0.20');
    opened.push(eleventh);
    await closedByRelay(eleventh);
    // The trusted network's own silent connections are not a stranger's: 8 of them, and still a greeting.
    for (let i = 0; i < 8; i++) opened.push(await rawConnection(port, '127.0.0.1'));
    await waitFor(async () => (await pending()) === 18, 10_000, 'the relay to hold 10 + 8 connections');
    expect(await tlsGreeting(port, '127.0.0.1')).toMatch(/^220 /);
    // A stranger is greeted again once the others left.
    await leaveAll();
    expect(await tlsGreeting(port, '127.0.0.20')).toMatch(/^220 /);
  });
});

describe('attack: implicit TLS handshake slots, the handshake deadline', () => {
  const t = relayPerDescribe(async (dir) => ({
    tls: makeCertificate(dir),
    listeners: [
      {
        name: 'smtps',
        address: '127.0.0.1:0',
        tls: 'implicit',
        auth: 'optional',
        handshake_timeout: '1s',
        socket_timeout: '5m',
      },
    ],
  }));

  test('a connection that never starts its handshake is closed at handshake_timeout, not socket_timeout', async () => {
    const port = t.running.portOf('smtps');
    const text = () => metricsText(t.running.httpPort);
    const sample = 'smarthop_messages_rejected_total{client="(unknown)",reason="timeout"}';
    const timeouts = async () => metricValue(await text(), sample) ?? 0;
    const before = await timeouts();
    const started = Date.now();
    const silent = await rawConnection(port, '127.0.0.2');
    const trusted = await rawConnection(port, '127.0.0.1');
    await Promise.all([closedByRelay(silent), closedByRelay(trusted)]);
    // Closed by the relay long before socket_timeout (5 minutes; the test's own timeout is one).
    expect(Date.now() - started).toBeLessThan(60_000);
    expect(await timeouts()).toBe(before + 2);
    // A client that does its handshake is greeted as before.
    expect(await tlsGreeting(port, '127.0.0.2')).toMatch(/^220 /);
  });
});
