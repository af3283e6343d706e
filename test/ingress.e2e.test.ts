import { readdirSync } from 'node:fs';
import * as path from 'node:path';
import { hashPassword } from '../src/ingress/password';
import type { SmtpSink } from '../src/tools/sink';
import {
  baseConfig,
  buildConfig,
  makeCertificate,
  metricsText,
  metricValue,
  removeDir,
  startRelay,
  startSink,
  tempDir,
  waitFor,
  type RunningRelay,
} from './helpers/harness';
import { message, openSession, plainAuth, RawSmtpClient } from './helpers/smtp-client';

describe('ingress: who may relay, and what a 250 means', () => {
  let dir: string;
  let sink: SmtpSink;
  let running: RunningRelay;
  const password = 'correct horse battery staple';

  beforeAll(async () => {
    dir = tempDir();
    sink = await startSink();
    const config = buildConfig(
      baseConfig(dir, [{ name: 'primary', port: sink.port }], {
        tls: makeCertificate(dir),
        listeners: [
          { name: 'submission', address: '127.0.0.1:0', tls: 'starttls', require_tls: true, auth: 'required' },
          { name: 'smtp', address: '127.0.0.1:0', tls: 'none', auth: 'off' },
          { name: 'optional', address: '127.0.0.1:0', tls: 'none', auth: 'optional', allow_insecure_auth: true },
          { name: 'plain', address: '127.0.0.1:0', tls: 'none', auth: 'optional' },
          { name: 'required', address: '127.0.0.1:0', tls: 'none', auth: 'required', allow_insecure_auth: true },
          { name: 'strict', address: '127.0.0.1:0', tls: 'none', auth: 'off', line_endings: 'strict' },
        ],
        clients: [
          { name: 'lan', networks: ['127.0.0.1/32', '::1/128'] },
          { name: 'webshop', username: 'webshop', password_hash: await hashPassword(password) },
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

  beforeEach(() => {
    sink.messages.length = 0;
  });

  const queuedFiles = () => readdirSync(path.join(dir, 'spool', 'queue'));

  test("a trusted client's message reaches the smart host with its envelope and body, one Received atop", async () => {
    const { client, greeting, ehlo } = await openSession(running.portOf('smtp'));
    expect(greeting).toMatch(/^220 relay\.test ESMTP smarthop/);
    expect(ehlo).toMatch(/^250[- ]SIZE 1048576$/m);
    const body = message({ subject: 'invoice 42', body: 'Line one\r\n.leading dot survives\r\nLast line' });
    const reply = await client.sendMessage('erp@corp.example', ['a@example.com', 'b@example.org'], body);
    expect(reply).toMatch(/^250 2\.0\.0 Ok: queued as [0-9A-Z]+$/);
    await client.quit();

    await waitFor(() => sink.messages.length === 1, 10_000, 'delivery');
    const [delivered] = sink.messages;
    expect(delivered.from).toBe('erp@corp.example');
    expect(delivered.to).toEqual(['a@example.com', 'b@example.org']);
    const text = delivered.data.toString('latin1');
    const queueId = reply?.split(' ').pop();
    expect(text).toMatch(
      new RegExp(
        '^Received: from app\\.test \\(client lan\\)\\r\\n' +
          `\\tby relay\\.test \\(smarthop\\) with ESMTP id ${queueId}; .+\\r\\n`,
      ),
    );
    // Byte for byte after our header: nothing else was touched.
    expect(text.slice(text.indexOf('\r\n', text.indexOf('by relay.test')) + 2)).toBe(`${body}\r\n`);
    await waitFor(() => queuedFiles().length === 0, 5000, 'queue to empty');
  });

  test("an address outside all clients' networks is refused at connect with auth: off (554 5.7.1)", async () => {
    const client = await RawSmtpClient.connect(running.portOf('smtp'), { localAddress: '127.0.0.2' });
    expect(await client.reply()).toBe('554 5.7.1 Access denied: [127.0.0.2] is not a permitted client');
    await waitFor(() => client.isClosed, 2000, 'connection to close');
    const metrics = await metricsText(running.httpPort);
    expect(
      metricValue(metrics, 'smarthop_messages_rejected_total{client="(unknown)",reason="access_denied"}'),
    ).toBeGreaterThanOrEqual(1);
    expect(metricValue(metrics, 'smarthop_connections_total{listener="smtp",result="refused"}')).toBeGreaterThanOrEqual(
      1,
    );
  });

  test('an untrusted address without AUTH cannot relay where AUTH could identify it (530 5.7.0 at MAIL)', async () => {
    const { client, greeting } = await openSession(running.portOf('submission'), { localAddress: '127.0.0.2' });
    expect(greeting).toMatch(/^220 /);
    expect(await client.startTls()).toMatch(/^220 /);
    await client.command('EHLO app.test');
    expect(await client.sendMessage('spam@evil.example', ['victim@example.com'], message())).toBe(
      '530 5.7.0 Authentication required',
    );
    expect(await client.command('RCPT TO:<victim@example.com>')).toMatch(/^503 /);
    expect(await client.command('DATA')).toMatch(/^503 /);
    await client.quit();
    expect(sink.messages).toHaveLength(0);
    expect(queuedFiles()).toHaveLength(0);
  });

  test.each(['optional', 'required'])(
    'an untrusted address is refused at connect on the plaintext auth: %s listener, ' +
      'where AUTH could not identify it (554 5.7.1)',
    async (listener) => {
      const { client, greeting } = await openSession(running.portOf(listener), { localAddress: '127.0.0.2' });
      expect(greeting).toBe('554 5.7.1 Access denied: [127.0.0.2] is not a permitted client');
      await waitFor(() => client.isClosed, 5000, 'the refused connection to close');
      expect(sink.messages).toHaveLength(0);
    },
  );

  test('an untrusted address with a wrong password gets 535 5.7.8, relays nothing; the right one relays', async () => {
    const { client } = await openSession(running.portOf('submission'), { localAddress: '127.0.0.2' });
    expect(await client.startTls()).toMatch(/^220 /);
    expect(await client.command('EHLO app.test')).toContain('AUTH PLAIN LOGIN');
    expect(await client.command(plainAuth('webshop', 'wrong'))).toBe('535 5.7.8 Authentication credentials invalid');
    expect(await client.command(plainAuth('nobody', password))).toBe('535 5.7.8 Authentication credentials invalid');
    expect(await client.sendMessage('shop@corp.example', ['x@example.com'], message())).toBe(
      '530 5.7.0 Authentication required',
    );
    expect(await client.command(plainAuth('webshop', password))).toBe('235 Authentication successful');
    expect(await client.sendMessage('shop@corp.example', ['x@example.com'], message())).toMatch(
      /^250 2\.0\.0 Ok: queued as /,
    );
    await client.quit();
    await waitFor(() => sink.messages.length === 1, 10_000, 'delivery');
    expect(sink.messages[0].data.toString()).toMatch(
      new RegExp(
        /^Received: from app\.test \(client webshop\)\r\n\t\(using TLSv1\.[23] with cipher [A-Z0-9_-]+\)\r\n/.source +
          /\tby relay\.test \(smarthop\) with ESMTPSA /.source,
      ),
    );
  });

  test('require_tls: MAIL and AUTH before STARTTLS get 530 5.7.0 Must issue a STARTTLS command first', async () => {
    const { client } = await openSession(running.portOf('submission'));
    expect(await client.command(plainAuth('webshop', password))).toBe('530 5.7.0 Must issue a STARTTLS command first');
    expect(await client.command('MAIL FROM:<shop@corp.example>')).toBe('530 5.7.0 Must issue a STARTTLS command first');
    await client.quit();
    expect(sink.messages).toHaveLength(0);
  });

  test("allow_insecure_auth lets plaintext AUTH through from an address in some client's networks", async () => {
    const { client } = await openSession(running.portOf('optional'));
    expect(await client.command(plainAuth('webshop', password))).toBe('235 Authentication successful');
    expect(await client.sendMessage('shop@corp.example', ['x@example.com'], message())).toMatch(
      /^250 2\.0\.0 Ok: queued as /,
    );
    await client.quit();
    await waitFor(() => sink.messages.length === 1, 10_000, 'delivery');
    expect(sink.messages[0].data.toString()).toMatch(
      /^Received: from app\.test \(client webshop\)\r\n\tby relay\.test \(smarthop\) with ESMTPA /,
    );
  });

  test('plaintext AUTH is refused, right password or not, if allow_insecure_auth is off (538 5.7.11)', async () => {
    const { client } = await openSession(running.portOf('plain'));
    expect(await client.command(plainAuth('webshop', password))).toBe(
      '538 5.7.11 Encryption required for requested authentication mechanism',
    );
    await client.quit();
  });

  test('auth: required — a network client must still AUTH; wrong password 535; right password delivered', async () => {
    const { client } = await openSession(running.portOf('required'));
    expect(await client.sendMessage('erp@corp.example', ['a@example.com'], message())).toBe(
      '530 5.7.0 Authentication required',
    );
    expect(await client.command(plainAuth('webshop', 'nope'))).toBe('535 5.7.8 Authentication credentials invalid');
    expect(await client.command('RSET')).toMatch(/^250/);
    expect(await client.command(plainAuth('webshop', password))).toBe('235 Authentication successful');
    expect(
      await client.sendMessage('shop@corp.example', ['a@example.com'], message({ subject: 'required ok' })),
    ).toMatch(/^250 2\.0\.0 Ok: queued as /);
    await client.quit();
    await waitFor(() => sink.messages.length === 1, 10_000, 'delivery');
    expect(sink.messages[0].data.toString()).toContain('Subject: required ok');
    const metrics = await metricsText(running.httpPort);
    expect(metricValue(metrics, 'smarthop_auth_attempts_total{result="failure"}')).toBeGreaterThanOrEqual(1);
    expect(
      metricValue(metrics, 'smarthop_messages_rejected_total{client="lan",reason="auth_required"}'),
    ).toBeGreaterThanOrEqual(1);
  });

  test('AUTH is not offered or accepted on an auth: off listener', async () => {
    const { client, ehlo } = await openSession(running.portOf('smtp'));
    expect(ehlo).not.toContain('AUTH');
    expect(await client.command(plainAuth('webshop', password))).toMatch(/^50[02] /);
    await client.quit();
  });

  test('a message over max_message_size gets 552 5.3.4 and nothing is queued or delivered', async () => {
    const { client } = await openSession(running.portOf('smtp'));
    const big = message({ body: `${'x'.repeat(998)}\r\n`.repeat(1100) });
    expect(await client.sendMessage('erp@corp.example', ['a@example.com'], big)).toBe(
      '552 5.3.4 Message size exceeds fixed maximum message size of 1048576 bytes',
    );
    // The session stays usable after the refusal.
    expect(await client.sendMessage('erp@corp.example', ['a@example.com'], message({ subject: 'small' }))).toMatch(
      /^250 /,
    );
    await client.quit();
    await waitFor(() => sink.messages.length === 1, 10_000, 'delivery of the small one');
    expect(sink.messages[0].data.toString()).toContain('Subject: small');
    expect(readdirSync(path.join(dir, 'spool', 'tmp'))).toHaveLength(0);
    expect(
      metricValue(
        await metricsText(running.httpPort),
        'smarthop_messages_rejected_total{client="lan",reason="too_big"}',
      ),
    ).toBe(1);
  });

  test('a header block over 256 KiB gets 552 5.3.4 and nothing is queued', async () => {
    const { client } = await openSession(running.portOf('smtp'));
    const filler = Array.from({ length: 300 }, (_, i) => `X-Filler-${i}: ${'h'.repeat(990)}`).join('\r\n');
    const hugeHeader = `${filler}\r\n${message()}`;
    expect(await client.sendMessage('erp@corp.example', ['a@example.com'], hugeHeader)).toBe(
      '552 5.3.4 Message header exceeds 262144 bytes',
    );
    await client.quit();
    expect(queuedFiles()).toHaveLength(0);
  });

  test('a declared SIZE over the limit is refused at MAIL FROM by smtp-server itself', async () => {
    const { client } = await openSession(running.portOf('smtp'));
    expect(await client.command('MAIL FROM:<erp@corp.example> SIZE=5000000')).toMatch(/^552 /);
    await client.quit();
  });

  test('a bare CR in DATA is refused with 550 5.6.0 and nothing is queued', async () => {
    const { client } = await openSession(running.portOf('smtp'));
    const reply = await client.sendMessage('erp@corp.example', ['a@example.com'], message({ body: 'one\rtwo' }));
    expect(reply).toBe('550 5.6.0 Message contains a bare CR line ending; lines must end with CRLF');
    await client.quit();
    expect(queuedFiles()).toHaveLength(0);
  });

  test('bare LF is read as CRLF under normalize (counted) and refused with 550 5.6.0 under strict', async () => {
    const lfBody = 'From: app@corp.example\nTo: user@example.com\nSubject: lf only\n\nline one\nline two';
    const normalize = await openSession(running.portOf('smtp'));
    expect(await normalize.client.sendMessage('erp@corp.example', ['a@example.com'], lfBody)).toMatch(/^250 /);
    await normalize.client.quit();
    await waitFor(() => sink.messages.length === 1, 10_000, 'delivery');
    const delivered = sink.messages[0].data.toString('latin1');
    // The relay adds the Message-ID and Date the app left out (re-enveloping) below the client's own fields.
    expect(delivered).toContain('From: app@corp.example\r\nTo: user@example.com\r\nSubject: lf only\r\n');
    expect(delivered).toContain('\r\n\r\nline one\r\nline two');
    expect(delivered.replace(/\r\n/g, '')).not.toMatch(/[\r\n]/);
    expect(
      metricValue(await metricsText(running.httpPort), 'smarthop_line_endings_normalized_total{client="lan"}'),
    ).toBe(1);

    const strict = await openSession(running.portOf('strict'));
    expect(await strict.client.sendMessage('erp@corp.example', ['a@example.com'], lfBody)).toBe(
      '550 5.6.0 Message contains a bare LF line ending; lines must end with CRLF',
    );
    await strict.client.quit();
  });

  test('received and rejected messages are counted per client', async () => {
    const metrics = await metricsText(running.httpPort);
    expect(metricValue(metrics, 'smarthop_messages_received_total{client="lan"}')).toBeGreaterThanOrEqual(1);
    expect(metricValue(metrics, 'smarthop_messages_received_total{client="webshop"}')).toBeGreaterThanOrEqual(1);
    expect(
      metricValue(metrics, 'smarthop_delivery_attempts_total{smarthost="primary",outcome="delivered"}'),
    ).toBeGreaterThanOrEqual(1);
    expect(metrics).toContain('smarthop_queue_messages{state="dead"} 0');
    // Every accepted message waited for its commit, and that wait is in the histogram.
    const received = [...metrics.matchAll(/^smarthop_messages_received_total\{[^}]*\} (\d+)$/gm)].reduce(
      (sum, match) => sum + Number(match[1]),
      0,
    );
    expect(received).toBeGreaterThanOrEqual(2);
    expect(metricValue(metrics, 'smarthop_spool_commit_duration_seconds_count')).toBe(received);
    expect(metricValue(metrics, 'smarthop_spool_commit_duration_seconds_sum')).toBeGreaterThan(0);
    expect(metricValue(metrics, 'smarthop_spool_commit_duration_seconds_bucket{le="+Inf"}')).toBe(received);
  });
});
