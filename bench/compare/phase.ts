import { performance } from 'node:perf_hooks';
import { scheduleShare, type ScheduleShare } from '../cpu/cpu-time';
import { LatencyProbe, type ProbeResult } from '../load/latency-probe';
import { runSmtpSource, type SmtpSourceLoad } from '../load/smtp-source';
import { PssSampler } from '../memory/pss-sampler';
import type { Timeouts } from '../smtp-client';
import { RecipientTally } from './tally';
import type { Target, TargetName } from './targets';

/**
 * One phase of the comparison: the generator's load (plus the latency probe) against one started
 * target, from smtp-source's start until the sink holds every message, while the target's memory
 * is sampled.
 */

export interface PhaseLimits {
  /** smtp-source is killed after this long. */
  generatorMs: number;
  /** The wait for the sink gives up after this long without a new arrival. */
  noProgressMs: number;
  /** …or this much sooner when smtp-source failed and the number of accepted messages is unknown. */
  noProgressAfterFailureMs: number;
  deadline: number;
  probe: Timeouts;
}

export interface PhaseSetup {
  round: number;
  load: Omit<SmtpSourceLoad, 'to'>;
  smtpSource: string;
  /** Probe messages per second during the load; 0 switches the probe off. */
  probeRate: number;
  runId: string;
  limits: PhaseLimits;
}

export interface PhaseResult {
  target: TargetName;
  round: number;
  messages: number;
  /** Unique load recipients at the sink. */
  delivered: number;
  /** Generator messages not at the sink (lost when smtp-source got a 250 for each, see generatorOk). */
  missing: number;
  duplicated: number;
  unexpected: number;
  generatorOk: boolean;
  /** Messages per second from smtp-source's start until the sink held them all; null if it never did. */
  endToEndRate: number | null;
  endToEndMs: number | null;
  /** Messages per second from smtp-source's start until it exited (every 250 received). */
  acceptRate: number | null;
  /** `latenciesMs`: every probe's latency, in the order they were answered (the report pools them over rounds). */
  probe: {
    sent: number;
    accepted: number;
    missing: number;
    failures: number;
    skipped: number;
    latencyMs: Latency | null;
    latenciesMs: number[];
  };
  memory: { pssMaxBytes: number | null; processesMax: number; vmHwmBytes: number | null };
  /**
   * CPU the relay used from the start of the load until the sink held everything, per message relayed (load and
   * probes).
   */
  cpu: { seconds: number | null; msPerMessage: number | null };
  /** smarthop only: share of the phase its event-loop thread ran, and waited runnable for a CPU. */
  mainThread: ScheduleShare | null;
  notes: string[];
}

export interface Latency {
  p50: number;
  p99: number;
  max: number;
  samples: number;
}

const PSS_SAMPLE_MS = 250;
/**
 * Enough that a relay stalling for a second still gets probed (20/s × 1 s in flight needs 20): a
 * probe that skips its slow moments would report only the fast ones.
 */
const PROBE_MAX_IN_FLIGHT = 24;

/**
 * Messages a relay relays right after it started, before its measured phase: same load, its own
 * recipient domain, nothing measured. A long-running relay is warm; a fresh one is not (smarthop's
 * JIT compiles most of its hot code in its first few thousand messages, Postfix spawns its smtpd,
 * cleanup and smtp processes). Both relays get the same warm-up.
 */
export async function warmUp(
  setup: PhaseSetup,
  target: Target,
  useTally: (tally: RecipientTally | null) => void,
  messages: number,
): Promise<void> {
  const domain = `w${setup.round}-${target.name}.${setup.runId}.sink.example`;
  const tally = new RecipientTally(domain);
  useTally(tally);
  try {
    const generator = await runSmtpSource(
      setup.smtpSource,
      { ...setup.load, messages, to: `rcpt@${domain}` },
      target.smtpPort,
      setup.limits.generatorMs,
    );
    if (generator.exitCode !== 0) {
      const how = generator.timedOut ? 'timed out' : `exit ${String(generator.exitCode ?? generator.signal)}`;
      throw new Error(
        `warm-up of ${target.name}: smtp-source failed (${how}): ${generator.output.split('\n').slice(-3).join(' / ')}`,
      );
    }
    const wait = await tally.waitFor(messages, [], setup.limits.noProgressMs, setup.limits.deadline, () =>
      target.halted(),
    );
    if (!wait.complete)
      throw new Error(`warm-up of ${target.name}: ${tally.load.size}/${messages} at the sink (${wait.reason})`);
    if (tally.duplicates > 0 || tally.unexpected > 0)
      throw new Error(
        `warm-up of ${target.name}: ${tally.duplicates} duplicated, ${tally.unexpected} unexpected at the sink`,
      );
  } finally {
    useTally(null);
  }
}

export async function runPhase(
  setup: PhaseSetup,
  target: Target,
  useTally: (tally: RecipientTally | null) => void,
): Promise<PhaseResult> {
  const domain = `r${setup.round}-${target.name}.${setup.runId}.sink.example`;
  const tally = new RecipientTally(domain);
  useTally(tally);
  const notes: string[] = [];
  const memory = new PssSampler(() => target.pids(), PSS_SAMPLE_MS);
  memory.start();
  const probe =
    setup.probeRate > 0
      ? new LatencyProbe({
          port: target.smtpPort,
          ratePerSecond: setup.probeRate,
          maxInFlight: PROBE_MAX_IN_FLIGHT,
          size: setup.load.payloadBytes,
          domain,
          runId: setup.runId,
          timeouts: setup.limits.probe,
        })
      : null;
  try {
    const cpuBefore = target.cpuSeconds();
    const scheduleBefore = target.mainThread();
    const phaseStart = performance.now();
    probe?.start();
    const generator = await runSmtpSource(
      setup.smtpSource,
      { ...setup.load, to: `rcpt@${domain}` },
      target.smtpPort,
      setup.limits.generatorMs,
    );
    const probed: ProbeResult = probe ? await probe.stop() : { accepted: [], latenciesMs: [], failures: 0, skipped: 0 };
    const generatorOk = generator.exitCode === 0;
    if (!generatorOk) {
      const how = generator.timedOut
        ? `killed after ${setup.limits.generatorMs / 1000} s`
        : `exit ${String(generator.exitCode ?? generator.signal)}`;
      const tail = generator.output ? `: ${generator.output.split('\n').slice(-3).join(' / ')}` : '';
      notes.push(`smtp-source failed (${how})${tail}`);
    }

    const noProgress = generatorOk ? setup.limits.noProgressMs : setup.limits.noProgressAfterFailureMs;
    const wait = await tally.waitFor(setup.load.messages, probed.accepted, noProgress, setup.limits.deadline, () =>
      target.halted(),
    );
    if (!wait.complete) notes.push(`stopped waiting for the sink: ${wait.reason}`);
    await memory.stop();
    const vmHwmBytes = target.peakRssBytes();
    const cpuAfter = target.cpuSeconds();
    const scheduleAfter = target.mainThread();
    const windowNs = (performance.now() - phaseStart) * 1e6;
    const cpuSeconds = cpuBefore === null || cpuAfter === null ? null : Math.round((cpuAfter - cpuBefore) * 100) / 100;
    const relayed = tally.load.size + tally.probes.size;

    const last = tally.lastLoadArrival();
    const delivered = tally.load.size;
    const complete = delivered >= setup.load.messages;
    const endToEndMs = complete && last !== null ? last - generator.startedAt : null;
    return {
      target: target.name,
      round: setup.round,
      messages: setup.load.messages,
      delivered,
      missing: Math.max(0, setup.load.messages - delivered),
      duplicated: tally.duplicates,
      unexpected: tally.unexpected,
      generatorOk,
      endToEndRate: endToEndMs === null ? null : round1(delivered / (endToEndMs / 1000)),
      endToEndMs: endToEndMs === null ? null : Math.round(endToEndMs),
      acceptRate: generatorOk ? round1(setup.load.messages / (generator.durationMs / 1000)) : null,
      probe: {
        sent: probed.accepted.length + probed.failures,
        accepted: probed.accepted.length,
        missing: probed.accepted.filter((p) => !tally.probes.has(p)).length,
        failures: probed.failures,
        skipped: probed.skipped,
        latencyMs: latency(probed.latenciesMs),
        latenciesMs: probed.latenciesMs.map(round1),
      },
      memory: { pssMaxBytes: memory.maxBytes, processesMax: memory.maxProcesses, vmHwmBytes },
      cpu: {
        seconds: cpuSeconds,
        msPerMessage: cpuSeconds === null || relayed === 0 ? null : round2((cpuSeconds * 1000) / relayed),
      },
      mainThread: scheduleShare(scheduleBefore, scheduleAfter, windowNs),
      notes,
    };
  } finally {
    await probe?.stop();
    await memory.stop();
    useTally(null);
  }
}

/** Nearest-rank percentiles (p99 of 200 samples is the third largest). */
export function latency(values: readonly number[]): Latency | null {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  const at = (p: number) =>
    round1(sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]);
  return { p50: at(50), p99: at(99), max: at(100), samples: sorted.length };
}

function round2(value: number): number {
  return Math.round(value * 100) / 100;
}

function round1(value: number): number {
  return Math.round(value * 10) / 10;
}
