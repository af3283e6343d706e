import { connect, type Socket } from 'node:net';
import { HTTP_LIMITS, HttpEndpoints } from '../src/observe/http';
import { Metrics } from '../src/observe/metrics';

/**
 * The HTTP endpoints bound what one client may hold (HttpLimits): off loopback anybody on the LAN can
 * reach them. Over real sockets, from 127.0.0.2 ("somebody else").
 */
describe('HTTP endpoints: bounded connections, headers and request time', () => {
  const metrics = new Metrics();
  let endpoints: HttpEndpoints;
  let port = 0;
  const opened: Socket[] = [];

  beforeAll(async () => {
    endpoints = new HttpEndpoints(metrics, { ready: async () => ({ ok: true, checks: {} }) }, null, null, {
      ...HTTP_LIMITS,
      maxConnectionsPerAddress: 4,
      maxConnections: 8,
      headersTimeoutMs: 500,
    });
    port = (await endpoints.listen('127.0.0.1', 0)).port;
  });
  afterEach(() => {
    for (const socket of opened.splice(0)) socket.destroy();
  });
  afterAll(async () => {
    await endpoints.close();
    metrics.close();
  });

  function open(localAddress: string): Promise<Socket> {
    const socket = connect({ port, host: '127.0.0.1', localAddress });
    socket.on('error', () => undefined);
    opened.push(socket);
    return new Promise((resolve) => socket.once('connect', () => resolve(socket)));
  }

  /** Everything the server sent until it closed the connection. */
  function untilClosed(socket: Socket): Promise<string> {
    let received = '';
    socket.setEncoding('latin1');
    socket.on('data', (chunk: string) => (received += chunk));
    return new Promise((resolve) => socket.once('close', () => resolve(received)));
  }

  async function healthz(localAddress: string): Promise<string> {
    const socket = await open(localAddress);
    const reply = untilClosed(socket);
    socket.end('GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n');
    return (await reply).split('\r\n')[0];
  }

  test('a header trickled in is cut off at the headers timeout', async () => {
    const socket = await open('127.0.0.2');
    const closed = untilClosed(socket);
    socket.write('GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: a');
    expect(await closed).toMatch(/^HTTP\/1\.1 408 /);
  });

  test('a header block over the size bound gets 431', async () => {
    const socket = await open('127.0.0.2');
    const closed = untilClosed(socket);
    const big = 'a'.repeat(HTTP_LIMITS.maxHeaderBytes);
    socket.write(`GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Big: ${big}\r\n\r\n`);
    expect(await closed).toMatch(/^HTTP\/1\.1 431 /);
  });

  test('one address holds at most maxConnectionsPerAddress; others are still served', async () => {
    const held = await Promise.all(Array.from({ length: 4 }, () => open('127.0.0.2')));
    const extra = await open('127.0.0.2');
    expect(await untilClosed(extra)).toBe('');
    expect(await healthz('127.0.0.1')).toBe('HTTP/1.1 200 OK');
    for (const socket of held) socket.destroy();
  });
});
