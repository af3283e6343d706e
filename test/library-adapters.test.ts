import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import {
  checkNodemailerVersion, nodemailerVersionProblem, SUPPORTED_NODEMAILER_VERSION,
} from '../src/forward/nodemailer-adapter';
import {
  checkMailauthVersion, mailauthVersionProblem, SUPPORTED_MAILAUTH_VERSION,
} from '../src/reenvelope/mailauth-adapter';

/**
 * nodemailer and mailauth are used below their public APIs, each in one adapter module: the
 * versions those adapters were written for are pinned exactly, and another one stops the relay at
 * start with a message that names both.
 */

const readJson = (file: string): unknown => JSON.parse(readFileSync(path.resolve(__dirname, '..', file), 'utf8'));
const manifest = readJson('package.json') as { dependencies: Record<string, string> };
const lock = readJson('package-lock.json') as {
  packages: Record<string, { version?: string; dependencies?: Record<string, string> }>;
};

describe.each([
  ['nodemailer', SUPPORTED_NODEMAILER_VERSION, nodemailerVersionProblem, checkNodemailerVersion],
  ['mailauth', SUPPORTED_MAILAUTH_VERSION, mailauthVersionProblem, checkMailauthVersion],
])('%s', (name, supported, problem, check) => {
  test('is pinned to exactly the version its adapter supports, in package.json and the lock', () => {
    expect(manifest.dependencies[name]).toBe(supported);
    expect(lock.packages[''].dependencies?.[name]).toBe(supported);
    expect(lock.packages[`node_modules/${name}`].version).toBe(supported);
  });

  test('the installed copy passes the start-up check', () => {
    expect(problem()).toBeUndefined();
    expect(() => check()).not.toThrow();
  });

  test('another version is refused with both versions named', () => {
    const [major, minor, patch] = supported.split('.').map(Number);
    for (const other of [`${major}.${minor}.${patch + 1}`, `${major + 1}.0.0`, `${supported}-beta.1`]) {
      const text = problem(other);
      expect(text).toContain(`${name} ${other} is installed`);
      expect(text).toContain(`${name} ${supported} exactly`);
    }
  });
});
