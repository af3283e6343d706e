import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { availableParallelism } from 'node:os';
import * as path from 'node:path';
import { SmtpSink } from '../../src/tools/sink';
import { ensurePostfix } from '../postfix/binaries';
import { runPhase, warmUp, type PhaseResult, type PhaseSetup } from './phase';
import { buildComparison, formatComparison, ratios, type ComparisonReport, type RoundResult } from './report';
import type { RecipientTally } from './tally';
import { sinkTarget, startPostfix, startSmarthop, type Target } from './targets';

/**
 * `npm run bench -- --compare postfix`: smarthop and a private Postfix, each relaying the same
 * smtp-source load to the same in-process sink, alternately (smarthop, Postfix, smarthop, …), each
 * started fresh for its phase and warmed up with the same load before it is measured. The machine is
 * shared and drifts by ±25% over minutes, so figures are paired per round and the ratio of each pair
 * is what to read.
 */

export interface CompareOptions {
  messages: number;
  /** smtp-source body bytes (-l). */
  size: number;
  connections: number;
  rounds: number;
  /** Latency probe messages per second; 0 switches the probe off. */
  probeRate: number;
  json: boolean;
  /** smarthop with every policy rule on / with its route's rewrites and DKIM (issue 9's last target). */
  fullPolicy: boolean;
  reenvelope: boolean;
  /** Messages each relay relays after its start and before its measured phase (0: measure it cold). */
  warmup: number;
  /** false: smarthop with `delivery.worker_thread: false`. */
  deliveryThread: boolean;
}

const LIMITS = {
  /** Generous per phase: Postfix at its slowest here still did ~200 msg/s. */
  generatorMs: 10 * 60_000,
  noProgressMs: 60_000,
  noProgressAfterFailureMs: 10_000,
  overallMs: 90 * 60_000,
  probe: { connectMs: 10_000, replyMs: 60_000 },
  /** Between phases: lets the previous relay's deleted spool and its sockets settle. */
  pauseMs: 2_000,
};

export async function runComparison(options: CompareOptions): Promise<number> {
  let smtpSource: string;
  let postfix: string;
  try {
    ({ smtpSource, postfix } = ensurePostfix());
  } catch (err) {
    process.stderr.write(`bench: ${(err as Error).message}\n`);
    return 2;
  }
  const runId = randomBytes(3).toString('hex');
  const deadline = Date.now() + LIMITS.overallMs;
  const setup = (round: number): PhaseSetup => ({
    round,
    smtpSource,
    runId,
    probeRate: options.probeRate,
    load: {
      messages: options.messages,
      sessions: options.connections,
      payloadBytes: options.size,
      from: 'bench@bench.localhost',
      heloName: 'bench.localhost',
    },
    limits: { ...LIMITS, deadline },
  });

  let tally: RecipientTally | null = null;
  let stray = 0;
  const sink = new SmtpSink({ port: 0, onMessage: (message) => (tally ? tally.record(message) : stray++) });
  const useTally = (next: RecipientTally | null) => {
    tally = next;
  };
  const progress = (line: string) => {
    if (!options.json) process.stderr.write(`${line}\n`);
  };

  try {
    const sinkPort = (await sink.listen()).port;
    progress(`bench: harness ceiling, smtp-source straight into the sink on 127.0.0.1:${sinkPort}`);
    const ceiling = await runPhase(setup(0), sinkTarget(sinkPort), useTally);

    const rounds: RoundResult[] = [];
    for (let round = 1; round <= options.rounds && Date.now() < deadline; round++) {
      const phases: PhaseResult[] = [];
      for (const start of [
        () =>
          startSmarthop(sinkPort, options.size, {
            limits: false,
            fullPolicy: options.fullPolicy,
            reenvelope: options.reenvelope,
            deliveryThread: options.deliveryThread,
          }),
        () => startPostfix(sinkPort, postfix),
      ]) {
        await sleep(LIMITS.pauseMs);
        const target: Target = await start();
        try {
          progress(`bench: round ${round}/${options.rounds}: ${target.name} on 127.0.0.1:${target.smtpPort}`);
          if (options.warmup > 0) {
            progress(`bench:   warm-up: ${options.warmup} messages, not measured`);
            await warmUp(setup(round), target, useTally, options.warmup);
          }
          const phase = await runPhase(setup(round), target, useTally);
          phase.notes.push(...(await target.stop()));
          progress(
            `bench:   ${phase.endToEndRate ?? 'n/a'} msg/s end to end, ` +
              `${phase.delivered}/${phase.messages} at the sink`,
          );
          phases.push(phase);
        } catch (err) {
          await target.stop();
          throw err;
        }
      }
      const [smarthop, postfixPhase] = phases;
      rounds.push({ round, smarthop, postfix: postfixPhase, ratios: ratios(smarthop, postfixPhase) });
    }
    if (stray > 0) process.stderr.write(`bench: ${stray} message(s) reached the sink between phases\n`);

    const report: ComparisonReport = buildComparison(
      {
        messages: options.messages,
        payloadBytes: options.size,
        sessions: options.connections,
        generator: 'smtp-source',
        probeRate: options.probeRate,
        rounds: options.rounds,
        warmup: options.warmup,
        smarthopPolicy: [
          ...(options.fullPolicy ? ['every policy rule'] : []),
          ...(options.reenvelope ? ['rewrites + RSA-2048 DKIM'] : []),
          ...(options.deliveryThread ? [] : ['delivery on the event loop (delivery.worker_thread: false)']),
        ],
      },
      { cpus: availableParallelism(), node: process.version, postfix: postfixVersion(postfix) },
      ceiling,
      rounds,
    );
    process.stdout.write(options.json ? `${JSON.stringify(report)}\n` : formatComparison(report));
    return report.ok ? 0 : 1;
  } finally {
    await sink.close();
  }
}

function postfixVersion(postfixBinary: string): string | null {
  const run = spawnSync(path.join(path.dirname(postfixBinary), 'postconf'), ['-d', '-h', 'mail_version'], {
    encoding: 'utf8',
    timeout: 10_000,
  });
  return run.status === 0 ? run.stdout.trim() : null;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
