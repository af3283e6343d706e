import { execFile } from 'node:child_process';
import { mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { promisify } from 'node:util';
import { Command, InvalidArgumentError } from 'commander';
import { parseTraceQuery } from '../src/trace/query';
import { traceMessages } from '../src/trace/trace';
import { TraceIndex } from '../src/trace/trace-index';
import { generateEvents } from './trace-events';

/**
 * `npm run bench -- --trace [--trace-events N]`: how fast `smarthop trace` answers over a big
 * events history. Writes N events (1,000,000 by default) of a day's traffic, rotated at 100 MiB as
 * the default config does, then times: building the index from nothing (once, when an existing
 * history meets this version; the relay then keeps it up to date every 30 s), and each kind of
 * query on an up-to-date index, in this process and as a whole `smarthop trace` command. Each query
 * runs `rounds` times; the median and the slowest are printed.
 */

interface TraceBenchOptions {
  events: number;
  rounds: number;
  json: boolean;
  keep: boolean;
}

interface Timing {
  label: string;
  medianMs: number;
  maxMs: number;
  stories: number;
  blocksRead: number;
}

const run = promisify(execFile);

function positiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError('expected an integer >= 1');
  return n;
}

function parseOptions(argv: readonly string[]): TraceBenchOptions {
  const program = new Command('bench --trace')
    .option('--trace', 'this benchmark')
    .option('--trace-events <n>', 'events to write', positiveInt, 1_000_000)
    .option('--rounds <n>', 'times each query runs', positiveInt, 5)
    .option('--json', 'one JSON object instead of the table', false)
    .option('--keep', 'leave the events folder behind (its path is printed)', false)
    .exitOverride((err) => process.exit(err.exitCode === 0 ? 0 : 2));
  program.parse(
    argv.filter((arg) => arg !== '--'),
    { from: 'user' },
  );
  const opts = program.opts<{ traceEvents: number; rounds: number; json: boolean; keep: boolean }>();
  return { events: opts.traceEvents, rounds: opts.rounds, json: opts.json, keep: opts.keep };
}

export async function runTraceBench(argv: readonly string[]): Promise<number> {
  const options = parseOptions(argv);
  const dir = await mkdtemp(path.join(tmpdir(), 'smarthop-bench-trace-'));
  const file = path.join(dir, 'events.jsonl');
  try {
    let started = performance.now();
    const generated = await generateEvents({ file, events: options.events, maxSize: 100 * 1024 * 1024, keep: 50 });
    const writeMs = performance.now() - started;
    const eventBytes = await folderBytes(dir, (name) => name.startsWith('events.jsonl') && !name.endsWith('.index'));
    const files = (await readdir(dir)).filter((name) => /^events\.jsonl(\.\d+)?$/.test(name)).length;

    started = performance.now();
    await new TraceIndex(file, { persist: true }).refresh();
    const buildMs = performance.now() - started;
    const indexBytes = await folderBytes(`${file}.index`, () => true);

    const { samples } = generated;
    const queries: [string, Record<string, string>][] = [
      ['queue id', { queue_id: samples.middle.queueId }],
      ['queue id of a DSN', { queue_id: samples.bounced.dsnId as string }],
      ['Message-ID', { message_id: samples.middle.messageId }],
      ['recipient, exact', { recipient: samples.middle.recipient }],
      [
        `recipient glob, whole range (${generated.rareRecipients} match)`,
        { recipient: 'rare-*@rare.example', limit: '1000' },
      ],
      ['recipient glob, newest 20', { recipient: '*@customer5.example' }],
      ['sender, newest 20', { sender: 'erp@corp.example' }],
      ['bounced, newest 20', { outcome: 'bounced' }],
      ['client, last 2 hours', { client: 'crm', since: '2h', limit: '1000' }],
    ];
    const timings: Timing[] = [];
    for (const [label, params] of queries) {
      const parsed = parseTraceQuery(new URLSearchParams(params), Date.now());
      if (!parsed.ok) throw new Error(`${label}: ${parsed.error}`);
      const runs: number[] = [];
      let stories = 0;
      let blocksRead = 0;
      for (let round = 0; round < options.rounds; round++) {
        // A fresh index object each time: what one `smarthop trace` or one API request does.
        const t = performance.now();
        const report = await traceMessages(new TraceIndex(file, { persist: true }), parsed.query);
        runs.push(performance.now() - t);
        stories = report.stories.length;
        blocksRead = report.scanned.blocks_read;
      }
      timings.push({ label, ...summary(runs), stories, blocksRead });
    }
    const cli = path.resolve(__dirname, '..', 'src', 'cli.js');
    const commandRuns: number[] = [];
    for (let round = 0; round < options.rounds; round++) {
      const t = performance.now();
      await run(process.execPath, [cli, 'trace', '--events', file, samples.middle.queueId, '--json']);
      commandRuns.push(performance.now() - t);
    }
    const command = summary(commandRuns);

    const result = {
      events: generated.events,
      messages: generated.messages,
      files,
      event_mib: mib(eventBytes),
      write_s: seconds(writeMs),
      index: { build_s: seconds(buildMs), mib: mib(indexBytes), share: Number((indexBytes / eventBytes).toFixed(3)) },
      queries: timings.map((t) => ({
        query: t.label,
        median_ms: Math.round(t.medianMs),
        max_ms: Math.round(t.maxMs),
        stories: t.stories,
        blocks_read: t.blocksRead,
      })),
      command: {
        query: 'smarthop trace --events … <queue id> (whole process)',
        median_ms: Math.round(command.medianMs),
        max_ms: Math.round(command.maxMs),
      },
    };
    if (options.json) {
      process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
    } else {
      const row = (label: string, value: string) => `${label.padEnd(48)} ${value}\n`;
      let out = row(
        'events',
        `${result.events.toLocaleString('en')} (${result.messages.toLocaleString('en')} messages) ` +
          `in ${files} files, ${result.event_mib} MiB`,
      );
      out += row(
        'index build from nothing',
        `${result.index.build_s} s (${result.index.mib} MiB, ${(result.index.share * 100).toFixed(1)}% of the events)`,
      );
      for (const q of result.queries)
        out += row(
          q.query,
          `${q.median_ms} ms median, ${q.max_ms} ms max (${q.stories} message(s), ${q.blocks_read} block(s) read)`,
        );
      out += row(
        'smarthop trace <queue id>, whole command',
        `${result.command.median_ms} ms median, ${result.command.max_ms} ms max`,
      );
      process.stdout.write(out);
    }
    if (options.keep) process.stderr.write(`events kept in ${dir}\n`);
    return 0;
  } finally {
    if (!options.keep) await rm(dir, { recursive: true, force: true });
  }
}

function summary(runs: number[]): { medianMs: number; maxMs: number } {
  const sorted = [...runs].sort((a, b) => a - b);
  return { medianMs: sorted[Math.floor(sorted.length / 2)], maxMs: sorted[sorted.length - 1] };
}

async function folderBytes(dir: string, include: (name: string) => boolean): Promise<number> {
  let total = 0;
  for (const name of await readdir(dir)) if (include(name)) total += (await stat(path.join(dir, name))).size;
  return total;
}

const mib = (bytes: number) => Number((bytes / 1024 / 1024).toFixed(1));
const seconds = (ms: number) => Number((ms / 1000).toFixed(1));
