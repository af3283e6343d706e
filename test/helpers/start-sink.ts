import { SmtpSink, type SinkOptions } from '../../src/tools/sink';

/** A smart host on loopback that keeps what it receives (see SmtpSink for its options). */
export async function startSink(options: SinkOptions = {}): Promise<SmtpSink> {
  const sink = new SmtpSink({ keep: true, ...options });
  await sink.listen();
  return sink;
}
