import { existsSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { Writable } from 'node:stream';
import { createLogger } from '../src/observe/logger';
import type { SmtpSink } from '../src/tools/sink';
import {
  graphPkiPerFile,
  MAILBOX,
  startGraphEmulator,
  type Delivery,
  type GraphEmulator,
} from './helpers/graph-emulator';
import {
  baseConfig,
  buildConfig,
  freePort,
  metricsText,
  metricValue,
  removeDir,
  startRelay,
  startSink,
  tempDir,
  waitFor,
  type RunningRelay,
} from './helpers/harness';
import { buildMime, fakePdf } from './helpers/mime-build';
import { messageView, type MessageView } from './helpers/mime-view';
import { openSession } from './helpers/smtp-client';

/**
 * A legacy app relays over SMTP into smarthop, which sends through a Graph smart host (the
 * emulator, HTTPS with a test CA) and fails over to an SMTP backup (a sink): what the emulator
 * recorded, what the backup got, the DSN, the events, the log lines and the metrics.
 */

const pki = graphPkiPerFile();

/** Each range of an upload session (a multiple of Microsoft's 320 KiB under its 4 MB per request). */
const UPLOAD_RANGE = 10 * 320 * 1024;

describe('Graph smart host, end to end', () => {
  let dir: string;
  let emulator: GraphEmulator;
  let graphHost: (overrides?: Record<string, unknown>) => { name: string; [key: string]: unknown };
  let running: RunningRelay | null = null;
  let backup: SmtpSink | null = null;
  let lines: string[] = [];

  beforeEach(async () => {
    dir = tempDir();
    ({ emulator, host: graphHost } = await startGraphEmulator(dir, {}, pki));
    lines = [];
  });

  afterEach(async () => {
    await running?.stop();
    running = null;
    await backup?.close();
    backup = null;
    await emulator.close();
    removeDir(dir);
  });

  /** A relay whose route tries the Graph host first and, given `withBackup`, an SMTP sink after it. */
  async function relay(
    options: { graph?: Record<string, unknown>; withBackup?: boolean; overrides?: Record<string, unknown> } = {},
  ): Promise<RunningRelay> {
    const hosts = [graphHost({ priority: 10, ...options.graph })];
    if (options.withBackup) {
      backup = await startSink();
      hosts.push({ name: 'backup', port: backup.port, priority: 20 } as never);
    }
    const capture = new Writable({
      write: (chunk: Buffer, _encoding, done) => {
        lines.push(...chunk.toString().split('\n').filter(Boolean));
        done();
      },
    });
    const raw = baseConfig(dir, hosts, {
      events: { file: path.join(dir, 'events.jsonl') },
      log: { level: 'info' },
      ...options.overrides,
    });
    running = await startRelay(buildConfig(raw, dir), { logger: createLogger('info', capture) });
    return running;
  }

  async function send(relayed: RunningRelay, from: string, to: string[], message: string | Buffer): Promise<string> {
    const { client } = await openSession(relayed.smtpPort);
    const reply = await client.sendMessage(from, to, message);
    await client.quit();
    expect(reply).toMatch(/^250 2\.0\.0 Ok: queued as /);
    return (reply as string).split(' ').pop() as string;
  }

  /** The outcome events written so far (none before the first). */
  function events(): Record<string, unknown>[] {
    const file = path.join(dir, 'events.jsonl');
    if (!existsSync(file)) return [];
    return readFileSync(file, 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((line) => JSON.parse(line) as Record<string, unknown>);
  }

  async function metric(sample: string): Promise<number | undefined> {
    return metricValue(await metricsText((running as RunningRelay).httpPort), sample);
  }

  /** Two messages, one after the other, each waited for until the backup has it. */
  async function twoMessagesToTheBackup(relayed: RunningRelay): Promise<void> {
    for (const [n, to] of ['ann@example.com', 'bob@example.com'].entries()) {
      await send(
        relayed,
        'erp@corp.example',
        [to],
        `From: erp@corp.example\r\nTo: ${to}\r\nSubject: ${n}\r\n\r\nx\r\n`,
      );
      await waitFor(() => (backup as SmtpSink).messages.length === n + 1, 15_000, `the backup to get message ${n + 1}`);
    }
  }

  /** What the recipient sees, without the relay's own trace header. */
  function seen(view: MessageView): MessageView {
    return { ...view, headers: view.headers.filter(([name]) => name !== 'received') };
  }

  test("the message arrives as the app wrote it: the relay's Received line, then the app's bytes", async () => {
    const relayed = await relay();
    const message = [
      'From: erp@corp.example',
      'To: Ann <ann@example.com>',
      'Subject: Invoice 7',
      'Message-ID: <inv-7@corp.example>',
      'Date: Mon, 23 Nov 2026 10:00:00 +0000',
      '',
      'Line one',
      '..line starting with a dot',
      '',
      'last line',
    ].join('\r\n');
    await send(relayed, 'erp@corp.example', ['ann@example.com'], message);
    await waitFor(() => emulator.delivered.length === 1, 15_000, 'the Graph send');
    const mime = emulator.delivered[0].mime.toString('latin1');
    // What the client sent as DATA: dot-stuffing undone, the CRLF before the final dot kept.
    const stored = `${message.replace('\r\n..line', '\r\n.line')}\r\n`;
    expect(mime.endsWith(stored)).toBe(true);
    expect(mime.slice(0, mime.length - stored.length)).toMatch(/^Received: from [^]*\r\n$/);
    expect(
      mime
        .slice(0, mime.length - stored.length)
        .split(/\r\n(?![ \t])/)
        .filter(Boolean)
        .every((field) => field.startsWith('Received:')),
    ).toBe(true);
    expect(emulator.delivered[0].mailbox).toBe(MAILBOX);
    await waitFor(
      async () => (await metric('smarthop_delivery_attempts_total{smarthost="m365",outcome="delivered"}')) === 1,
      5000,
      'the attempt metric',
    );
    expect(await metric('smarthop_messages_delivered_total{smarthost="m365"}')).toBe(1);
    expect(await metric('smarthop_smarthost_up{smarthost="m365"}')).toBe(1);
    await waitFor(() => events().some((event) => event.type === 'delivered'), 5000, 'the delivered event');
    const delivered = events().filter((event) => event.type === 'delivered');
    expect(delivered).toEqual([
      expect.objectContaining({
        to: 'ann@example.com',
        smarthost: 'm365',
        response: expect.stringMatching(/^250 2\.0\.0 Microsoft Graph 202 Accepted/),
      }),
    ]);
    expect(
      lines.some((line) =>
        /to=<ann@example\.com>, relay=m365\[127\.0\.0\.1\]:\d+, .*status=sent \(250 2\.0\.0 Microsoft Graph 202/.test(
          line,
        ),
      ),
    ).toBe(true);
  });

  test('every envelope recipient exactly once, and no header recipient outside the envelope', async () => {
    const relayed = await relay();
    const message = [
      'From: erp@corp.example',
      'To: "All staff" <staff@corp.example>, ann@example.com',
      'Cc: bob@example.com, Ann@Example.com',
      'Bcc: auditor@corp.example',
      'Subject: Shift plan',
      '',
      'See attached.',
      '',
    ].join('\r\n');
    const envelope = ['ann@example.com', 'bob@example.com', 'carol@example.com', 'dave@example.com'];
    await send(relayed, 'erp@corp.example', envelope, message);
    await waitFor(() => emulator.delivered.length === 1, 15_000, 'the Graph send');
    const [delivery] = emulator.delivered;
    expect(delivery.recipients.map((r) => r.toLowerCase()).sort()).toEqual(envelope);
    expect(emulator.count('sendMail')).toBe(1);
    expect(delivery.view.headers.filter(([name]) => name === 'to' || name === 'cc')).toEqual([
      ['to', '<ann@example.com>'],
      ['cc', '<bob@example.com>'],
    ]);
    await waitFor(
      () => events().filter((event) => event.type === 'delivered').length === 4,
      5000,
      'four delivered events',
    );
  });

  test("a scanner's large PDF: the recipient sees the same headers, body and attachment, to the byte", async () => {
    const relayed = await relay({ overrides: { max_message_size: '30MiB' } });
    // Large enough for every step Graph needs for it: above its 4 MB per request and 3 MB per attachment
    // POST (a draft and an upload session), above two upload ranges of 3,276,800 bytes (a first, a middle
    // and a last range). More bytes prove nothing more.
    const pdf = fakePdf(2 * UPLOAD_RANGE + 50_000);
    const message = buildMime({
      headers: [
        'From: Scanner <scanner@corp.example>',
        'To: ann@example.com',
        'Subject: Scan from MFP-3',
        'Date: Mon, 23 Nov 2026 10:00:00 +0000',
        'Message-ID: <scan-1@corp.example>',
      ],
      text: 'Please find the scanned document attached.',
      attachments: [{ name: 'scan-0001.pdf', contentType: 'application/pdf', bytes: pdf }],
    });
    await send(relayed, 'scanner@corp.example', ['ann@example.com'], message);
    await waitFor(() => emulator.delivered.length === 1, 60_000, 'the Graph send');
    const delivery: Delivery = emulator.delivered[0];
    expect(delivery.via).toBe('draft');
    expect(seen(delivery.view)).toEqual(await messageView(message));
    expect(delivery.view.attachments[0]).toMatchObject({ name: 'scan-0001.pdf', size: pdf.length });
    expect(emulator.count('upload')).toBe(3);
    expect(emulator.drafts.size).toBe(0);
  }, 180_000);

  test('Graph down: the message fails over to the SMTP backup at once', async () => {
    const closedPort = await freePort();
    const relayed = await relay({
      withBackup: true,
      graph: {
        graph_url: `https://127.0.0.1:${closedPort}/v1.0`,
        token_url: `https://127.0.0.1:${closedPort}/t/oauth2/v2.0/token`,
      },
    });
    await send(
      relayed,
      'erp@corp.example',
      ['ann@example.com'],
      'From: erp@corp.example\r\nTo: ann@example.com\r\nSubject: down\r\n\r\nx\r\n',
    );
    await waitFor(() => (backup as SmtpSink).messages.length === 1, 15_000, 'the backup to get it');
    await waitFor(
      async () => (await metric('smarthop_failovers_total{from="m365",to="backup"}')) === 1,
      5000,
      'the failover metric',
    );
    expect(await metric('smarthop_delivery_attempts_total{smarthost="m365",outcome="unreachable"}')).toBe(1);
    expect(await metric('smarthop_delivery_attempts_total{smarthost="backup",outcome="delivered"}')).toBe(1);
  });

  test('Graph throttles longer than a message can wait (Retry-After 1 h): the backup takes it, and more', async () => {
    const relayed = await relay({ withBackup: true });
    emulator.script('sendMail', {
      status: 429,
      headers: { 'retry-after': '3600' },
      body: { error: { code: 'ApplicationThrottled', message: 'Application is over its MailboxConcurrency limit.' } },
    });
    await twoMessagesToTheBackup(relayed);
    expect(emulator.count('sendMail')).toBe(1);
    expect(await metric('smarthop_smarthost_throttled_total{smarthost="m365"}')).toBe(1);
    expect(await metric('smarthop_failovers_total{from="m365",to="backup"}')).toBe(1);
    expect(
      lines.some((line) =>
        /smart host m365\[127\.0\.0\.1\]:\d+: asked to wait until .*429 ApplicationThrottled/.test(line),
      ),
    ).toBe(true);
  });

  test('with no other host, a throttled message waits for Retry-After: Graph is asked nothing before', async () => {
    const relayed = await relay();
    emulator.script('sendMail', {
      status: 429,
      headers: { 'retry-after': '2' },
      body: { error: { code: 'ApplicationThrottled', message: 'Too many requests.' } },
    });
    await send(
      relayed,
      'erp@corp.example',
      ['ann@example.com'],
      'From: erp@corp.example\r\nTo: ann@example.com\r\nSubject: wait\r\n\r\nx\r\n',
    );
    await waitFor(() => emulator.delivered.length === 1, 15_000, 'the send after the wait');
    const sends = emulator.requests.filter((request) => request.endpoint === 'sendMail');
    expect(sends.map((request) => request.status)).toEqual([429, 202]);
    expect(sends[1].at - sends[0].at).toBeGreaterThanOrEqual(2000);
    // Deferred by the 429; a retry before the wait is over finds the host skipped, without a request.
    const [throttled, ...skipped] = events().filter((event) => event.type === 'deferred');
    expect(throttled).toMatchObject({
      smarthost: 'm365',
      response: expect.stringContaining('451 4.4.5 Microsoft Graph 429 ApplicationThrottled'),
    });
    for (const event of skipped)
      expect(event.response).toMatch(
        /^no smart host available: m365 skipped: it asked to wait \(451 4\.4\.5 .*\) until /,
      );
  });

  test("a 400 from Graph: a DSN with Graph's error code and message, in the event and the log line too", async () => {
    const relayed = await relay();
    emulator.script('sendMail', {
      status: 400,
      body: {
        error: {
          code: 'ErrorInvalidRecipients',
          message: "At least one recipient is not valid., Recipient 'bad@@example.com' is not resolved.",
        },
      },
    });
    const id = await send(
      relayed,
      'erp@corp.example',
      ['ann@example.com'],
      'From: erp@corp.example\r\nTo: ann@example.com\r\nSubject: bounce me\r\n\r\nx\r\n',
    );
    // The DSN goes to the envelope sender through the same route: Graph (no longer scripted) sends it.
    await waitFor(() => emulator.delivered.length === 1, 15_000, 'the DSN');
    const dsn = emulator.delivered[0].mime.toString('latin1');
    expect(emulator.delivered[0].recipients).toEqual(['erp@corp.example']);
    expect(dsn).toContain('Content-Type: multipart/report; report-type=delivery-status');
    expect(dsn).toContain('Status: 5.1.3');
    expect(dsn).toMatch(
      /Diagnostic-Code: smtp; 550 5\.1\.3 Microsoft Graph 400 ErrorInvalidRecipients: .*'bad@@example\.com' is not/,
    );
    expect(dsn).toMatch(/Remote-MTA: dns; 127\.0\.0\.1/);
    // The events file is written behind the delivery: wait for the line itself.
    await waitFor(() => events().some((event) => event.type === 'bounced'), 5000, 'the bounced event');
    const bounced = events().find((event) => event.type === 'bounced');
    expect(bounced).toMatchObject({
      queue_id: id,
      smarthost: 'm365',
      response: expect.stringContaining('ErrorInvalidRecipients: At least one recipient is not valid.'),
    });
    expect(
      lines.some(
        (line) =>
          line.includes(`${id}: to=<ann@example.com>`) &&
          line.includes('status=bounced (550 5.1.3 Microsoft Graph 400 ErrorInvalidRecipients'),
      ),
    ).toBe(true);
    expect(await metric('smarthop_delivery_attempts_total{smarthost="m365",outcome="failed"}')).toBe(1);
  });

  test('refused credentials: the host is down at once (log line, metric), not asked again in a loop', async () => {
    const relayed = await relay({
      withBackup: true,
      graph: { client_secret: 'this-is-the-secret-id', breaker: { failures: 3, cooldown: '1h' } },
    });
    await twoMessagesToTheBackup(relayed);
    expect(emulator.tokenRequests).toHaveLength(1);
    expect(emulator.count('sendMail')).toBe(0);
    expect(await metric('smarthop_smarthost_up{smarthost="m365"}')).toBe(0);
    expect(await metric('smarthop_smarthost_credentials_refused_total{smarthost="m365"}')).toBe(1);
    const line = lines
      .map((text) => JSON.parse(text) as { level: number; msg: string })
      .find((entry) => entry.msg.includes('credentials refused'));
    expect(line?.level).toBe(50);
    expect(line?.msg).toMatch(
      /^smart host m365\[127\.0\.0\.1\]:\d+: credentials refused, marked down until .*AADSTS7000215: .*to fix: /,
    );
    expect(lines.join('\n')).not.toContain('this-is-the-secret-id');
  });

  test('a Graph that hangs: the send times out and the backup takes the message', async () => {
    const relayed = await relay({ withBackup: true, graph: { socket_timeout: '1s' } });
    emulator.script('sendMail', 'hang');
    await send(
      relayed,
      'erp@corp.example',
      ['ann@example.com'],
      'From: erp@corp.example\r\nTo: ann@example.com\r\nSubject: hang\r\n\r\nx\r\n',
    );
    await waitFor(() => events().some((event) => event.type === 'delivered'), 15_000, 'the backup to deliver it');
    expect((backup as SmtpSink).messages).toHaveLength(1);
    expect(events().find((event) => event.type === 'delivered')).toMatchObject({ smarthost: 'backup' });
    expect(await metric('smarthop_delivery_attempts_total{smarthost="m365",outcome="unreachable"}')).toBe(1);
  });
});
