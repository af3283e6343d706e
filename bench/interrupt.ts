/**
 * Ctrl-C or a SIGTERM must not leave a relay behind. A child relay in the terminal's process group
 * gets the signal itself, but Postfix's master detaches into its own session and would keep running,
 * so whoever starts something registers a synchronous way to end it here.
 */

const cleanups = new Set<() => void>();
let installed = false;

/** Registers `cleanup` for SIGINT/SIGTERM; returns the function that unregisters it. */
export function onInterrupt(cleanup: () => void): () => void {
  if (!installed) {
    installed = true;
    for (const signal of ['SIGINT', 'SIGTERM'] as const) {
      process.once(signal, () => {
        process.stderr.write(`bench: ${signal}, stopping what the bench started\n`);
        for (const fn of cleanups) {
          try {
            fn();
          } catch (err) {
            process.stderr.write(`bench: cleanup failed: ${(err as Error).message}\n`);
          }
        }
        process.exit(signal === 'SIGINT' ? 130 : 143);
      });
    }
  }
  cleanups.add(cleanup);
  return () => cleanups.delete(cleanup);
}
