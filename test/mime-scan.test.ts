import { HeaderBlock } from '../src/message/header-block';
import { AttachmentScanner, type ScanFinding } from '../src/policy/mime-scan';

const BLOCKED = new Set(['exe', 'js', 'vbs']);

/** Feeds a message to the scanner the way FilterRun does: header block + blank line, then the body in small chunks. */
async function scan(
  message: string,
  chunkSize = 7,
  limits?: { maxDepth: number; maxParts: number },
): Promise<ScanFinding | undefined> {
  const raw = Buffer.from(message.replace(/\r?\n/g, '\r\n'), 'utf8');
  const end = raw.indexOf('\r\n\r\n');
  const header = HeaderBlock.parse(raw.subarray(0, end));
  const scanner = new AttachmentScanner(header, BLOCKED, limits);
  await scanner.write(Buffer.concat([header.toBuffer(), Buffer.from('\r\n')]));
  const body = raw.subarray(end + 4);
  for (let i = 0; i < body.length; i += chunkSize) await scanner.write(body.subarray(i, i + chunkSize));
  return scanner.end();
}

function multipart(boundary: string, parts: string[], type = 'multipart/mixed'): string {
  return [
    `Content-Type: ${type}; boundary="${boundary}"`,
    '',
    ...parts.flatMap((part) => [`--${boundary}`, part]),
    `--${boundary}--`,
    '',
  ].join('\n');
}

const text = 'Content-Type: text/plain\n\nhello';
const attachment = (headerLines: string) =>
  `${headerLines}\nContent-Transfer-Encoding: base64\n\nTVqQAAMAAAAEAAAA//8AALgAAAAAAAAAQAAAAAAAAAAA`;

describe('AttachmentScanner: blocked file names anywhere in the MIME tree', () => {
  test('a plain text message has nothing to find (and gets no MIME parsing)', async () => {
    expect(await scan('From: a@corp.example\nSubject: hi\n\nline one\nline two\n')).toBeUndefined();
  });

  test('an allowed attachment passes', async () => {
    expect(
      await scan(
        'From: a@corp.example\n' +
          multipart('b1', [text, attachment('Content-Type: application/pdf; name="report.pdf"')]),
      ),
    ).toBeUndefined();
  });

  test.each([
    [
      'Content-Disposition filename',
      'Content-Type: application/octet-stream\nContent-Disposition: attachment; filename="setup.exe"',
    ],
    ['Content-Type name', 'Content-Type: application/octet-stream; name="setup.EXE"'],
    [
      'name and filename disagree',
      'Content-Type: application/octet-stream; name="run.js"\nContent-Disposition: attachment; filename="notes.txt"',
    ],
    [
      'RFC 2231 continuation',
      'Content-Type: application/octet-stream\nContent-Disposition: attachment;\n' +
        ' filename*0*=utf-8\'\'%E2%82%AC%20rates;\n filename*1=".exe"',
    ],
    ['RFC 2231 percent-encoded dot', "Content-Type: application/octet-stream; name*=utf-8''evil%2Eexe"],
    [
      'RFC 2047 encoded name',
      'Content-Type: application/octet-stream\nContent-Disposition: attachment; filename="=?utf-8?B?ZXZpbC5leGU=?="',
    ],
    [
      'trailing dot',
      'Content-Type: application/octet-stream\nContent-Disposition: attachment; filename="invoice.pdf.exe."',
    ],
    ['inline disposition', 'Content-Type: application/octet-stream\nContent-Disposition: inline; filename="macro.vbs"'],
  ])('found through %s', async (_what, headerLines) => {
    expect(await scan(`From: a@corp.example\n${multipart('b1', [text, attachment(headerLines)])}`)).toEqual({
      kind: 'blocked',
      extension: expect.any(String),
    });
  });

  test('nested two levels deep: multipart inside multipart inside the message', async () => {
    const inner = multipart('b3', [text, attachment('Content-Type: application/octet-stream; name="payload.exe"')]);
    const middle = multipart('b2', [text, inner], 'multipart/alternative');
    expect(await scan(`From: a@corp.example\n${multipart('b1', [text, middle])}`)).toEqual({
      kind: 'blocked',
      extension: 'exe',
    });
  });

  test('inside an attached message/rfc822, whatever its disposition', async () => {
    const embedded =
      'From: x@elsewhere.example\nSubject: fwd\n' +
      multipart('e1', [text, attachment('Content-Type: application/javascript; name="a.js"')]);
    for (const disposition of ['inline', 'attachment', '']) {
      const dispositionLine = disposition ? `\nContent-Disposition: ${disposition}` : '';
      const part = `Content-Type: message/rfc822${dispositionLine}\n\n${embedded}`;
      expect(await scan(`From: a@corp.example\n${multipart('b1', [text, part])}`)).toEqual({
        kind: 'blocked',
        extension: 'js',
      });
    }
  });

  test('inside a base64-encoded message/rfc822 inside another message/rfc822', async () => {
    const deepest =
      'From: x@elsewhere.example\n' +
      multipart('e2', [text, attachment('Content-Type: application/octet-stream; name="deep.exe"')]);
    const level2 =
      'From: y@elsewhere.example\n' + multipart('e1', [text, `Content-Type: message/rfc822\n\n${deepest}`]);
    const encoded = Buffer.from(level2.replace(/\n/g, '\r\n')).toString('base64').replace(/.{76}/g, '$&\n');
    const part =
      'Content-Type: message/rfc822\nContent-Transfer-Encoding: base64\n' +
      `Content-Disposition: attachment; filename="fwd.eml"\n\n${encoded}`;
    expect(await scan(`From: a@corp.example\n${multipart('b1', [text, part])}`, 64)).toEqual({
      kind: 'blocked',
      extension: 'exe',
    });
  });

  test('a single-part message that is itself the attachment', async () => {
    expect(
      await scan(
        'From: a@corp.example\nContent-Type: application/octet-stream; name="tool.exe"\n' +
          'Content-Transfer-Encoding: base64\n\nTVqQ\n',
      ),
    ).toEqual({ kind: 'blocked', extension: 'exe' });
  });

  test.each([
    [
      'two Content-Types in one part',
      'From: a@corp.example\n' +
        multipart('b1', [text, 'Content-Type: text/plain\nContent-Type: application/octet-stream; name="x.exe"\n\nx']),
      /more than one Content-Type/,
    ],
    [
      'two Content-Types at the top',
      'From: a@corp.example\nContent-Type: text/plain\nContent-Type: multipart/mixed; boundary=x\n\n--x\n\nhi\n--x--\n',
      /more than one Content-Type/,
    ],
    [
      'a message/partial fragment',
      'From: a@corp.example\n' +
        multipart('b1', [text, 'Content-Type: message/partial; id="abc"; number=1; total=2\n\nFrom: x@y']),
      /message\/partial/,
    ],
  ])('what cannot be inspected is reported: %s', async (_what, message, why) => {
    expect(await scan(message)).toEqual({ kind: 'uninspectable', why: expect.stringMatching(why) });
  });

  test('nesting past the depth limit is reported', async () => {
    let message = `From: z@elsewhere.example\n${multipart('z', [text])}`;
    for (let i = 0; i < 4; i++)
      message =
        `From: y${i}@elsewhere.example\n` + multipart(`n${i}`, [text, `Content-Type: message/rfc822\n\n${message}`]);
    expect(await scan(message, 64, { maxDepth: 8, maxParts: 2000 })).toBeUndefined();
    expect(await scan(message, 64, { maxDepth: 2, maxParts: 2000 })).toEqual({
      kind: 'uninspectable',
      why: 'messages nested more than 2 deep',
    });
  });

  test('too many parts is reported', async () => {
    const message = `From: a@corp.example\n${multipart(
      'b1',
      Array.from({ length: 30 }, () => text),
    )}`;
    expect(await scan(message, 64, { maxDepth: 8, maxParts: 10 })).toEqual({
      kind: 'uninspectable',
      why: 'more than 10 MIME parts',
    });
  });

  test("an embedded message's headers survive every chunking (mailsplit loses lines split across writes)", async () => {
    const embedded =
      'From: x@elsewhere.example\nSubject: fwd\n' +
      multipart('e1', [text, attachment('Content-Type: application/octet-stream; name="a.exe"')]);
    const message = `From: a@corp.example\n${multipart('b1', [text, `Content-Type: message/rfc822\n\n${embedded}`])}`;
    for (let size = 1; size <= 80; size++)
      expect(await scan(message, size)).toEqual({ kind: 'blocked', extension: 'exe' });
  });

  test('a boundary split across chunks is still found, whatever the chunking', async () => {
    const message =
      'From: a@corp.example\n' +
      multipart('chunky-boundary', [text, attachment('Content-Type: application/octet-stream; name="x.exe"')]);
    for (const size of [1, 3, 5, 1024])
      expect(await scan(message, size)).toEqual({ kind: 'blocked', extension: 'exe' });
  });
});

describe('AttachmentScanner: uuencoded files in text parts are attachments', () => {
  const uu = (name: string, mode = '644') =>
    `Please find the invoice below.\n\nbegin ${mode} ${name}\nM35J0`.concat('\n`\nend\n');

  test.each([1, 7, 4096])('a plain single-part body, fed in chunks of %d bytes', async (chunkSize) => {
    expect(await scan(`From: a@corp.example\nSubject: invoice\n\n${uu('invoice.exe')}`, chunkSize)).toEqual({
      kind: 'blocked',
      extension: 'exe',
    });
  });

  test('begin-base64 (uuencode -m), mode 755, a name with spaces are found; an allowed name passes', async () => {
    expect(await scan(`From: a@corp.example\n\nbegin-base64 755 run me.js\nZm9v\n====\n`)).toEqual({
      kind: 'blocked',
      extension: 'js',
    });
    expect(await scan(`From: a@corp.example\n\n${uu('report.pdf')}`)).toBeUndefined();
  });

  test('a text part of a multipart, quoted-printable or base64 encoded, is read decoded', async () => {
    const qp = ['Content-Type: text/plain', 'Content-Transfer-Encoding: quoted-printable', '', 'hello=', '']
      .concat(['begin 644 tool=2Eexe', 'M=', ''])
      .join('\n');
    expect(await scan(`From: a@corp.example\n${multipart('b1', [qp])}`)).toEqual({ kind: 'blocked', extension: 'exe' });
    const encoded = Buffer.from(uu('macro.vbs')).toString('base64');
    const b64 = `Content-Type: text/plain\nContent-Transfer-Encoding: base64\n\n${encoded}`;
    expect(await scan(`From: a@corp.example\n${multipart('b1', [text, b64])}`)).toEqual({
      kind: 'blocked',
      extension: 'vbs',
    });
    expect(
      await scan(
        `From: a@corp.example\nContent-Transfer-Encoding: base64\n\n${Buffer.from(uu('x.exe')).toString('base64')}`,
      ),
    ).toEqual({ kind: 'blocked', extension: 'exe' });
  });

  test('inside an attached message', async () => {
    const part = `Content-Type: message/rfc822\n\nFrom: x@elsewhere.example\nSubject: fwd\n\n${uu('payload.js')}`;
    expect(await scan(`From: a@corp.example\n${multipart('b1', [text, part])}`)).toEqual({
      kind: 'blocked',
      extension: 'js',
    });
  });

  test('"begin" lines that are not uuencode, the header block and non-text parts are not files', async () => {
    expect(
      await scan('From: a@corp.example\n\nbegin here.exe\nbeginning 644 a.exe\n begin 644 a.exe\nbegin 999 a.exe\n'),
    ).toBeUndefined();
    const octet = 'Content-Type: application/octet-stream; name="data.bin"\n\nbegin 644 a.exe\n';
    expect(await scan(`From: a@corp.example\n${multipart('b1', [text, octet])}`)).toBeUndefined();
  });

  test('bounded and linear: past a 4 MiB line and 200,000 "begin" lines, the file after them is found', async () => {
    const long = `From: a@corp.example\n\n${'b'.repeat(4 * 1024 * 1024)}\n${uu('late.exe')}`;
    expect(await scan(long, 65_536)).toEqual({ kind: 'blocked', extension: 'exe' });
    const lines = `From: a@corp.example\n\n${'begin 644 fine.txt\n'.repeat(200_000)}${uu('late.exe')}`;
    expect(await scan(lines, 65_536)).toEqual({ kind: 'blocked', extension: 'exe' });
  });
});

describe('AttachmentScanner: what a mail app opens, the walk opens too', () => {
  const exe = attachment('Content-Type: application/octet-stream; name="invoice.exe"');
  const inner = `From: x@elsewhere.example\nSubject: fwd\n${multipart('in1', [text, exe])}`;
  const blockedExe = { kind: 'blocked', extension: 'exe' };
  const uu = 'Invoice below.\nbegin 644 invoice.exe\nM35J0\n`\nend\n';

  test.each(['message/rfc822', 'message/global'])('a message that is itself %s, plain or base64', async (type) => {
    for (const size of [1, 13, 4096]) {
      expect(await scan(`From: a@corp.example\nContent-Type: ${type}\n\n${inner}`, size)).toEqual(blockedExe);
    }
    const encoded = Buffer.from(inner.replace(/\n/g, '\r\n')).toString('base64').replace(/.{76}/g, '$&\n');
    const message = `From: a@corp.example\nContent-Type: ${type}\nContent-Transfer-Encoding: base64\n\n${encoded}`;
    expect(await scan(message, 64)).toEqual({ kind: 'blocked', extension: 'exe' });
  });

  test('message/rfc822 inside message/rfc822 as a whole, and past the depth limit', async () => {
    const rfc822 = 'Content-Type: message/rfc822\n\n';
    const twice = `From: a@corp.example\n${rfc822}From: b@x.example\n${rfc822}${inner}`;
    expect(await scan(twice, 64)).toEqual({ kind: 'blocked', extension: 'exe' });
    expect(await scan(twice, 64, { maxDepth: 1, maxParts: 2000 })).toEqual({
      kind: 'uninspectable',
      why: 'messages nested more than 1 deep',
    });
  });

  test('a multipart/digest part without Content-Type is an attached message (RFC 2046 5.1.5); typed: not', async () => {
    expect(await scan(`From: a@corp.example\n${multipart('d1', [`\n${inner}`], 'multipart/digest')}`)).toEqual({
      kind: 'blocked',
      extension: 'exe',
    });
    const typed = `Content-Type: text/plain\n\nbegin 644 notes.txt\n`;
    expect(await scan(`From: a@corp.example\n${multipart('d1', [typed], 'multipart/digest')}`)).toBeUndefined();
    // Outside a digest an untyped part is text/plain, read for uuencoded files.
    expect(await scan(`From: a@corp.example\n${multipart('m1', [`\n${uu}`])}`)).toEqual(blockedExe);
  });

  test.each([
    ['quoted-printable (legacy mailer)'],
    ['(by a legacy mailer) quoted-printable'],
    ['Quoted-Printable; x=y'],
    ['"quoted-printable"'],
    ['quoted-printable extra-words'],
  ])('Content-Transfer-Encoding: %s is decoded by its first token, at the top and in a part', async (encoding) => {
    const qp = 'Invoice below.\nbegin 644 invoice=2Eexe\nM35J0\n`\nend\n';
    const top = `From: a@corp.example\nContent-Type: text/plain\nContent-Transfer-Encoding: ${encoding}\n\n${qp}`;
    expect(await scan(top)).toEqual({ kind: 'blocked', extension: 'exe' });
    const part = `Content-Type: text/plain\nContent-Transfer-Encoding: ${encoding}\n\n${qp}`;
    expect(await scan(`From: a@corp.example\n${multipart('b1', [text, part])}`)).toEqual(blockedExe);
  });

  const twoEncodings = 'Content-Transfer-Encoding: 7bit\nContent-Transfer-Encoding: base64\n';
  test.each([
    [
      'a multipart without a boundary',
      'From: a@corp.example\nContent-Type: multipart/mixed\n\nhello\n',
      /without a boundary/,
    ],
    [
      'an empty boundary',
      'From: a@corp.example\nContent-Type: multipart/mixed; boundary=""\n\nhello\n',
      /without a boundary/,
    ],
    [
      'a part that is a multipart without a boundary',
      `From: a@corp.example\n${multipart('b1', [text, `Content-Type: multipart/mixed\n\n${uu}`])}`,
      /without a boundary/,
    ],
    [
      'two Content-Transfer-Encodings at the top',
      `From: a@corp.example\n${twoEncodings}\n${Buffer.from(uu).toString('base64')}`,
      /more than one Content-Transfer-Encoding/,
    ],
    [
      'two Content-Transfer-Encodings in a part',
      `From: a@corp.example\n${multipart('b1', [text, `Content-Type: text/plain\n${twoEncodings}\nx`])}`,
      /more than one Content-Transfer-Encoding/,
    ],
    [
      'a message/partial message',
      'From: a@corp.example\nContent-Type: message/partial; id="a"; number=1; total=2\n\nFrom: x@y\n',
      /message\/partial/,
    ],
  ])('what cannot be inspected is reported: %s', async (_what, message, why) => {
    expect(await scan(message)).toEqual({ kind: 'uninspectable', why: expect.stringMatching(why) });
  });
});

describe('AttachmentScanner: mailsplit never gets input its header parser is quadratic in', () => {
  // Without the checks, each of these held the event loop for minutes (mailsplit 5.4.6: /\(.*\)/g on a
  // Content-Transfer-Encoding value, /[\r\n]+$/ on a header block, and its folding of a large block).
  test('a part\'s Content-Transfer-Encoding of 1 MiB of "("', async () => {
    const part = `Content-Type: text/plain\nContent-Transfer-Encoding: base64 ${'('.repeat(1 << 20)}\n\nx`;
    expect(await scan(`From: a@corp.example\n${multipart('b1', [text, part])}`, 65_536)).toEqual({
      kind: 'uninspectable',
      why: 'a Content-Transfer-Encoding field longer than 256 bytes',
    });
  });

  test('the same folded over many lines, and at the top of the message', async () => {
    const folded = `Content-Transfer-Encoding: base64\n${' ((((((((((((((((((((\n'.repeat(20)}`;
    const part = `Content-Type: text/plain\n${folded}\nx`;
    expect(await scan(`From: a@corp.example\n${multipart('b1', [text, part])}`, 64)).toEqual({
      kind: 'uninspectable',
      why: 'a Content-Transfer-Encoding field longer than 256 bytes',
    });
    const top = `From: a@corp.example\nContent-Type: multipart/mixed; boundary=b\n${folded}\n--b\n\nhi\n--b--\n`;
    expect(await scan(top)).toEqual({
      kind: 'uninspectable',
      why: 'a Content-Transfer-Encoding field longer than 256 bytes',
    });
  });

  test('an attached message (base64) whose header holds 1 MiB of bare CRs', async () => {
    const crs = Buffer.alloc(1 << 20, 0x0d);
    const embedded = Buffer.concat([
      Buffer.from('From: x@y.example\r\nSubject: a'),
      crs,
      Buffer.from('b\r\n\r\nhi\r\n'),
    ]);
    const encoded = embedded.toString('base64').replace(/.{76}/g, '$&\n');
    const part = `Content-Type: message/rfc822\nContent-Transfer-Encoding: base64\n\n${encoded}`;
    expect(await scan(`From: a@corp.example\n${multipart('b1', [text, part])}`, 65_536)).toEqual({
      kind: 'uninspectable',
      why: 'a run of more than 64 line-break bytes with a bare CR',
    });
  });

  test('a part header of 1 MiB of folded fields', async () => {
    const part = `Content-Type: text/plain\n${'X-A: a\n b\n'.repeat(100_000)}\nx`;
    expect(await scan(`From: a@corp.example\n${multipart('b1', [text, part])}`, 65_536)).toEqual({
      kind: 'uninspectable',
      why: 'Max header size for a MIME node exceeded',
    });
  });

  test('real mail passes: CR-only lines, blank lines, a commented encoding, many folded top-level fields', async () => {
    const crOnly = Buffer.from('From: x@y.example\rSubject: old mac\r\rbegin 644 notes.txt\r').toString('base64');
    const part = `Content-Type: message/rfc822\nContent-Transfer-Encoding: base64\n\n${crOnly}`;
    const blankLines = `${text}${'\n'.repeat(500)}`;
    expect(await scan(`From: a@corp.example\n${multipart('b1', [blankLines, part])}`)).toBeUndefined();
    const fields = Array.from({ length: 900 }, (_, i) => `X-F${i}: a\n${' b\n'.repeat(60).slice(0, -1)}`).join('\n');
    const commented = 'Content-Transfer-Encoding: 7bit (plain ascii)';
    const top = `From: a@corp.example\n${fields}\n${commented}\n${multipart('b1', [text])}`;
    expect(await scan(top, 65_536)).toBeUndefined();
  });
});
