import { writeFileSync } from 'node:fs';
import * as path from 'node:path';
import pino from 'pino';
import { DeliveryThread } from '../src/forward/delivery-thread';
import type { SmtpSink } from '../src/tools/sink';
import { startSink } from './helpers/start-sink';
import { removeDir, tempDir } from './helpers/temp-dir';
import { baseConfig, buildConfig, smtpHost } from './helpers/test-config';

/**
 * The delivery thread against a real smart host (smtp-server on loopback): what it sends, what it
 * answers, and that a thread that dies or a relay that stops turns sends into deferrals, never into
 * lost or hanging deliveries.
 */
describe('delivery thread', () => {
  let dir: string;
  let sink: SmtpSink;
  let thread: DeliveryThread | null = null;
  const logger = pino({ level: 'silent' });

  beforeEach(async () => {
    dir = tempDir();
    sink = await startSink({
      rcptReply: (address) => (address.startsWith('gone@') ? { code: 550, message: '5.1.1 No such user' } : null),
    });
  });

  afterEach(async () => {
    await thread?.stop();
    thread = null;
    await sink.close();
    removeDir(dir);
  });

  function smartHost() {
    return smtpHost(buildConfig(baseConfig(dir, [{ name: 'primary', port: sink.port }]), dir));
  }

  /** A queue file: the message's own bytes, then bytes that must never leave (as a trailer). */
  function queueFile(message: string): { path: string; size: number } {
    const file = path.join(dir, 'message.eml');
    writeFileSync(file, `${message}{"metadata":"never sent"}\n0000000025 smarthop-meta\n`, 'latin1');
    return { path: file, size: Buffer.byteLength(message, 'latin1') };
  }

  test('sends the header lines and the first size bytes of the file, and answers per recipient', async () => {
    thread = new DeliveryThread('relay.test', logger);
    thread.start();
    const transport = thread.transport(smartHost());
    const message = 'Subject: hello\r\n\r\nbody\r\n';
    const outcomes = await transport.send(
      { from: 'app@corp.example', to: ['ok@example.com', 'gone@example.com'] },
      { ...queueFile(message), prependHeaders: 'DKIM-Signature: v=1; test\r\n' },
    );
    expect(outcomes.get('ok@example.com')).toMatchObject({ kind: 'delivered' });
    expect(outcomes.get('gone@example.com')).toMatchObject({ kind: 'permanent', reply: { code: 550 } });
    expect(sink.messages).toHaveLength(1);
    expect(sink.messages[0].data.toString('latin1')).toBe(`DKIM-Signature: v=1; test\r\n${message}`);
    expect(sink.messages[0].to).toEqual(['ok@example.com']);
  });

  test("addresses go out as nodemailer writes them (domain lower-cased); refusals land on the spool's", async () => {
    thread = new DeliveryThread('relay.test', logger);
    const transport = thread.transport(smartHost());
    const outcomes = await transport.send(
      { from: 'App@Corp.Example', to: ['gone@Example.COM', 'ok@jõgeva.ee'] },
      queueFile('Subject: idn\r\n\r\nx\r\n'),
    );
    expect(outcomes.get('gone@Example.COM')).toMatchObject({ kind: 'permanent', reply: { code: 550 } });
    expect(outcomes.get('ok@jõgeva.ee')).toMatchObject({ kind: 'delivered' });
    expect(sink.messages[0].from).toBe('App@corp.example');
    // (smtp-server hands the sink an IDN domain decoded again, so the wire form is not visible here.)
    expect(sink.messages[0].to).toEqual(['ok@jõgeva.ee']);
  });

  test('bytes the spool still holds from the commit are sent as they are, without reading the file', async () => {
    thread = new DeliveryThread('relay.test', logger);
    const transport = thread.transport(smartHost());
    const message = Buffer.from('Subject: from memory\r\n\r\nx\r\n', 'latin1');
    const gone = path.join(dir, 'never-written.eml');
    const outcomes = await transport.send(
      { from: 'app@corp.example', to: ['ok@example.com'] },
      { path: gone, size: message.length, message, prependHeaders: 'X-Signed: 1\r\n' },
    );
    expect(outcomes.get('ok@example.com')).toMatchObject({ kind: 'delivered' });
    expect(sink.messages[0].data.toString('latin1')).toBe(`X-Signed: 1\r\n${message.toString('latin1')}`);
  });

  test('a pooled connection the smart host dropped while idle costs nothing: the next message opens one', async () => {
    thread = new DeliveryThread('relay.test', logger);
    const transport = thread.transport(smartHost());
    const envelope = { from: 'app@corp.example', to: ['ok@example.com'] };
    expect(
      (await transport.send(envelope, queueFile('Subject: one\r\n\r\nx\r\n'))).get('ok@example.com'),
    ).toMatchObject({ kind: 'delivered' });
    // The smart host restarts on the same port: the pooled connection is gone.
    const port = sink.port;
    await sink.close();
    sink = await startSink({ port });
    expect(
      (await transport.send(envelope, queueFile('Subject: two\r\n\r\nx\r\n'))).get('ok@example.com'),
    ).toMatchObject({ kind: 'delivered' });
    expect(sink.messages.map((m) => m.data.toString('latin1'))).toEqual(['Subject: two\r\n\r\nx\r\n']);
  });

  test('a message queued before trailers existed (no size to cut at) is sent whole', async () => {
    thread = new DeliveryThread('relay.test', logger);
    const transport = thread.transport(smartHost());
    const file = path.join(dir, 'legacy.eml');
    writeFileSync(file, 'Subject: legacy\r\n\r\nwhole file\r\n');
    const outcomes = await transport.send({ from: 'app@corp.example', to: ['ok@example.com'] }, { path: file });
    expect(outcomes.get('ok@example.com')).toMatchObject({ kind: 'delivered' });
    expect(sink.messages[0].data.toString('latin1')).toBe('Subject: legacy\r\n\r\nwhole file\r\n');
  });

  test('a thread that dies mid-send defers that send; the next send starts a new thread and delivers', async () => {
    // A stand-in worker that exits on its first send, then the real one: the death is real, not simulated.
    const dying = path.join(dir, 'dying-worker.js');
    const marker = path.join(dir, 'died-once');
    const real = path.resolve(__dirname, '../dist/src/forward/delivery-worker.js');
    writeFileSync(
      dying,
      [
        "const fs = require('node:fs');",
        `if (fs.existsSync(${JSON.stringify(marker)})) { require(${JSON.stringify(real)}); } else {`,
        "  require('node:worker_threads').parentPort.on('message', (m) => {",
        `    if (m.type === 'send') { fs.writeFileSync(${JSON.stringify(marker)}, ''); process.exit(3); }`,
        '  });',
        '}',
      ].join('\n'),
    );
    thread = new DeliveryThread('relay.test', logger, { script: dying });
    thread.start();
    const transport = thread.transport(smartHost());
    const envelope = { from: 'app@corp.example', to: ['ok@example.com'] };

    const first = await transport.send(envelope, queueFile('Subject: one\r\n\r\nx\r\n'));
    expect(first.get('ok@example.com')).toEqual({
      kind: 'transient',
      cause: 'reply',
      detail: 'delivery thread exited with code 3',
    });
    expect(sink.messages).toHaveLength(0);

    const second = await transport.send(envelope, queueFile('Subject: two\r\n\r\nx\r\n'));
    expect(second.get('ok@example.com')).toMatchObject({ kind: 'delivered' });
    expect(sink.messages.map((m) => m.data.toString('latin1'))).toEqual(['Subject: two\r\n\r\nx\r\n']);
  });

  test('after stop a send is deferred at once, not left waiting', async () => {
    thread = new DeliveryThread('relay.test', logger);
    thread.start();
    const transport = thread.transport(smartHost());
    await thread.stop();
    const outcomes = await transport.send(
      { from: 'app@corp.example', to: ['ok@example.com'] },
      queueFile('Subject: late\r\n\r\nx\r\n'),
    );
    expect(outcomes.get('ok@example.com')).toEqual({
      kind: 'transient',
      cause: 'reply',
      detail: 'the relay is stopping',
    });
    expect(sink.messages).toHaveLength(0);
  });
});
