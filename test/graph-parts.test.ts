import { Readable } from 'node:stream';
import { scanParts, streamParts, withoutParts } from '../src/forward/graph/parts';
import { buildMime, fakePdf } from './helpers/mime-build';

/** The message in pieces of `size` bytes, as a file is read: part boundaries fall anywhere in a chunk. */
function pieces(message: Buffer, size: number): () => Readable {
  return () =>
    Readable.from(
      (function* () {
        for (let i = 0; i < message.length; i += size) yield message.subarray(i, i + size);
      })(),
    );
}

describe('MIME parts of a large message: one parse, then byte ranges', () => {
  const pdf = fakePdf(50_000);
  const qp = Buffer.from('a text file with = signs and ü\r\n');
  const message = buildMime({
    headers: ['From: scanner@corp.example', 'To: ann@example.com', 'Subject: scan'],
    text: 'Body text.',
    html: '<p>Body <img src="cid:img@x"></p>',
    attachments: [
      { name: 'scan.pdf', contentType: 'application/pdf', bytes: pdf },
      { name: 'logo.gif', contentType: 'image/gif', bytes: Buffer.from('GIF89a-not-really'), contentId: 'img@x' },
      { name: 'notes.txt', contentType: 'text/plain', bytes: qp },
    ],
  });

  test.each([7, 4096, 1 << 20])(
    'read in %i-byte chunks: parts found with their places and decoded sizes',
    async (size) => {
      const parts = await scanParts(pieces(message, size)());
      const attachments = parts.filter((part) => part.attachment);
      expect(
        attachments.map((part) => [
          part.name,
          part.contentType,
          part.inline,
          part.contentId ?? null,
          part.decodedBytes,
        ]),
      ).toEqual([
        ['logo.gif', 'image/gif', true, 'img@x', 17],
        ['scan.pdf', 'application/pdf', false, null, pdf.length],
        ['notes.txt', 'text/plain', false, null, qp.length],
      ]);
      // Each part's bytes start with its delimiter line and end where the next delimiter's CRLF begins.
      for (const part of attachments) {
        expect(message.subarray(part.start, part.headerStart).toString('latin1')).toMatch(/^(\r\n)?--(mixed|rel)\r\n$/);
        expect(message.subarray(part.headerStart, part.bodyStart).toString('latin1')).toMatch(
          new RegExp(`filename="${part.name.replace('.', '\\.')}"[^]*\r\n\r\n$`),
        );
        expect(message.subarray(part.end, part.end + 4).toString('latin1')).toBe('\r\n--');
      }
      expect(parts.filter((part) => !part.attachment).map((part) => part.contentType)).toEqual([
        'multipart/mixed',
        'multipart/alternative',
        'text/plain',
        'multipart/related',
        'text/html',
      ]);
    },
  );

  test.each([7, 4096])('without the lifted parts: every other byte as it was (%i-byte chunks)', async (size) => {
    const parts = await scanParts(pieces(message, size)());
    expect(await withoutParts(pieces(message, size)(), parts, new Set())).toEqual(message);
    const pdfPart = parts.find((part) => part.name === 'scan.pdf');
    const textPart = parts.find((part) => part.name === 'notes.txt');
    if (!pdfPart || !textPart) throw new Error('parts not found');
    const expected = Buffer.concat([
      message.subarray(0, pdfPart.start),
      message.subarray(pdfPart.end, textPart.start),
      message.subarray(textPart.end),
    ]);
    expect(await withoutParts(pieces(message, size)(), parts, new Set([pdfPart.index, textPart.index]))).toEqual(
      expected,
    );
  });

  test('a multipart left with no part gets an empty text part in place of its first', async () => {
    const related = buildMime({
      headers: ['To: a@x'],
      text: 't',
      html: '<img src="cid:a@x">',
      attachments: [{ name: 'a.png', contentType: 'image/png', bytes: Buffer.from('png'), contentId: 'a@x' }],
    });
    const only = Buffer.from(
      [
        'To: a@x',
        'Content-Type: multipart/mixed; boundary="b"',
        '',
        '--b',
        'Content-Type: application/pdf',
        'Content-Disposition: attachment; filename="x.pdf"',
        '',
        'JVBERi0=',
        '--b--',
        '',
      ].join('\r\n'),
      'latin1',
    );
    const parts = await scanParts(pieces(only, 10)());
    const lifted = new Set(parts.filter((part) => part.attachment).map((part) => part.index));
    expect((await withoutParts(pieces(only, 10)(), parts, lifted)).toString('latin1')).toBe(
      [
        'To: a@x',
        'Content-Type: multipart/mixed; boundary="b"',
        '',
        '--b',
        'Content-Type: text/plain; charset=us-ascii',
        '',
        '',
        '--b--',
        '',
      ].join('\r\n'),
    );
    expect((await scanParts(pieces(related, 10)())).some((part) => part.attachment)).toBe(true);
  });

  test('the lifted parts decoded, in order, each to its sink', async () => {
    const parts = await scanParts(pieces(message, 999)());
    const lifted = new Set(parts.filter((part) => part.attachment).map((part) => part.index));
    const received: [string, Buffer][] = [];
    await streamParts(pieces(message, 999)(), parts, lifted, async (part, content) => {
      const bytes: Buffer[] = [];
      for await (const piece of content) bytes.push(piece);
      received.push([part.name, Buffer.concat(bytes)]);
    });
    expect(received).toEqual([
      ['logo.gif', Buffer.from('GIF89a-not-really')],
      ['scan.pdf', pdf],
      ['notes.txt', qp],
    ]);
  });

  test('a sink that fails ends the pass with its error', async () => {
    const parts = await scanParts(pieces(message, 999)());
    const lifted = new Set(parts.filter((part) => part.name === 'scan.pdf').map((part) => part.index));
    await expect(
      streamParts(pieces(message, 999)(), parts, lifted, async (_part, content) => {
        for await (const piece of content) if (piece.length > 0) throw new Error('upload refused');
      }),
    ).rejects.toThrow('upload refused');
  });
});
