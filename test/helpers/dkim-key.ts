import { generateKeyPairSync } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { dkimRecord } from '../../src/forward/reenvelope/dkim-keys';
import { madeOncePerRun } from './run-cache';

export interface TestKey {
  file: string;
  /** The TXT record that publishes its public half. */
  record: string;
}

/**
 * A DKIM key made for this test run (node:crypto), written as a PKCS#8 PEM file. Keys of different
 * names differ; within one run a name gives the same key (see madeOncePerRun).
 */
export function makeDkimKey(dir: string, kind: 'rsa' | 'ed25519', name: string = kind): TestKey {
  const [pem, record] = [`${name}.pem`, `${name}.record`];
  madeOncePerRun(dir, `dkim-${kind}-${name}`, [pem, record], (into) => {
    const pair = kind === 'rsa' ? generateKeyPairSync('rsa', { modulusLength: 2048 }) : generateKeyPairSync('ed25519');
    writeFileSync(path.join(into, pem), pair.privateKey.export({ type: 'pkcs8', format: 'pem' }));
    writeFileSync(path.join(into, record), dkimRecord(pair.publicKey));
  });
  return { file: path.join(dir, pem), record: readFileSync(path.join(dir, record), 'utf8') };
}
