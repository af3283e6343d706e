/**
 * Polls until `check` is true; real sockets and timers, so tests wait for the real thing. Soon at
 * first, then less often (10 ms growing to 100 ms): a check is often a /metrics scrape, ~5 ms of CPU
 * that a long wait would otherwise spend forty times a second.
 */
export async function waitFor(
  check: () => boolean | Promise<boolean>,
  timeoutMs = 10_000,
  what = 'condition',
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let pauseMs = 10;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, pauseMs));
    pauseMs = Math.min(100, pauseMs * 1.5);
  }
}
