import { request } from 'node:http';
import { connect as tlsConnect, type ConnectionOptions } from 'node:tls';
import { parseConfig } from '../src/config/load';
import { hashPassword } from '../src/ingress/password';
import {
  baseConfig,
  listenerPerAuthMode,
  makeCertificate,
  metricsText,
  metricValue,
  relayPerDescribe,
  waitFor,
} from './helpers/harness';
import { message, openSession, plainAuth, RawSmtpClient } from './helpers/smtp-client';

/**
 * The smaller holes a hostile LAN host found (issue 20, finding 4), over real sockets: NUL in DATA,
 * AUTH offered where it cannot succeed, static-RSA TLS suites, the admin endpoints answering any Host
 * (DNS rebinding), and uuencoded files past blocked_attachments.
 */
describe('hostile LAN: smaller holes', () => {
  const password = 'hostile-lan-test-password';
  const untrusted = { localAddress: '127.0.0.2' };
  const t = relayPerDescribe(async (dir) => ({
    // RSA: the static-RSA suites below are only offered with an RSA certificate.
    tls: makeCertificate(dir, 'relay.test', 'rsa'),
    listeners: [
      ...listenerPerAuthMode(),
      { name: 'strict', address: '127.0.0.1:0', tls: 'none', auth: 'off', line_endings: 'strict' },
      { name: 'insecure', address: '127.0.0.1:0', tls: 'none', auth: 'optional', allow_insecure_auth: true },
      { name: 'opportunistic', address: '127.0.0.1:0', tls: 'starttls', auth: 'optional', allow_insecure_auth: true },
    ],
    clients: [
      { name: 'lan', networks: ['127.0.0.1/32'] },
      { name: 'shop', username: 'shop', password_hash: await hashPassword(password) },
    ],
  }));
  const relayedFrom = (sender: string) => t.sink.messages.filter((m) => m.from === sender);

  /** Every test must leave the relay serving a trusted client normally. */
  async function stillServes(): Promise<void> {
    const before = t.sink.count;
    const { client } = await openSession(t.running.portOf('off'));
    const reply = await client.sendMessage(
      'erp@corp.example',
      ['ok@example.com'],
      message({ subject: 'still serving' }),
    );
    expect(reply).toMatch(/^250 /);
    await client.quit();
    await waitFor(() => t.sink.count > before, 10_000, 'the control message');
  }

  describe('NUL in DATA', () => {
    test.each(['off', 'strict'])(
      'listener %s: a NUL byte gets 550 5.6.0, counted as smuggling; nothing is relayed',
      async (listener) => {
        const metric = async () =>
          metricValue(
            await metricsText(t.running.httpPort),
            'smarthop_messages_rejected_total{client="lan",reason="smuggling"}',
          ) ?? 0;
        const before = await metric();
        const { client } = await openSession(t.running.portOf(listener));
        // A smart host that dropped NULs before looking for the end of data would read a second message here.
        const second = 'MAIL FROM:<nul-smuggled@evil.example>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\n';
        const smuggled = `${message({ subject: 'nul' })}\r\n\0.\r\n${second}${message()}`;
        expect(await client.sendMessage('erp@corp.example', ['x@example.com'], smuggled)).toBe(
          '550 5.6.0 Message contains a NUL byte, which SMTP data must not carry',
        );
        await client.quit();
        expect(await metric()).toBe(before + 1);
        await stillServes();
        expect(relayedFrom('nul-smuggled@evil.example')).toHaveLength(0);
        expect(t.sink.messages.some((m) => m.data.includes(0))).toBe(false);
      },
    );
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
    ])(
      'listener %s: before TLS, AUTH offered to a trusted client: %p; to a stranger: %p',
      async (listener, trusted, stranger) => {
        const own = await openSession(t.running.portOf(listener));
        expect(offersAuth(own.ehlo)).toBe(trusted);
        await own.client.quit();
        const other = await openSession(t.running.portOf(listener), untrusted);
        if (stranger === null) expect(other.greeting).toMatch(/^554 /);
        else expect(offersAuth(other.ehlo)).toBe(stranger);
        await other.client.quit();
      },
    );

    test('after STARTTLS or on implicit TLS everybody sees AUTH; unoffered AUTH still gets 530 / 538', async () => {
      for (const listener of ['opportunistic', 'required']) {
        for (const options of [{}, untrusted]) {
          const { client } = await openSession(t.running.portOf(listener), options);
          expect(await client.startTls()).toMatch(/^220 /);
          expect(offersAuth(await ehloOf(client))).toBe(true);
          await client.quit();
        }
      }
      const implicit = await new Promise<string>((resolve, reject) => {
        const socket = tlsConnect({ host: '127.0.0.1', port: t.running.portOf('implicit'), rejectUnauthorized: false });
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

      const required = await openSession(t.running.portOf('required'), untrusted);
      expect(await required.client.command(plainAuth('shop', password))).toBe(
        '530 5.7.0 Must issue a STARTTLS command first',
      );
      await required.client.quit();
      const optional = await openSession(t.running.portOf('optional'));
      expect(await optional.client.command(plainAuth('shop', password))).toBe(
        '538 5.7.11 Encryption required for requested authentication mechanism',
      );
      await optional.client.quit();
      const opportunistic = await openSession(t.running.portOf('opportunistic'), untrusted);
      expect(await opportunistic.client.command(plainAuth('shop', password))).toBe(
        '538 5.7.11 Encryption required for requested authentication mechanism',
      );
      await opportunistic.client.quit();
    });
  });

  describe('HTTP endpoints answer only their own Host names (DNS rebinding)', () => {
    const get = (path: string, host: string | undefined) =>
      new Promise<number>((resolve, reject) => {
        const req = request({
          host: '127.0.0.1',
          port: t.running.httpPort,
          path,
          setHost: host === undefined ? false : undefined,
          headers: host === undefined ? {} : { host },
        });
        req.on('response', (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        });
        req.on('error', reject);
        req.end();
      });

    test.each(['/api/queue', '/api/status', '/metrics', '/healthz', '/readyz', '/', '/nothing-here'])(
      "%s: a foreign Host gets 403, the relay's own names do not",
      async (path) => {
        const port = t.running.httpPort;
        for (const host of [
          `evil.example:${port}`,
          'evil.example',
          `127.0.0.1.evil.example:${port}`,
          `localhost.evil.example:${port}`,
          `[::1]x:${port}`,
          `127.0.0.1:${port}:80`,
        ]) {
          expect([host, await get(path, host)]).toEqual([host, 403]);
        }
        for (const host of [
          `127.0.0.1:${port}`,
          `localhost:${port}`,
          'LOCALHOST.',
          `[::1]:${port}`,
          '10.1.2.3',
          undefined,
        ]) {
          expect([host, await get(path, host)]).not.toEqual([host, 403]);
        }
      },
    );
  });

  describe('TLS: only forward-secret suites', () => {
    /** The cipher a TLS 1.2 handshake with only these suites settles on, or the error. */
    const negotiate = (socketOptions: ConnectionOptions) =>
      new Promise<string>((resolve) => {
        const socket = tlsConnect({
          rejectUnauthorized: false,
          minVersion: 'TLSv1.2',
          maxVersion: 'TLSv1.2',
          ...socketOptions,
        });
        socket.once('secureConnect', () => {
          resolve(socket.getCipher().name);
          socket.destroy();
        });
        socket.once('error', (err) => resolve(`error: ${err.message}`));
      });

    test('static-RSA suites fail on implicit TLS and after STARTTLS; ECDHE ones work', async () => {
      const implicit = { host: '127.0.0.1', port: t.running.portOf('implicit') };
      for (const ciphers of ['AES128-SHA', 'AES128-GCM-SHA256', 'AES256-GCM-SHA384', 'AES256-SHA256']) {
        expect([ciphers, await negotiate({ ...implicit, ciphers })]).toEqual([
          ciphers,
          expect.stringMatching(/^error: /),
        ]);
      }
      expect(await negotiate({ ...implicit, ciphers: 'ECDHE-RSA-AES128-GCM-SHA256' })).toBe(
        'ECDHE-RSA-AES128-GCM-SHA256',
      );
      expect(await negotiate({ ...implicit })).toMatch(/^ECDHE-RSA-/);

      const starttls = async (ciphers: string) => {
        const { client } = await openSession(t.running.portOf('required'));
        const outcome = await client.startTls({ ciphers, maxVersion: 'TLSv1.2' }).then(
          () => client.cipher,
          (err: Error) => `error: ${err.message}`,
        );
        client.destroy();
        return outcome;
      };
      expect(await starttls('AES128-GCM-SHA256')).toMatch(/^error: /);
      expect(await starttls('ECDHE-RSA-CHACHA20-POLY1305')).toBe('ECDHE-RSA-CHACHA20-POLY1305');
    });
  });
});

describe('tls.min_version and tls.ciphers', () => {
  const t = relayPerDescribe((dir) => ({
    tls: {
      ...makeCertificate(dir),
      min_version: 'TLSv1.3',
      ciphers: 'TLS_AES_256_GCM_SHA384:ECDHE-RSA-AES256-GCM-SHA384',
    },
    listeners: [{ name: 'submission', address: '127.0.0.1:0', tls: 'starttls', auth: 'required' }],
  }));

  test('min_version TLSv1.3 refuses TLS 1.2; the TLS 1.3 suite named in ciphers is used', async () => {
    const tls12 = await openSession(t.running.portOf('submission'));
    await expect(tls12.client.startTls({ maxVersion: 'TLSv1.2' })).rejects.toThrow();
    tls12.client.destroy();
    const tls13 = await openSession(t.running.portOf('submission'));
    expect(await tls13.client.startTls()).toMatch(/^220 /);
    expect(tls13.client.cipher).toBe('TLS_AES_256_GCM_SHA384');
    await tls13.client.quit();
  });

  test('a cipher list naming no suite, or a version below TLS 1.2, is a config error', () => {
    const base = baseConfig(t.dir, [{ name: 'primary', port: 1 }]);
    const errors = (tls: Record<string, unknown>) => {
      const result = parseConfig({ ...base, tls: { cert: 'c.pem', key: 'k.pem', ...tls } }, t.dir, {});
      return result.ok ? [] : result.errors;
    };
    expect(errors({ ciphers: 'NOT-A-CIPHER' })).toEqual([
      expect.stringMatching(/^tls\.ciphers: expected an OpenSSL cipher list/),
    ]);
    expect(errors({ min_version: 'TLSv1' })).toEqual([expect.stringMatching(/^tls\.min_version: /)]);
    expect(errors({})).toEqual([]);
  });
});

describe('http.allowed_hosts', () => {
  const t = relayPerDescribe(() => ({ http: { address: '127.0.0.1:0', allowed_hosts: ['Relay.Corp.Example.'] } }));

  test('a listed name is answered (any case, trailing dot or not); another name is not', async () => {
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
    clients: [
      { name: 'lan', networks: ['127.0.0.1/32'], policy: 'no_programs' },
      { name: 'far', networks: ['127.0.0.2/32'], policy: 'no_programs' },
    ],
    policies: { no_programs: { blocked_attachments: ['exe', 'js'] } },
  }));
  const uuencoded = (name: string) =>
    message({ body: `The invoice is attached.\r\n\r\nbegin 644 ${name}\r\nM35J0\r\n\`\r\nend\r\n` });

  test.each(['127.0.0.1', '127.0.0.2'])(
    'from %s: begin 644 invoice.exe in text/plain is refused, invoice.pdf passes',
    async (localAddress) => {
      const { client } = await openSession(t.running.smtpPort, { localAddress });
      expect(await client.sendMessage('app@corp.example', ['user@example.com'], uuencoded('invoice.exe'))).toMatch(
        /^550 5\.7\.1 Attachment type \.exe not allowed for client (lan|far)$/,
      );
      expect(await client.sendMessage('app@corp.example', ['user@example.com'], uuencoded('invoice.pdf'))).toMatch(
        /^250 2\.0\.0 Ok: queued as /,
      );
      await client.quit();
    },
  );
});
