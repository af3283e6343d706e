import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { stringify } from 'yaml';
import { freePort } from '../../bench/free-port';

export { findBinary } from '../../bench/find-binary';

type PromResult = { status: 'success'; data: unknown } | { status: 'error'; errorType: string; error: string };

/**
 * A real Prometheus on a loopback port of its own, with a temp config and storage dir, scraping the
 * given targets every second. stop() always ends the process (SIGTERM, then SIGKILL), and a process
 * exit hook kills it too should a test runner die first.
 */
export class TestPrometheus {
  readonly output: string[] = [];
  private constructor(
    private readonly child: ChildProcess,
    readonly url: string,
  ) {
    child.stdout?.on('data', (chunk: Buffer) => this.output.push(chunk.toString()));
    child.stderr?.on('data', (chunk: Buffer) => this.output.push(chunk.toString()));
  }

  static async start(binary: string, dir: string, targets: string[], ruleFiles: string[]): Promise<TestPrometheus> {
    const port = await freePort();
    const configFile = path.join(dir, 'prometheus.yml');
    mkdirSync(path.join(dir, 'data'), { recursive: true });
    writeFileSync(
      configFile,
      stringify({
        global: { scrape_interval: '1s', evaluation_interval: '1s', scrape_timeout: '900ms' },
        rule_files: ruleFiles,
        scrape_configs: [{ job_name: 'smarthop', scrape_interval: '1s', static_configs: [{ targets }] }],
      }),
    );
    const child = spawn(
      binary,
      [
        `--config.file=${configFile}`,
        `--storage.tsdb.path=${path.join(dir, 'data')}`,
        `--web.listen-address=127.0.0.1:${port}`,
        '--storage.tsdb.retention.time=1h',
        '--log.level=warn',
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    const kill = () => child.kill('SIGKILL');
    process.once('exit', kill);
    child.once('exit', () => process.off('exit', kill));
    const prometheus = new TestPrometheus(child, `http://127.0.0.1:${port}`);
    const deadline = Date.now() + 60_000;
    for (;;) {
      if (child.exitCode !== null)
        throw new Error(`prometheus exited with ${child.exitCode}:\n${prometheus.output.join('')}`);
      if (
        await fetch(`${prometheus.url}/-/ready`).then(
          (r) => r.ok,
          () => false,
        )
      )
        return prometheus;
      if (Date.now() > deadline) {
        await prometheus.stop();
        throw new Error(`prometheus did not become ready:\n${prometheus.output.join('')}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  }

  async api<T>(route: string, params: Record<string, string> = {}): Promise<PromResult & { data: T }> {
    const res = await fetch(`${this.url}${route}?${new URLSearchParams(params)}`);
    return (await res.json()) as PromResult & { data: T };
  }

  /** An instant query's samples, as [labels, value]. Throws on a PromQL error. */
  async query(expr: string): Promise<{ metric: Record<string, string>; value: number }[]> {
    const result = await this.api<{
      resultType: string;
      result: { metric: Record<string, string>; value: [number, string] }[];
    }>('/api/v1/query', { query: expr });
    if (result.status !== 'success') throw new Error(`${expr}: ${result.status === 'error' ? result.error : ''}`);
    if (result.data.resultType !== 'vector') return [];
    return result.data.result.map((s) => ({ metric: s.metric, value: Number(s.value[1]) }));
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = once(this.child, 'exit');
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(timer);
  }
}
