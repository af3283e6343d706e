import { relayPerDescribe } from './helpers/harness';
import { openSession } from './helpers/smtp-client';

/**
 * Attack: messages whose blocked attachment (a MIME part named invoice.exe, or a uuencoded
 * invoice.exe) the MIME walk never looks at, so `blocked_attachments: [exe]` lets them through.
 * Sent from 127.0.0.1 (a network client) and 127.0.0.2 (somebody else on the LAN with a policy of its
 * own), as the other policy tests do. Each case is refused by today's scanner when the same file sits
 * in an ordinary multipart/mixed part (the control cases below).
 *
 * - The message itself is message/rfc822 (or message/global): a forwarded message as the whole body.
 *   Mail apps show it with its attachments; the walk treats the root node as text and never opens it
 *   (src/policy/mime-scan.ts, Walk.onNode: the `node.root` branch returns before the embedded-message
 *   branch).
 * - multipart/digest: a part without Content-Type is message/rfc822 there (RFC 2046 5.1.5); the walk
 *   takes every untyped part for text/plain (mime-scan.ts, `node.contentType || 'text/plain'`).
 * - multipart/mixed without a boundary parameter: no part can be found, mail apps show the body as
 *   text, and the walk neither reads it for uuencoded files nor calls it uninspectable.
 * - Two Content-Transfer-Encoding fields (7bit, then base64): the walk decodes by the first, a mail
 *   app that takes the last sees the uuencoded file (the scanner already refuses two Content-Types for
 *   this very reason).
 * - `Content-Transfer-Encoding: quoted-printable (comment)`: a structured field may carry a comment
 *   (RFC 2045 / RFC 822); mail apps decode by the first token, the scanner compares the whole value
 *   and reads the body undecoded, where `invoice=2Eexe` is no .exe.
 */

const uu = 'begin 644 invoice.exe\r\nM35J0\r\n`\r\nend\r\n';
const innerWithExe = [
  'From: someone@example.net',
  'Subject: the invoice',
  'MIME-Version: 1.0',
  'Content-Type: multipart/mixed; boundary="in1"',
  '',
  '--in1',
  'Content-Type: text/plain',
  '',
  'see attached',
  '--in1',
  'Content-Type: application/octet-stream; name="invoice.exe"',
  'Content-Disposition: attachment; filename="invoice.exe"',
  'Content-Transfer-Encoding: base64',
  '',
  'TVqQAAMAAAAEAAAA',
  '--in1--',
  '',
].join('\r\n');

function withHeaders(extra: string[], body: string): string {
  const head = [
    'From: app@corp.example',
    'To: user@example.com',
    'Subject: your invoice',
    `Message-ID: <${Math.random().toString(36).slice(2)}@corp.example>`,
    'Date: Mon, 23 Nov 2026 10:00:00 +0000',
    'MIME-Version: 1.0',
    ...extra,
  ];
  return `${head.join('\r\n')}\r\n\r\n${body}`;
}

const evasions: Record<string, string> = {
  'the whole message is message/rfc822 with invoice.exe inside': withHeaders(
    ['Content-Type: message/rfc822'],
    innerWithExe,
  ),
  'the whole message is message/global with invoice.exe inside': withHeaders(
    ['Content-Type: message/global'],
    innerWithExe,
  ),
  'multipart/digest part without Content-Type (message/rfc822 by default) holding invoice.exe': withHeaders(
    ['Content-Type: multipart/digest; boundary="d1"'],
    `--d1\r\n\r\n${innerWithExe}--d1--\r\n`,
  ),
  'multipart/mixed without a boundary, uuencoded invoice.exe in its text': withHeaders(
    ['Content-Type: multipart/mixed'],
    `Please find the invoice below.\r\n${uu}`,
  ),
  'two Content-Transfer-Encodings (7bit, base64), uuencoded invoice.exe in the base64': withHeaders(
    ['Content-Type: text/plain', 'Content-Transfer-Encoding: 7bit', 'Content-Transfer-Encoding: base64'],
    `${Buffer.from(`Please find the invoice below.\r\n${uu}`).toString('base64')}\r\n`,
  ),
  'quoted-printable with a comment in Content-Transfer-Encoding, begin 644 invoice=2Eexe': withHeaders(
    ['Content-Type: text/plain', 'Content-Transfer-Encoding: quoted-printable (legacy mailer)'],
    'Please find the invoice below.\r\nbegin 644 invoice=2Eexe\r\nM35J0\r\n`\r\nend\r\n',
  ),
};

const controls: Record<string, string> = {
  'multipart/mixed with a message/rfc822 part holding invoice.exe': withHeaders(
    ['Content-Type: multipart/mixed; boundary="b1"'],
    `--b1\r\nContent-Type: message/rfc822\r\n\r\n${innerWithExe}--b1--\r\n`,
  ),
  'text/plain with a uuencoded invoice.exe': withHeaders(['Content-Type: text/plain'], `Invoice below.\r\n${uu}`),
};

describe('attack: blocked attachments the MIME walk never sees', () => {
  const t = relayPerDescribe(() => ({
    clients: [
      { name: 'lan', networks: ['127.0.0.1/32'], policy: 'no_programs' },
      { name: 'far', networks: ['127.0.0.2/32'], policy: 'no_programs' },
    ],
    policies: { no_programs: { blocked_attachments: ['exe'] } },
  }));

  async function send(localAddress: string, body: string): Promise<string | null> {
    const { client } = await openSession(t.running.smtpPort, { localAddress });
    try {
      return await client.sendMessage('app@corp.example', ['user@example.com'], body);
    } finally {
      await client.quit();
    }
  }

  describe.each(['127.0.0.1', '127.0.0.2'])('from %s', (localAddress) => {
    test.each(Object.keys(controls))('control, refused today: %s', async (name) => {
      expect(await send(localAddress, controls[name])).toMatch(
        /^550 5\.7\.1 Attachment type \.exe not allowed for client (lan|far)$/,
      );
    });

    test.each(Object.keys(evasions))('refused (or uninspectable): %s', async (name) => {
      expect(await send(localAddress, evasions[name])).toMatch(
        /^550 5\.7\.1 (Attachment type \.exe not allowed|Message cannot be checked)/,
      );
    });
  });
});
