import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import * as path from 'node:path';
import { stringify } from 'yaml';
import { RELAY_NODE_FLAGS, relayEnvironment } from '../../src/lifecycle/launch-settings';
import { removeDir } from './temp-dir';

export const CLI = path.resolve(__dirname, '../../dist/src/cli.js');

/** The relay as its own process (built CLI), so a test can kill -9 it like the kernel would. */
export class ChildRelay {
  readonly output: string[] = [];
  private constructor(readonly process: ChildProcess) {
    process.stdout?.on('data', (chunk: Buffer) => this.output.push(chunk.toString()));
    process.stderr?.on('data', (chunk: Buffer) => this.output.push(chunk.toString()));
  }

  static async start(configFile: string, httpPort: number): Promise<ChildRelay> {
    // Started the way deploy/smarthop.service, the Dockerfile and npm start start it (README, "Memory").
    const args = [...RELAY_NODE_FLAGS, CLI, 'start', '-c', configFile];
    const child = new ChildRelay(
      spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], env: relayEnvironment(process.env) }),
    );
    const deadline = Date.now() + 15_000;
    for (;;) {
      if (child.process.exitCode !== null)
        throw new Error(`relay exited with ${child.process.exitCode}:\n${child.output.join('')}`);
      const ok = await fetch(`http://127.0.0.1:${httpPort}/healthz`).then(
        (r) => r.ok,
        () => false,
      );
      if (ok) return child;
      if (Date.now() > deadline) throw new Error(`relay did not become healthy:\n${child.output.join('')}`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }

  async kill(signal: NodeJS.Signals): Promise<number | null> {
    if (this.process.exitCode !== null || this.process.signalCode !== null) return this.process.exitCode;
    this.process.kill(signal);
    const [code] = (await once(this.process, 'exit')) as [number | null];
    return code;
  }
}

/** The ports of a child relay: its SMTP listener, its HTTP endpoint, and the smart host it forwards to. */
export interface ChildRelayPorts {
  smtp: number;
  http: number;
  smarthost: number;
}

/**
 * The YAML config of a relay run as a child process: the spool in `./spool` beside the config file,
 * one plaintext listener without AUTH for the LAN (127.0.0.0/8), the smart host `primary` on loopback
 * (`smarthost` adds to its settings), warnings only. `retry` paces redelivery: short where a test
 * waits for it, an hour where a test must see no second attempt.
 */
export function childRelayConfig(
  ports: ChildRelayPorts,
  retry: { initial: string; max: string },
  smarthost: Record<string, unknown> = {},
): string {
  return stringify({
    hostname: 'relay.test',
    spool: { dir: './spool', retry: { ...retry, factor: 2 }, min_free_disk: 0 },
    listeners: [{ name: 'smtp', address: `127.0.0.1:${ports.smtp}`, tls: 'none', auth: 'off' }],
    clients: [{ name: 'lan', networks: ['127.0.0.0/8'] }],
    routes: { default: { smarthosts: ['primary'] } },
    smarthosts: [
      { name: 'primary', host: '127.0.0.1', port: ports.smarthost, tls: 'none', connect_timeout: '1s', ...smarthost },
    ],
    http: { address: `127.0.0.1:${ports.http}` },
    log: { level: 'warn' },
  });
}

/**
 * The end of a child-relay test, in the order that leaves nothing behind: the relay stopped with
 * `signal` (SIGKILL where the test is about crashes), then the smart host it sent to, then its
 * temp dir (the spool inside it is only removable once the relay is gone).
 */
export async function tearDownChildRelay(
  relay: ChildRelay | null,
  signal: NodeJS.Signals,
  smarthost: { close(): Promise<void> } | null,
  dir: string,
): Promise<void> {
  await relay?.kill(signal);
  await smarthost?.close();
  removeDir(dir);
}

export interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the built CLI without blocking this process's event loop (an in-process relay must keep answering). */
export function runCli(args: string[], env: NodeJS.ProcessEnv = {}): Promise<CliRun> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [CLI, ...args],
      { env: { PATH: process.env.PATH, ...env }, timeout: 30_000 },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}
