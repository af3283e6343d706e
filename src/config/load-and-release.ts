import { sep } from 'node:path';
import { useThenRelease, type Release } from '../memory/release-modules';
import type { ConfigResult } from './load';

/**
 * Reads the config file the way `loadConfigFile` does, then lets go of the code that read it: zod
 * (the schema), yaml (the parser) and the two modules built on them hold ~4.7 MiB of the relay's
 * heap, for a job it does at start and on a reload only. A reload loads them afresh, ~0.1 s.
 *
 * Nothing the result holds comes from them: the schema's transforms build their values with the
 * relay's own modules (policy matchers, ipaddr.js), which stay loaded.
 */
export function loadConfigAndRelease(file: string, env: NodeJS.ProcessEnv = process.env): ConfigResult {
  return useThenRelease(() => (require('./load') as typeof import('./load')).loadConfigFile(file, env), CONFIG_READER);
}

const CONFIG_READER_FILES = new Set([require.resolve('./load'), require.resolve('./schema')]);
const CONFIG_READER_PACKAGES = ['zod', 'yaml'].map((name) => `${sep}node_modules${sep}${name}${sep}`);

export const CONFIG_READER: Release = {
  isTransient: (file) => CONFIG_READER_FILES.has(file) || CONFIG_READER_PACKAGES.some((dir) => file.includes(dir)),
  globals: ['__zod_globalConfig', '__zod_globalRegistry'],
};
