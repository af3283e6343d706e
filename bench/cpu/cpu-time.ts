import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

/**
 * CPU time a relay used, from /proc/PID/stat. On a shared machine throughput drifts with what the
 * neighbours do, but the CPU seconds a relay burns per message barely move: it is the steadier
 * figure of how much work each relay does for the same load.
 */

export interface CpuTimes {
  /** utime + stime of the process itself (all its threads, so libuv's fsync workers too). */
  ownSeconds: number;
  /** cutime + cstime: children it has waited for (Postfix's daemons that exited and were reaped by the master). */
  reapedChildrenSeconds: number;
}

let ticksPerSecond: number | null = null;

/** USER_HZ; 100 on every Linux build one meets, asked once in case this one differs. */
function clockTicks(): number {
  if (ticksPerSecond === null) {
    const run = spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8', timeout: 5_000 });
    const value = Number(run.stdout?.trim());
    ticksPerSecond = Number.isInteger(value) && value > 0 ? value : 100;
  }
  return ticksPerSecond;
}

export function readCpuTimes(pid: number): CpuTimes | null {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
  } catch {
    return null;
  }
  // The command name (field 2) may hold spaces and parentheses: the fields that follow start after the last ')'.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // Fields 14–17 of proc(5) (utime, stime, cutime, cstime) are at 11–14 once pid, comm and state are dropped.
  const [utime, stime, cutime, cstime] = fields.slice(11, 15).map(Number);
  if ([utime, stime, cutime, cstime].some((n) => !Number.isFinite(n))) return null;
  const hz = clockTicks();
  return { ownSeconds: (utime + stime) / hz, reapedChildrenSeconds: (cutime + cstime) / hz };
}

/**
 * CPU seconds used so far by a process tree whose root reaps its children: the root's own and
 * reaped-children time plus the own time of the children still alive.
 */
export function treeCpuSeconds(root: number, liveChildren: readonly number[]): number | null {
  const top = readCpuTimes(root);
  if (top === null) return null;
  let total = top.ownSeconds + top.reapedChildrenSeconds;
  for (const pid of liveChildren) total += readCpuTimes(pid)?.ownSeconds ?? 0;
  return total;
}

export interface ThreadSchedule {
  /** Nanoseconds the thread has run on a CPU. */
  onCpuNs: number;
  /** Nanoseconds it was runnable but waited for a CPU (another process had it). */
  waitingNs: number;
}

/**
 * /proc/PID/task/TID/schedstat of one thread (the main thread: TID = PID). A single-threaded event
 * loop can only be as fast as the CPU share it gets; on a shared machine the run-queue wait says how
 * much of its time it spent ready to work but not scheduled.
 */
export function readThreadSchedule(pid: number, tid = pid): ThreadSchedule | null {
  try {
    const [onCpuNs, waitingNs] = readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'latin1')
      .trim()
      .split(/\s+/)
      .map(Number);
    return Number.isFinite(onCpuNs) && Number.isFinite(waitingNs) ? { onCpuNs, waitingNs } : null;
  } catch {
    return null; // no schedstats in this kernel, or the process is gone
  }
}

export interface ScheduleShare {
  onCpuPercent: number;
  waitingForCpuPercent: number;
}

/** The share of a wall-clock window (in ns) a thread ran, and waited runnable, between two readings. */
export function scheduleShare(
  before: ThreadSchedule | null,
  after: ThreadSchedule | null,
  windowNs: number,
): ScheduleShare | null {
  if (before === null || after === null || windowNs <= 0) return null;
  const percent = (ns: number) => Math.round((1000 * ns) / windowNs) / 10;
  return {
    onCpuPercent: percent(after.onCpuNs - before.onCpuNs),
    waitingForCpuPercent: percent(after.waitingNs - before.waitingNs),
  };
}
