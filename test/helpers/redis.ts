import { mkdirSync } from 'node:fs';
import { connect } from 'node:net';
import * as path from 'node:path';
import { Daemon } from './daemon';

/** One PING over a fresh socket: true on +PONG (no client library, so a stopped server is seen at once). */
export function redisPing(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ port, host: '127.0.0.1' });
    let reply = '';
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(1_000, () => done(false));
    socket.on('error', () => done(false));
    socket.on('data', (data) => {
      reply += data.toString();
      if (reply.includes('\r\n')) done(reply.startsWith('+PONG'));
    });
    socket.write('PING\r\n');
  });
}

/**
 * A redis-server of the test's own on a loopback port it chose, with nothing persisted (a restart
 * is an empty Redis, as after an outage without persistence). `stop()` and `start()` again on the
 * same port simulate an outage.
 */
export class TestRedis {
  private daemon: Daemon | null = null;

  constructor(
    private readonly binary: string,
    private readonly dir: string,
    readonly port: number,
  ) {
    mkdirSync(dir, { recursive: true });
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  get running(): boolean {
    return this.daemon !== null && !this.daemon.exited;
  }

  async start(): Promise<void> {
    this.daemon = await Daemon.start(
      this.binary,
      [
        '--port',
        String(this.port),
        '--bind',
        '127.0.0.1',
        '--save',
        '',
        '--appendonly',
        'no',
        '--dir',
        this.dir,
        '--logfile',
        path.join(this.dir, 'redis.log'),
        '--daemonize',
        'no',
      ],
      () => redisPing(this.port),
      `redis-server on port ${this.port}`,
    );
  }

  async stop(): Promise<void> {
    await this.daemon?.stop();
    this.daemon = null;
  }
}
