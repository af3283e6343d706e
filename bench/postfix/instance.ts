import { execFile, spawnSync } from 'node:child_process';
import { readFileSync, readlinkSync } from 'node:fs';
import { chmod, chown, mkdir, readFile, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import * as path from 'node:path';
import { mainCf, masterCf, postfixLayout, type PostfixLayout, type PostfixPorts } from './config';

/**
 * One private Postfix: its own config, queue and data directories under a temp folder, smtpd on a
 * loopback port, relaying to the sink. Started and stopped with `postfix -c <dir> start|stop`; if
 * that fails to end it, its own processes (the master and the master's children, checked to be
 * Postfix binaries) are killed by pid, never anything found by name.
 */

const COMMAND_TIMEOUT_MS = 60_000;
const POLL_MS = 100;

export interface MaillogSummary {
  sent: number;
  deferred: number;
  bounced: number;
  /** warning/fatal/panic lines, the first few verbatim. */
  problems: number;
  examples: string[];
}

export class PostfixInstance {
  private knownPids = new Set<number>();

  private constructor(
    readonly layout: PostfixLayout,
    readonly ports: PostfixPorts,
    private readonly binary: string,
  ) {}

  /** Writes the configuration under `baseDir` (a fresh temp dir) without starting anything. */
  static async create(baseDir: string, ports: PostfixPorts, binary: string): Promise<PostfixInstance> {
    const layout = postfixLayout(baseDir);
    // Postfix's daemons run as user postfix and must reach the queue below this dir (mkdtemp makes it 0700).
    await chmod(baseDir, 0o755);
    await mkdir(layout.configDir);
    await mkdir(layout.queueDir);
    await mkdir(layout.dataDir);
    const owner = postfixUser();
    await chown(layout.dataDir, owner.uid, owner.gid); // master.lock and caches are written by the daemons
    await writeFile(path.join(layout.configDir, 'main.cf'), mainCf(layout, ports));
    await writeFile(path.join(layout.configDir, 'master.cf'), masterCf(ports));
    return new PostfixInstance(layout, ports, binary);
  }

  /** `postfix start`, then waits until smtpd's port takes connections. */
  async start(timeoutMs: number): Promise<void> {
    const result = await this.postfix('start', Math.min(timeoutMs, COMMAND_TIMEOUT_MS));
    if (result.code !== 0) {
      const output = result.output ? `: ${result.output}` : '';
      throw new Error(`postfix start exited with ${String(result.code)}${output}${this.maillogTail()}`);
    }
    const deadline = Date.now() + timeoutMs;
    while (!(await portOpen(this.ports.smtp))) {
      if (Date.now() > deadline)
        throw new Error(
          `postfix smtpd not listening on 127.0.0.1:${this.ports.smtp} after ${timeoutMs} ms${this.maillogTail()}`,
        );
      await sleep(POLL_MS);
    }
    this.pids();
  }

  get running(): boolean {
    const master = this.masterPid();
    return master !== null && isPostfixProcess(master);
  }

  /** The master and its children (smtpd, cleanup, qmgr, smtp, …) right now. */
  pids(): number[] {
    const master = this.masterPid();
    if (master === null || !isPostfixProcess(master)) return [];
    const pids = [master, ...childrenOf(master)];
    for (const pid of pids) this.knownPids.add(pid);
    return pids;
  }

  /** `postfix stop` (it waits for the master to end), then kills whatever of ours is left. */
  async stop(timeoutMs: number): Promise<void> {
    this.pids();
    if (this.masterPid() !== null) await this.postfix('stop', Math.min(timeoutMs, COMMAND_TIMEOUT_MS));
    const deadline = Date.now() + timeoutMs;
    while (this.survivors().length > 0 && Date.now() < deadline) await sleep(POLL_MS);
    this.killSurvivors();
  }

  /** For an interrupted bench: the same as stop(), synchronously, from a signal handler. */
  stopSync(timeoutMs: number): void {
    this.pids();
    spawnSync(this.binary, ['-c', this.layout.configDir, 'stop'], { stdio: 'ignore', timeout: timeoutMs });
    this.killSurvivors();
  }

  /** What Postfix itself logged about the round's deliveries. */
  async maillogSummary(): Promise<MaillogSummary> {
    const summary: MaillogSummary = { sent: 0, deferred: 0, bounced: 0, problems: 0, examples: [] };
    const text = await readFile(this.layout.maillog, 'latin1').catch(() => '');
    for (const line of text.split('\n')) {
      if (line.includes(' status=sent ')) {
        summary.sent++;
        continue;
      }
      if (line.includes(' status=deferred ')) summary.deferred++;
      else if (line.includes(' status=bounced ')) summary.bounced++;
      else if (!/: (warning|fatal|panic|error): /.test(line)) continue;
      summary.problems++;
      if (summary.examples.length < 5) summary.examples.push(line.slice(0, 300));
    }
    return summary;
  }

  private masterPid(): number | null {
    try {
      const pid = Number(readFileSync(path.join(this.layout.queueDir, 'pid', 'master.pid'), 'latin1').trim());
      return Number.isInteger(pid) && pid > 1 ? pid : null;
    } catch {
      return null;
    }
  }

  private survivors(): number[] {
    return [...this.knownPids].filter(isPostfixProcess);
  }

  private killSurvivors(): void {
    for (const pid of this.survivors()) {
      try {
        process.kill(pid, 'SIGKILL');
        process.stderr.write(`postfix: pid ${pid} still running after stop, killed\n`);
      } catch {
        // already gone
      }
    }
  }

  private maillogTail(): string {
    try {
      const lines = readFileSync(this.layout.maillog, 'latin1').trimEnd().split('\n').slice(-10);
      return `\nmaillog (${this.layout.maillog}), last lines:\n${lines.map((l) => `  ${l}`).join('\n')}`;
    } catch {
      return ' (no maillog written; errors before logging starts go to syslog only)';
    }
  }

  private postfix(command: 'start' | 'stop', timeoutMs: number): Promise<{ code: number | null; output: string }> {
    return new Promise((resolve) => {
      execFile(
        this.binary,
        ['-c', this.layout.configDir, command],
        { timeout: timeoutMs, encoding: 'utf8' },
        (err, stdout, stderr) => {
          const output = `${stdout}${stderr}`.trim();
          if (err === null) return resolve({ code: 0, output });
          resolve({ code: typeof err.code === 'number' ? err.code : null, output: output || err.message });
        },
      );
    });
  }
}

function postfixUser(): { uid: number; gid: number } {
  const line = readFileSync('/etc/passwd', 'utf8')
    .split('\n')
    .find((l) => l.startsWith('postfix:'));
  const fields = line?.split(':');
  if (!fields || fields.length < 4)
    throw new Error('no postfix user in /etc/passwd: is the postfix package installed?');
  return { uid: Number(fields[2]), gid: Number(fields[3]) };
}

/** Postfix's master and daemons all run from its daemon directory; a recycled pid will not. */
function isPostfixProcess(pid: number): boolean {
  try {
    return readlinkSync(`/proc/${pid}/exe`).startsWith('/usr/lib/postfix/');
  } catch {
    return false;
  }
}

function childrenOf(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'latin1')
      .trim()
      .split(/\s+/)
      .filter((s) => s !== '')
      .map(Number);
  } catch {
    return [];
  }
}

function portOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    const done = (open: boolean) => {
      socket.destroy();
      resolve(open);
    };
    socket.setTimeout(1_000, () => done(false));
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
