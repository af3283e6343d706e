import { writeFileSync } from 'node:fs';
import * as path from 'node:path';
import type { GraphSmartHostConfig } from '../src/config/schema';
import { GraphSmartHost } from '../src/forward/graph/transport';
import type { Outcome } from '../src/forward/outcome';
import type { MessageBody } from '../src/forward/smarthost';
import {
  CLIENT_ID,
  graphPkiPerFile,
  MAILBOX,
  OUTSIDE_MAILBOX,
  startGraphEmulator,
  type GraphEmulator,
} from './helpers/graph-emulator';
import { makeDkimKey } from './helpers/dkim-key';
import { baseConfig, buildConfig, makeCertificate, removeDir, tempDir } from './helpers/harness';
import { buildMime, fakePdf } from './helpers/mime-build';
import { messageView } from './helpers/mime-view';

/**
 * The Graph transport on its own against the Graph emulator over HTTPS with a test CA: what it
 * sends for a queue file, and what each of Graph's answers becomes.
 */
const pki = graphPkiPerFile();

describe('Graph smart host transport', () => {
  let dir: string;
  let emulator: GraphEmulator;
  let hostSpec: (overrides?: Record<string, unknown>) => { name: string; [key: string]: unknown };
  const transports: GraphSmartHost[] = [];

  beforeEach(async () => {
    dir = tempDir();
    ({ emulator, host: hostSpec } = await startGraphEmulator(dir, {}, pki));
  });

  afterEach(async () => {
    for (const transport of transports.splice(0)) transport.close();
    await emulator.close();
    removeDir(dir);
  });

  function transport(overrides: Record<string, unknown> = {}): GraphSmartHost {
    const config = buildConfig(baseConfig(dir, [hostSpec({ socket_timeout: '2s', ...overrides })]), dir)
      .smarthosts[0] as GraphSmartHostConfig;
    const created = new GraphSmartHost(config);
    transports.push(created);
    return created;
  }

  /** A queue file: the message, then a trailer that must never leave. */
  function queued(message: Buffer, prependHeaders?: string): MessageBody {
    const file = path.join(dir, `message-${Math.random().toString(36).slice(2)}.eml`);
    writeFileSync(file, Buffer.concat([message, Buffer.from('{"metadata":"never sent"}\n0000000025 smarthop-meta\n')]));
    return { path: file, size: message.length, ...(prependHeaders ? { prependHeaders } : {}) };
  }

  const simple = (to = 'ann@example.com') =>
    Buffer.from(
      [
        `From: app@corp.example`,
        `To: ${to}`,
        'Subject: report',
        'Message-ID: <1@corp.example>',
        '',
        'body',
        '.dot',
        '',
      ].join('\r\n'),
      'latin1',
    );

  test('sendMail gets the SMTP bytes: the DKIM lines kept beside the file, then its first size bytes', async () => {
    const outcomes = await transport().send(
      { from: 'bounces@corp.example', to: ['ann@example.com'] },
      queued(simple(), 'DKIM-Signature: v=1; a=rsa-sha256; d=corp.example; b=abc\r\n'),
    );
    expect(outcomes.get('ann@example.com')).toEqual({
      kind: 'delivered',
      reply: {
        code: 250,
        text: expect.stringMatching(/^250 2\.0\.0 Microsoft Graph 202 Accepted \(request-id [0-9a-f-]+\)$/),
      },
    });
    expect(emulator.delivered).toHaveLength(1);
    const [delivery] = emulator.delivered;
    expect(delivery.via).toBe('sendMail');
    expect(delivery.mailbox).toBe(MAILBOX);
    expect(delivery.mime.toString('latin1')).toBe(
      `DKIM-Signature: v=1; a=rsa-sha256; d=corp.example; b=abc\r\n${simple().toString('latin1')}`,
    );
    expect(delivery.recipients).toEqual(['ann@example.com']);
    expect(
      emulator.tokenRequests.map((form) => [form.get('client_id'), form.get('client_secret'), form.get('scope')]),
    ).toEqual([[CLIENT_ID, 'app-secret-value', `${emulator.origin}/.default`]]);
  });

  test('the same copy for a message the spool still holds in memory', async () => {
    const message = simple();
    const body = queued(message);
    await transport().send({ from: '', to: ['ann@example.com'] }, { ...body, message: new Uint8Array(message) });
    expect(emulator.delivered[0].mime).toEqual(message);
  });

  test('every envelope recipient once, and nobody else: Bcc added, display-only To dropped', async () => {
    const message = Buffer.from(
      [
        'From: app@corp.example',
        'To: "Everyone" <all@corp.example>, ann@example.com',
        'Cc: ann@example.com',
        'Bcc: secret@else.example',
        'Subject: x',
        '',
        'hi',
        '',
      ].join('\r\n'),
      'latin1',
    );
    const outcomes = await transport().send(
      { from: 'app@corp.example', to: ['ann@example.com', 'bob@example.com', 'carol@example.com'] },
      queued(message),
    );
    expect([...outcomes.values()].every((outcome) => outcome.kind === 'delivered')).toBe(true);
    expect(emulator.delivered[0].recipients.sort()).toEqual([
      'ann@example.com',
      'bob@example.com',
      'carol@example.com',
    ]);
    expect(emulator.delivered[0].mime.toString('latin1')).toBe(
      [
        'From: app@corp.example',
        'To: <ann@example.com>',
        'Subject: x',
        'Bcc: <bob@example.com>,',
        ' <carol@example.com>',
        '',
        'hi',
        '',
      ].join('\r\n'),
    );
  });

  test('send_as: from sends as the header From mailbox', async () => {
    const fromMailbox = Buffer.from(
      simple().toString('latin1').replace('From: app@corp.example', `From: Relay <${MAILBOX.toUpperCase()}>`),
      'latin1',
    );
    await transport({ send_as: 'from', mailbox: undefined }).send(
      { from: 'x@corp.example', to: ['ann@example.com'] },
      queued(fromMailbox),
    );
    expect(emulator.delivered[0].mailbox).toBe(MAILBOX);
  });

  test('a token Graph refuses (401) is renewed once and the call repeated', async () => {
    const host = transport();
    await host.send({ from: '', to: ['ann@example.com'] }, queued(simple()));
    emulator.expireTokens();
    const outcomes = await host.send({ from: '', to: ['ann@example.com'] }, queued(simple()));
    expect(outcomes.get('ann@example.com')?.kind).toBe('delivered');
    expect(emulator.tokenRequests).toHaveLength(2);
    expect(emulator.requests.filter((r) => r.endpoint === 'sendMail').map((r) => r.status)).toEqual([202, 401, 202]);
  });

  test('a second 401 after the renewal is a temporary failure of the host', async () => {
    const unauthorized = {
      status: 401,
      body: {
        error: { code: 'InvalidAuthenticationToken', message: 'Access token validation failure. Invalid audience.' },
      },
    };
    emulator.script('sendMail', unauthorized, unauthorized);
    const outcome = (await transport().send({ from: '', to: ['ann@example.com'] }, queued(simple()))).get(
      'ann@example.com',
    );
    expect(outcome).toMatchObject({
      kind: 'transient',
      cause: 'connect',
      reply: {
        code: 451,
        text: expect.stringContaining(
          '401 InvalidAuthenticationToken: Access token validation failure. Invalid audience.',
        ),
      },
    });
    expect(emulator.tokenRequests).toHaveLength(2);
  });

  test('429 with Retry-After: transient, the wait handed on', async () => {
    emulator.script('sendMail', {
      status: 429,
      headers: { 'retry-after': '12' },
      body: { error: { code: 'ApplicationThrottled', message: 'Application is over its MailboxConcurrency limit.' } },
    });
    const outcome = (
      await transport().send({ from: '', to: ['ann@example.com', 'bob@example.com'] }, queued(simple()))
    ).get('bob@example.com');
    expect(outcome).toMatchObject({ kind: 'transient', cause: 'reply', retryAfterMs: 12_000, reply: { code: 451 } });
  });

  test.each<[number, string, string, string]>([
    [400, 'ErrorInvalidRecipients', 'At least one recipient is not valid.', '550 5.1.3'],
    [403, 'ErrorAccessDenied', 'Access is denied. Check credentials and try again.', '550 5.7.1'],
    [404, 'ErrorInvalidUser', "The requested user 'relay@corp.example' is invalid.", '550 5.1.0'],
  ])("%i %s: permanent, Graph's code and message in the reply", async (status, code, message, prefix) => {
    emulator.script('sendMail', { status, body: { error: { code, message } } });
    const outcome = (await transport().send({ from: '', to: ['ann@example.com'] }, queued(simple()))).get(
      'ann@example.com',
    );
    expect(outcome).toEqual({
      kind: 'permanent',
      reply: {
        code: Number(prefix.slice(0, 3)),
        text: expect.stringMatching(
          new RegExp(
            `^${prefix} Microsoft Graph ${status} ${code}: ${message.replace(/[.()']/g, '\\$&')} \\(request-id `,
          ),
        ),
      },
    });
  });

  test("a mailbox the tenant does not have, and one outside the app's scope", async () => {
    const unknown = (
      await transport({ mailbox: 'nobody@corp.example' }).send({ from: '', to: ['ann@example.com'] }, queued(simple()))
    ).get('ann@example.com');
    expect(unknown).toMatchObject({
      kind: 'permanent',
      reply: {
        text: expect.stringContaining(
          "550 5.1.0 Microsoft Graph 404 ErrorInvalidUser: The requested user 'nobody@corp.example' is invalid.",
        ),
      },
    });
    const outside = (
      await transport({ mailbox: OUTSIDE_MAILBOX }).send({ from: '', to: ['ann@example.com'] }, queued(simple()))
    ).get('ann@example.com');
    expect(outside).toMatchObject({
      kind: 'permanent',
      reply: { text: expect.stringContaining('550 5.7.1 Microsoft Graph 403 ErrorAccessDenied: Access is denied.') },
    });
    expect(emulator.delivered).toHaveLength(0);
  });

  test('refused credentials: a transient failure of cause credentials, with what to fix', async () => {
    const outcome = (
      await transport({ client_secret: 'the-secret-id-not-its-value' }).send(
        { from: '', to: ['ann@example.com'] },
        queued(simple()),
      )
    ).get('ann@example.com') as Outcome;
    expect(outcome).toMatchObject({ kind: 'transient', cause: 'credentials' });
    expect(outcome.kind === 'transient' && outcome.detail).toMatch(
      /^the token endpoint refused the credentials \(401 invalid_client: AADSTS7000215: .*\); to fix: /,
    );
    expect(emulator.count('sendMail')).toBe(0);
  });

  test('a token endpoint in trouble (503) is a connection-level failure, not refused credentials', async () => {
    emulator.script('token', { status: 503 });
    const outcome = (await transport().send({ from: '', to: ['ann@example.com'] }, queued(simple()))).get(
      'ann@example.com',
    );
    expect(outcome).toMatchObject({
      kind: 'transient',
      cause: 'connect',
      detail: expect.stringContaining('answered 503'),
    });
  });

  test('a Graph that accepts the connection and never answers: timeout', async () => {
    emulator.script('sendMail', 'hang');
    const outcome = (
      await transport({ socket_timeout: '500ms' }).send({ from: '', to: ['ann@example.com'] }, queued(simple()))
    ).get('ann@example.com');
    expect(outcome).toMatchObject({
      kind: 'transient',
      cause: 'timeout',
      detail: expect.stringContaining('nothing sent or received for 500 ms'),
    });
  });

  test('a certificate nothing here trusts: tls, nothing sent', async () => {
    const outcome = (
      await transport({ ca: undefined }).send({ from: '', to: ['ann@example.com'] }, queued(simple()))
    ).get('ann@example.com');
    expect(outcome).toMatchObject({ kind: 'transient', cause: 'tls' });
    expect(emulator.requests).toHaveLength(0);
  });

  test("a queue file cut short is the spool's problem", async () => {
    const message = simple();
    const body = queued(message);
    const outcome = (
      await transport().send({ from: '', to: ['ann@example.com'] }, { ...body, size: message.length + 5000 })
    ).get('ann@example.com');
    expect(outcome).toMatchObject({ kind: 'transient', cause: 'spool' });
  });

  test('larger than max_message_size: permanent 552 for this host, nothing sent', async () => {
    const outcome = (
      await transport({ max_message_size: 100 }).send({ from: '', to: ['ann@example.com'] }, queued(simple()))
    ).get('ann@example.com');
    expect(outcome).toMatchObject({
      kind: 'permanent',
      reply: { code: 552, text: expect.stringContaining('552 5.3.4 Message too large for Microsoft Graph') },
    });
    expect(emulator.requests).toHaveLength(0);
  });
});

describe('Graph smart host transport: certificate credentials', () => {
  let dir: string;
  let emulator: GraphEmulator | null = null;

  beforeEach(() => {
    dir = tempDir();
  });

  afterEach(async () => {
    await emulator?.close();
    emulator = null;
    removeDir(dir);
  });

  test("a client assertion signed with the certificate's key (PS256, x5t#S256) gets the token", async () => {
    const app = makeCertificate(dir, 'app.test', 'rsa');
    const started = await startGraphEmulator(dir, { clientSecret: undefined, certificate: app.cert }, pki);
    emulator = started.emulator;
    const tokenUrl = emulator.tokenUrl;
    const config = buildConfig(
      baseConfig(dir, [started.host({ client_secret: undefined, certificate: { cert: app.cert, key: app.key } })]),
      dir,
    ).smarthosts[0] as GraphSmartHostConfig;
    const host = new GraphSmartHost(config);
    try {
      const message = Buffer.from('To: ann@example.com\r\nSubject: x\r\n\r\nhi\r\n');
      const outcomes = await host.send(
        { from: '', to: ['ann@example.com'] },
        { path: '', size: message.length, message: new Uint8Array(message) },
      );
      expect(outcomes.get('ann@example.com')?.kind).toBe('delivered');
      const form = started.emulator.tokenRequests[0];
      expect(form.get('client_secret')).toBeNull();
      expect(form.get('client_assertion_type')).toBe('urn:ietf:params:oauth:client-assertion-type:jwt-bearer');
      const [header, claims] = (form.get('client_assertion') ?? '')
        .split('.')
        .slice(0, 2)
        .map((part) => JSON.parse(Buffer.from(part, 'base64url').toString('utf8')) as Record<string, unknown>);
      expect(header).toMatchObject({ alg: 'PS256', typ: 'JWT' });
      expect(claims).toMatchObject({ aud: tokenUrl, iss: CLIENT_ID, sub: CLIENT_ID });
      expect((claims.exp as number) - (claims.nbf as number)).toBeLessThanOrEqual(600);
    } finally {
      host.close();
    }
  });

  /** A Graph smart host with the app's certificate and the private key in `keyFile`. */
  const withKey = (app: { cert: string }, keyFile: string) =>
    buildConfig(
      baseConfig(dir, [
        {
          name: 'm365',
          type: 'graph',
          tenant: 't.test',
          client_id: 'c',
          mailbox: MAILBOX,
          certificate: { cert: app.cert, key: keyFile },
        },
      ]),
      dir,
    ).smarthosts[0] as GraphSmartHostConfig;

  test("an RSA key that is not the certificate's stops the host from being built", () => {
    // The app's certificate with another RSA key pair's private key (one the DKIM tests share).
    const app = makeCertificate(dir, 'app.test', 'rsa');
    const config = withKey(app, makeDkimKey(dir, 'rsa').file);
    expect(() => new GraphSmartHost(config)).toThrow('certificate.key is not the private key of certificate.cert');
  });

  test('a key that is not RSA stops the host from being built: the assertion is signed with PS256', () => {
    // The emulator's P-256 key, already made for this file.
    const config = withKey(makeCertificate(dir, 'app.test', 'rsa'), pki.key);
    expect(() => new GraphSmartHost(config)).toThrow(
      'smart host m365: certificate.key must be an RSA key (the assertion is signed with PS256)',
    );
  });
});

/** Each range of an upload session (a multiple of Microsoft's 320 KiB under its 4 MB per request). */
const UPLOAD_RANGE = 10 * 320 * 1024;

describe('Graph smart host transport: messages larger than one request', () => {
  let dir: string;
  let emulator: GraphEmulator;
  let host: GraphSmartHost;
  /**
   * A scanned PDF just large enough for every step of the large-message path: above Graph's 4 MB per
   * request and its 3 MB per attachment POST, so it goes through an upload session, and above two
   * upload ranges, so it is sent as a first, a middle and a last range. A larger one proves nothing
   * more and costs CPU in the transport, the emulator and the test alike. Made once, for every test here.
   */
  const scan = fakePdf(2 * UPLOAD_RANGE + 50_000);

  beforeAll(async () => {
    dir = tempDir();
    const started = await startGraphEmulator(dir, {}, pki);
    emulator = started.emulator;
    host = new GraphSmartHost(
      buildConfig(baseConfig(dir, [started.host()]), dir).smarthosts[0] as GraphSmartHostConfig,
    );
  });

  afterAll(async () => {
    host.close();
    await emulator.close();
    removeDir(dir);
  });

  function body(message: Buffer): MessageBody {
    const file = path.join(dir, `large-${Math.random().toString(36).slice(2)}.eml`);
    writeFileSync(file, message);
    return { path: file, size: message.length };
  }

  const headers = [
    'From: Scanner <scanner@corp.example>',
    'To: ann@example.com',
    'Subject: Scan 0042',
    'Date: Mon, 23 Nov 2026 10:00:00 +0000',
    'Message-ID: <scan-42@corp.example>',
    'X-Scanner: MFP-3',
  ];

  /** The scan as a scanner mails it: one attachment, a line of text. */
  const scanMessage = buildMime({
    headers,
    text: 'Scan.',
    attachments: [{ name: 'scan.pdf', contentType: 'application/pdf', bytes: scan }],
  });

  // 9 MB of MIME parsed by the transport, the emulator and the test: slow on a loaded machine, hence the timeout.
  test('a scanned PDF: draft, upload session in three ranges, send; the recipient sees the same message', async () => {
    const message = buildMime({
      headers,
      text: 'Scanned document attached.',
      html: '<p>Scanned <img src="cid:logo@corp"></p>',
      attachments: [
        { name: 'scan-0042.pdf', contentType: 'application/pdf', bytes: scan },
        {
          name: 'logo.png',
          contentType: 'image/png',
          bytes: Buffer.from('89504e470d0a1a0a', 'hex'),
          contentId: 'logo@corp',
        },
        { name: 'notes.txt', contentType: 'text/plain', bytes: Buffer.from('small text attachment\r\n') },
      ],
    });
    const before = emulator.requests.length;
    const outcomes = await host.send({ from: '', to: ['ann@example.com'] }, body(message));
    expect(outcomes.get('ann@example.com')).toMatchObject({
      kind: 'delivered',
      reply: { text: expect.stringContaining('250 2.0.0 Microsoft Graph 202 Accepted') },
    });
    const steps = emulator.requests.slice(before).map((request) => request.endpoint);
    expect(steps).toEqual(['token', 'createDraft', 'createUploadSession', 'upload', 'upload', 'upload', 'send']);
    expect(Math.max(...emulator.requests.slice(before).map((request) => request.size))).toBeLessThan(4_000_000);
    const delivery = emulator.delivered[emulator.delivered.length - 1];
    expect(delivery.via).toBe('draft');
    expect(delivery.view).toEqual(await messageView(message));
    expect(delivery.view.attachments.find((a) => a.name === 'scan-0042.pdf')?.size).toBe(scan.length);
    expect(emulator.drafts.size).toBe(0);
  }, 180_000);

  test('several attachments under 3 MB: the largest are POSTed one by one until the rest fits', async () => {
    const attachments = [1, 2, 3].map((n) => ({
      name: `page-${n}.pdf`,
      contentType: 'application/pdf',
      bytes: fakePdf(1_400_000),
    }));
    const message = buildMime({ headers, text: 'Three pages.', attachments });
    const before = emulator.requests.length;
    await host.send({ from: '', to: ['ann@example.com'] }, body(message));
    expect(emulator.requests.slice(before).map((request) => request.endpoint)).toEqual([
      'createDraft',
      'attachment',
      'attachment',
      'send',
    ]);
    expect(emulator.delivered[emulator.delivered.length - 1].view).toEqual(await messageView(message));
  });

  test('a sendMail that Graph finds too large (413) goes through a draft instead', async () => {
    const message = buildMime({
      headers,
      text: 'One page.',
      attachments: [{ name: 'page.pdf', contentType: 'application/pdf', bytes: fakePdf(2_000_000) }],
    });
    emulator.script('sendMail', {
      status: 413,
      body: { error: { code: 'RequestEntityTooLarge', message: 'The request is too large.' } },
    });
    const before = emulator.requests.length;
    const outcomes = await host.send({ from: '', to: ['ann@example.com'] }, body(message));
    expect(outcomes.get('ann@example.com')?.kind).toBe('delivered');
    expect(emulator.requests.slice(before).map((request) => request.endpoint)).toEqual([
      'sendMail',
      'createDraft',
      'send',
    ]);
  });

  test('an upload that fails: the draft is deleted, the send is deferred', async () => {
    emulator.script(
      'upload',
      { status: 200, body: { nextExpectedRanges: [String(UPLOAD_RANGE)] } },
      { status: 503, headers: { 'retry-after': '3' } },
    );
    const before = emulator.requests.length;
    const outcome = (await host.send({ from: '', to: ['ann@example.com'] }, body(scanMessage))).get('ann@example.com');
    expect(outcome).toMatchObject({ kind: 'transient', cause: 'connect', retryAfterMs: 3000 });
    expect(emulator.requests.slice(before).map((request) => request.endpoint)).toEqual([
      'createDraft',
      'createUploadSession',
      'upload',
      'upload',
      'delete',
    ]);
    expect(emulator.drafts.size).toBe(0);
  });

  test("without Mail.ReadWrite a large message is refused for good by this host, with Graph's reason", async () => {
    const readOnly = await startGraphEmulator(dir, { readWrite: false }, pki);
    const sendOnly = new GraphSmartHost(
      buildConfig(baseConfig(dir, [readOnly.host()]), dir).smarthosts[0] as GraphSmartHostConfig,
    );
    try {
      const outcome = (await sendOnly.send({ from: '', to: ['ann@example.com'] }, body(scanMessage))).get(
        'ann@example.com',
      );
      expect(outcome).toMatchObject({
        kind: 'permanent',
        reply: { text: expect.stringContaining('550 5.7.1 Microsoft Graph 403 ErrorAccessDenied') },
      });
    } finally {
      sendOnly.close();
      await readOnly.emulator.close();
    }
  });
});
