import { dirname, sep } from 'node:path';
import { useThenRelease, type ReleaseSpec } from '../memory/release-modules';
import type { ConfigResult } from './load';

/**
 * Reads the config file the way `loadConfigFile` does, then lets go of the code that read it: zod
 * (the schema), yaml (the parser) and the two modules built on them hold ~4.7 MiB of the relay's
 * heap, for a job it does at start and on a reload only. A reload loads them afresh: ~0.1 s of
 * event loop instead of ~6 ms.
 *
 * Nothing the result holds comes from them: the schema's transforms build their values with the
 * relay's own modules (policy matchers, ipaddr.js), which stay loaded. A release that fails only
 * costs memory, so it is reported to `onReleaseError` and the config read stands.
 */
export function loadConfigAndRelease(file: string, env: NodeJS.ProcessEnv = process.env, onReleaseError?: (err: unknown) => void): ConfigResult {
  return useThenRelease(() => (require('./load') as typeof import('./load')).loadConfigFile(file, env), CONFIG_READER, onReleaseError);
}

const CONFIG_READER_FILES = new Set([require.resolve('./load'), require.resolve('./schema')]);
// The packages this relay resolves, not another dependency's private copy of them.
const CONFIG_READER_PACKAGES = ['zod', 'yaml'].map((name) => dirname(require.resolve(`${name}/package.json`)) + sep);

export const CONFIG_READER: ReleaseSpec = {
  isTransient: (file) => CONFIG_READER_FILES.has(file) || CONFIG_READER_PACKAGES.some((dir) => file.startsWith(dir)),
  globals: ['__zod_globalConfig', '__zod_globalRegistry'],
};
