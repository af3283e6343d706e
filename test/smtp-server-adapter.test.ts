import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { SMTPServer } from 'smtp-server';
import { SMTPConnection } from 'smtp-server/lib/smtp-connection';
import {
  assertSupportedSmtpServer,
  installedSmtpServerVersion,
  SUPPORTED_SMTP_SERVER_VERSION,
} from '../src/ingress/smtp-server-adapter';
import { relayPerDescribe } from './helpers/harness';
import { openSession, RawSmtpClient } from './helpers/smtp-client';

/**
 * smtp-server's private members are used in one module only, against one exact version, and
 * nothing in the process outside the relay's own servers is changed by them.
 */
describe('the smtp-server adapter', () => {
  // Taken before any relay or sink exists: what the library itself defines.
  const libraryInit = SMTPConnection.prototype.init;
  const libraryConnect = SMTPServer.prototype.connect;
  const t = relayPerDescribe(() => ({
    listeners: [
      { name: 'smtp', address: '127.0.0.1:0', tls: 'none', auth: 'off' },
      { name: 'patient', address: '127.0.0.1:0', tls: 'none', auth: 'off', greeting_delay: '300ms' },
    ],
  }));

  test('package.json pins smtp-server to the exact version the adapter supports, and that version is installed', () => {
    const manifest = JSON.parse(readFileSync(path.join(__dirname, '..', 'package.json'), 'utf8')) as {
      dependencies: Record<string, string>;
    };
    expect(manifest.dependencies['smtp-server']).toBe(SUPPORTED_SMTP_SERVER_VERSION);
    expect(installedSmtpServerVersion()).toBe(SUPPORTED_SMTP_SERVER_VERSION);
    expect(() => assertSupportedSmtpServer()).not.toThrow();
  });

  test('another version is refused with a message naming both (the check runs when a listener is built)', () => {
    expect(() => assertSupportedSmtpServer('3.21.7')).toThrow(
      /smtp-server 3\.21\.7 is installed, but smarthop supports exactly 3\.21\.6/,
    );
  });

  test("with a relay and a sink running, the library's prototypes are untouched (no process-wide patch)", () => {
    expect(t.running.portOf('smtp')).toBeGreaterThan(0);
    expect(t.sink.port).toBeGreaterThan(0);
    expect(SMTPConnection.prototype.init).toBe(libraryInit);
    expect(SMTPServer.prototype.connect).toBe(libraryConnect);
  });

  test('each listener greets after its own greeting_delay: at once, or 421 for a client that talks first', async () => {
    const prompt = await RawSmtpClient.connect(t.running.portOf('smtp'));
    prompt.write('EHLO early.example\r\n');
    expect(await prompt.reply()).toMatch(/^220 /);
    expect(await prompt.reply()).toMatch(/^250/);
    await prompt.quit();
    const early = await RawSmtpClient.connect(t.running.portOf('patient'));
    early.write('EHLO early.example\r\n');
    expect(await early.reply()).toMatch(/^421 .*You talk too soon/);
    await early.quit();
    const polite = await openSession(t.running.portOf('patient'));
    expect(polite.greeting).toMatch(/^220 /);
    await polite.client.quit();
  });
});
