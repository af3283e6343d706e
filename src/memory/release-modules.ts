import { nodeFlagGiven } from './launch-settings';

/**
 * Lets go of modules a long-running process needs only now and then.
 *
 * Node keeps every module it has loaded for the life of the process: `require.cache` holds it, its
 * requirer lists it in `children`, and each module it loaded first points back at it as `parent`.
 * Through those links a module's exports keep its functions alive, and the functions keep their
 * compiled code and their whole source text. The relay reads its config with zod and yaml at start
 * and on a reload only, yet kept ~4.7 MiB of heap for them (measured after a forced collection:
 * 8.1 MiB with them, 3.4 MiB once released).
 *
 * Releasing drops those three kinds of link to the chosen modules, so the next collection frees
 * them. A later `require` of one loads it afresh. That is only safe for modules whose objects
 * never outlive the call (no class whose instances the rest of the process keeps and checks with
 * `instanceof`); the caller picks them.
 */

export interface ReleaseSpec {
  /** Which loaded files to let go of (absolute paths, as in `require.cache`). */
  isTransient: (file: string) => boolean;
  /**
   * Globals the released modules set on first load and read again on the next: left set, they
   * would keep the old copy alive (zod keeps its registry and its error messages there).
   */
  globals?: readonly string[];
}

/**
 * Runs `use`, then lets go of the modules `spec` picks, whether `use` returned or threw. The release
 * only saves memory: if it fails, `use`'s result (a config read, say) must stand, so its error is
 * passed to `onReleaseError` instead of replacing that result.
 */
export function useThenRelease<T>(use: () => T, spec: ReleaseSpec, onReleaseError: (err: unknown) => void = () => {}): T {
  try {
    return use();
  } finally {
    try {
      releaseModules(spec);
    } catch (err) {
      onReleaseError(err);
    }
  }
}

/** Drops every link Node keeps to the modules `spec` picks; returns how many it let go of. */
export function releaseModules(spec: ReleaseSpec): number {
  const released = new Map<string, NodeJS.Module>();
  for (const [file, loaded] of Object.entries(require.cache)) {
    if (loaded && spec.isTransient(file)) released.set(file, loaded);
  }
  if (released.size === 0) return 0;
  const releasedModules = new Set(released.values());
  for (const file of released.keys()) delete require.cache[file];
  // Reading `parent` warns under --pending-deprecation (see pendingDeprecationsOn).
  const useParents = !pendingDeprecationsOn();
  // Whoever loaded a released module first holds it too, even a module outside the cache (the
  // entry of `node -e`, say).
  const holders = new Set(Object.values(require.cache));
  if (useParents) for (const loaded of releasedModules) if (loaded.parent && !releasedModules.has(loaded.parent)) holders.add(loaded.parent);
  for (const kept of holders) {
    if (!kept) continue;
    if (Array.isArray(kept.children) && kept.children.some((child) => releasedModules.has(child))) {
      kept.children = kept.children.filter((child) => !releasedModules.has(child));
    }
    // `parent` is whoever loaded a module first: a kept module first loaded by a released one
    // (the config's own helpers, say) would otherwise hold it.
    if (useParents && kept.parent && releasedModules.has(kept.parent)) kept.parent = null;
  }
  const scope = globalThis as Record<string, unknown>;
  for (const name of spec.globals ?? []) delete scope[name];
  return released.size;
}

/**
 * `module.parent` is deprecated (DEP0144): reading or setting it warns, or throws with
 * `--throw-deprecation`, when node runs with `--pending-deprecation`. The relay then leaves those
 * links alone, and frees less.
 */
function pendingDeprecationsOn(): boolean {
  return nodeFlagGiven(/^--pending[-_]deprecation$/) || process.env.NODE_PENDING_DEPRECATION === '1';
}
