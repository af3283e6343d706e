import { hashPassword } from '../src/ingress/password';
import { makeCertificate, relayPerDescribe } from './helpers/harness';
import { openSession, plainAuth } from './helpers/smtp-client';

/**
 * RFC 3207 4.2: after STARTTLS the server forgets what the client established before it, an AUTH
 * included. smtp-server forgets its record of the user; the relay forgets the credential client the
 * AUTH named, so a session that authenticated in plaintext relays after STARTTLS only once it
 * authenticates again under TLS.
 */
describe('STARTTLS forgets an AUTH given before it', () => {
  const t = relayPerDescribe(async (dir) => ({
    tls: makeCertificate(dir),
    listeners: [
      {
        name: 'submission',
        address: '127.0.0.1:0',
        tls: 'starttls',
        auth: 'required',
        allow_insecure_auth: true,
      },
    ],
    clients: [
      { name: 'lan', networks: ['127.0.0.1/32'] },
      { name: 'shop', username: 'shop', password_hash: await hashPassword('secret') },
    ],
  }));

  test('a network client that authenticated in plaintext must authenticate again after STARTTLS', async () => {
    const { client } = await openSession(t.running.portOf('submission'), { localAddress: '127.0.0.1' });
    try {
      expect(await client.command(plainAuth('shop', 'secret'))).toMatch(/^235 /);
      expect(await client.startTls()).toMatch(/^220 /);
      expect(await client.command('EHLO app.test')).toMatch(/^250/);
      expect(await client.command('MAIL FROM:<app@corp.example>')).toBe('530 5.7.0 Authentication required');
      expect(await client.command(plainAuth('shop', 'secret'))).toMatch(/^235 /);
      expect(await client.command('MAIL FROM:<app@corp.example>')).toMatch(/^250 /);
    } finally {
      await client.quit();
    }
  });

  test('from 127.0.0.2: no AUTH before STARTTLS, AUTH under TLS works as before', async () => {
    const { client, ehlo } = await openSession(t.running.portOf('submission'), { localAddress: '127.0.0.2' });
    try {
      expect(ehlo).not.toMatch(/AUTH/);
      expect(await client.command(plainAuth('shop', 'secret'))).toMatch(/^538 5\.7\.11 /);
      expect(await client.startTls()).toMatch(/^220 /);
      expect(await client.command('EHLO app.test')).toMatch(/AUTH/);
      expect(await client.command('MAIL FROM:<app@corp.example>')).toBe('530 5.7.0 Authentication required');
      expect(await client.command(plainAuth('shop', 'secret'))).toMatch(/^235 /);
      expect(await client.command('MAIL FROM:<app@corp.example>')).toMatch(/^250 /);
    } finally {
      await client.quit();
    }
  });
});
