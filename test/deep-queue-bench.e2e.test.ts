import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import type { DeepQueueReport } from '../bench/deep-queue/deep-queue';

/**
 * `npm run bench -- --deep-queue N` in a small size, so the mode cannot rot between the runs that
 * produce docs/performance.md. No timing is asserted: every figure is measured, the message sent
 * while the queue was recovered was accepted, and the whole queue drained to the returned smart host.
 * 100 messages are more than the 50 the listings stop at, which is all the count has to be.
 */

const bench = path.resolve(__dirname, '../dist/bench/bench.js');

test('--deep-queue: fills a spool, times start, recovery and the admin commands, and drains it', () => {
  const run = spawnSync(process.execPath, [bench, '--deep-queue', '100', '--size', '2048', '--json'], {
    encoding: 'utf8',
    timeout: 170_000,
  });
  if (run.status !== 0) process.stderr.write(`${run.stdout}\n${run.stderr}\n`);
  expect(run.status).toBe(0);
  const report = JSON.parse(run.stdout.trim().split('\n').pop() as string) as DeepQueueReport;
  expect(report).toMatchObject({ messages: 100, size: 2048 });
  for (const ms of [
    report.empty.listeningMs,
    report.empty.recoveredMs,
    report.deep.listeningMs,
    report.deep.recoveredMs,
  ])
    expect(ms).toBeGreaterThan(0);
  expect(report.deep.recoveredMs).toBeGreaterThanOrEqual(report.deep.listeningMs);
  expect(report.deep.acceptedDuringRecovery?.latencyMs).toBeGreaterThan(0);
  for (const ms of Object.values(report.deep.admin)) expect(ms).toBeGreaterThan(0);
  expect(report.deep.api.statusMs).toBeGreaterThanOrEqual(0);
  expect(report.deep.api.listLimit50Ms).toBeGreaterThanOrEqual(0);
  // The recipient searched for matches the queue's messages: the first row comes before the 50th.
  expect(report.deep.api.firstRowMs).not.toBeNull();
  expect(report.deep.api.firstRowMs as number).toBeLessThanOrEqual(report.deep.api.listRecipientMs);
  expect(report.deep.drain).toMatchObject({ measured: 100, delivered: 100 });
  expect(report.deep.drain.rate).toBeGreaterThan(0);
  expect(report.empty.peakRssBytes).toBeGreaterThan(0);
  expect(report.deep.peakRssAfterDrainBytes).toBeGreaterThan(0);
}, 180_000);
