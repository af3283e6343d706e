import { HeaderBlock } from '../src/message/header-block';
import {
  fieldsToSign,
  relaxedField,
  signedField,
  signedFields,
  unsignedSignature,
  type SignatureTags,
} from '../src/forward/reenvelope/dkim-header';

/** Header text as the relay holds it: one latin1 char per byte, so UTF-8 arrives as its bytes. */
const bytes = (text: string) => Buffer.from(text, 'utf8').toString('latin1');
const block = (lines: string[]) => HeaderBlock.parse(Buffer.from(lines.join('\r\n'), 'latin1'));

describe('relaxed header canonicalisation (RFC 6376 §3.4.2)', () => {
  test("the RFC's example (§3.4.5): names lower-cased, WSP at the colon gone, unfolded, WSP runs one space", () => {
    expect(relaxedField('A: X')).toBe('a:X\r\n');
    expect(relaxedField('B : Y\t\r\n\tZ  ')).toBe('b:Y Z\r\n');
  });

  test('only space and tab are WSP: 0xA0 (in UTF-8 "à" and "Р"), vertical tab and form feed are kept', () => {
    const raw = bytes('Subject:  voilà\t Рим \u00a0x') + '\x0b\x0cend ';
    expect(relaxedField(raw)).toBe(`subject:${bytes('voilà Рим \u00a0x')}\x0b\x0cend\r\n`);
  });

  test('an empty or all-WSP value canonicalises to nothing after the colon', () => {
    expect(relaxedField('X-Empty:')).toBe('x-empty:\r\n');
    expect(relaxedField('X-Blank: \t \r\n  ')).toBe('x-blank:\r\n');
  });
});

describe('which fields are signed', () => {
  test('every instance of the recommended fields, bottom-up; trace and X- fields are not', () => {
    const headers = block([
      'Received: from a by b',
      'From: a@corp.example',
      'To: b@example.com',
      'X-Mailer: app',
      'To: c@example.com',
      'subject: hi',
      'Return-Path: <x@y>',
    ]);
    expect(fieldsToSign(headers.fields).map((field) => field.raw)).toEqual([
      'subject: hi',
      'To: c@example.com',
      'To: b@example.com',
      'From: a@corp.example',
    ]);
  });
});

describe('the DKIM-Signature field', () => {
  const every = [
    'From',
    'Sender',
    'Reply-To',
    'Subject',
    'Date',
    'Message-ID',
    'To',
    'Cc',
    'MIME-Version',
    'Content-Type',
    'Content-Transfer-Encoding',
    'Content-ID',
    'Content-Description',
    'Resent-Date',
    'Resent-From',
    'Resent-Sender',
    'Resent-To',
    'Resent-Cc',
    'Resent-Message-ID',
    'In-Reply-To',
    'References',
    'List-Id',
    'List-Help',
    'List-Unsubscribe',
    'List-Subscribe',
    'List-Post',
    'List-Owner',
    'List-Archive',
    'BIMI-Selector',
  ];
  const headers = block(every.map((name) => `${name}: value of ${name}`));
  const tags = (signed = signedFields(headers.fields)): SignatureTags => ({
    algorithm: 'rsa-sha256',
    domain: 'corp.example',
    selector: 's1',
    signTime: new Date(Date.UTC(2026, 10, 30, 12, 0, 0)),
    bodyHash: 'x'.repeat(44),
    signed,
  });

  test('every tag, h= naming the signed fields as spelled, lines within 78 characters, folded after b=', () => {
    const unsigned = unsignedSignature(tags());
    const field = signedField(unsigned, Buffer.alloc(256, 7));
    expect(field.endsWith('\r\n')).toBe(true);
    const lines = field.slice(0, -2).split('\r\n');
    for (const line of lines) expect(line.length).toBeLessThanOrEqual(78);
    for (const line of lines.slice(1)) expect(line).toMatch(/^ \S/);
    const value = field.slice('DKIM-Signature:'.length).replace(/\r\n/g, '');
    const parsed = Object.fromEntries(
      value.split(';').map((tag) => tag.trim().split(/=(.*)/s).slice(0, 2) as [string, string]),
    );
    expect(parsed).toMatchObject({
      v: '1',
      a: 'rsa-sha256',
      c: 'relaxed/relaxed',
      d: 'corp.example',
      s: 's1',
      t: '1796040000',
      bh: 'x'.repeat(44),
    });
    // Every field present, bottom-up, then From once more (over-signed).
    expect(parsed.h.split(':').map((name) => name.trim())).toEqual([...[...every].reverse(), 'From']);
    expect(parsed.b.replace(/\s/g, '')).toBe(Buffer.alloc(256, 7).toString('base64'));
  });

  test('signs the relaxed signed fields, then this one relaxed with b= empty, no final CRLF; the key verifies', () => {
    const header = [
      'From: A <a@corp.example>',
      `Subject: ${bytes('Reçu à Рим')}`,
      'To: b@example.com,\r\n  c@example.com',
    ];
    const signed = signedFields(block(header).fields);
    const unsigned = unsignedSignature(tags(signed));
    expect(unsigned.field.endsWith('b=')).toBe(true);
    const relaxedSelf = relaxedField(unsigned.field).slice(0, -2);
    expect(unsigned.data).toBe(
      `to:b@example.com, c@example.com\r\nsubject:${bytes('Reçu à Рим')}\r\n` +
        `from:A <a@corp.example>\r\n${relaxedSelf}`,
    );
    expect(relaxedSelf).toMatch(
      new RegExp(
        /^dkim-signature:v=1; a=rsa-sha256; c=relaxed\/relaxed; d=corp\.example; s=s1; t=1796040000; /.source +
          /bh=x+; h=To: ?Subject: ?From: ?From; b=$/.source,
      ),
    );
    expect(signedField(unsigned, Buffer.alloc(256)).startsWith(unsigned.field)).toBe(true);
  });

  test('a message without a From still names From in h= (RFC 6376 §5.4), over nothing', () => {
    const unsigned = unsignedSignature(tags(signedFields(block(['To: b@example.com', 'Subject: hi']).fields)));
    expect(unsigned.field.replace(/\r\n/g, '')).toMatch(/ h=Subject: ?To: ?From; b=$/);
    expect(unsigned.data).toMatch(/^subject:hi\r\nto:b@example.com\r\ndkim-signature:/);
  });

  test('a field whose name is not well formed is not signed, even when the relay reads it as a From', () => {
    const headers = block(['From\xa0: ceo@bank.example', 'Subject\x0b: x', 'From: a@corp.example']);
    expect(headers.all('from')).toHaveLength(2);
    expect(fieldsToSign(headers.fields).map((field) => field.raw)).toEqual(['From: a@corp.example']);
  });

  test('however long h= gets, lines stay within 76 characters, b= keeps room (on a line of its own if needed)', () => {
    const wrapped: number[] = [];
    for (let n = 1; n <= 30; n++) {
      const field = signedField(
        unsignedSignature(
          tags(signedFields(block(Array.from({ length: n }, (_, i) => `To: r${i}@example.com`)).fields)),
        ),
        Buffer.alloc(256, 1),
      );
      const lines = field.slice(0, -2).split('\r\n');
      for (const line of lines) expect(line.length).toBeLessThanOrEqual(76);
      const bLine = lines.findIndex((line) => line.includes(' b='));
      expect(lines[bLine].length - lines[bLine].indexOf(' b=') - ' b='.length).toBeGreaterThanOrEqual(24);
      if (lines[bLine].startsWith(' b=')) wrapped.push(n);
    }
    expect(wrapped.length).toBeGreaterThan(0);
  });
});
