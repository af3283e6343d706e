import { PassThrough } from 'node:stream';
import { HeaderBlock } from '../src/message/header-block';
import { aadstsAdvice, aadstsCode } from '../src/forward/graph/advice';
import { partsToLift, REQUEST_LIMIT } from '../src/forward/graph/draft';
import type { HttpAnswer } from '../src/forward/graph/http';
import type { MimePart } from '../src/forward/graph/parts';
import { recipientKey, sendOnlyToEnvelope } from '../src/forward/graph/recipients';
import { acceptedOutcome, DEFAULT_THROTTLE_MS, failedAnswerOutcome, retryAfterMs } from '../src/forward/graph/replies';
import { classify, CLOSED, record } from '../src/forward/breaker';
import type { Outcome } from '../src/forward/outcome';

function edit(header: string, recipients: string[]): { header: string; rewritten: string[]; bcc: string[] } {
  const block = HeaderBlock.parse(Buffer.from(header.replace(/\n/g, '\r\n'), 'utf8'));
  const result = sendOnlyToEnvelope(block, recipients);
  return { header: block.toBuffer().toString('utf8').replace(/\r\n/g, '\n').trimEnd(), ...result };
}

describe('Graph copy: the header names exactly the envelope recipients', () => {
  test.each<[string, string, string[], string, string[]]>([
    [
      'header and envelope agree: every byte stays',
      'From: app@corp.example\nTo: "Ann" <ann@example.com>, bob@example.com\nCc: carol@example.com\nSubject: x',
      ['ann@example.com', 'bob@example.com', 'carol@example.com'],
      'From: app@corp.example\nTo: "Ann" <ann@example.com>, bob@example.com\nCc: carol@example.com\nSubject: x',
      [],
    ],
    [
      'an envelope recipient the header does not name goes in a new Bcc',
      'To: ann@example.com\nSubject: x',
      ['ann@example.com', 'hidden@example.com', 'second@example.com'],
      'To: ann@example.com\nSubject: x\nBcc: <hidden@example.com>,\n <second@example.com>',
      [],
    ],
    [
      'a header recipient not in the envelope is dropped, the rest of its field kept with names',
      'To: "All Staff" <staff@corp.example>, "Ann" <ann@example.com>\nSubject: x',
      ['ann@example.com'],
      'To: Ann <ann@example.com>\nSubject: x',
      ['To'],
    ],
    [
      'a To left empty gives way to undisclosed-recipients, and the recipient travels as Bcc',
      'From: app@corp.example\nTo: list@corp.example\nSubject: x',
      ['real@example.com'],
      'From: app@corp.example\nTo: undisclosed-recipients:;\nSubject: x\nBcc: <real@example.com>',
      ['To'],
    ],
    [
      "the client's own Bcc goes (its addresses in the envelope come back in ours; the others are never mailed)",
      'To: ann@example.com\nBcc: boss@example.com, spy@evil.example\nSubject: x',
      ['ann@example.com', 'boss@example.com'],
      'To: ann@example.com\nSubject: x\nBcc: <boss@example.com>',
      ['Bcc'],
    ],
    [
      'a recipient named twice is named once (To wins over Cc)',
      'To: ann@example.com\nCc: Ann@Example.COM, bob@example.com',
      ['ann@example.com', 'bob@example.com'],
      'To: ann@example.com\nCc: <bob@example.com>',
      ['Cc'],
    ],
    [
      'case and IDN forms of one address are one recipient',
      'To: Ann@EXAMPLE.com, user@xn--bcher-kva.example',
      ['ann@example.com', 'user@bücher.example'],
      'To: Ann@EXAMPLE.com, user@xn--bcher-kva.example',
      [],
    ],
    [
      'a display name that reads as another address is dropped with the stranger',
      'To: "boss@evil.example" <ann@example.com>',
      ['ann@example.com'],
      'To: <ann@example.com>',
      ['To'],
    ],
    [
      'an address hidden in a comment (read by lenient parsers) makes the field rewritten',
      'To: ann@example.com (cc: spy@evil.example)',
      ['ann@example.com'],
      'To: <ann@example.com>',
      ['To'],
    ],
    [
      'a name without an address (Exchange may look it up) goes',
      'To: Accounts Team, ann@example.com',
      ['ann@example.com'],
      'To: <ann@example.com>',
      ['To'],
    ],
    [
      'a group keeps its members that are recipients, flattened',
      'To: Team: ann@example.com, gone@example.com;',
      ['ann@example.com'],
      'To: <ann@example.com>',
      ['To'],
    ],
    [
      'no To or Cc at all: the recipients go as Bcc, no To is invented',
      'From: app@corp.example\nSubject: x',
      ['ann@example.com'],
      'From: app@corp.example\nSubject: x\nBcc: <ann@example.com>',
      [],
    ],
    [
      'UTF-8 display names survive a rewrite',
      'To: "Jürgen Groß" <j@example.de>, other@example.com',
      ['j@example.de'],
      'To: "Jürgen Groß" <j@example.de>',
      ['To'],
    ],
  ])('%s', (_case, header, recipients, expected, rewritten) => {
    const result = edit(header, recipients);
    expect(result.header).toBe(expected);
    expect(result.rewritten).toEqual(rewritten);
  });

  test('a long envelope makes a folded Bcc: no line over 998 bytes', () => {
    const recipients = Array.from({ length: 500 }, (_, i) => `recipient-${i}@example.com`);
    const result = edit('Subject: x', recipients);
    expect(result.bcc).toEqual(recipients);
    expect(Math.max(...result.header.split('\n').map((line) => line.length))).toBeLessThan(100);
  });

  test('recipient keys: case-insensitive, IDN in ASCII', () => {
    expect(recipientKey('Ann@Example.COM')).toBe('ann@example.com');
    expect(recipientKey('user@Bücher.example')).toBe('user@xn--bcher-kva.example');
  });
});

/** What every answer below ends with: Graph's request id. */
const ID = ' (request-id req-1)';

function answer(status: number, body: unknown = undefined, headers: Record<string, string> = {}): HttpAnswer {
  return {
    status,
    headers: { 'request-id': 'req-1', ...headers },
    body: Buffer.from(body === undefined ? '' : JSON.stringify(body)),
  };
}

describe('Graph answers as outcomes', () => {
  const now = Date.parse('2026-11-23T10:00:00Z');
  const error = (code: string, message: string) => ({ error: { code, message, innerError: { 'request-id': 'x' } } });

  test.each<[string, HttpAnswer, Outcome]>([
    [
      "400 invalid recipients: permanent 5.1.3 with Graph's code and message",
      answer(400, error('ErrorInvalidRecipients', 'At least one recipient is not valid.')),
      {
        kind: 'permanent',
        reply: {
          code: 550,
          text: '550 5.1.3 Microsoft Graph 400 ErrorInvalidRecipients: At least one recipient is not valid.' + ID,
        },
      },
    ],
    [
      '400 bad MIME: permanent 5.6.0',
      answer(400, error('ErrorMimeContentInvalidBase64String', 'Invalid base64 string for MIME content.')),
      {
        kind: 'permanent',
        reply: {
          code: 554,
          text:
            '554 5.6.0 Microsoft Graph 400 ErrorMimeContentInvalidBase64String: ' +
            'Invalid base64 string for MIME content.' +
            ID,
        },
      },
    ],
    [
      '403 no permission: permanent 5.7.1',
      answer(403, error('ErrorAccessDenied', 'Access is denied. Check credentials and try again.')),
      {
        kind: 'permanent',
        reply: {
          code: 550,
          text:
            '550 5.7.1 Microsoft Graph 403 ErrorAccessDenied: Access is denied. Check credentials and try again.' + ID,
        },
      },
    ],
    [
      '404 unknown mailbox: permanent',
      answer(404, error('ErrorInvalidUser', "The requested user 'x@corp.example' is invalid.")),
      {
        kind: 'permanent',
        reply: {
          code: 550,
          text: "550 5.1.0 Microsoft Graph 404 ErrorInvalidUser: The requested user 'x@corp.example' is invalid." + ID,
        },
      },
    ],
    [
      '413: permanent 5.3.4 (the next host may take it)',
      answer(413),
      { kind: 'permanent', reply: { code: 552, text: '552 5.3.4 Microsoft Graph 413' + ID } },
    ],
    [
      '429 with Retry-After: transient, the wait carried',
      answer(429, error('ApplicationThrottled', 'Too many requests.'), { 'retry-after': '7' }),
      {
        kind: 'transient',
        cause: 'reply',
        reply: {
          code: 451,
          text: '451 4.4.5 Microsoft Graph 429 ApplicationThrottled: Too many requests.' + ID,
        },
        detail: '451 4.4.5 Microsoft Graph 429 ApplicationThrottled: Too many requests.' + ID,
        retryAfterMs: 7000,
      },
    ],
    [
      '429 without Retry-After: the default wait',
      answer(429),
      {
        kind: 'transient',
        cause: 'reply',
        reply: { code: 451, text: '451 4.4.5 Microsoft Graph 429' + ID },
        detail: '451 4.4.5 Microsoft Graph 429' + ID,
        retryAfterMs: DEFAULT_THROTTLE_MS,
      },
    ],
    [
      '503 with an HTTP-date Retry-After: Graph is not there (the breaker counts it)',
      answer(503, undefined, { 'retry-after': 'Mon, 23 Nov 2026 10:01:00 GMT' }),
      {
        kind: 'transient',
        cause: 'connect',
        reply: { code: 451, text: '451 4.3.2 Microsoft Graph 503' + ID },
        detail: '451 4.3.2 Microsoft Graph 503' + ID,
        retryAfterMs: 60_000,
      },
    ],
    [
      '504 without Retry-After',
      answer(504),
      {
        kind: 'transient',
        cause: 'connect',
        reply: { code: 451, text: '451 4.3.2 Microsoft Graph 504' + ID },
        detail: '451 4.3.2 Microsoft Graph 504' + ID,
      },
    ],
    [
      '401 after a renewed token: transient, as a refused SMTP AUTH',
      answer(401, error('InvalidAuthenticationToken', 'Access token has expired or is not yet valid.')),
      {
        kind: 'transient',
        cause: 'connect',
        reply: {
          code: 451,
          text:
            '451 4.7.0 Microsoft Graph 401 InvalidAuthenticationToken: Access token has expired or is not yet valid.' +
            ID,
        },
        detail:
          '451 4.7.0 Microsoft Graph 401 InvalidAuthenticationToken: Access token has expired or is not yet valid.' +
          ID,
      },
    ],
    [
      '500: an unknown error is a temporary one',
      answer(500, 'oops'),
      {
        kind: 'transient',
        cause: 'reply',
        reply: { code: 451, text: '451 4.3.0 Microsoft Graph 500' + ID },
        detail: '451 4.3.0 Microsoft Graph 500' + ID,
      },
    ],
  ])('%s', (_case, given, expected) => {
    expect(failedAnswerOutcome(given, now)).toEqual(expected);
  });

  test('202: delivered, the request id in the reply', () => {
    expect(acceptedOutcome(answer(202))).toEqual({
      kind: 'delivered',
      reply: { code: 250, text: '250 2.0.0 Microsoft Graph 202 Accepted' + ID },
    });
  });

  test("Graph's message is one bounded printable line in the DSN", () => {
    const outcome = failedAnswerOutcome(answer(400, error('ErrorX', `line one\r\nline two ${'é'.repeat(500)}`)), now);
    expect(outcome.kind === 'permanent' && outcome.reply.text).toMatch(
      /^554 5\.6\.0 Microsoft Graph 400 ErrorX: line one line two \?+\.\.\. \(request-id req-1\)$/,
    );
  });

  test.each<[string | undefined, number | undefined]>([
    ['30', 30_000],
    ['0', 0],
    [' 5 ', 5000],
    ['Mon, 23 Nov 2026 10:00:10 GMT', 10_000],
    ['Mon, 23 Nov 2026 09:00:00 GMT', 0],
    ['999999999', 24 * 3_600_000],
    ['soon', undefined],
    [undefined, undefined],
  ])('Retry-After %j waits %j ms', (value, expected) => {
    expect(retryAfterMs(value, now)).toBe(expected);
  });
});

describe('a refused credential marks the host down at once', () => {
  const refused: Outcome = {
    kind: 'transient',
    cause: 'credentials',
    detail: 'the token endpoint refused the credentials',
  };
  const breaker = { failures: 3, cooldown: 30_000 };

  test('credentials refused for every recipient: open now, not after three failures', () => {
    expect(
      classify(
        new Map([
          ['a@x', refused],
          ['b@x', refused],
        ]),
      ),
    ).toBe('credentials_refused');
    expect(record(CLOSED, 'credentials_refused', 1000, breaker)).toEqual({ kind: 'open', until: 31_000, failures: 1 });
  });

  test('mixed with a connection failure it is a connection failure; with a reply the host is up', () => {
    expect(
      classify(
        new Map<string, Outcome>([
          ['a@x', refused],
          ['b@x', { kind: 'transient', cause: 'timeout', detail: 't' }],
        ]),
      ),
    ).toBe('connection_failure');
    expect(
      classify(
        new Map<string, Outcome>([
          ['a@x', refused],
          ['b@x', { kind: 'permanent', reply: { code: 550, text: '550' } }],
        ]),
      ),
    ).toBe('ok');
  });
});

describe('AADSTS codes', () => {
  test('read from error_codes, else from the description; each known one says what to fix', () => {
    expect(aadstsCode({ error_codes: [7000215] })).toBe('7000215');
    expect(aadstsCode({ error_description: 'AADSTS700016: Application with identifier' })).toBe('700016');
    expect(aadstsAdvice('7000215')).toMatch(/Value \(not its Secret ID\)/);
    expect(aadstsAdvice('90002')).toMatch(/tenant/);
    expect(aadstsAdvice('1')).toBeUndefined();
  });
});

describe('which attachments a large message sends on their own', () => {
  const part = (index: number, encodedBytes: number, attachment = true): MimePart => ({
    index,
    parent: 0,
    contentType: 'application/pdf',
    name: `p${index}.pdf`,
    contentId: undefined,
    inline: false,
    start: 0,
    headerStart: 100,
    bodyStart: 200,
    end: encodedBytes,
    decodedBytes: Math.floor(encodedBytes * 0.74),
    attachment,
    decoder: () => new PassThrough(),
  });

  test('the largest first, until the rest fits one request', () => {
    const parts = [part(1, 1000, false), part(2, 2_000_000), part(3, 20_000_000), part(4, 1_500_000)];
    expect(partsToLift(parts, 24_600_000)).toEqual(new Set([3, 2]));
  });

  test('nothing when it fits already; null when a body text alone is too large', () => {
    expect(partsToLift([part(1, 1000)], 2_000_000)).toEqual(new Set());
    expect(partsToLift([part(1, REQUEST_LIMIT, false), part(2, 5_000_000)], REQUEST_LIMIT + 5_000_000)).toBeNull();
  });
});
