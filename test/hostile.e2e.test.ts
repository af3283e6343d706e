import { connect as tlsConnect } from 'node:tls';
import { prng } from '../bench/prng';
import { hashPassword } from '../src/ingress/password';
import { listenerPerAuthMode, makeCertificate, relayPerDescribe, waitFor } from './helpers/harness';
import { message, openSession, openTlsSession, plainAuth, RawSmtpClient } from './helpers/smtp-client';

/**
 * Hostile input over real sockets: nobody outside `clients` relays anything, and every malformed,
 * oversized, slow or flooding session gets a defined reply or a closed connection while the relay
 * keeps serving everybody else.
 */
describe('hostile input', () => {
  const password = 'open-relay-test-password';
  const t = relayPerDescribe(async (dir) => ({
    tls: makeCertificate(dir),
    listeners: [
      ...listenerPerAuthMode(),
      { name: 'v6', address: '[::1]:0', tls: 'none', auth: 'off' },
      { name: 'patient', address: '127.0.0.1:0', tls: 'none', auth: 'off', greeting_delay: '300ms' },
      { name: 'small', address: '127.0.0.1:0', tls: 'none', auth: 'off', max_clients: 3, socket_timeout: '1500ms' },
    ],
    clients: [
      { name: 'lan', networks: ['127.0.0.1/32'] },
      { name: 'shop', username: 'shop', password_hash: await hashPassword(password) },
    ],
  }));

  /** Every hostile test must leave the relay serving a trusted client normally. */
  async function stillServes(): Promise<void> {
    const before = t.sink.count;
    const { client } = await openSession(t.running.portOf('off'));
    expect(
      await client.sendMessage('erp@corp.example', ['ok@example.com'], message({ subject: 'still serving' })),
    ).toMatch(/^250 /);
    await client.quit();
    await waitFor(() => t.sink.count > before, 10_000, 'the control message');
  }

  const untrusted = { localAddress: '127.0.0.2' };
  const relayedFrom = (sender: string) => t.sink.messages.filter((m) => m.from === sender);

  /**
   * A stranger where it may still talk: the STARTTLS listener (after STARTTLS, AUTH could identify
   * it). Plaintext listeners refuse it at connect.
   */
  function strangerOverTls(): Promise<RawSmtpClient> {
    return openTlsSession(t.running.portOf('required'), untrusted, 'attacker.example');
  }

  describe('open relay matrix: nothing from an untrusted address relays', () => {
    test.each([
      ['off', /^554 5\.7\.1 Access denied/],
      ['optional', /^554 5\.7\.1 Access denied/],
      ['required', /^220 /],
    ])('listener %s greets an untrusted address with %p', async (listener, greeting) => {
      const client = await RawSmtpClient.connect(t.running.portOf(listener), untrusted);
      expect(await client.reply()).toMatch(greeting);
      await client.quit();
    });

    const hostileAddresses = [
      'victim@example.com',
      '@a.example:victim@example.com',
      'victim%example.com@relay.test',
      '"victim@example.com"@relay.test',
      'victim@[203.0.113.5]',
    ];
    test.each(hostileAddresses)('untrusted, no AUTH, RCPT %s → refused at MAIL, nothing relayed', async (rcpt) => {
      const client = await strangerOverTls();
      expect(await client.sendMessage('attacker@evil.example', [rcpt], message())).toBe(
        '530 5.7.0 Authentication required',
      );
      await client.quit();
      expect(relayedFrom('attacker@evil.example')).toHaveLength(0);
    });

    test('untrusted, wrong password over TLS → 535; AUTH before STARTTLS → 530; auth: off → unavailable', async () => {
      const tls = await openSession(t.running.portOf('required'), untrusted);
      await tls.client.startTls();
      await tls.client.command('EHLO attacker.example');
      expect(await tls.client.command(plainAuth('shop', 'guess'))).toBe('535 5.7.8 Authentication credentials invalid');
      expect(await tls.client.sendMessage('attacker@evil.example', ['victim@example.com'], message())).toBe(
        '530 5.7.0 Authentication required',
      );
      await tls.client.quit();

      const plain = await openSession(t.running.portOf('required'), untrusted);
      expect(await plain.client.command(plainAuth('shop', password))).toBe(
        '530 5.7.0 Must issue a STARTTLS command first',
      );
      await plain.client.quit();

      const off = await openSession(t.running.portOf('off'));
      expect(off.ehlo).not.toMatch(/AUTH/);
      expect(await off.client.command(plainAuth('shop', password))).toMatch(/^50[02] /);
      await off.client.quit();
      expect(relayedFrom('attacker@evil.example')).toHaveLength(0);
    });

    test.each([
      'XCLIENT ADDR=127.0.0.1 NAME=trusted.example',
      'XFORWARD ADDR=127.0.0.1',
      'PROXY TCP4 127.0.0.1 127.0.0.1 12345 25',
    ])('an untrusted client cannot claim a trusted address with %s', async (command) => {
      const client = await strangerOverTls();
      expect(await client.command(command)).toMatch(/^5\d\d /);
      expect(await client.sendMessage('attacker@evil.example', ['victim@example.com'], message())).toBe(
        '530 5.7.0 Authentication required',
      );
      await client.quit();
      expect(relayedFrom('attacker@evil.example')).toHaveLength(0);
    });

    test('IPv6 loopback is not IPv4 loopback: ::1 is refused where only 127.0.0.1/32 is trusted', async () => {
      const client = await RawSmtpClient.connect(t.running.portOf('v6'), { host: '::1' });
      expect(await client.reply()).toBe('554 5.7.1 Access denied: [::1] is not a permitted client');
      await client.quit();
    });

    test('a whole pipelined transaction from an untrusted address gets refusals for every step', async () => {
      const client = await strangerOverTls();
      client.write(
        'EHLO x\r\nMAIL FROM:<attacker@evil.example>\r\nRCPT TO:<victim@example.com>\r\n' +
          `DATA\r\n${message()}\r\n.\r\nQUIT\r\n`,
      );
      const replies: string[] = [];
      for (let reply = await client.reply(); reply !== null; reply = await client.reply())
        replies.push(reply.split('\n').pop() as string);
      expect(replies).toEqual(expect.arrayContaining(['530 5.7.0 Authentication required']));
      expect(replies.some((r) => r.startsWith('250 2.0.0 Ok: queued'))).toBe(false);
      expect(relayedFrom('attacker@evil.example')).toHaveLength(0);
    });
  });

  describe('malformed and abusive sessions', () => {
    test('with a greeting_delay, commands before the greeting get 421 and the connection closes', async () => {
      const client = await RawSmtpClient.connect(t.running.portOf('patient'));
      client.write('EHLO early.example\r\n');
      expect(await client.reply()).toMatch(/^421 .*You talk too soon/);
      await waitFor(() => client.isClosed, 5000, 'the connection to close');
      const polite = await openSession(t.running.portOf('patient'));
      expect(polite.greeting).toMatch(/^220 /);
      await polite.client.quit();
      await stillServes();
    });

    test('without a greeting_delay the greeting comes at once and a pipelined EHLO is answered', async () => {
      const client = await RawSmtpClient.connect(t.running.portOf('off'));
      client.write('EHLO early.example\r\n');
      expect(await client.reply()).toMatch(/^220 /);
      expect(await client.reply()).toMatch(/^250/);
      await client.quit();
    });

    test('an overlong command line gets 421 and the connection closes', async () => {
      const { client } = await openSession(t.running.portOf('off'));
      client.write(`MAIL FROM:<${'a'.repeat(40_000)}@corp.example>\r\n`);
      const reply = await client.reply();
      expect(reply).toBe('421 Error: Command line too long');
      await waitFor(() => client.isClosed, 5000, 'the connection to close');
      await client.quit();
      await stillServes();
    });

    test('a recipient with a bare CR or a NUL in it is refused by the parser and relays nothing', async () => {
      const { client } = await openSession(t.running.portOf('off'));
      expect(await client.command('MAIL FROM:<erp@corp.example>')).toMatch(/^250/);
      expect(await client.command('RCPT TO:<victim@example.com\rBcc: x@evil.example>')).toMatch(/^5\d\d /);
      expect(await client.command('RCPT TO:<victim\u0000@example.com>')).toMatch(/^5\d\d /);
      await client.quit();
      await stillServes();
    });

    test('thousands of RCPT: 452 past the ceiling, the session stays usable', async () => {
      const { client } = await openSession(t.running.portOf('off'));
      expect(await client.command('MAIL FROM:<erp@corp.example>')).toMatch(/^250/);
      const batch = Array.from({ length: 1001 }, (_, i) => `RCPT TO:<r${i}@example.com>\r\n`).join('');
      client.write(batch);
      const replies: string[] = [];
      for (let i = 0; i < 1001; i++) replies.push((await client.reply()) as string);
      expect(replies.slice(0, 1000).every((r) => r.startsWith('250'))).toBe(true);
      expect(replies[1000]).toMatch(/^452 /);
      expect(await client.command('RSET')).toMatch(/^250/);
      await client.quit();
    });

    test('8-bit without 8BITMIME, NUL bytes, overlong header lines, a bodiless header: defined replies', async () => {
      const bodies = [
        Buffer.from('From: a@corp.example\r\nSubject: caf\xe9\r\n\r\n8-bit \xff\xfe body\r\n', 'latin1'),
        Buffer.from('From: a@corp.example\r\nSubject: nul\r\n\r\nbefore\0after\r\n', 'latin1'),
        `From: a@corp.example\r\nX-Long: ${'l'.repeat(5000)}\r\n\r\nbody\r\n`,
        'From: a@corp.example\r\nSubject: only headers',
      ];
      for (const body of bodies) {
        const { client } = await openSession(t.running.portOf('off'));
        expect(await client.sendMessage('erp@corp.example', ['x@example.com'], body)).toMatch(/^(250|5\d\d) /);
        await client.quit();
      }
      await stillServes();
    });

    test('SMTPUTF8 addresses are accepted and relayed with SMTPUTF8', async () => {
      const { client, ehlo } = await openSession(t.running.portOf('off'));
      expect(ehlo).toMatch(/SMTPUTF8/);
      expect(await client.command('MAIL FROM:<bücher@corp.example> SMTPUTF8')).toMatch(/^250/);
      expect(await client.command('RCPT TO:<δοκιμή@παράδειγμα.δοκιμή>')).toMatch(/^250/);
      expect(await client.command('DATA')).toMatch(/^354/);
      client.write(Buffer.from('From: bücher@corp.example\r\nSubject: utf8\r\n\r\nΓειά\r\n.\r\n', 'utf8'));
      expect(await client.reply()).toMatch(/^250 /);
      await client.quit();
      await waitFor(() => t.sink.messages.some((m) => m.from === 'bücher@corp.example'), 10_000, 'the UTF-8 message');
    });

    test('a message with no end (client vanishes mid-DATA) leaves nothing queued', async () => {
      const before = t.sink.count;
      const { client } = await openSession(t.running.portOf('off'));
      await client.command('MAIL FROM:<vanish@corp.example>');
      await client.command('RCPT TO:<x@example.com>');
      await client.command('DATA');
      client.write('From: vanish@corp.example\r\n\r\nhalf a message');
      await new Promise((resolve) => setTimeout(resolve, 200));
      client.destroy();
      await stillServes();
      expect(t.sink.count).toBe(before + 1);
      expect(relayedFrom('vanish@corp.example')).toHaveLength(0);
    });

    test('slowloris: a client dribbling bytes does not hold up others; an idle one is cut off', async () => {
      const slow = await RawSmtpClient.connect(t.running.portOf('small'));
      await slow.reply();
      const idle = await RawSmtpClient.connect(t.running.portOf('small'));
      await idle.reply();
      let dribbling = true;
      const dribble = (async () => {
        for (const ch of 'EHLO slowly.example') {
          if (!dribbling) break;
          slow.write(ch);
          await new Promise((resolve) => setTimeout(resolve, 300));
        }
      })();
      await stillServes();
      await waitFor(() => idle.isClosed, 10_000, 'the idle connection to time out');
      dribbling = false;
      await dribble;
      await slow.quit();
    });

    test('a connection flood past max_clients gets 421 and the relay recovers', async () => {
      const clients = await Promise.all(
        Array.from({ length: 6 }, () => RawSmtpClient.connect(t.running.portOf('small'))),
      );
      const greetings = await Promise.all(clients.map((c) => c.reply()));
      expect(greetings.filter((g) => g?.startsWith('421')).length).toBeGreaterThanOrEqual(3);
      expect(greetings.filter((g) => g?.startsWith('220')).length).toBeLessThanOrEqual(3);
      await Promise.all(clients.map((c) => c.quit()));
      await stillServes();
    });
  });

  describe('TLS', () => {
    test('TLS below 1.2 is refused; TLS 1.2 and 1.3 work on the implicit-TLS listener', async () => {
      const handshake = (minVersion: 'TLSv1' | 'TLSv1.2' | 'TLSv1.3', maxVersion: 'TLSv1.1' | 'TLSv1.2' | 'TLSv1.3') =>
        new Promise<string>((resolve) => {
          const socket = tlsConnect({
            host: '127.0.0.1',
            port: t.running.portOf('implicit'),
            rejectUnauthorized: false,
            minVersion,
            maxVersion,
            ciphers: 'DEFAULT:@SECLEVEL=0',
          });
          socket.once('secureConnect', () => {
            resolve(socket.getProtocol() ?? 'unknown');
            socket.destroy();
          });
          socket.once('error', (err) => resolve(`error: ${err.message}`));
        });
      expect(await handshake('TLSv1.2', 'TLSv1.2')).toBe('TLSv1.2');
      expect(await handshake('TLSv1.3', 'TLSv1.3')).toBe('TLSv1.3');
      expect(await handshake('TLSv1', 'TLSv1.1')).toMatch(/^error: /);
    });
  });

  describe('fuzz', () => {
    const SEED = Number(process.env.FUZZ_SEED ?? 20261123);
    const SESSIONS = Number(process.env.FUZZ_SESSIONS ?? 60);
    const verbs = [
      'EHLO fuzz',
      'HELO fuzz',
      'MAIL FROM:<fuzz-untrusted@evil.example>',
      'RCPT TO:<victim@example.com>',
      'DATA',
      'RSET',
      'NOOP',
      'VRFY root',
      'EXPN all',
      'STARTTLS',
      'AUTH PLAIN',
      'AUTH LOGIN',
      'BDAT 10 LAST',
      'XCLIENT ADDR=127.0.0.1',
      'QUIT',
      '.',
      '',
    ];
    const junk = [
      '\r',
      '\n',
      '\0',
      '\r\n.\r\n',
      '\n.\n',
      'MAIL FROM:<fuzz-untrusted@evil.example>\r\n',
      ' SIZE=999999999',
      ':<>',
      '\x1b[A',
      'é',
      '%',
      '@',
      '<',
      '>',
    ];

    test(`${SESSIONS} seeded random, mutated untrusted sessions: relay lives, relays none (seed ${SEED})`, async () => {
      const random = prng(SEED);
      const pick = <T>(items: readonly T[]) => items[Math.floor(random() * items.length)];
      const listeners = ['off', 'optional', 'required'];
      for (let session = 0; session < SESSIONS; session++) {
        let client: RawSmtpClient;
        try {
          client = await RawSmtpClient.connect(t.running.portOf(pick(listeners)), untrusted);
        } catch {
          continue;
        }
        const steps = 1 + Math.floor(random() * 12);
        for (let step = 0; step < steps && !client.isClosed; step++) {
          let line = pick(verbs);
          for (let m = Math.floor(random() * 3); m > 0; m--) {
            const at = Math.floor(random() * (line.length + 1));
            line = line.slice(0, at) + pick(junk) + line.slice(at);
          }
          client.write(`${line}\r\n`);
        }
        await client.reply(300).catch(() => null);
        await client.quit();
      }
      await stillServes();
      expect(relayedFrom('fuzz-untrusted@evil.example')).toHaveLength(0);
      expect(t.sink.messages.filter((m) => m.to.includes('victim@example.com'))).toHaveLength(0);
    });
  });
});
