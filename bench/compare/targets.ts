import { rmSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { readCpuTimes, readThreadSchedule, treeCpuSeconds, type ThreadSchedule } from '../cpu/cpu-time';
import { onInterrupt } from '../interrupt';
import { PostfixInstance } from '../postfix/instance';
import { freePort } from '../free-port';
import { RelayProcess, type BenchState } from '../relay-process';

/**
 * What a comparison phase sends its load to: smarthop as a child process, a private Postfix, or
 * (for the harness ceiling) the sink itself. Each is started fresh for its phase in its own temp
 * dir, and stopped and removed afterwards whatever happened.
 */

export type TargetName = 'smarthop' | 'postfix' | 'sink';

export interface Target {
  readonly name: TargetName;
  readonly smtpPort: number;
  /** The processes whose memory is the relay's; empty for the sink, which lives in the bench. */
  pids(): number[];
  /** Why the relay cannot be relied on any more (it exited), or null. */
  halted(): string | null;
  /** The kernel's peak RSS where the relay is one process (VmHWM), read before stop(). */
  peakRssBytes(): number | null;
  /** CPU seconds the relay's processes have used since they started; null for the sink. */
  cpuSeconds(): number | null;
  /** Scheduling of the relay's event-loop thread, where it has one (smarthop). */
  mainThread(): ThreadSchedule | null;
  /** Stops it and removes its directory; returns notes about anything unusual on the way. */
  stop(): Promise<string[]>;
}

const HEALTHY_MS = 15_000;
const STOP_GRACE_MS = 30_000;

export function sinkTarget(sinkPort: number): Target {
  return {
    name: 'sink',
    smtpPort: sinkPort,
    pids: () => [],
    halted: () => null,
    peakRssBytes: () => null,
    cpuSeconds: () => null,
    mainThread: () => null,
    stop: () => Promise.resolve([]),
  };
}

/** smarthop from the same temp config as the plain bench (bench/relay-process.ts). */
export async function startSmarthop(
  sinkPort: number,
  messageSize: number,
  state: BenchState = { limits: false },
): Promise<Target> {
  const dir = await mkdtemp(path.join(tmpdir(), 'smarthop-compare-'));
  const ports = { smtp: await freePort(), http: await freePort(), sink: sinkPort };
  const relay = await RelayProcess.start(dir, ports, Math.max(25 * 1024 * 1024, messageSize + 64 * 1024), {}, state);
  const forget = onInterrupt(() => {
    void relay.kill();
    rmSync(dir, { recursive: true, force: true });
  });
  const remove = async () => {
    forget();
    await rm(dir, { recursive: true, force: true });
  };
  try {
    await relay.waitHealthy(ports.http, HEALTHY_MS);
  } catch (err) {
    relay.dumpTail();
    await relay.stop(STOP_GRACE_MS);
    await remove();
    throw err;
  }
  return {
    name: 'smarthop',
    smtpPort: ports.smtp,
    pids: () => (relay.pid !== undefined && relay.running ? [relay.pid] : []),
    halted: () => (relay.running ? null : 'smarthop exited'),
    peakRssBytes: () => relay.peakRss().vmHwmBytes,
    cpuSeconds: () => (relay.pid === undefined ? null : (readCpuTimes(relay.pid)?.ownSeconds ?? null)),
    mainThread: () => (relay.pid === undefined ? null : readThreadSchedule(relay.pid)),
    stop: async () => {
      const diedEarly = !relay.running;
      const code = await relay.stop(STOP_GRACE_MS);
      const notes: string[] = [];
      if (diedEarly) notes.push(`smarthop exited during the run (code ${String(code)})`);
      else if (code !== 0) notes.push(`smarthop exited with code ${String(code)} after SIGTERM`);
      if (notes.length > 0 || relay.output.errorLines > 0) relay.dumpTail();
      if (relay.output.errorLines + relay.output.warnLines > 0)
        notes.push(`smarthop logged ${relay.output.errorLines} error(s), ${relay.output.warnLines} warning(s)`);
      await remove();
      return notes;
    },
  };
}

/** A private Postfix relaying to the sink (bench/postfix/). */
export async function startPostfix(sinkPort: number, postfixBinary: string): Promise<Target> {
  const dir = await mkdtemp(path.join(tmpdir(), 'smarthop-compare-postfix-'));
  const instance = await PostfixInstance.create(dir, { smtp: await freePort(), sink: sinkPort }, postfixBinary);
  const forget = onInterrupt(() => {
    instance.stopSync(15_000);
    rmSync(dir, { recursive: true, force: true });
  });
  const remove = async () => {
    forget();
    await rm(dir, { recursive: true, force: true });
  };
  try {
    await instance.start(HEALTHY_MS);
  } catch (err) {
    await instance.stop(STOP_GRACE_MS);
    await remove();
    throw err;
  }
  return {
    name: 'postfix',
    smtpPort: instance.ports.smtp,
    pids: () => instance.pids(),
    halted: () => (instance.running ? null : 'the Postfix master exited'),
    peakRssBytes: () => null,
    cpuSeconds: () => {
      const [master, ...children] = instance.pids();
      return master === undefined ? null : treeCpuSeconds(master, children);
    },
    mainThread: () => null,
    stop: async () => {
      const notes: string[] = [];
      if (!instance.running) notes.push('the Postfix master exited during the run');
      const log = await instance.maillogSummary();
      if (log.problems > 0) {
        notes.push(
          `postfix maillog: ${log.deferred} deferred, ${log.bounced} bounced, ${log.problems} problem line(s)`,
        );
        for (const line of log.examples) notes.push(`  ${line}`);
      }
      await instance.stop(STOP_GRACE_MS);
      await remove();
      return notes;
    },
  };
}
