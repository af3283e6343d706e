import { finished, type Duplex, type Readable, type Writable } from 'node:stream';

/**
 * Pipes `source` through `stages` into `sink`, as stream.pipeline does: resolves once every stream
 * has finished; at the first error (a stream that closes before its end counts as one, as
 * ERR_STREAM_PREMATURE_CLOSE) every stream is destroyed and the promise rejects with that error.
 *
 * Not stream.pipeline itself because it runs once per message: pipeline ends every run by aborting
 * an AbortController of its own, and the DOMException and the abort event that makes, with its
 * per-run setup, cost several times what the plain pipe() calls and finished() listeners here do.
 */
export function pipeChain(source: Readable, stages: readonly Duplex[], sink: Writable): Promise<void> {
  const streams = [source, ...stages, sink];
  return new Promise((resolve, reject) => {
    let running = streams.length;
    let failed = false;
    const fail = (err: Error) => {
      if (failed) return;
      failed = true;
      for (const stream of streams) stream.destroy();
      reject(err);
    };
    for (const stream of streams) {
      finished(stream, (err) => {
        if (err) fail(err);
        else if (--running === 0 && !failed) resolve();
      });
    }
    let upstream: Readable = source;
    for (const stage of stages) upstream = upstream.pipe(stage);
    upstream.pipe(sink);
  });
}
