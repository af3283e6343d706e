import type { SmtpSink } from '../src/tools/sink';
import {
  baseConfig,
  buildConfig,
  freePort,
  metricsText,
  metricValue,
  recordingLogger,
  removeDir,
  startRelay,
  startSink,
  tempDir,
  waitFor,
} from './helpers/harness';
import { message, openSession } from './helpers/smtp-client';

test('all smart hosts down past the retry cap: the queue holds, metrics show it, all leaves on return', async () => {
  const dir = tempDir();
  const [primaryPort, backupPort] = [await freePort(), await freePort()];
  const log = recordingLogger('warn');
  const running = await startRelay(
    buildConfig(
      baseConfig(
        dir,
        [
          { name: 'primary', port: primaryPort, priority: 10, breaker: { failures: 3, cooldown: '500ms' } },
          { name: 'backup', port: backupPort, priority: 20, breaker: { failures: 3, cooldown: '500ms' } },
        ],
        {
          spool: { dir: `${dir}/spool`, retry: { initial: '100ms', max: '400ms', factor: 2 }, min_free_disk: 0 },
        },
      ),
      dir,
    ),
    { logger: log.logger },
  );
  const sinks: SmtpSink[] = [];
  try {
    let firstAcceptedAt = 0;
    for (let i = 0; i < 20; i++) {
      const { client } = await openSession(running.smtpPort);
      expect(
        await client.sendMessage(
          'erp@corp.example',
          [`r${i}@example.com`],
          message({ messageId: `outage-${i}@corp.example` }),
        ),
      ).toMatch(/^250 /);
      firstAcceptedAt ||= Date.now();
      await client.quit();
    }
    // Longer than the retry cap and a breaker cooldown: each breaker opened, let a probe through once its
    // cooldown was over, and opened again. Every message keeps being deferred, none is dropped or dead-lettered.
    const reopened = (host: string) =>
      log.lines.filter((line) => line.event === 'breaker' && line.smarthost === host && line.state === 'open').length >=
      2;
    await waitFor(
      () => reopened('primary') && reopened('backup'),
      15_000,
      'both breakers to open again after a failed probe',
    );
    const scrapedAt = Date.now();
    const during = await metricsText(running.httpPort);
    expect(
      metricValue(during, 'smarthop_queue_messages{state="deferred"}')! +
        metricValue(during, 'smarthop_queue_messages{state="ready"}')!,
    ).toBe(20);
    expect(metricValue(during, 'smarthop_queue_messages{state="dead"}')).toBe(0);
    // The first message got its 250 before firstAcceptedAt, so it is at least this old.
    expect(metricValue(during, 'smarthop_queue_oldest_age_seconds')).toBeGreaterThanOrEqual(
      (scrapedAt - firstAcceptedAt) / 1000,
    );
    // The breakers opened: dead hosts are skipped, not hammered, and say so.
    expect(
      metricValue(during, 'smarthop_delivery_attempts_total{smarthost="backup",outcome="unreachable"}'),
    ).toBeGreaterThanOrEqual(3);

    sinks.push(await startSink({ port: backupPort }));
    await waitFor(() => sinks[0].messages.length === 20, 10_000, 'all 20 to leave once the backup returns');
    expect(new Set(sinks[0].messages.map((m) => m.messageId)).size).toBe(20);
    await waitFor(
      async () => metricValue(await metricsText(running.httpPort), 'smarthop_queue_messages{state="deferred"}') === 0,
      5000,
      'the queue gauge to empty',
    );
  } finally {
    await running.stop();
    await Promise.all(sinks.map((s) => s.close()));
    removeDir(dir);
  }
});
