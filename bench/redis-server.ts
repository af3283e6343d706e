import { findBinary } from './find-binary';
import { spawn, type ChildProcess } from 'node:child_process';
import { connect } from 'node:net';

/**
 * `--state redis`: a redis-server of the bench's own on a free loopback port, nothing persisted,
 * stopped (by its PID) when the bench ends. Never the default port or a system service.
 */
export class BenchRedis {
  private constructor(
    private readonly child: ChildProcess,
    readonly port: number,
  ) {}

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  static find(): string | null {
    return findBinary('redis-server');
  }

  static async start(binary: string, dir: string, port: number, timeoutMs = 15_000): Promise<BenchRedis> {
    const child = spawn(binary, scratchRedisArgs(port, dir), { stdio: 'ignore' });
    const redis = new BenchRedis(child, port);
    const deadline = Date.now() + timeoutMs;
    while (!(await redisPing(port))) {
      if (child.exitCode !== null || Date.now() > deadline) {
        child.kill('SIGKILL');
        throw new Error(`redis-server did not start on port ${port}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    return redis;
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise((resolve) => this.child.once('exit', resolve));
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 5_000);
    await exited;
    clearTimeout(timer);
  }
}

/**
 * redis-server's arguments for a scratch server of a bench or a test: loopback only, on `port`,
 * nothing persisted (a restart is an empty Redis), in the foreground.
 */
export function scratchRedisArgs(port: number, dir: string): string[] {
  return [
    '--port',
    String(port),
    '--bind',
    '127.0.0.1',
    '--save',
    '',
    '--appendonly',
    'no',
    '--dir',
    dir,
    '--daemonize',
    'no',
  ];
}

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
