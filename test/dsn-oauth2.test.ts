import { buildDsn, diagnosticCode, dsnStatus, finalRecipient } from '../src/forward/dsn';
import { rfc5322Date } from '../src/message/date';
import { ClientCredentialsTokens, refreshTime } from '../src/forward/oauth2';
import { TokenEndpoint } from './helpers/token-endpoint';

describe('DSN (RFC 3464)', () => {
  test.each<[string | undefined, 'rejected' | 'expired', string]>([
    ['550 5.1.1 <x@example.com>: Recipient address rejected', 'rejected', '5.1.1'],
    ['554-5.7.1 refused\n554 5.7.1 policy', 'rejected', '5.7.1'],
    ['550 Mailbox unavailable', 'rejected', '5.0.0'],
    ['451 4.7.0 Try again later', 'expired', '4.4.7'],
    ['ECONNREFUSED: connect ECONNREFUSED 127.0.0.1:25', 'expired', '4.4.7'],
    [undefined, 'rejected', '5.0.0'],
    // A refusal for good is a 5.x.x status whatever enhanced code the host put after its 5xx.
    ['550 4.7.1 Service unavailable, client host blocked', 'rejected', '5.7.1'],
  ])('status of %p (%s) is %p', (response, reason, status) => {
    expect(dsnStatus({ response, reason })).toBe(status);
  });

  test.each([
    ['550 5.1.1 No such user', 'smtp; 550 5.1.1 No such user'],
    ['ETIMEDOUT: Greeting never received', 'X-smarthop; ETIMEDOUT: Greeting never received'],
    ['550 5.7.1 line\r\nInjected: header\u00ff', 'smtp; 550 5.7.1 line Injected: header?'],
    [undefined, 'X-smarthop; no smart host accepted the message'],
  ])('Diagnostic-Code for %p is %p', (response, expected) => {
    expect(diagnosticCode(response)).toBe(expected);
  });

  test.each([
    ['gone@example.com', 'rfc822; gone@example.com'],
    ['jürgen@corp.example', 'utf-8; j\\x{FC}rgen@corp.example'],
    ['用户@例子.example', 'utf-8; \\x{7528}\\x{6237}@\\x{4F8B}\\x{5B50}.example'],
  ])('Final-Recipient for %p is %p (RFC 6533 utf-8-addr-xtext beyond ASCII)', (address, expected) => {
    expect(finalRecipient(address)).toBe(expected);
  });

  test('a non-ASCII sender is addressed in UTF-8 (RFC 6532); a non-ASCII recipient keeps its address in it', () => {
    const dsn = buildDsn({
      hostname: 'relay.test',
      originalId: 'ORIG2',
      uniqueId: 'DSN2',
      arrivalDate: new Date(0),
      date: new Date(0),
      to: 'jürgen@corp.example',
      failures: [
        {
          address: 'bödeker@example.com',
          response: '550 5.1.1 No such user',
          remoteMta: undefined,
          reason: 'rejected',
        },
      ],
      originalHeaders: Buffer.from('Subject: x\r\n'),
    });
    expect(dsn.includes(Buffer.from('To: <jürgen@corp.example>\r\n', 'utf8'))).toBe(true);
    expect(dsn.toString('latin1')).toContain('\r\nFinal-Recipient: utf-8; b\\x{F6}deker@example.com\r\n');
  });

  test('the exact report: multipart/report with the human text, the delivery-status and the original headers', () => {
    const dsn = buildDsn({
      hostname: 'relay.test',
      originalId: 'ORIG1',
      uniqueId: 'DSN1',
      arrivalDate: new Date(Date.UTC(2026, 10, 23, 10, 0, 0)),
      date: new Date(Date.UTC(2026, 10, 23, 10, 5, 0)),
      to: 'app@corp.example',
      failures: [
        {
          address: 'gone@example.com',
          response: '550 5.1.1 No such user here',
          remoteMta: 'smtp.provider.example',
          reason: 'rejected',
        },
      ],
      originalHeaders: Buffer.from('Received: from erp01\r\nSubject: Invoice 42\r\nFrom: app@corp.example\r\n'),
    }).toString('latin1');
    expect(dsn).toBe(
      [
        'From: Mail Delivery System <MAILER-DAEMON@relay.test>',
        'To: <app@corp.example>',
        'Subject: Undelivered Mail Returned to Sender',
        'Date: Mon, 23 Nov 2026 10:05:00 +0000',
        'Message-ID: <DSN1.dsn@relay.test>',
        'Auto-Submitted: auto-replied',
        'MIME-Version: 1.0',
        'Content-Type: multipart/report; report-type=delivery-status; boundary="DSN1/relay.test"',
        '',
        'This is a MIME-encapsulated message.',
        '',
        '--DSN1/relay.test',
        'Content-Type: text/plain; charset=us-ascii',
        'Content-Description: Notification',
        '',
        'This is the mail system at host relay.test.',
        '',
        'Your message could not be delivered to one or more recipients.',
        'It is attached below (headers only). The mail system said:',
        '',
        '<gone@example.com>: 550 5.1.1 No such user here',
        '',
        '--DSN1/relay.test',
        'Content-Type: message/delivery-status',
        'Content-Description: Delivery report',
        '',
        'Reporting-MTA: dns; relay.test',
        'X-Smarthop-Queue-ID: ORIG1',
        'Arrival-Date: Mon, 23 Nov 2026 10:00:00 +0000',
        '',
        'Final-Recipient: rfc822; gone@example.com',
        'Action: failed',
        'Status: 5.1.1',
        'Remote-MTA: dns; smtp.provider.example',
        'Diagnostic-Code: smtp; 550 5.1.1 No such user here',
        '',
        '--DSN1/relay.test',
        'Content-Type: text/rfc822-headers',
        'Content-Description: Undelivered Message Headers',
        '',
        'Received: from erp01',
        'Subject: Invoice 42',
        'From: app@corp.example',
        '',
        '--DSN1/relay.test--',
        '',
      ].join('\r\n'),
    );
  });

  test('8-bit original headers are declared as such; dates are RFC 5322 with a numeric zone', () => {
    const dsn = buildDsn({
      hostname: 'relay.test',
      originalId: 'O',
      uniqueId: 'D',
      arrivalDate: new Date(0),
      date: new Date(0),
      to: 'a@b',
      failures: [{ address: 'x@y', response: undefined, remoteMta: undefined, reason: 'expired' }],
      originalHeaders: Buffer.from('Subject: Gr\u00fc\u00dfe\r\n', 'latin1'),
    }).toString('latin1');
    expect(dsn).toContain(
      'Content-Type: text/rfc822-headers\r\nContent-Description: Undelivered Message Headers\r\n' +
        'Content-Transfer-Encoding: 8bit\r\n\r\n',
    );
    expect(dsn).toContain('Subject: Undelivered Mail Returned to Sender (delivery time expired)\r\n');
    expect(dsn).toContain('Status: 4.4.7\r\nDiagnostic-Code: X-smarthop; no smart host accepted the message\r\n');
    expect(dsn).not.toContain('Remote-MTA');
    expect(rfc5322Date(new Date(0))).toBe('Thu, 01 Jan 1970 00:00:00 +0000');
  });
});

describe('OAuth2 client credentials', () => {
  test.each([
    [3_600_000, 3_300_000],
    [600_000, 300_000],
    [10_000, 5000],
  ])('a token valid %p ms is replaced after %p ms', (lifetime, after) => {
    expect(refreshTime(1000, lifetime)).toBe(1000 + after);
  });

  let endpoint: TokenEndpoint;
  const config = (overrides: Record<string, string> = {}) => ({
    type: 'oauth2' as const,
    user: 'relay@corp.example',
    token_url: endpoint.url,
    client_id: 'app-id',
    client_secret: 's3cret',
    scope: 'https://outlook.office365.com/.default',
    ...overrides,
  });

  beforeEach(async () => {
    endpoint = new TokenEndpoint({
      clientId: 'app-id',
      clientSecret: 's3cret',
      scope: 'https://outlook.office365.com/.default',
      lifetimeS: 600,
    });
    await endpoint.listen();
  });
  afterEach(() => endpoint.close());

  test('one token is fetched, shared while fresh, and replaced at its refresh time (clock passed in)', async () => {
    let now = 1_000_000;
    const tokens = new ClientCredentialsTokens(config(), { timeoutMs: 5000, now: () => now });
    const [a, b] = await Promise.all([tokens.get(), tokens.get()]);
    expect(a).toEqual({ value: 'token-1', expiresAt: 1_600_000, refreshAt: 1_300_000 });
    expect(b.value).toBe('token-1');
    now = 1_299_999;
    expect((await tokens.get()).value).toBe('token-1');
    now = 1_300_000;
    expect((await tokens.get()).value).toBe('token-2');
    expect(endpoint.requests).toHaveLength(2);
    expect(Object.fromEntries(endpoint.requests[0])).toEqual({
      grant_type: 'client_credentials',
      client_id: 'app-id',
      client_secret: 's3cret',
      scope: 'https://outlook.office365.com/.default',
    });
  });

  test('renew forces a new token even while the cached one is fresh (the server refused it)', async () => {
    const tokens = new ClientCredentialsTokens(config(), { timeoutMs: 5000 });
    expect((await tokens.get()).value).toBe('token-1');
    expect((await tokens.get(true)).value).toBe('token-2');
  });

  test('an endpoint refusal is an error naming the OAuth2 error, never the secret', async () => {
    const tokens = new ClientCredentialsTokens(config({ client_secret: 'wrong-secret' }), { timeoutMs: 5000 });
    const err = await tokens.get().then(
      () => null,
      (e: Error) => e,
    );
    expect(err?.message).toBe(
      `OAuth2 token endpoint ${endpoint.url} answered 401 ` +
        '(invalid_client: AADSTS7000215: Invalid client secret provided.)',
    );
    expect(err?.message).not.toContain('wrong-secret');
  });
});
