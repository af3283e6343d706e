import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { madeOncePerRun } from './run-cache';

/** openssl's arguments for a new RSA key and a certificate signed with it, valid for two days (one test run). */
function selfSignedArgs(key: string, cert: string, subject: string, extensions: string[]): string[] {
  const head = ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '2'];
  return [...head, '-subj', subject, ...extensions.flatMap((extension) => ['-addext', extension])];
}

/** A self-signed certificate made with openssl for this test run; returns the file paths. */
export function makeCertificate(dir: string, commonName = 'relay.test'): { cert: string; key: string } {
  const [certFile, keyFile] = [`${commonName}.crt`, `${commonName}.key`];
  madeOncePerRun(dir, `self-signed-${commonName}`, [certFile, keyFile], (into) => {
    const [key, cert] = [path.join(into, keyFile), path.join(into, certFile)];
    const names = `subjectAltName=DNS:${commonName},IP:127.0.0.1`;
    execFileSync('openssl', selfSignedArgs(key, cert, `/CN=${commonName}`, [names]), { stdio: 'ignore' });
  });
  return { cert: path.join(dir, certFile), key: path.join(dir, keyFile) };
}

/**
 * A private CA and a leaf it signed (SAN DNS:<name>, IP:127.0.0.1), made with openssl for this test
 * run: smart hosts that speak TLS with a certificate nothing else trusts.
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
    run(selfSignedArgs(caKey, ca, '/CN=smarthop test CA', caExtensions));
    run(['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', csr, '-subj', `/CN=${leafName}`]);
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
