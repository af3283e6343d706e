import { PassThrough, Readable, Transform, Writable } from 'node:stream';
import { pipeChain } from '../src/ingress/stream-chain';

/** A sink that keeps what it is written. */
function collector(): Writable & { chunks: Buffer[] } {
  const chunks: Buffer[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      chunks.push(chunk);
      callback();
    },
  });
  return Object.assign(sink, { chunks });
}

function upperCase(): Transform {
  return new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      callback(null, Buffer.from(chunk.toString('latin1').toUpperCase(), 'latin1'));
    },
  });
}

describe('pipeChain', () => {
  test('passes every chunk through the stages in order and resolves once the sink has finished', async () => {
    const sink = collector();
    await pipeChain(Readable.from([Buffer.from('one '), Buffer.from('two')]), [upperCase(), new PassThrough()], sink);
    expect(Buffer.concat(sink.chunks).toString()).toBe('ONE TWO');
    expect(sink.writableFinished).toBe(true);
  });

  test('a stage that fails rejects with its error and destroys every stream', async () => {
    const source = new PassThrough();
    const failing = new Transform({
      transform(_chunk, _encoding, callback) {
        callback(new Error('stage failed'));
      },
    });
    const sink = collector();
    const done = pipeChain(source, [failing], sink);
    source.write('x');
    await expect(done).rejects.toThrow('stage failed');
    expect([source.destroyed, failing.destroyed, sink.destroyed]).toEqual([true, true, true]);
  });

  test('a sink that fails to write rejects and destroys the source', async () => {
    const source = new PassThrough();
    const sink = new Writable({
      write(_chunk, _encoding, callback) {
        callback(Object.assign(new Error('no space'), { code: 'ENOSPC' }));
      },
    });
    const done = pipeChain(source, [new PassThrough()], sink);
    source.write('x');
    await expect(done).rejects.toMatchObject({ code: 'ENOSPC' });
    expect(source.destroyed).toBe(true);
  });

  test('a source closed before its end (a client gone mid-DATA) rejects as a premature close', async () => {
    const source = new PassThrough();
    const sink = collector();
    const done = pipeChain(source, [new PassThrough()], sink);
    source.write('half a message');
    source.destroy();
    await expect(done).rejects.toMatchObject({ code: 'ERR_STREAM_PREMATURE_CLOSE' });
    expect(sink.destroyed).toBe(true);
  });
});
