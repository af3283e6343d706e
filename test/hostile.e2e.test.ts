import { request } from 'node:http';
import { connect as tlsConnect, type ConnectionOptions } from 'node:tls';
import { prng } from '../bench/prng';
import { parseConfig } from '../src/config/load';
import { hashPassword } from '../src/ingress/password';
import type { SmtpSink } from '../src/sink/sink';
import {
  baseConfig, buildConfig, makeCertificate, metricsText, metricValue, relayPerDescribe, removeDir, startRelay, startSink, tempDir, waitFor,
  type RunningRelay,
} from './helpers/harness';
import { message, openSession, plainAuth, RawSmtpClient } from './helpers/smtp-client';

/**
 * Hostile input over real sockets: nobody outside `clients` relays anything, and every malformed,
 * oversized, slow or flooding session gets a defined reply or a closed connection while the relay
 * keeps serving everybody else.
 */
describe('hostile input', () => {
  let dir: string;
  let sink: SmtpSink;
  let running: RunningRelay;
  const password = 'open-relay-test-password';

  beforeAll(async () => {
    dir = tempDir();
    sink = await startSink();
    const config = buildConfig(
      baseConfig(dir, [{ name: 'primary', port: sink.port }], {
        tls: makeCertificate(dir),
        listeners: [
          { name: 'off', address: '127.0.0.1:0', tls: 'none', auth: 'off' },
          { name: 'optional', address: '127.0.0.1:0', tls: 'none', auth: 'optional' },
          { name: 'required', address: '127.0.0.1:0', tls: 'starttls', require_tls: true, auth: 'required' },
          { name: 'implicit', address: '127.0.0.1:0', tls: 'implicit', auth: 'required' },
          { name: 'v6', address: '[::1]:0', tls: 'none', auth: 'off' },
          { name: 'patient', address: '127.0.0.1:0', tls: 'none', auth: 'off', greeting_delay: '300ms' },
          { name: 'small', address: '127.0.0.1:0', tls: 'none', auth: 'off', max_clients: 3, socket_timeout: '1500ms' },
          { name: 'strict', address: '127.0.0.1:0', tls: 'none', auth: 'off', line_endings: 'strict' },
          { name: 'insecure', address: '127.0.0.1:0', tls: 'none', auth: 'optional', allow_insecure_auth: true },
          { name: 'opportunistic', address: '127.0.0.1:0', tls: 'starttls', auth: 'optional', allow_insecure_auth: true },
        ],
        clients: [
          { name: 'lan', networks: ['127.0.0.1/32'] },
          { name: 'shop', username: 'shop', password_hash: await hashPassword(password) },
        ],
      }),
      dir,
    );
    running = await startRelay(config);
  });

  afterAll(async () => {
    await running.stop();
    await sink.close();
    removeDir(dir);
  });

  /** Every hostile test must leave the relay serving a trusted client normally. */
  async function stillServes(): Promise<void> {
    const before = sink.count;
    const { client } = await openSession(running.portOf('off'));
    expect(await client.sendMessage('erp@corp.example', ['ok@example.com'], message({ subject: 'still serving' }))).toMatch(/^250 /);
    await client.quit();
    await waitFor(() => sink.count > before, 10_000, 'the control message');
  }

  const untrusted = { localAddress: '127.0.0.2' };
  const relayedFrom = (sender: string) => sink.messages.filter((m) => m.from === sender);

  /**
   * A stranger where it may still talk: the STARTTLS listener (after STARTTLS, AUTH could identify
   * it). Plaintext listeners refuse it at connect.
   */
  async function strangerOverTls(): Promise<RawSmtpClient> {
    const { client } = await openSession(running.portOf('required'), untrusted);
    expect(await client.startTls()).toMatch(/^220 /);
    expect(await client.command('EHLO attacker.example')).toMatch(/^250/);
    return client;
  }

  describe('open relay matrix: nothing from an untrusted address relays', () => {
    test.each([
      ['off', /^554 5\.7\.1 Access denied/],
      ['optional', /^554 5\.7\.1 Access denied/],
      ['required', /^220 /],
    ])('listener %s greets an untrusted address with %p', async (listener, greeting) => {
      const client = await RawSmtpClient.connect(running.portOf(listener), untrusted);
      expect(await client.reply()).toMatch(greeting);
      await client.quit();
    });

    const hostileAddresses = ['victim@example.com', '@a.example:victim@example.com', 'victim%example.com@relay.test', '"victim@example.com"@relay.test', 'victim@[203.0.113.5]'];
    test.each(hostileAddresses)('untrusted, no AUTH, RCPT %s → refused at MAIL, nothing relayed', async (rcpt) => {
      const client = await strangerOverTls();
      expect(await client.sendMessage('attacker@evil.example', [rcpt], message())).toBe('530 5.7.0 Authentication required');
      await client.quit();
      expect(relayedFrom('attacker@evil.example')).toHaveLength(0);
    });

    test('untrusted with a wrong password over TLS → 535; AUTH before STARTTLS → 530; AUTH on auth: off → not available', async () => {
      const tls = await openSession(running.portOf('required'), untrusted);
      await tls.client.startTls();
      await tls.client.command('EHLO attacker.example');
      expect(await tls.client.command(plainAuth('shop', 'guess'))).toBe('535 5.7.8 Authentication credentials invalid');
      expect(await tls.client.sendMessage('attacker@evil.example', ['victim@example.com'], message())).toBe('530 5.7.0 Authentication required');
      await tls.client.quit();

      const plain = await openSession(running.portOf('required'), untrusted);
      expect(await plain.client.command(plainAuth('shop', password))).toBe('530 5.7.0 Must issue a STARTTLS command first');
      await plain.client.quit();

      const off = await openSession(running.portOf('off'));
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
      expect(await client.sendMessage('attacker@evil.example', ['victim@example.com'], message())).toBe('530 5.7.0 Authentication required');
      await client.quit();
      expect(relayedFrom('attacker@evil.example')).toHaveLength(0);
    });

    test('IPv6 loopback is not IPv4 loopback: ::1 is refused where only 127.0.0.1/32 is trusted', async () => {
      const client = await RawSmtpClient.connect(running.portOf('v6'), { host: '::1' });
      expect(await client.reply()).toBe('554 5.7.1 Access denied: [::1] is not a permitted client');
      await client.quit();
    });

    test('a whole pipelined transaction from an untrusted address gets refusals for every step', async () => {
      const client = await strangerOverTls();
      client.write(`EHLO x\r\nMAIL FROM:<attacker@evil.example>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\n${message()}\r\n.\r\nQUIT\r\n`);
      const replies: string[] = [];
      for (let reply = await client.reply(); reply !== null; reply = await client.reply()) replies.push(reply.split('\n').pop() as string);
      expect(replies).toEqual(expect.arrayContaining(['530 5.7.0 Authentication required']));
      expect(replies.some((r) => r.startsWith('250 2.0.0 Ok: queued'))).toBe(false);
      expect(relayedFrom('attacker@evil.example')).toHaveLength(0);
    });
  });

  describe('malformed and abusive sessions', () => {
    test('with a greeting_delay, commands before the greeting get 421 and the connection closes', async () => {
      const client = await RawSmtpClient.connect(running.portOf('patient'));
      client.write('EHLO early.example\r\n');
      expect(await client.reply()).toMatch(/^421 .*You talk too soon/);
      await waitFor(() => client.isClosed, 5000, 'the connection to close');
      const polite = await openSession(running.portOf('patient'));
      expect(polite.greeting).toMatch(/^220 /);
      await polite.client.quit();
      await stillServes();
    });

    test('without a greeting_delay the greeting comes at once and a pipelined EHLO is answered', async () => {
      const client = await RawSmtpClient.connect(running.portOf('off'));
      client.write('EHLO early.example\r\n');
      expect(await client.reply()).toMatch(/^220 /);
      expect(await client.reply()).toMatch(/^250/);
      await client.quit();
    });

    test('an overlong command line gets 421 and the connection closes', async () => {
      const { client } = await openSession(running.portOf('off'));
      client.write(`MAIL FROM:<${'a'.repeat(40_000)}@corp.example>\r\n`);
      const reply = await client.reply();
      expect(reply).toBe('421 Error: Command line too long');
      await waitFor(() => client.isClosed, 5000, 'the connection to close');
      await client.quit();
      await stillServes();
    });

    test('a recipient with a bare CR or a NUL in it is refused by the parser and relays nothing', async () => {
      const { client } = await openSession(running.portOf('off'));
      expect(await client.command('MAIL FROM:<erp@corp.example>')).toMatch(/^250/);
      expect(await client.command('RCPT TO:<victim@example.com\rBcc: x@evil.example>')).toMatch(/^5\d\d /);
      expect(await client.command('RCPT TO:<victim\u0000@example.com>')).toMatch(/^5\d\d /);
      await client.quit();
      await stillServes();
    });

    test('thousands of RCPT: 452 past the ceiling, the session stays usable', async () => {
      const { client } = await openSession(running.portOf('off'));
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

    test('8-bit data without 8BITMIME, NUL bytes, overlong header lines and a header with no body each get a defined reply', async () => {
      const bodies = [
        Buffer.from('From: a@corp.example\r\nSubject: caf\xe9\r\n\r\n8-bit \xff\xfe body\r\n', 'latin1'),
        Buffer.from('From: a@corp.example\r\nSubject: nul\r\n\r\nbefore\0after\r\n', 'latin1'),
        `From: a@corp.example\r\nX-Long: ${'l'.repeat(5000)}\r\n\r\nbody\r\n`,
        'From: a@corp.example\r\nSubject: only headers',
      ];
      for (const body of bodies) {
        const { client } = await openSession(running.portOf('off'));
        expect(await client.sendMessage('erp@corp.example', ['x@example.com'], body)).toMatch(/^(250|5\d\d) /);
        await client.quit();
      }
      await stillServes();
    });

    test('SMTPUTF8 addresses are accepted and relayed with SMTPUTF8', async () => {
      const { client, ehlo } = await openSession(running.portOf('off'));
      expect(ehlo).toMatch(/SMTPUTF8/);
      expect(await client.command('MAIL FROM:<bücher@corp.example> SMTPUTF8')).toMatch(/^250/);
      expect(await client.command('RCPT TO:<δοκιμή@παράδειγμα.δοκιμή>')).toMatch(/^250/);
      expect(await client.command('DATA')).toMatch(/^354/);
      client.write(Buffer.from('From: bücher@corp.example\r\nSubject: utf8\r\n\r\nΓειά\r\n.\r\n', 'utf8'));
      expect(await client.reply()).toMatch(/^250 /);
      await client.quit();
      await waitFor(() => sink.messages.some((m) => m.from === 'bücher@corp.example'), 10_000, 'the UTF-8 message');
    });

    test('a message with no end (client vanishes mid-DATA) leaves nothing queued', async () => {
      const before = sink.count;
      const { client } = await openSession(running.portOf('off'));
      await client.command('MAIL FROM:<vanish@corp.example>');
      await client.command('RCPT TO:<x@example.com>');
      await client.command('DATA');
      client.write('From: vanish@corp.example\r\n\r\nhalf a message');
      await new Promise((resolve) => setTimeout(resolve, 200));
      client.destroy();
      await stillServes();
      expect(sink.count).toBe(before + 1);
      expect(relayedFrom('vanish@corp.example')).toHaveLength(0);
    });

    test('slowloris: a client dribbling bytes does not hold up others; an idle one is cut off', async () => {
      const slow = await RawSmtpClient.connect(running.portOf('small'));
      await slow.reply();
      const idle = await RawSmtpClient.connect(running.portOf('small'));
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
      const clients = await Promise.all(Array.from({ length: 6 }, () => RawSmtpClient.connect(running.portOf('small'))));
      const greetings = await Promise.all(clients.map((c) => c.reply()));
      expect(greetings.filter((g) => g?.startsWith('421')).length).toBeGreaterThanOrEqual(3);
      expect(greetings.filter((g) => g?.startsWith('220')).length).toBeLessThanOrEqual(3);
      await Promise.all(clients.map((c) => c.quit()));
      await stillServes();
    });
  });

  describe('NUL in DATA', () => {
    test.each(['off', 'strict'])('a NUL byte is refused with 550 5.6.0 and counted as smuggling (%s line endings listener), nothing is relayed', async (listener) => {
      const metric = async () => metricValue(await metricsText(running.httpPort), 'smarthop_messages_rejected_total{client="lan",reason="smuggling"}') ?? 0;
      const before = await metric();
      const { client } = await openSession(running.portOf(listener));
      // A smart host that dropped NULs before looking for the end of data would read a second message here.
      const smuggled = `${message({ subject: 'nul' })}\r\n\0.\r\nMAIL FROM:<nul-smuggled@evil.example>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\n${message()}`;
      expect(await client.sendMessage('erp@corp.example', ['x@example.com'], smuggled)).toBe('550 5.6.0 Message contains a NUL byte, which SMTP data must not carry');
      await client.quit();
      expect(await metric()).toBe(before + 1);
      await stillServes();
      expect(relayedFrom('nul-smuggled@evil.example')).toHaveLength(0);
      expect(sink.messages.some((m) => m.data.includes(0))).toBe(false);
    });
  });

  describe('EHLO offers AUTH only where it can succeed', () => {
    const offersAuth = (ehlo: string | null) => /^250[- ]AUTH /m.test(ehlo ?? '');
    const ehloOf = async (client: RawSmtpClient) => client.command('EHLO app.test');

    test.each([
      // listener, trusted address sees AUTH before TLS, stranger sees AUTH before TLS (null: refused at connect)
      ['off', false, null],
      ['optional', false, null],
      ['insecure', true, null],
      ['opportunistic', true, false],
      ['required', false, false],
    ])('listener %s: before TLS, a trusted client sees AUTH: %p; a stranger: %p', async (listener, trusted, stranger) => {
      const own = await openSession(running.portOf(listener));
      expect(offersAuth(own.ehlo)).toBe(trusted);
      await own.client.quit();
      const other = await openSession(running.portOf(listener), untrusted);
      if (stranger === null) expect(other.greeting).toMatch(/^554 /);
      else expect(offersAuth(other.ehlo)).toBe(stranger);
      await other.client.quit();
    });

    test('after STARTTLS (and on implicit TLS) everybody is offered AUTH; unoffered AUTH still gets the 530 and 538 replies', async () => {
      for (const listener of ['opportunistic', 'required']) {
        for (const options of [{}, untrusted]) {
          const { client } = await openSession(running.portOf(listener), options);
          expect(await client.startTls()).toMatch(/^220 /);
          expect(offersAuth(await ehloOf(client))).toBe(true);
          await client.quit();
        }
      }
      const implicit = await new Promise<string>((resolve, reject) => {
        const socket = tlsConnect({ host: '127.0.0.1', port: running.portOf('implicit'), rejectUnauthorized: false });
        let text = '';
        socket.setEncoding('latin1');
        socket.on('data', (data: string) => {
          text += data;
          if (text.startsWith('220 ') && !text.includes('EHLO sent')) {
            text += 'EHLO sent';
            socket.write('EHLO app.test\r\n');
          }
          if (/\r\n250 [^\r]*\r\n$/.test(text)) {
            socket.destroy();
            resolve(text);
          }
        });
        socket.on('error', reject);
      });
      expect(offersAuth(implicit.replace(/\r\n/g, '\n'))).toBe(true);

      const required = await openSession(running.portOf('required'), untrusted);
      expect(await required.client.command(plainAuth('shop', password))).toBe('530 5.7.0 Must issue a STARTTLS command first');
      await required.client.quit();
      const optional = await openSession(running.portOf('optional'));
      expect(await optional.client.command(plainAuth('shop', password))).toBe('538 5.7.11 Encryption required for requested authentication mechanism');
      await optional.client.quit();
      const opportunistic = await openSession(running.portOf('opportunistic'), untrusted);
      expect(await opportunistic.client.command(plainAuth('shop', password))).toBe('538 5.7.11 Encryption required for requested authentication mechanism');
      await opportunistic.client.quit();
    });
  });

  describe('HTTP endpoints answer only their own Host names (DNS rebinding)', () => {
    const get = (path: string, host: string | undefined) =>
      new Promise<number>((resolve, reject) => {
        const req = request({ host: '127.0.0.1', port: running.httpPort, path, setHost: host === undefined ? false : undefined, headers: host === undefined ? {} : { host } });
        req.on('response', (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        });
        req.on('error', reject);
        req.end();
      });

    test.each(['/api/queue', '/api/status', '/metrics', '/healthz', '/readyz', '/', '/nothing-here'])('%s: a foreign name gets 403, the relay\'s own names do not', async (path) => {
      const port = running.httpPort;
      for (const host of [`evil.example:${port}`, 'evil.example', `127.0.0.1.evil.example:${port}`, `localhost.evil.example:${port}`, `[::1]x:${port}`, `127.0.0.1:${port}:80`]) {
        expect([host, await get(path, host)]).toEqual([host, 403]);
      }
      for (const host of [`127.0.0.1:${port}`, `localhost:${port}`, 'LOCALHOST.', `[::1]:${port}`, '10.1.2.3', undefined]) {
        expect([host, await get(path, host)]).not.toEqual([host, 403]);
      }
    });
  });

  describe('TLS', () => {
    test('TLS below 1.2 is refused; TLS 1.2 and 1.3 work on the implicit-TLS listener', async () => {
      const handshake = (minVersion: 'TLSv1' | 'TLSv1.2' | 'TLSv1.3', maxVersion: 'TLSv1.1' | 'TLSv1.2' | 'TLSv1.3') =>
        new Promise<string>((resolve) => {
          const socket = tlsConnect({ host: '127.0.0.1', port: running.portOf('implicit'), rejectUnauthorized: false, minVersion, maxVersion, ciphers: 'DEFAULT:@SECLEVEL=0' });
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

    /** The cipher a TLS 1.2 handshake with only these suites settles on, or the error. */
    const negotiate = (socketOptions: ConnectionOptions) =>
      new Promise<string>((resolve) => {
        const socket = tlsConnect({ rejectUnauthorized: false, minVersion: 'TLSv1.2', maxVersion: 'TLSv1.2', ...socketOptions });
        socket.once('secureConnect', () => {
          resolve(socket.getCipher().name);
          socket.destroy();
        });
        socket.once('error', (err) => resolve(`error: ${err.message}`));
      });

    test('only forward-secret (ECDHE) suites, on implicit TLS and after STARTTLS', async () => {
      const implicit = { host: '127.0.0.1', port: running.portOf('implicit') };
      for (const ciphers of ['AES128-SHA', 'AES128-GCM-SHA256', 'AES256-GCM-SHA384', 'AES256-SHA256']) {
        expect([ciphers, await negotiate({ ...implicit, ciphers })]).toEqual([ciphers, expect.stringMatching(/^error: /)]);
      }
      expect(await negotiate({ ...implicit, ciphers: 'ECDHE-RSA-AES128-GCM-SHA256' })).toBe('ECDHE-RSA-AES128-GCM-SHA256');
      expect(await negotiate({ ...implicit })).toMatch(/^ECDHE-RSA-/);

      const starttls = async (ciphers: string) => {
        const { client } = await openSession(running.portOf('required'));
        const outcome = await client.startTls({ ciphers, maxVersion: 'TLSv1.2' }).then(() => client.cipher, (err: Error) => `error: ${err.message}`);
        client.destroy();
        return outcome;
      };
      expect(await starttls('AES128-GCM-SHA256')).toMatch(/^error: /);
      expect(await starttls('ECDHE-RSA-CHACHA20-POLY1305')).toBe('ECDHE-RSA-CHACHA20-POLY1305');
    });
  });

  describe('fuzz', () => {
    const SEED = Number(process.env.FUZZ_SEED ?? 20261123);
    const SESSIONS = Number(process.env.FUZZ_SESSIONS ?? 60);
    const verbs = ['EHLO fuzz', 'HELO fuzz', 'MAIL FROM:<fuzz-untrusted@evil.example>', 'RCPT TO:<victim@example.com>', 'DATA', 'RSET', 'NOOP', 'VRFY root', 'EXPN all', 'STARTTLS', 'AUTH PLAIN', 'AUTH LOGIN', 'BDAT 10 LAST', 'XCLIENT ADDR=127.0.0.1', 'QUIT', '.', ''];
    const junk = ['\r', '\n', '\0', '\r\n.\r\n', '\n.\n', 'MAIL FROM:<fuzz-untrusted@evil.example>\r\n', ' SIZE=999999999', ':<>', '\x1b[A', 'é', '%', '@', '<', '>'];

    test(`${SESSIONS} seeded random and mutated sessions from an untrusted address: the relay survives and relays none of them (seed ${SEED})`, async () => {
      const random = prng(SEED);
      const pick = <T>(items: readonly T[]) => items[Math.floor(random() * items.length)];
      const listeners = ['off', 'optional', 'required'];
      for (let session = 0; session < SESSIONS; session++) {
        let client: RawSmtpClient;
        try {
          client = await RawSmtpClient.connect(running.portOf(pick(listeners)), untrusted);
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
      expect(sink.messages.filter((m) => m.to.includes('victim@example.com'))).toHaveLength(0);
    });
  });
});

describe('tls.min_version and tls.ciphers', () => {
  const t = relayPerDescribe((dir) => ({
    tls: { ...makeCertificate(dir), min_version: 'TLSv1.3', ciphers: 'TLS_AES_256_GCM_SHA384:ECDHE-RSA-AES256-GCM-SHA384' },
    listeners: [{ name: 'submission', address: '127.0.0.1:0', tls: 'starttls', auth: 'required' }],
  }));

  test('min_version TLSv1.3 refuses a TLS 1.2 handshake; the TLS 1.3 suite named in ciphers is the one used', async () => {
    const tls12 = await openSession(t.running.portOf('submission'));
    await expect(tls12.client.startTls({ maxVersion: 'TLSv1.2' })).rejects.toThrow();
    tls12.client.destroy();
    const tls13 = await openSession(t.running.portOf('submission'));
    expect(await tls13.client.startTls()).toMatch(/^220 /);
    expect(tls13.client.cipher).toBe('TLS_AES_256_GCM_SHA384');
    await tls13.client.quit();
  });

  test('a cipher list that names no suite, or a version below TLS 1.2, is a config error', () => {
    const base = baseConfig(t.dir, [{ name: 'primary', port: 1 }]);
    const errors = (tls: Record<string, unknown>) => {
      const result = parseConfig({ ...base, tls: { cert: 'c.pem', key: 'k.pem', ...tls } }, t.dir, {});
      return result.ok ? [] : result.errors;
    };
    expect(errors({ ciphers: 'NOT-A-CIPHER' })).toEqual([expect.stringMatching(/^tls\.ciphers: expected an OpenSSL cipher list/)]);
    expect(errors({ min_version: 'TLSv1' })).toEqual([expect.stringMatching(/^tls\.min_version: /)]);
    expect(errors({})).toEqual([]);
  });
});

describe('http.allowed_hosts', () => {
  const t = relayPerDescribe(() => ({ http: { address: '127.0.0.1:0', allowed_hosts: ['Relay.Corp.Example.'] } }));

  test('a name listed there is answered (any case, with or without the trailing dot); another name is not', async () => {
    const status = (host: string) =>
      new Promise<number>((resolve, reject) => {
        const req = request({ host: '127.0.0.1', port: t.running.httpPort, path: '/api/queue', headers: { host } });
        req.on('response', (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        });
        req.on('error', reject);
        req.end();
      });
    expect(await status(`relay.corp.example:${t.running.httpPort}`)).toBe(200);
    expect(await status('RELAY.corp.example.')).toBe(200);
    expect(await status(`other.corp.example:${t.running.httpPort}`)).toBe(403);
  });
});

describe('a uuencoded file in a text body is an attachment for blocked_attachments', () => {
  const t = relayPerDescribe(() => ({
    clients: [{ name: 'lan', networks: ['127.0.0.1/32'], policy: 'no_programs' }, { name: 'far', networks: ['127.0.0.2/32'], policy: 'no_programs' }],
    policies: { no_programs: { blocked_attachments: ['exe', 'js'] } },
  }));
  const uuencoded = (name: string) => message({ body: `The invoice is attached.\r\n\r\nbegin 644 ${name}\r\nM35J0\r\n\`\r\nend\r\n` });

  test.each(['127.0.0.1', '127.0.0.2'])('from %s: begin 644 invoice.exe in text/plain is refused, invoice.pdf passes', async (localAddress) => {
    const { client } = await openSession(t.running.smtpPort, { localAddress });
    expect(await client.sendMessage('app@corp.example', ['user@example.com'], uuencoded('invoice.exe'))).toMatch(/^550 5\.7\.1 Attachment type \.exe not allowed for client (lan|far)$/);
    expect(await client.sendMessage('app@corp.example', ['user@example.com'], uuencoded('invoice.pdf'))).toMatch(/^250 2\.0\.0 Ok: queued as /);
    await client.quit();
  });
});
