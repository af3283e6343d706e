import { setFlagsFromString } from 'node:v8';

/**
 * What the relay's node process is started with wherever this project starts it: `npm start`,
 * deploy/smarthop.service, the Dockerfile, the bench and the tests' child relays. Both must be given
 * before node starts (V8 sizes the young generation when it creates the heap, glibc reads its
 * environment once), so the relay cannot set them on itself; test/launch-settings.test.ts keeps the
 * launch files in step with this list.
 */

/**
 * `--max-semi-space-size=4`: a young generation of 4 MB semi-spaces for the event loop instead of
 * V8's 16 MB. Under load V8 grows it to the maximum, and the pages stay resident: 32 MB of the
 * relay's ~132 MB peak RSS at 20 sessions was young generation, of which ~1 MB was alive after a
 * scavenge. With 4 MB the peak is ~112 MB. Each scavenge only visits what is alive, so four times as
 * many of them cost V8 ~23 µs more of pause per message (`--trace-gc`, 5,000 messages: 445 against
 * 329 ms), and four alternated pairs of 5,000 messages could not tell the CPU apart (mean 13.3 against
 * 13.5 s). 2 MB saves another ~8 MB but doubles the scavenges again: ~0.12 ms more pause per message,
 * ~13% more CPU in alternated pairs of the plain bench.
 */
export const RELAY_NODE_FLAGS: readonly string[] = ['--max-semi-space-size=4'];

/**
 * V8 flags are process-wide, and V8 lets `--max-semi-space-size` win over the young generation a
 * worker thread asks for in its `resourceLimits`: started with RELAY_NODE_FLAGS, the delivery thread
 * got the event loop's 4 MB semi-spaces (8 MB of new space) instead of its own 6 MB young generation
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
