import { readFileSync } from 'node:fs';

/**
 * A library used below its public API, in one adapter module written for exactly one version of it
 * (package.json pins that version). The relay checks at start that the installed copy is that
 * version, so an upgrade that changed the private part fails with a clear message instead of
 * misbehaving later.
 */
export interface PinnedLibrary {
  /** The package name, as in package.json. */
  name: string;
  /** The only version the adapter supports. */
  supported: string;
  /** The adapter module and what it uses (`src/nodemailer-adapter.ts uses its SMTP pool …`). */
  adapter: string;
}

/** Why the installed copy cannot be used, or undefined when it is the supported version. */
export function pinnedVersionProblem(library: PinnedLibrary, installed?: string): string | undefined {
  installed ??= installedVersion(library.name);
  if (installed === library.supported) return undefined;
  return (
    `${library.name} ${installed} is installed, but smarthop needs ${library.name} ${library.supported} exactly ` +
    `(${library.adapter}); install the versions package.json pins (npm ci)`
  );
}

/** Throws pinnedVersionProblem's message: called before the relay starts. */
export function checkPinnedVersion(library: PinnedLibrary): void {
  const problem = pinnedVersionProblem(library);
  if (problem) throw new Error(problem);
}

function installedVersion(name: string): string {
  const info = JSON.parse(readFileSync(require.resolve(`${name}/package.json`), 'utf8')) as { version?: unknown };
  return typeof info.version === 'string' ? info.version : 'of an unknown version';
}
