import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { findBinary } from '../find-binary';

/**
 * Finds `postfix` and `smtp-source`, installing Debian's postfix package first when they are
 * missing (bench/postfix/install.sh). Both live in /usr/sbin, which is often not on a non-root PATH.
 */

export interface PostfixBinaries {
  postfix: string;
  smtpSource: string;
}

const SEARCH_DIRS = ['/usr/sbin', '/usr/local/sbin', '/usr/lib/postfix/sbin'];
const INSTALL_TIMEOUT_MS = 10 * 60_000;

/** The install script in the source tree; this file runs from dist/bench/postfix/. */
export function installScript(): string {
  return path.resolve(__dirname, '..', '..', '..', 'bench', 'postfix', 'install.sh');
}

/** A Postfix program: on PATH or in the sbin directories Debian installs them to. */
export function findPostfixBinary(name: string): string | null {
  return findBinary(name, SEARCH_DIRS);
}

/** Throws with the reason (not root, apt failed) when Postfix cannot be made available. */
export function ensurePostfix(): PostfixBinaries {
  if (process.getuid?.() !== 0) {
    // master(8) must start as root and hand its daemons to the postfix user; there is no unprivileged mode.
    throw new Error(
      '--compare postfix needs root: a private Postfix master starts as root and runs its daemons as user postfix',
    );
  }
  let postfix = findPostfixBinary('postfix');
  let smtpSource = findPostfixBinary('smtp-source');
  if (postfix === null || smtpSource === null) {
    process.stderr.write('bench: postfix or smtp-source missing, running bench/postfix/install.sh\n');
    const run = spawnSync('bash', [installScript()], {
      stdio: ['ignore', 'inherit', 'inherit'],
      timeout: INSTALL_TIMEOUT_MS,
    });
    if (run.status !== 0)
      throw new Error(`bench/postfix/install.sh failed (${run.error?.message ?? `exit ${String(run.status)}`})`);
    postfix = findPostfixBinary('postfix');
    smtpSource = findPostfixBinary('smtp-source');
  }
  if (postfix === null || smtpSource === null)
    throw new Error('postfix installed, yet postfix or smtp-source is still not found in PATH or /usr/sbin');
  return { postfix, smtpSource };
}
