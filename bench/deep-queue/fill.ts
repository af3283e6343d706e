import type { MessageMeta } from '../../src/spool/message';
import { SpoolStore } from '../../src/spool/store';
import { buildMessage } from '../smtp-client';

/**
 * Fills a spool with `count` queued messages through the spool's own writer (IncomingFile, then
 * commit: fsync, rename, folder fsync), as DATA would have, without SMTP. Each message has one
 * recipient and a Message-ID of the run, so a sink can count them.
 */
export async function fillSpool(
  spoolDir: string,
  options: { count: number; size: number; runId: string; parallel?: number; onProgress?: (done: number) => void },
): Promise<void> {
  const store = new SpoolStore(spoolDir);
  store.open();
  let next = 0;
  let done = 0;
  const worker = async () => {
    while (next < options.count) {
      const n = next++;
      const { from, to, content } = buildMessage(options.runId, n, options.size);
      const id = store.newId();
      const incoming = await store.createIncoming(id);
      await new Promise<void>((resolve, reject) =>
        incoming.stream.end(content, (err?: Error | null) => (err ? reject(err) : resolve())),
      );
      const now = Date.now();
      const meta: MessageMeta = {
        version: 2,
        id,
        receivedAt: now,
        client: 'bench',
        listener: 'smtp',
        remote: '127.0.0.1',
        route: 'default',
        from,
        recipients: [{ address: to, status: 'pending' }],
        size: incoming.bytesWritten,
        attempts: 0,
        nextAttemptAt: now,
      };
      await store.commit(meta, incoming);
      if (++done % 10_000 === 0) options.onProgress?.(done);
    }
  };
  try {
    await Promise.all(Array.from({ length: Math.min(options.parallel ?? 64, options.count) }, worker));
  } finally {
    await store.close();
  }
}
