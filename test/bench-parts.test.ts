import { alignedTable, buildComparison, formatComparison, median, ratios } from '../bench/compare/report';
import { latency, type PhaseResult } from '../bench/compare/phase';
import { RecipientTally } from '../bench/compare/tally';
import { smtpSourceArgs } from '../bench/load/smtp-source';
import { benchConfigYaml } from '../bench/relay-process';
import { parse as parseYaml } from 'yaml';
import { parseConfig } from '../src/config/load';
import { mainCf, masterCf, postfixLayout } from '../bench/postfix/config';
import { summarizeProfile, type CpuProfile } from '../bench/profile/cpu-profile';
import type { SinkMessage } from '../src/tools/sink';

/** The benchmark's pure parts: what it counts, what it configures, how it reads a profile. */

function arrival(...to: string[]): SinkMessage {
  return {
    from: 'bench@bench.localhost',
    to,
    data: Buffer.from(''),
    messageId: '<same@vm>',
    secure: false,
    authUser: null,
    bodyType: '7bit',
  };
}

describe('RecipientTally: the sink counts each phase by unique recipient', () => {
  test('load and probe recipients of its domain count once; repeats are duplicates; the rest is unexpected', () => {
    const tally = new RecipientTally('r1-postfix.abc.sink.example');
    tally.record(arrival('1rcpt@r1-postfix.abc.sink.example'));
    tally.record(arrival('2rcpt@R1-Postfix.abc.sink.example'));
    tally.record(arrival('1rcpt@r1-postfix.abc.sink.example'));
    tally.record(arrival('probe-0@r1-postfix.abc.sink.example'));
    tally.record(arrival('3rcpt@r1-smarthop.abc.sink.example', 'someone@r1-postfix.abc.sink.example'));
    expect(tally.load.size).toBe(2);
    expect([...tally.probes]).toEqual(['probe-0@r1-postfix.abc.sink.example']);
    expect(tally.duplicates).toBe(1);
    expect(tally.unexpected).toBe(2);
    expect(tally.lastLoadArrival()).not.toBeNull();
  });

  test('waitFor resolves once the load and every accepted probe arrived, and gives up without progress', async () => {
    const tally = new RecipientTally('d.example');
    const waiting = tally.waitFor(2, ['probe-0@d.example'], 5_000, Date.now() + 5_000, () => null);
    tally.record(arrival('1rcpt@d.example', '2rcpt@d.example'));
    tally.record(arrival('probe-0@d.example'));
    await expect(waiting).resolves.toEqual({ complete: true, reason: '' });
    await expect(
      new RecipientTally('d.example').waitFor(1, [], 300, Date.now() + 5_000, () => null),
    ).resolves.toMatchObject({ complete: false });
  });
});

describe('the private Postfix configuration', () => {
  const layout = postfixLayout('/tmp/x');
  const main = mainCf(layout, { smtp: 40001, sink: 40002 });
  const master = masterCf({ smtp: 40001, sink: 40002 });

  test('is loopback only and relays everything to the sink', () => {
    expect(main).toMatch(/^inet_interfaces = 127\.0\.0\.1$/m);
    expect(main).toMatch(/^inet_protocols = ipv4$/m);
    expect(main).toMatch(/^mynetworks = 127\.0\.0\.0\/8$/m);
    expect(main).toMatch(/^relayhost = \[127\.0\.0\.1\]:40002$/m);
    expect(master).toMatch(/^127\.0\.0\.1:40001 +inet /m);
    expect(master).not.toMatch(/^(smtp|submission|smtps) +inet/m);
  });

  test('keeps its queue, data and log in its own directory', () => {
    expect(main).toMatch(/^queue_directory = \/tmp\/x\/queue$/m);
    expect(main).toMatch(/^data_directory = \/tmp\/x\/data$/m);
    expect(main).toMatch(/^maillog_file = \/tmp\/x\/maillog$/m);
  });
});

test('smtp-source gets numbered recipients, one message per session (no -d) and a loopback target', () => {
  const args = smtpSourceArgs(
    { messages: 5000, sessions: 20, payloadBytes: 10240, from: 'b@x', to: 'rcpt@y', heloName: 'x' },
    2525,
  );
  expect(args).toContain('-N');
  expect(args).not.toContain('-d');
  expect(args.slice(0, 6)).toEqual(['-s', '20', '-m', '5000', '-l', '10240']);
  expect(args[args.length - 1]).toBe('127.0.0.1:2525');
});

test('median and the aligned table', () => {
  expect(median([3, 1, 2])).toBe(2);
  expect(median([4, 1, 2, 3])).toBe(2.5);
  expect(median([])).toBeNull();
  expect(
    alignedTable(
      ['round', 'value'],
      [
        ['1', '5.0'],
        ['median', '12.5'],
      ],
    ),
  ).toBe('round    value\n1          5.0\nmedian    12.5\n');
});

describe("the comparison pools every round's probes", () => {
  const phase = (target: 'smarthop' | 'postfix', round: number, latenciesMs: number[]): PhaseResult => ({
    target,
    round,
    messages: 100,
    delivered: 100,
    missing: 0,
    duplicated: 0,
    unexpected: 0,
    generatorOk: true,
    endToEndRate: 100,
    endToEndMs: 1000,
    acceptRate: 100,
    probe: {
      sent: latenciesMs.length,
      accepted: latenciesMs.length,
      missing: 0,
      failures: 0,
      skipped: 0,
      latencyMs: latency(latenciesMs),
      latenciesMs,
    },
    memory: { pssMaxBytes: 1, processesMax: 1, vmHwmBytes: 1 },
    cpu: { seconds: 1, msPerMessage: 1 },
    mainThread: null,
    notes: [],
  });
  // 100 probes a round: 99 fast ones and one slow, except in round 3, where 5 of them are slow.
  const probes = (fast: number, slow: number, slowCount: number) => [
    ...Array<number>(100 - slowCount).fill(fast),
    ...Array<number>(slowCount).fill(slow),
  ];
  const rounds = [probes(2, 50, 1), probes(3, 60, 1), probes(4, 70, 5)].map((latencies, i) => {
    const smarthop = phase('smarthop', i + 1, latencies);
    const postfix = phase(
      'postfix',
      i + 1,
      latencies.map((ms) => ms * 2),
    );
    return { round: i + 1, smarthop, postfix, ratios: ratios(smarthop, postfix) };
  });
  const load = {
    messages: 100,
    payloadBytes: 10,
    sessions: 1,
    generator: 'smtp-source',
    probeRate: 20,
    rounds: 3,
    warmup: 0,
  };
  const report = buildComparison(load, { cpus: 2, node: 'v20', postfix: '3.7' }, null, rounds);

  test("the p99 over all rounds' probes is taken from every sample, not from the rounds' p99s", () => {
    // Per round the p99 (nearest rank: the 99th of 100) is 2, 3 and 70: their median is 3.
    expect(report.median.smarthop.latencyP99Ms).toBe(3);
    // Together: 300 probes, 7 of them slow; the 297th is one of round 3's slow ones.
    expect(report.pooledLatencyMs.smarthop).toEqual({ p50: 3, p99: 70, max: 70, samples: 300 });
    expect(report.pooledLatencyMs.postfix).toEqual({ p50: 6, p99: 140, max: 140, samples: 300 });
    const text = formatComparison(report);
    // Right under the p99 table, before the next one.
    const p99Table = text.indexOf('accept latency p99, ms');
    const pooled = text.indexOf(
      "every round's probes together, ms: smarthop p50 3.0  p99 70.0  max 70.0 (300 probes); " +
        'postfix p50 6.0  p99 140.0',
    );
    expect(p99Table).toBeGreaterThan(-1);
    expect(pooled).toBeGreaterThan(p99Table);
    expect(text.slice(p99Table, pooled)).toMatch(/\nmedian {2,}3\.0 {2,}6\.0 {2,}0\.50x\n$/);
  });

  test('percentiles are nearest-rank: p99 of 200 samples is the third largest, p50 the 100th', () => {
    expect(latency(Array.from({ length: 200 }, (_, i) => i + 1))).toEqual({
      p50: 100,
      p99: 198,
      max: 200,
      samples: 200,
    });
    expect(latency([])).toBeNull();
  });
});

describe('summarizeProfile', () => {
  // root -> main -> write (native, 30 hits); root -> other -> write (10); main: 20 self; idle 40; gc 20
  const frame = (functionName: string, url: string, lineNumber = 0) => ({
    functionName,
    url,
    lineNumber,
    columnNumber: 0,
  });
  const profile: CpuProfile = {
    startTime: 0,
    endTime: 120_000,
    nodes: [
      { id: 1, callFrame: frame('(root)', ''), children: [2, 4, 6, 7] },
      { id: 2, callFrame: frame('main', 'file:///app/dist/src/relay.js', 9), hitCount: 20, children: [3] },
      { id: 3, callFrame: frame('writeUtf8String', ''), hitCount: 30 },
      { id: 4, callFrame: frame('other', 'file:///app/node_modules/smtp-server/lib/x.js', 4), children: [5] },
      { id: 5, callFrame: frame('writeUtf8String', ''), hitCount: 10 },
      { id: 6, callFrame: frame('(idle)', ''), hitCount: 40 },
      { id: 7, callFrame: frame('(garbage collector)', ''), hitCount: 20 },
    ],
  };
  const summary = summarizeProfile(profile, 15, '/app');

  test('sums a function over its call paths, by hits × the mean sampling interval, idle apart', () => {
    expect(summary.sampleIntervalUs).toBe(1000);
    expect(summary.idleMs).toBe(40);
    expect(summary.busyMs).toBe(80);
    expect(summary.top.map((e) => [e.name, e.selfMs, e.percentOfBusy])).toEqual([
      ['writeUtf8String', 40, 50],
      ['main', 20, 25],
      ['(garbage collector)', 20, 25],
    ]);
  });

  test('names the calling code of native entries, the location and the area of each', () => {
    expect(summary.top[0]).toMatchObject({ location: '', area: 'v8/native', topCaller: 'main dist/src/relay.js:10' });
    expect(summary.top[1]).toMatchObject({ location: 'dist/src/relay.js:10', area: 'smarthop' });
    expect(summary.areas.map((a) => a.area)).toEqual(['v8/native', 'smarthop']);
    // The native write is charged to its callers (30 hits to smarthop's main, 10 to smtp-server); GC has no caller.
    expect(summary.attributed.map((a) => [a.area, a.selfMs])).toEqual([
      ['smarthop', 50],
      ['v8/native', 20],
      ['smtp-server', 10],
    ]);
  });
});

describe('benchConfigYaml: the relay config the bench writes', () => {
  const ports = { smtp: 2525, http: 9465, sink: 2601 };
  const load = (state: Parameters<typeof benchConfigYaml>[3]) => {
    const result = parseConfig(
      parseYaml(benchConfigYaml('/tmp/bench-dir', ports, 1_000_000, state)),
      '/tmp/bench-dir',
      {},
    );
    if (!result.ok) throw new Error(`bench config refused: ${JSON.stringify(result)}`);
    return result.config;
  };

  test('is a valid relay config with the delivery thread on by default, and --no-delivery-thread turns it off', () => {
    expect(load({ limits: false }).delivery.worker_thread).toBe(true);
    expect(load({ limits: false, deliveryThread: false }).delivery.worker_thread).toBe(false);
  });
});
