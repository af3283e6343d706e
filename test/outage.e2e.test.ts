import type { SmtpSink } from '../src/tools/sink';
import { baseConfig, buildConfig, freePort, metricsText, metricValue, removeDir, startRelay, startSink, tempDir, waitFor } from './helpers/harness';
import { message, openSession } from './helpers/smtp-client';

test('all smart hosts down for longer than the retry cap: the queue holds, metrics show it, everything leaves when they return', async () => {
  const dir = tempDir();
  const [primaryPort, backupPort] = [await freePort(), await freePort()];
  const running = await startRelay(buildConfig(baseConfig(dir, [
    { name: 'primary', port: primaryPort, priority: 10, breaker: { failures: 3, cooldown: '500ms' } },
    { name: 'backup', port: backupPort, priority: 20, breaker: { failures: 3, cooldown: '500ms' } },
  ], {
    spool: { dir: `${dir}/spool`, retry: { initial: '100ms', max: '400ms', factor: 2 }, min_free_disk: 0 },
  }), dir));
  const sinks: SmtpSink[] = [];
  try {
    for (let i = 0; i < 20; i++) {
      const { client } = await openSession(running.smtpPort);
      expect(await client.sendMessage('erp@corp.example', [`r${i}@example.com`], message({ messageId: `outage-${i}@corp.example` }))).toMatch(/^250 /);
      await client.quit();
    }
    // Several retry caps long: every message keeps being deferred, none is dropped or dead-lettered.
    await new Promise((resolve) => setTimeout(resolve, 2500));
    const during = await metricsText(running.httpPort);
    expect(metricValue(during, 'smarthop_queue_messages{state="deferred"}')! + metricValue(during, 'smarthop_queue_messages{state="ready"}')!).toBe(20);
    expect(metricValue(during, 'smarthop_queue_messages{state="dead"}')).toBe(0);
    expect(metricValue(during, 'smarthop_queue_oldest_age_seconds')).toBeGreaterThan(2);
    // The breakers opened: dead hosts are skipped, not hammered, and say so.
    expect(metricValue(during, 'smarthop_delivery_attempts_total{smarthost="backup",outcome="unreachable"}')).toBeGreaterThanOrEqual(3);

    sinks.push(await startSink({ port: backupPort }));
    await waitFor(() => sinks[0].messages.length === 20, 10_000, 'all 20 to leave once the backup returns');
    expect(new Set(sinks[0].messages.map((m) => m.messageId)).size).toBe(20);
    await waitFor(async () => metricValue(await metricsText(running.httpPort), 'smarthop_queue_messages{state="deferred"}') === 0, 5000, 'the queue gauge to empty');
  } finally {
    await running.stop();
    await Promise.all(sinks.map((s) => s.close()));
    removeDir(dir);
  }
});
