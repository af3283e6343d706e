import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { NODEMAILER } from '../src/nodemailer-adapter';
import { SMTP_SERVER } from '../src/ingress/smtp-server-adapter';
import { checkPinnedVersion, pinnedVersionProblem } from '../src/pinned-library';

/**
 * nodemailer and smtp-server are used below their public APIs, each in one adapter module: the
 * versions those adapters were written for are pinned exactly, and another one stops the relay at
 * start with a message that names both. mailauth is used through its public API only, but the tests'
 * DKIM oracle reads its body hasher, so it is pinned exactly too.
 */

const readJson = (file: string): unknown => JSON.parse(readFileSync(path.resolve(__dirname, '..', file), 'utf8'));
const manifest = readJson('package.json') as { dependencies: Record<string, string> };
const lock = readJson('package-lock.json') as {
  packages: Record<string, { version?: string; dependencies?: Record<string, string> }>;
};

describe.each([NODEMAILER, SMTP_SERVER])('$name', (library) => {
  test('is pinned to exactly the version its adapter supports, in package.json and the lock', () => {
    expect(manifest.dependencies[library.name]).toBe(library.supported);
    expect(lock.packages[''].dependencies?.[library.name]).toBe(library.supported);
    expect(lock.packages[`node_modules/${library.name}`].version).toBe(library.supported);
  });

  test('the installed copy passes the start-up check', () => {
    expect(pinnedVersionProblem(library)).toBeUndefined();
    expect(() => checkPinnedVersion(library)).not.toThrow();
  });

  test('another version is refused with both versions and the adapter named', () => {
    const [major, minor, patch] = library.supported.split('.').map(Number);
    for (const other of [`${major}.${minor}.${patch + 1}`, `${major + 1}.0.0`, `${library.supported}-beta.1`]) {
      const text = pinnedVersionProblem(library, other);
      expect(text).toContain(`${library.name} ${other} is installed`);
      expect(text).toContain(`${library.name} ${library.supported} exactly`);
      expect(text).toContain(library.adapter);
    }
  });
});

test('mailauth, whose internals the tests read as an oracle, is pinned exactly', () => {
  expect(manifest.dependencies.mailauth).toMatch(/^\d+\.\d+\.\d+$/);
  expect(lock.packages[''].dependencies?.mailauth).toBe(manifest.dependencies.mailauth);
  expect(lock.packages['node_modules/mailauth'].version).toBe(manifest.dependencies.mailauth);
});
