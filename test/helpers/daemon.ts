import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';

/**
 * A third-party server (redis-server, haproxy) run by a test in the foreground as its own child:
 * stopped by its PID only (SIGTERM, then SIGKILL), and killed should the test runner die first.
 */
export class Daemon {
  readonly output: string[] = [];
  private readonly killOnExit = () => this.child.kill('SIGKILL');

  private constructor(private readonly child: ChildProcess) {
    child.stdout?.on('data', (chunk: Buffer) => this.output.push(chunk.toString()));
    child.stderr?.on('data', (chunk: Buffer) => this.output.push(chunk.toString()));
    process.once('exit', this.killOnExit);
    child.once('exit', () => process.off('exit', this.killOnExit));
  }

  /**
   * Starts `binary args…` and resolves once `ready()` says yes; fails with its output if it exits or takes
   * too long.
   */
  static async start(
    binary: string,
    args: string[],
    ready: () => Promise<boolean>,
    what: string,
    timeoutMs = 20_000,
  ): Promise<Daemon> {
    const daemon = new Daemon(spawn(binary, args, { stdio: ['ignore', 'pipe', 'pipe'] }));
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (daemon.exited)
        throw new Error(
          `${what} exited with ${String(daemon.child.exitCode ?? daemon.child.signalCode)}:\n${daemon.output.join('')}`,
        );
      if (await ready().catch(() => false)) return daemon;
      if (Date.now() > deadline) {
        await daemon.stop();
        throw new Error(`${what} was not ready within ${timeoutMs} ms:\n${daemon.output.join('')}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }

  get exited(): boolean {
    return this.child.exitCode !== null || this.child.signalCode !== null;
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  async stop(): Promise<void> {
    if (this.exited) return;
    const exited = once(this.child, 'exit');
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(timer);
  }
}
