import { writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import * as path from 'node:path';
import { Daemon } from './daemon';

export interface HaproxyBackend {
  name: string;
  smtpPort: number;
  /** The relay's http port: HAProxy's health check asks /readyz there, as in the README. */
  httpPort: number;
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ port, host: '127.0.0.1' });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

/**
 * HAProxy in TCP mode on a loopback port of the test's own, in front of relays with `send-proxy`
 * (PROXY protocol v1), health-checking each relay's /readyz, retrying a refused connection on the
 * other relay: the README's fleet snippet with test timings.
 */
export class TestHaproxy {
  private constructor(
    private readonly daemon: Daemon,
    readonly port: number,
  ) {}

  static config(port: number, backends: readonly HaproxyBackend[]): string {
    return [
      'global',
      '  maxconn 500',
      'defaults',
      '  mode tcp',
      '  timeout connect 2s',
      '  timeout client 60s',
      '  timeout server 60s',
      '  retries 3',
      '  option redispatch 1',
      'frontend smtp',
      `  bind 127.0.0.1:${port}`,
      '  default_backend relays',
      'backend relays',
      '  balance roundrobin',
      '  option httpchk GET /readyz',
      '  default-server send-proxy check inter 500ms fall 1 rise 2',
      ...backends.map((b) => `  server ${b.name} 127.0.0.1:${b.smtpPort} check port ${b.httpPort}`),
      '',
    ].join('\n');
  }

  static async start(
    binary: string,
    dir: string,
    port: number,
    backends: readonly HaproxyBackend[],
  ): Promise<TestHaproxy> {
    const file = path.join(dir, 'haproxy.cfg');
    writeFileSync(file, TestHaproxy.config(port, backends));
    // -db: stay in the foreground (no daemon, no pid file), so the test owns the process.
    const daemon = await Daemon.start(binary, ['-db', '-f', file], () => canConnect(port), `haproxy on port ${port}`);
    return new TestHaproxy(daemon, port);
  }

  stop(): Promise<void> {
    return this.daemon.stop();
  }
}
