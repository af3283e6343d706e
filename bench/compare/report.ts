import { latency, type Latency, type PhaseResult } from './phase';

/**
 * The comparison's figures: per round, smarthop against the Postfix phase that ran right after it
 * (so both saw the same minutes of a drifting machine), their ratios, and the medians over rounds.
 * The median ratio is the median of the per-round ratios, not the ratio of the medians: it is the
 * per-round pairing that cancels the drift.
 */

export interface Ratios {
  /** smarthop / Postfix: above 1 means smarthop delivered faster. */
  endToEnd: number | null;
  /** smarthop / Postfix: above 1 means smarthop acknowledged faster. */
  accept: number | null;
  /** smarthop / Postfix: below 1 means smarthop answered the final "." sooner. */
  latencyP99: number | null;
  /** smarthop peak RSS / Postfix peak summed PSS: below 1 means smarthop used less. */
  memory: number | null;
  /** smarthop / Postfix CPU per message: below 1 means smarthop did the job with less CPU. */
  cpuPerMessage: number | null;
}

export interface RoundResult {
  round: number;
  smarthop: PhaseResult;
  postfix: PhaseResult;
  ratios: Ratios;
}

export interface Figures {
  endToEndRate: number | null;
  acceptRate: number | null;
  latencyP99Ms: number | null;
  /** smarthop: VmHWM (its peak RSS); Postfix: the largest sampled sum of PSS over its processes. */
  memoryBytes: number | null;
  cpuMsPerMessage: number | null;
}

export interface ComparisonReport {
  /** `smarthopPolicy`: what smarthop ran with beyond the plain relay (every policy rule, rewrites + DKIM). */
  /** `warmup`: messages each relay relayed, unmeasured, between its start and its measured phase. */
  load: {
    messages: number;
    payloadBytes: number;
    sessions: number;
    generator: string;
    probeRate: number;
    rounds: number;
    warmup: number;
    smarthopPolicy?: string[];
  };
  machine: { cpus: number; node: string; postfix: string | null };
  /** smtp-source straight into the sink: what the harness can do with no relay in between. */
  ceiling: PhaseResult | null;
  rounds: RoundResult[];
  median: { smarthop: Figures; postfix: Figures; ratios: Ratios };
  /**
   * Every round's probes of one relay taken together. A round's p99 rests on its two or three slowest
   * probes (~200 per round at 20/s), so the median of the rounds' p99s moves a lot from run to run;
   * the p99 over all rounds' probes uses every sample, and the noisiest rounds weigh in with theirs.
   */
  pooledLatencyMs: { smarthop: Latency | null; postfix: Latency | null };
  /** Messages with a 250 that never reached the sink (generator and probe), per relay over all rounds. */
  lost: { smarthop: number; postfix: number };
  /** Every phase ran its load to the end with nothing lost. */
  ok: boolean;
}

export function figures(phase: PhaseResult): Figures {
  return {
    endToEndRate: phase.endToEndRate,
    acceptRate: phase.acceptRate,
    latencyP99Ms: phase.probe.latencyMs?.p99 ?? null,
    memoryBytes: phase.target === 'smarthop' ? phase.memory.vmHwmBytes : phase.memory.pssMaxBytes,
    cpuMsPerMessage: phase.cpu.msPerMessage,
  };
}

export function ratios(smarthop: PhaseResult, postfix: PhaseResult): Ratios {
  const a = figures(smarthop);
  const b = figures(postfix);
  return {
    endToEnd: ratio(a.endToEndRate, b.endToEndRate),
    accept: ratio(a.acceptRate, b.acceptRate),
    latencyP99: ratio(a.latencyP99Ms, b.latencyP99Ms),
    memory: ratio(a.memoryBytes, b.memoryBytes),
    cpuPerMessage: ratio(a.cpuMsPerMessage, b.cpuMsPerMessage),
  };
}

/**
 * A 250 the sink never saw. When smtp-source failed, its shortfall is not counted as lost (not every message got a
 * 250).
 */
export function lostIn(phase: PhaseResult): number {
  return (phase.generatorOk ? phase.missing : 0) + phase.probe.missing;
}

export function phaseOk(phase: PhaseResult): boolean {
  return phase.generatorOk && phase.missing === 0 && phase.probe.missing === 0;
}

export function buildComparison(
  load: ComparisonReport['load'],
  machine: ComparisonReport['machine'],
  ceiling: PhaseResult | null,
  rounds: RoundResult[],
): ComparisonReport {
  const column = <T>(pick: (r: RoundResult) => T | null): T[] => rounds.map(pick).filter((v): v is T => v !== null);
  const medianFigures = (side: 'smarthop' | 'postfix'): Figures => ({
    endToEndRate: median(column((r) => figures(r[side]).endToEndRate)),
    acceptRate: median(column((r) => figures(r[side]).acceptRate)),
    latencyP99Ms: median(column((r) => figures(r[side]).latencyP99Ms)),
    memoryBytes: median(column((r) => figures(r[side]).memoryBytes)),
    cpuMsPerMessage: median(column((r) => figures(r[side]).cpuMsPerMessage)),
  });
  const phases = [...(ceiling ? [ceiling] : []), ...rounds.flatMap((r) => [r.smarthop, r.postfix])];
  return {
    load,
    machine,
    ceiling,
    rounds,
    median: {
      smarthop: medianFigures('smarthop'),
      postfix: medianFigures('postfix'),
      ratios: {
        endToEnd: median(column((r) => r.ratios.endToEnd)),
        accept: median(column((r) => r.ratios.accept)),
        latencyP99: median(column((r) => r.ratios.latencyP99)),
        memory: median(column((r) => r.ratios.memory)),
        cpuPerMessage: median(column((r) => r.ratios.cpuPerMessage)),
      },
    },
    pooledLatencyMs: {
      smarthop: latency(rounds.flatMap((r) => r.smarthop.probe.latenciesMs)),
      postfix: latency(rounds.flatMap((r) => r.postfix.probe.latenciesMs)),
    },
    lost: {
      smarthop: rounds.reduce((n, r) => n + lostIn(r.smarthop), 0),
      postfix: rounds.reduce((n, r) => n + lostIn(r.postfix), 0),
    },
    ok: rounds.length > 0 && phases.every(phaseOk),
  };
}

export function median(values: readonly number[]): number | null {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  const value = sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
  return Math.round(value * 1000) / 1000;
}

function ratio(a: number | null, b: number | null): number | null {
  return a === null || b === null || b === 0 ? null : Math.round((a / b) * 1000) / 1000;
}

// ---------------------------------------------------------------------------------------------
// the text form

/** Columns after the first are right-aligned: they hold numbers. */
export function alignedTable(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const all = [header, ...rows];
  const widths = header.map((_, c) => Math.max(...all.map((row) => (row[c] ?? '').length)));
  const line = (row: readonly string[]) =>
    row
      .map((cell, c) => (c === 0 ? cell.padEnd(widths[c]) : cell.padStart(widths[c])))
      .join('   ')
      .trimEnd();
  return `${[line(header), ...rows.map(line)].join('\n')}\n`;
}

const num = (value: number | null, digits = 1) => (value === null ? 'n/a' : value.toFixed(digits));
const times = (value: number | null) => (value === null ? 'n/a' : `${value.toFixed(2)}x`);
const mib = (bytes: number | null) => (bytes === null ? 'n/a' : (bytes / (1024 * 1024)).toFixed(1));

interface Metric {
  title: string;
  value: (f: Figures) => string;
  ratio: (r: Ratios) => string;
  /** Printed right under the metric's table. */
  footer?: (report: ComparisonReport) => string;
}

const METRICS: Metric[] = [
  {
    title: 'end-to-end msg/s (start of load until the sink has every message; higher is better)',
    value: (f) => num(f.endToEndRate),
    ratio: (r) => times(r.endToEnd),
  },
  {
    title: 'accept msg/s (start of load until smtp-source has every 250)',
    value: (f) => num(f.acceptRate),
    ratio: (r) => times(r.accept),
  },
  {
    title: 'accept latency p99, ms (probe: final "." to 250 while the load runs; lower is better)',
    value: (f) => num(f.latencyP99Ms),
    ratio: (r) => times(r.latencyP99),
    footer: (report) => formatPooledLatency(report),
  },
  {
    title:
      'relay CPU ms per message (user + system of all its processes during the load; lower is better, ' +
      'steadier than msg/s on a busy machine)',
    value: (f) => num(f.cpuMsPerMessage, 2),
    ratio: (r) => times(r.cpuPerMessage),
  },
];

function formatPooledLatency(report: ComparisonReport): string {
  const side = (name: string, l: Latency | null) =>
    l === null
      ? `${name} n/a`
      : `${name} p50 ${num(l.p50)}  p99 ${num(l.p99)}  max ${num(l.max)} (${l.samples} probes)`;
  const { smarthop, postfix } = report.pooledLatencyMs;
  return `every round's probes together, ms: ${side('smarthop', smarthop)}; ${side('postfix', postfix)}\n`;
}

/**
 * smarthop's peak RSS against Postfix's summed PSS is the conservative pairing (RSS counts the node
 * binary's shared pages in full); smarthop's own PSS is shown beside it for the like-for-like view.
 */
function formatMemory(report: ComparisonReport): string {
  const row = (
    label: string,
    rssBytes: number | null,
    smarthopPss: number | null,
    postfixPss: number | null,
    processes: string,
    ratio: number | null,
  ) => [label, mib(rssBytes), mib(smarthopPss), mib(postfixPss), processes, times(ratio)];
  const rows = report.rounds.map((r) =>
    row(
      String(r.round),
      r.smarthop.memory.vmHwmBytes,
      r.smarthop.memory.pssMaxBytes,
      r.postfix.memory.pssMaxBytes,
      String(r.postfix.memory.processesMax),
      r.ratios.memory,
    ),
  );
  const medianPss = (side: 'smarthop' | 'postfix') =>
    median(report.rounds.map((r) => r[side].memory.pssMaxBytes).filter((v): v is number => v !== null));
  rows.push(
    row(
      'median',
      report.median.smarthop.memoryBytes,
      medianPss('smarthop'),
      medianPss('postfix'),
      '',
      report.median.ratios.memory,
    ),
  );
  return (
    "memory, MiB (smarthop peak RSS = VmHWM; PSS = peak of PSS summed over the relay's processes; " +
    'ratio = smarthop RSS / Postfix PSS)\n' +
    alignedTable(['round', 'smarthop RSS', 'smarthop PSS', 'postfix PSS', 'postfix procs', 'ratio'], rows)
  );
}

export function formatComparison(report: ComparisonReport): string {
  const { load } = report;
  let out = `smarthop vs Postfix ${report.machine.postfix ?? ''}: `;
  out += `${load.messages} messages x ${load.payloadBytes} B body over ${load.sessions} sessions, `;
  out += 'one message per session, ';
  const probe = load.probeRate > 0 ? ` + a ${load.probeRate}/s latency probe` : '';
  out += `generator ${load.generator}${probe}; `;
  out += `${load.rounds} round(s), smarthop then Postfix; ${report.machine.cpus} CPUs\n`;
  out +=
    load.warmup > 0
      ? `each relay started fresh per phase, then relayed ${load.warmup} messages of the same load ` +
        `(warm-up, not measured) before the measured ${load.messages}\n`
      : 'each relay started fresh per phase and measured from its first message (cold, no warm-up)\n';
  if (load.smarthopPolicy?.length)
    out += `smarthop with ${load.smarthopPolicy.join(' and ')} (Postfix relays plainly)\n`;
  if (report.ceiling) {
    const c = report.ceiling;
    const incomplete = phaseOk(c) ? '' : ` (incomplete: ${c.notes.join('; ')})`;
    out += `harness ceiling (smtp-source straight into the sink): ${num(c.endToEndRate)} msg/s${incomplete}\n`;
  }
  for (const metric of METRICS) {
    const rows = report.rounds.map((r) => [
      String(r.round),
      metric.value(figures(r.smarthop)),
      metric.value(figures(r.postfix)),
      metric.ratio(r.ratios),
    ]);
    rows.push([
      'median',
      metric.value(report.median.smarthop),
      metric.value(report.median.postfix),
      metric.ratio(report.median.ratios),
    ]);
    out += `\n${metric.title}\n${alignedTable(['round', 'smarthop', 'postfix', 'ratio'], rows)}`;
    if (metric.footer) out += metric.footer(report);
  }
  out += `\n${formatMemory(report)}`;
  const threads = report.rounds.map((r) => r.smarthop.mainThread).filter((t): t is NonNullable<typeof t> => t !== null);
  if (threads.length > 0) {
    const onCpu = threads.map((t) => `${t.onCpuPercent.toFixed(0)}%`).join(', ');
    const waiting = threads.map((t) => `${t.waitingForCpuPercent.toFixed(0)}%`).join(', ');
    out += `smarthop's event-loop thread, per round: on a CPU ${onCpu}; `;
    out += `runnable but waiting for a CPU ${waiting}\n`;
  }
  out += `lost (250 given, never at the sink): smarthop ${report.lost.smarthop}, postfix ${report.lost.postfix}\n`;
  for (const phase of [
    ...(report.ceiling ? [report.ceiling] : []),
    ...report.rounds.flatMap((r) => [r.smarthop, r.postfix]),
  ]) {
    const where = phase.target === 'sink' ? 'ceiling' : `round ${phase.round} ${phase.target}`;
    if (phase.missing > 0 || phase.duplicated > 0 || phase.unexpected > 0 || phase.probe.missing > 0) {
      out +=
        `${where}: missing ${phase.missing}, duplicated ${phase.duplicated}, ` +
        `unexpected ${phase.unexpected}, probe missing ${phase.probe.missing}\n`;
    }
    if (phase.probe.failures > 0 || phase.probe.skipped > 0)
      out +=
        `${where}: latency probe ${phase.probe.failures} failed, ` +
        `${phase.probe.skipped} ticks skipped (probes still in flight)\n`;
    for (const note of phase.notes) out += `${where}: ${note}\n`;
  }
  return out;
}
