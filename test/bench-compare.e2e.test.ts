import { spawnSync } from 'node:child_process';
import { readdirSync, readlinkSync } from 'node:fs';
import * as path from 'node:path';
import type { ComparisonReport } from '../bench/compare/report';
import { findPostfixBinary } from '../bench/postfix/binaries';
import { removeDir, tempDir } from './helpers/harness';
import { testUnless } from './helpers/skip';

/**
 * `npm run bench -- --compare postfix` in a small size (5 messages of warm-up, 60 measured, one round), so the compare
 * mode cannot rot between the runs that produce docs/performance.md. No timing is asserted: this
 * checks that both relays got the whole load to the sink, that every figure was measured, and
 * that the private Postfix is gone afterwards. It needs root and the postfix package (.ci/run
 * installs it with bench/postfix/install.sh); without them it is skipped with a note.
 */

const bench = path.resolve(__dirname, '../dist/bench/bench.js');

function unavailable(): string | null {
  if (process.getuid?.() !== 0) return 'not root';
  if (findPostfixBinary('postfix') === null || findPostfixBinary('smtp-source') === null)
    return 'postfix not installed (bench/postfix/install.sh)';
  return null;
}

const reason = unavailable();
const testIfPostfix = testUnless(reason === null ? null : `bench --compare postfix smoke test: ${reason}`);

/** Live Postfix master processes on the machine (an exited one waiting to be reaped has no exe link). */
function postfixMasters(): Set<string> {
  const masters = new Set<string>();
  for (const pid of readdirSync('/proc').filter((name) => /^\d+$/.test(name))) {
    try {
      if (readlinkSync(`/proc/${pid}/exe`) === '/usr/lib/postfix/sbin/master') masters.add(pid);
    } catch {
      // gone, or not ours to read
    }
  }
  return masters;
}

testIfPostfix(
  '--compare postfix: both relays deliver the whole load, every figure is measured, Postfix is stopped',
  () => {
    const before = postfixMasters();
    // The warm-up only has to run. The measured load stays at 60: the latency probe's first message
    // leaves 50 ms into the load, and Postfix, the faster of the two here, takes 60 in about 0.35 s.
    const run = spawnSync(
      process.execPath,
      [bench, '--compare', 'postfix', '--messages', '60', '--warmup', '5', '--rounds', '1', '--json'],
      { encoding: 'utf8', timeout: 150_000 },
    );
    if (run.status !== 0) process.stderr.write(`${run.stdout}\n${run.stderr}\n`);
    expect(run.status).toBe(0);
    const report = JSON.parse(run.stdout.trim().split('\n').pop() as string) as ComparisonReport;

    expect(report.ok).toBe(true);
    expect(report.load.warmup).toBe(5);
    expect(report.lost).toEqual({ smarthop: 0, postfix: 0 });
    expect(report.ceiling?.delivered).toBe(60);
    expect(report.rounds).toHaveLength(1);
    const [round] = report.rounds;
    for (const phase of [round.smarthop, round.postfix]) {
      expect(phase).toMatchObject({
        messages: 60,
        delivered: 60,
        missing: 0,
        duplicated: 0,
        unexpected: 0,
        generatorOk: true,
      });
      expect(phase.endToEndRate).toBeGreaterThan(0);
      expect(phase.acceptRate).toBeGreaterThan(0);
      expect(phase.probe.latencyMs?.samples).toBeGreaterThan(0);
      expect(phase.probe.latenciesMs).toHaveLength(phase.probe.latencyMs?.samples ?? -1);
      expect(phase.memory.pssMaxBytes).toBeGreaterThan(0);
      expect(phase.cpu.msPerMessage).toBeGreaterThan(0);
    }
    expect(report.pooledLatencyMs.smarthop?.samples).toBe(round.smarthop.probe.latenciesMs.length);
    expect(round.smarthop.memory.vmHwmBytes).toBeGreaterThan(0);
    // Postfix is several processes (master, smtpd, cleanup, qmgr, smtp, …), all of them sampled.
    expect(round.postfix.memory.processesMax).toBeGreaterThan(3);
    expect(round.ratios.endToEnd).toBeGreaterThan(0);
    // No master the bench started is left running (ones that ran before, e.g. another bench, may stay).
    expect([...postfixMasters()].filter((pid) => !before.has(pid))).toEqual([]);
  },
  180_000,
);

test('--cpu-prof: the relay runs under the profiler and the top functions come back', () => {
  const dir = tempDir('smarthop-cpu-prof-');
  const run = spawnSync(
    process.execPath,
    [bench, '--messages', '20', '--connections', '5', '--cpu-prof', dir, '--json'],
    { encoding: 'utf8', timeout: 100_000 },
  );
  removeDir(dir);
  if (run.status !== 0) process.stderr.write(`${run.stdout}\n${run.stderr}\n`);
  expect(run.status).toBe(0);
  const report = JSON.parse(run.stdout.trim().split('\n').pop() as string) as {
    lost: number;
    profile: { file: string; summary: { top: { name: string; selfMs: number }[]; busyMs: number } };
  };
  expect(report.lost).toBe(0);
  expect(report.profile.file).toMatch(/\.cpuprofile$/);
  expect(report.profile.summary.top).toHaveLength(15);
  expect(report.profile.summary.busyMs).toBeGreaterThan(0);
}, 120_000);
