import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { HeaderBlock } from '../src/message/header-block';
import { HeaderSplitter } from '../src/message/header-splitter';

async function split(
  chunks: string[],
  edit: (h: HeaderBlock) => void = () => undefined,
  max = 1024,
): Promise<{ out: string; body: string; splitter: HeaderSplitter }> {
  const out: Buffer[] = [];
  const body: Buffer[] = [];
  const splitter = new HeaderSplitter(
    max,
    async (h) => edit(h),
    (chunk) => body.push(chunk),
  );
  await pipeline(
    Readable.from(chunks.map((c) => Buffer.from(c, 'latin1'))),
    splitter,
    new Writable({
      write: (c: Buffer, _e, cb) => {
        out.push(c);
        cb();
      },
    }),
  );
  return { out: Buffer.concat(out).toString('latin1'), body: Buffer.concat(body).toString('latin1'), splitter };
}

describe('HeaderBlock', () => {
  const raw =
    'Received: from a\r\n\tby b\r\nFrom: "Ünïcode" <app@corp.example>\r\nSubject: hi\r\nX-Originating-IP: 10.0.0.5';
  test('parses folded fields, decodes UTF-8 values, and round-trips byte for byte', () => {
    const block = HeaderBlock.parse(Buffer.from(raw, 'utf8'));
    expect(block.fields.map((f) => f.key)).toEqual(['received', 'from', 'subject', 'x-originating-ip']);
    expect(block.value('received')).toBe('from a\tby b');
    expect(block.value('FROM')).toBe('"Ünïcode" <app@corp.example>');
    expect(block.toBuffer().toString('utf8')).toBe(`${raw}\r\n`);
  });
  test('removes, sets and adds fields; refuses a value that would inject a header', () => {
    const block = HeaderBlock.parse(Buffer.from(raw, 'utf8'));
    expect(block.remove('received', 'x-originating-ip')).toBe(2);
    block.set('Subject', 'changed');
    block.add('Message-ID', '<1@relay.test>');
    expect(block.toBuffer().toString('utf8')).toBe(
      'From: "Ünïcode" <app@corp.example>\r\nSubject: changed\r\nMessage-ID: <1@relay.test>\r\n',
    );
    expect(() => block.add('X-Test', 'a\r\nBcc: victim@example.com')).toThrow(/line break/);
  });
});

describe('HeaderSplitter', () => {
  test('passes the body through untouched and writes the edited header, whatever the chunking', async () => {
    const message = 'From: a@b\r\nReceived: x\r\nSubject: s\r\n\r\nbody line\r\n\r\nmore\r\n';
    for (const chunks of [
      [message],
      message.split(''),
      ['From: a@b\r\nReceived: x\r\nSubject: s\r\n\r', '\nbody line\r\n\r\nmore\r\n'],
    ]) {
      const { out, body, splitter } = await split(chunks, (h) => h.remove('received'));
      expect(out).toBe('From: a@b\r\nSubject: s\r\n\r\nbody line\r\n\r\nmore\r\n');
      expect(body).toBe('body line\r\n\r\nmore\r\n');
      expect(splitter.original?.has('received')).toBe(true);
    }
  });
  test('a message without a blank line is all header; one that starts with the blank line has none', async () => {
    expect((await split(['Subject: only\r\n'])).out).toBe('Subject: only\r\n');
    const empty = await split(['\r\nbody\r\n']);
    expect(empty.out).toBe('\r\nbody\r\n');
    expect(empty.splitter.original?.fields).toEqual([]);
  });
  test('a header block over the limit stops the output and is flagged', async () => {
    const { out, splitter } = await split([`X-Big: ${'a'.repeat(2000)}\r\n`, '\r\nbody\r\n']);
    expect(splitter.headerTooLarge).toBe(true);
    expect(out).toBe('');
  });
});
