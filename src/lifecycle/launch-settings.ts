/**
 * How the relay's node process is launched, in one place: `npm start`, deploy/smarthop.service, the
 * Dockerfile, the bench and the tests' child relays all start it with these, and
 * test/launch-settings.test.ts keeps the three launch files in step with this list. Both settings
 * must be given before node starts (V8 sizes its heaps when it creates them, glibc reads its
 * environment once); the relay never changes a V8 flag or its allocator while it runs.
 */

/**
 * `--max-semi-space-size=2`: young generations of 2 MB semi-spaces instead of V8's 16 MB. Under load
 * V8 grows a young generation to its maximum and the pages stay resident, while only about 1 MB of
 * the event loop's is alive after a scavenge: at 16 MB, 32 MB of a ~132 MB peak RSS at 20 sessions
 * was young generation. Each scavenge visits only what is alive, so the smaller space costs more, but
 * shorter, pauses: alternated bench runs could not tell the CPU per message apart from 4 MB's, and
 * put it within their noise of V8's default. The flag is process-wide, so the delivery thread's
 * heap gets the same semi-spaces (its garbage is mostly file chunks that die young, so it gains the
 * same way). docs/performance.md has the runs.
 */
/**
 * `--max-old-space-size=512`: a bound on each heap's old generation, and with it how far V8 lets the
 * old space grow past what survived its last full collection before it collects again. Without a
 * bound V8 sizes the heap for the machine's memory and, when collections are cheap, lets the old
 * space grow to 4x what is alive; at 512 MiB it grows by less than half again. The relay keeps about
 * 24 MiB alive, but sessions promote garbage steadily, so without the bound the old space filled
 * with dead objects: peak RSS 171 MiB at 20 sessions and 189 MiB at 200, against 108 and 127 MiB
 * with it, for the same CPU per message. A heap that does reach 512 MiB stops the process (systemd
 * and the container restart it; what was accepted is on disk), where an unbounded one would grow.
 */
const OLD_GENERATION_FLAG = '--max-old-space-size=512';

export const RELAY_NODE_FLAGS: readonly string[] = ['--max-semi-space-size=2', OLD_GENERATION_FLAG];

/**
 * glibc's allocator, which holds every Buffer's bytes:
 * - `MALLOC_ARENA_MAX=2`: glibc otherwise gives the delivery thread a malloc arena of its own, which
 *   keeps the Buffers that thread freed resident.
 * - `MALLOC_MMAP_THRESHOLD_=65536`: allocations of 64 KiB and more (every socket read starts as one,
 *   and so do smtp-server's copy of it and each read of a queue file) get pages of their own, which
 *   go back to the system when the Buffer is freed. Without it they come from the arenas, and a
 *   large message leaves them full of freed chunks that glibc cannot return while any small
 *   allocation above them lives: a 50 MiB message left the relay 17-22 MiB larger for good, with
 *   it RSS is back at its baseline within seconds. It costs a map and an unmap per read, about 2 us
 *   on this machine (some tens of us per message at most).
 */
export const RELAY_ENVIRONMENT: Readonly<Record<string, string>> = {
  MALLOC_ARENA_MAX: '2',
  MALLOC_MMAP_THRESHOLD_: '65536',
};

/** The environment for a relay child process: these defaults, unless the caller's environment sets them. */
export function relayEnvironment(base: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  return { ...RELAY_ENVIRONMENT, ...base };
}
