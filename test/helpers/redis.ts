import { mkdirSync } from 'node:fs';
import * as path from 'node:path';
import { redisPing, scratchRedisArgs } from '../../bench/redis-server';
import { Daemon } from './daemon';

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
      [...scratchRedisArgs(this.port, this.dir), '--logfile', path.join(this.dir, 'redis.log')],
      () => redisPing(this.port),
      `redis-server on port ${this.port}`,
    );
  }

  async stop(): Promise<void> {
    await this.daemon?.stop();
    this.daemon = null;
  }
}
