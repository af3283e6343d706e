/**
 * Waits for a sink to have everything it should, bounded: it resolves complete once `done()` holds
 * after an arrival, or incomplete (with the reason) when the run halted, nothing arrived for
 * `noProgressMs`, or `deadline` passed. A stuck queue ends a benchmark phase; it never hangs it.
 */
export interface ArrivalWait {
  /** Is everything there? Asked at the start and after every arrival. */
  done: () => boolean;
  /** Installs (or, with null, removes) the callback the sink calls on every arrival. */
  onArrival: (callback: (() => void) | null) => void;
  noProgressMs: number;
  deadline: number;
  /** Why the run stopped early (the relay died, say), or null while it goes on. */
  halted: () => string | null;
  deadlineReason: string;
}

export function waitForArrivals(wait: ArrivalWait): Promise<{ complete: boolean; reason: string }> {
  if (wait.done()) return Promise.resolve({ complete: true, reason: '' });
  return new Promise((resolve) => {
    let lastProgress = Date.now();
    const finish = (complete: boolean, reason: string) => {
      clearInterval(watchdog);
      wait.onArrival(null);
      resolve({ complete, reason });
    };
    wait.onArrival(() => {
      lastProgress = Date.now();
      if (wait.done()) finish(true, '');
    });
    const watchdog = setInterval(() => {
      const halt = wait.halted();
      if (halt !== null) finish(false, halt);
      else if (Date.now() - lastProgress > wait.noProgressMs)
        finish(false, `no message reached the sink for ${wait.noProgressMs / 1000} s`);
      else if (Date.now() > wait.deadline) finish(false, wait.deadlineReason);
    }, 250);
  });
}
