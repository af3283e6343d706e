import { readFile } from 'node:fs/promises';

/**
 * Memory of a relay made of one or many processes, comparable across both: the sum of PSS
 * (proportional set size, /proc/PID/smaps_rollup) over its processes, sampled, and the largest sum
 * kept. PSS charges each shared page (libc, Postfix's shared libraries, the same binary in 40 smtpd
 * processes) to its sharers in proportion, so summing it does not count them 40 times as summed RSS
 * would. Reads are asynchronous so the sink in the same event loop keeps running while they happen.
 */

export async function readPssBytes(pid: number): Promise<number | null> {
  try {
    const rollup = await readFile(`/proc/${pid}/smaps_rollup`, 'latin1');
    const match = /^Pss:\s+(\d+)\s+kB/m.exec(rollup);
    return match ? Number(match[1]) * 1024 : null;
  } catch {
    return null; // the process ended between listing and reading: it holds no memory any more
  }
}

export class PssSampler {
  /** Largest summed PSS seen; null until a sample found at least one process. */
  maxBytes: number | null = null;
  /** Most processes seen in one sample. */
  maxProcesses = 0;
  samples = 0;
  private timer: NodeJS.Timeout | null = null;
  private busy = false;

  constructor(
    private readonly pids: () => number[],
    private readonly intervalMs: number,
  ) {}

  start(): void {
    this.timer = setInterval(() => void this.sample(), this.intervalMs);
    void this.sample();
  }

  /** Takes one last sample, so a short run is still measured at its end. */
  async stop(): Promise<void> {
    if (this.timer === null) return;
    clearInterval(this.timer);
    this.timer = null;
    const deadline = Date.now() + 2_000;
    while (this.busy && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 5));
    await this.sample();
  }

  private async sample(): Promise<void> {
    if (this.busy) return; // a slow /proc read must not pile up samplers
    this.busy = true;
    try {
      const pids = this.pids();
      const values = await Promise.all(pids.map(readPssBytes));
      const present = values.filter((v): v is number => v !== null);
      if (present.length === 0) return;
      const total = present.reduce((a, b) => a + b, 0);
      this.samples++;
      this.maxProcesses = Math.max(this.maxProcesses, present.length);
      if (this.maxBytes === null || total > this.maxBytes) this.maxBytes = total;
    } finally {
      this.busy = false;
    }
  }
}
