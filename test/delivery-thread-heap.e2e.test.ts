import { writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { stringify } from 'yaml';
import type { SmtpSink } from '../src/tools/sink';
import { ChildRelay, tearDownChildRelay } from './helpers/child-relay';
import { baseConfig, freePort, metricsText, metricValue, startSink, tempDir, waitFor } from './helpers/harness';
import { message, openSession } from './helpers/smtp-client';

const MiB = 1024 * 1024;

/** The value of `name{space="…"}` for each space in `spaces` that has a series. */
function gaugeBySpace(
  metrics: string,
  name: string,
  spaces = ['new', 'old', 'code', 'large_object'],
): Map<string, number> {
  const values = new Map<string, number>();
  for (const space of spaces) {
    const value = metricValue(metrics, `${name}{space="${space}"}`);
    if (value !== undefined) values.set(space, value);
  }
  return values;
}

/**
 * The delivery thread's heap in /metrics, read from a relay started the way admins start it (with
 * RELAY_NODE_FLAGS: the process-wide --max-semi-space-size sizes the thread's young generation too).
 */
describe("the delivery thread's heap", () => {
  let dir: string;
  let relay: ChildRelay | null = null;
  let sink: SmtpSink | null = null;

  afterEach(async () => {
    await tearDownChildRelay(relay, 'SIGTERM', sink, dir);
    relay = null;
    sink = null;
  });

  async function startRelay(workerThread: boolean): Promise<{ smtpPort: number; httpPort: number }> {
    dir = tempDir();
    const [smtpPort, httpPort, sinkPort] = [await freePort(), await freePort(), await freePort()];
    sink = await startSink({ port: sinkPort });
    const configFile = path.join(dir, 'relay.yaml');
    writeFileSync(
      configFile,
      stringify(
        baseConfig(dir, [{ name: 'primary', port: sinkPort }], {
          listeners: [{ name: 'smtp', address: `127.0.0.1:${smtpPort}`, tls: 'none', auth: 'off' }],
          clients: [{ name: 'lan', networks: ['127.0.0.0/8'] }],
          delivery: { worker_thread: workerThread },
          http: { address: `127.0.0.1:${httpPort}` },
        }),
      ),
    );
    relay = await ChildRelay.start(configFile, httpPort);
    return { smtpPort, httpPort };
  }

  test("is in /metrics by space; both heaps' new spaces stay within the 2 MB semi-spaces under load", async () => {
    const { smtpPort, httpPort } = await startRelay(true);
    // Measured: the thread's new space grows to its maximum within the first ~50 messages of this load.
    const sessions = 5;
    const perSession = 24;
    await Promise.all(
      Array.from({ length: sessions }, async (_, s) => {
        const { client } = await openSession(smtpPort);
        for (let i = 0; i < perSession; i++) {
          const reply = await client.sendMessage(
            'erp@corp.example',
            [`user${s}-${i}@example.com`],
            message({ subject: `load ${s}-${i}`, body: `${'x'.repeat(76)}\r\n`.repeat(130) }),
          );
          expect(reply).toMatch(/^250 /);
        }
        await client.quit();
      }),
    );
    await waitFor(
      () => (sink as SmtpSink).messages.length === sessions * perSession,
      15_000,
      'every message at the sink',
    );

    const metrics = await metricsText(httpPort);
    const size = gaugeBySpace(metrics, 'smarthop_delivery_thread_heap_space_size_total_bytes');
    const used = gaugeBySpace(metrics, 'smarthop_delivery_thread_heap_space_size_used_bytes');
    expect(used.get('old')).toBeGreaterThan(1 * MiB);
    expect(size.get('old')).toBeGreaterThanOrEqual(used.get('old') as number);
    // Two 2 MB semi-spaces at most; V8's default grows each to 16 MB.
    expect(size.get('new')).toBeGreaterThan(0);
    expect(size.get('new')).toBeLessThanOrEqual(4 * MiB);
    // The event loop's own heap keeps prom-client's names beside the thread's, with the same bound.
    const eventLoopNew = metricValue(metrics, 'nodejs_heap_space_size_total_bytes{space="new"}');
    expect(eventLoopNew).toBeGreaterThan(0);
    expect(eventLoopNew).toBeLessThanOrEqual(4 * MiB);
  });

  test('has no series when delivery.worker_thread is false', async () => {
    const { httpPort } = await startRelay(false);
    const metrics = await metricsText(httpPort);
    expect(metrics).toContain('# TYPE smarthop_delivery_thread_heap_space_size_total_bytes gauge');
    expect(gaugeBySpace(metrics, 'smarthop_delivery_thread_heap_space_size_total_bytes').size).toBe(0);
    expect(gaugeBySpace(metrics, 'smarthop_delivery_thread_heap_space_size_used_bytes').size).toBe(0);
  });
});
