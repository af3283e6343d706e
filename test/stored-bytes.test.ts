import { writeFileSync } from 'node:fs';
import * as path from 'node:path';
import type { Readable } from 'node:stream';
import { QueueFileError, storedBytes } from '../src/forward/stored-bytes';
import { removeDir, tempDir } from './helpers/temp-dir';

/**
 * What the delivery thread sends of a queued message: the first `size` bytes of its file (the
 * metadata trailer behind them never), after the headers prepended at ingest. A file that holds less
 * than that is damaged and must never go out short.
 */
describe('storedBytes: the message as the queue file holds it', () => {
  let dir = '';
  beforeEach(() => {
    dir = tempDir();
  });
  afterEach(() => removeDir(dir));

  const file = (content: string) => {
    const name = path.join(dir, 'm.eml');
    writeFileSync(name, content, 'latin1');
    return name;
  };

  async function read(stream: Readable): Promise<{ data: string; error: Error | null; ended: boolean }> {
    const chunks: Buffer[] = [];
    let ended = false;
    stream.on('data', (chunk: Buffer) => chunks.push(chunk));
    stream.on('end', () => {
      ended = true;
    });
    const error = await new Promise<Error | null>((resolve) => {
      stream.on('error', resolve);
      stream.on('close', () => resolve(null));
    });
    return { data: Buffer.concat(chunks).toString('latin1'), error, ended };
  }

  test('sends the prepended headers, then exactly `size` bytes: the trailer behind them stays home', async () => {
    const result = await read(
      storedBytes(file('Subject: x\r\n\r\nbody\r\n{"meta":1}footer'), 20, Buffer.from('X-Head: 1\r\n', 'latin1')),
    );
    expect(result).toEqual({ data: 'X-Head: 1\r\nSubject: x\r\n\r\nbody\r\n', error: null, ended: true });
  });

  test('a file shorter than `size` fails the stream before its end, naming both counts', async () => {
    const result = await read(storedBytes(file('Subject: x\r\n\r\ncut he'), 5000, null));
    expect(result.error).toBeInstanceOf(QueueFileError);
    expect(result.error?.message).toBe("the queue file holds 20 of the message's 5000 bytes; not sent short");
    // No 'end': the SMTP connection writes the final "." only at the end of the stream.
    expect(result.ended).toBe(false);
  });

  test("a missing file is a QueueFileError too (the spool's problem, not the smart host's)", async () => {
    const result = await read(storedBytes(path.join(dir, 'gone.eml'), 100, null));
    expect(result.error).toBeInstanceOf(QueueFileError);
    expect(result.error?.message).toMatch(/^cannot read the queued message: ENOENT/);
  });

  test('a stream nobody reads (a pooled connection found half-closed) fails quietly: no uncaught error', async () => {
    // Only 'close' is listened to, as with a stream nodemailer was handed and never started on.
    const short = storedBytes(file('Subject: x\r\n\r\ncut'), 5000, null);
    const missing = storedBytes(path.join(dir, 'gone.eml'), 100, null);
    // (events.once would listen for 'error' itself.)
    const closed = (stream: Readable) => new Promise<void>((resolve) => stream.on('close', () => resolve()));
    await Promise.all([closed(short), closed(missing)]);
    expect(short.destroyed && missing.destroyed).toBe(true);
  });
});
