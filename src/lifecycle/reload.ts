import { isDeepStrictEqual } from 'node:util';
import type { RelayConfig, SmartHostConfig } from '../config/schema';
import type { SmartHost } from '../forward/smarthost';

/**
 * Pure planning for a reload (SIGHUP, POST /api/reload): which parts of a new, already validated
 * config a running relay takes over, and which only a restart can apply. Who may relay and where mail
 * goes change at once; sockets, files and process-wide settings keep their running values, and the
 * admin is told so instead of having listeners rebound under live sessions.
 */

/** Top-level sections that a running relay swaps on reload. */
export const RELOADABLE_SECTIONS = ['clients', 'policies', 'routes', 'smarthosts', 'log'] as const;
type ReloadableSection = (typeof RELOADABLE_SECTIONS)[number];

export type ReloadResult =
  { ok: true; changed: string[]; restart_required: string[] } | { ok: false; errors: string[] };

export interface ReloadPlan {
  /** What to run: the reloadable sections of the new config, everything else as it runs now. */
  effective: RelayConfig;
  /** Reloadable sections whose values changed. */
  changed: ReloadableSection[];
  /** Keys that changed in the file but keep their running values until a restart (`listeners.smtp`, `http.address`). */
  restartRequired: string[];
}

export function planReload(running: RelayConfig, next: RelayConfig): ReloadPlan {
  const effective: RelayConfig = { ...running };
  const changed: ReloadableSection[] = [];
  for (const section of RELOADABLE_SECTIONS) {
    if (!sameConfigValue(running[section], next[section])) changed.push(section);
  }
  Object.assign(effective, pick(next, RELOADABLE_SECTIONS));

  const restartRequired: string[] = [];
  const keys = new Set([...Object.keys(running), ...Object.keys(next)] as (keyof RelayConfig)[]);
  for (const key of keys) {
    if ((RELOADABLE_SECTIONS as readonly string[]).includes(key)) continue;
    restartRequired.push(...differences(key, running[key], next[key]));
  }
  return { effective, changed, restartRequired };
}

/** Changed keys below `key`: listeners by name, objects one level down, anything else as a whole. */
function differences(key: string, before: unknown, after: unknown): string[] {
  if (sameConfigValue(before, after)) return [];
  if (key === 'listeners' && Array.isArray(before) && Array.isArray(after)) {
    const byName = (list: { name: string }[]) => new Map(list.map((l) => [l.name, l]));
    const a = byName(before as { name: string }[]);
    const b = byName(after as { name: string }[]);
    return [...new Set([...a.keys(), ...b.keys()])]
      .filter((name) => !sameConfigValue(a.get(name), b.get(name)))
      .map((name) => `listeners.${name}`);
  }
  if (isPlainObject(before) && isPlainObject(after)) {
    const subKeys = new Set([...Object.keys(before), ...Object.keys(after)]);
    return [...subKeys].filter((sub) => !sameConfigValue(before[sub], after[sub])).map((sub) => `${key}.${sub}`);
  }
  return [key];
}

/** The config is plain data (patterns are compiled by the stages that use them), so values compare as they are. */
function sameConfigValue(before: unknown, after: unknown): boolean {
  return isDeepStrictEqual(before, after);
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

function pick<T extends object, K extends keyof T>(object: T, keys: readonly K[]): Pick<T, K> {
  const out = {} as Pick<T, K>;
  for (const key of keys) out[key] = object[key];
  return out;
}

/**
 * The smart hosts to run after a reload. A host whose settings did not change is kept as it is, with
 * its connection pool (and whatever breaker or quota state it holds); a changed or removed one is
 * retired: the caller closes it, which lets its sends under way finish first.
 */
export function reconcileSmartHosts<H extends SmartHost>(
  running: readonly SmartHostConfig[],
  hosts: ReadonlyMap<string, H>,
  next: readonly SmartHostConfig[],
  create: (config: SmartHostConfig) => H,
): { hosts: Map<string, H>; retired: H[] } {
  const runningByName = new Map(running.map((config) => [config.name, config]));
  const kept = new Map<string, H>();
  for (const config of next) {
    const existing = hosts.get(config.name);
    kept.set(
      config.name,
      existing && isDeepStrictEqual(runningByName.get(config.name), config) ? existing : create(config),
    );
  }
  const retired = [...hosts.entries()].filter(([name, host]) => kept.get(name) !== host).map(([, host]) => host);
  return { hosts: kept, retired };
}
