import { setFlagsFromString } from 'node:v8';

/**
 * What the relay's node process is started with wherever this project starts it: `npm start`,
 * deploy/smarthop.service, the Dockerfile, the bench and the tests' child relays. Both must be given
 * before node starts (V8 sizes the young generation when it creates the heap, glibc reads its
 * environment once), so the relay cannot set them on itself; test/launch-settings.test.ts keeps the
 * launch files in step with this list.
 */

/**
 * `--max-semi-space-size=2`: a young generation of 2 MB semi-spaces for the event loop instead of
 * V8's 16 MB. Under load V8 grows it to the maximum, and the pages stay resident: 32 MB of the
 * relay's ~132 MB peak RSS at 20 sessions was young generation, of which ~1 MB was alive after a
 * scavenge. Each scavenge only visits what is alive, so a smaller young generation costs more, but
 * shorter, pauses.
 * - 4 MB (the setting from 30 Nov 12:00): peak ~112 MB; four alternated pairs of 5,000 messages could
 *   not tell the CPU from 16 MB's.
 * - 2 MB (since 30 Nov 15:25): ~5 MiB less again (103.8 -> 97.0 MiB median with the thread's 3 MB young
 *   generation, six alternated pairs of 5,000 messages), CPU per message 2.37 -> 2.42 ms, within those
 *   pairs' noise (per pair -0.24 to +0.36 ms). On the morning of 30 Nov, three pairs against V8's
 *   16 MB (per pair +0.41, +0.64, -0.12 ms) had put 2 MB's cost at ~13%; docs/performance.md has both.
 */
export const RELAY_NODE_FLAGS: readonly string[] = ['--max-semi-space-size=2'];

/**
 * V8 flags are process-wide, and V8 lets `--max-semi-space-size` win over the young generation a
 * worker thread asks for in its `resourceLimits`: started with RELAY_NODE_FLAGS, the delivery thread
 * got the event loop's 4 MB semi-spaces (8 MB of new space) instead of its own (then 6 MB) young generation
 * (4 MB of new space), ~5 MB more peak RSS. V8 reads the flag only when it sets up an isolate's heap,
 * so clearing it once the event loop's heap exists leaves that heap as it is and lets every thread
 * started afterwards size its own. Call it just before starting a thread.
 */
export function letThreadsSizeTheirYoungGeneration(): void {
  setFlagsFromString('--max-semi-space-size=0');
}

/**
 * `MALLOC_ARENA_MAX=2`: glibc otherwise gives the delivery thread its own malloc arena, which keeps
 * the Buffers that thread freed resident (README, "Memory").
 */
export const RELAY_ENVIRONMENT: Readonly<Record<string, string>> = { MALLOC_ARENA_MAX: '2' };

/** The environment for a relay child process: these defaults, unless the caller's environment sets them. */
export function relayEnvironment(base: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  return { ...RELAY_ENVIRONMENT, ...base };
}

/**
 * Whether node was started with a flag matching `flag` (on its command line or in NODE_OPTIONS):
 * V8's flags accept `-` and `_` alike, so the pattern should too.
 */
export function nodeFlagGiven(flag: RegExp): boolean {
  return [...process.execArgv, ...(process.env.NODE_OPTIONS ?? '').split(/\s+/)].some((arg) => flag.test(arg));
}
