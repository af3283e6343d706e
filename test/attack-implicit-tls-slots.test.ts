import { connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { makeCertificate, relayPerDescribe } from './helpers/harness';

/**
 * Attack: slowloris before the TLS handshake of an implicit-TLS listener (port 465 style).
 *
 * smtp-server keeps sockets whose TLS handshake has not finished in a pool of its own, capped at
 * `max_clients` and bounded only by `socket_timeout` (60 s by default); past the cap it destroys every
 * new socket, trusted or not. The relay's stranger guards (`connections_per_stranger`,
 * `max_unidentified_clients`, `identify_timeout`) all run in onConnect, after the handshake, so one
 * stranger that opens `max_clients` TCP connections and never says a word locks every client out of
 * the listener for `socket_timeout`, and again each time it reconnects.
 *
 * Expected (docs/hostile-lan.md, SECURITY.md "a trusted client still gets its 220"): a stranger keeps
 * at most `connections_per_stranger` of anything, so the trusted client is greeted.
 */
jest.setTimeout(60_000);

describe('attack: implicit TLS handshake slots', () => {
  const t = relayPerDescribe(async (dir) => ({
    tls: makeCertificate(dir),
    // max_clients kept small so the test is light; the default 500 falls the same way.
    listeners: [{ name: 'smtps', address: '127.0.0.1:0', tls: 'implicit', auth: 'optional', max_clients: 20 }],
  }));

  function rawConnection(port: number, localAddress: string): Promise<Socket> {
    const socket = netConnect({ port, host: '127.0.0.1', localAddress });
    socket.on('error', () => undefined);
    return new Promise((resolve) => socket.once('connect', () => resolve(socket)));
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

  test('one silent stranger holding max_clients TCP connections does not lock a trusted client out', async () => {
    const port = t.running.portOf('smtps');
    const stranger: Socket[] = [];
    try {
      for (let i = 0; i < 20; i++) stranger.push(await rawConnection(port, '127.0.0.2'));
      // One more from the stranger: it is dropped only once the relay holds the 20 above, so its
      // close proves the pool is full before the trusted client tries (no sleep needed).
      const probe = await rawConnection(port, '127.0.0.2');
      await new Promise<void>((resolve) => {
        if (probe.destroyed) resolve();
        else probe.once('close', () => resolve());
        setTimeout(() => resolve(), 5_000).unref();
      });
      expect(await tlsGreeting(port, '127.0.0.1')).toMatch(/^220 /);
    } finally {
      for (const socket of stranger) socket.destroy();
    }
  });
});
