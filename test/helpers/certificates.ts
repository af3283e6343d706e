import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { madeOncePerRun } from './run-cache';

/**
 * The key a certificate is made with. EC P-256 unless a test needs RSA: openssl takes about half a
 * CPU-second to make an RSA-2048 key and each TLS handshake signs with it, where a P-256 key costs
 * next to nothing. RSA is asked for where the key type is what is tested: static-RSA cipher suites,
 * and Graph's client assertions (PS256).
 */
export type KeyType = 'ec' | 'rsa';

/** openssl's `-newkey` argument and its options for a key of this type. */
function newKeyArgs(keyType: KeyType): string[] {
  return keyType === 'rsa' ? ['-newkey', 'rsa:2048'] : ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1'];
}

/** openssl's arguments for a new key and a certificate signed with it, valid for two days (one test run). */
function selfSignedArgs(key: string, cert: string, subject: string, extensions: string[], keyType: KeyType): string[] {
  const head = ['req', '-x509', ...newKeyArgs(keyType), '-nodes', '-keyout', key, '-out', cert, '-days', '2'];
  return [...head, '-subj', subject, ...extensions.flatMap((extension) => ['-addext', extension])];
}

/** A self-signed certificate made with openssl for this test run; returns the file paths. */
export function makeCertificate(
  dir: string,
  commonName = 'relay.test',
  keyType: KeyType = 'ec',
): { cert: string; key: string } {
  const [certFile, keyFile] = [`${commonName}.crt`, `${commonName}.key`];
  madeOncePerRun(dir, `self-signed-${keyType}-${commonName}`, [certFile, keyFile], (into) => {
    const [key, cert] = [path.join(into, keyFile), path.join(into, certFile)];
    const names = `subjectAltName=DNS:${commonName},IP:127.0.0.1`;
    execFileSync('openssl', selfSignedArgs(key, cert, `/CN=${commonName}`, [names], keyType), { stdio: 'ignore' });
  });
  return { cert: path.join(dir, certFile), key: path.join(dir, keyFile) };
}

/**
 * A private CA and a leaf it signed (SAN DNS:<name>, IP:127.0.0.1), both with P-256 keys, made with
 * openssl for this test run: smart hosts that speak TLS with a certificate nothing else trusts.
 */
export function makeCertificateAuthority(
  dir: string,
  leafName = 'smarthost.test',
): { ca: string; cert: string; key: string } {
  const [caFile, certFile, keyFile] = ['test-ca.crt', `${leafName}.crt`, `${leafName}.key`];
  madeOncePerRun(dir, `ca-${leafName}`, [caFile, certFile, keyFile], (into) => {
    const ca = path.join(into, caFile);
    const caKey = path.join(into, 'test-ca.key');
    const key = path.join(into, keyFile);
    const csr = path.join(into, `${leafName}.csr`);
    const cert = path.join(into, certFile);
    const ext = path.join(into, `${leafName}.ext`);
    const run = (args: string[]) => execFileSync('openssl', args, { stdio: 'ignore' });
    const caExtensions = ['basicConstraints=critical,CA:TRUE', 'keyUsage=critical,keyCertSign,cRLSign'];
    run(selfSignedArgs(caKey, ca, '/CN=smarthop test CA', caExtensions, 'ec'));
    run(['req', ...newKeyArgs('ec'), '-nodes', '-keyout', key, '-out', csr, '-subj', `/CN=${leafName}`]);
    writeFileSync(
      ext,
      `basicConstraints=CA:FALSE\nsubjectAltName=DNS:${leafName},IP:127.0.0.1\nextendedKeyUsage=serverAuth\n`,
    );
    run([
      'x509',
      '-req',
      '-in',
      csr,
      '-CA',
      ca,
      '-CAkey',
      caKey,
      '-CAcreateserial',
      '-out',
      cert,
      '-days',
      '2',
      '-extfile',
      ext,
    ]);
  });
  return { ca: path.join(dir, caFile), cert: path.join(dir, certFile), key: path.join(dir, keyFile) };
}
