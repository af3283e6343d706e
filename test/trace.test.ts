import {
  appendFileSync,
  chmodSync,
  copyFileSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import * as path from 'node:path';
import { generateEvents, type GeneratedEvents } from '../bench/trace-events';
import { normalizeAddress } from '../src/message/address';
import { AddressMatcher } from '../src/message/address-pattern';
import { AddressPattern } from '../src/trace/address-pattern';
import { runTrace } from '../src/trace/engine';
import { parseTimestamp, parseTraceQuery, type TraceQuery } from '../src/trace/query';
import { buildStory, dsnLinks, storyKey, storyMatches, type Story } from '../src/trace/story';
import { traceMessages } from '../src/trace/trace';
import { parseTraceEvent, type LocatedEvent } from '../src/trace/trace-event';
import { TraceIndex } from '../src/trace/trace-index';
import pino from 'pino';
import { ClientActivity } from '../src/observe/activity';
import { Metrics } from '../src/observe/metrics';
import { RelayObserver } from '../src/observe/observer';
import { removeDir, tempDir } from './helpers/temp-dir';

/**
 * The trace engine against a plain reading of every line: whatever the index lets it skip, it must
 * find exactly the stories a full scan finds. Events come from the bench's generator (failovers,
 * deferrals answered later, bounces with their DSN, refusals), rotated over several files.
 */

const query = (params: Record<string, string>): TraceQuery => {
  const parsed = parseTraceQuery(new URLSearchParams(params), Date.now());
  if (!parsed.ok) throw new Error(parsed.error);
  return parsed.query;
};

/** Every line of every file, oldest first, grouped into stories the slow and obvious way. */
function allStories(file: string): Story[] {
  const dir = path.dirname(file);
  const base = path.basename(file);
  const rank = (name: string) => (name === base ? 0 : Number(name.slice(base.length + 1)));
  const names = readdirSync(dir).filter(
    (n) => n === base || new RegExp(`^${base.replace('.', '\\.')}\\.\\d+$`).test(n),
  );
  names.sort((a, b) => rank(b) - rank(a));
  const located: LocatedEvent[] = [];
  for (const name of names) {
    readFileSync(path.join(dir, name), 'utf8')
      .split('\n')
      .forEach((line, i) => {
        const event = parseTraceEvent(line);
        if (event) located.push({ event, time: Date.parse(event.ts), at: `${name}:${i}` });
      });
  }
  const links = dsnLinks(located);
  const groups = new Map<string, LocatedEvent[]>();
  for (const event of located) {
    const key = storyKey(event, links);
    if (key !== null) groups.set(key, [...(groups.get(key) ?? []), event]);
  }
  return [...groups].map(([key, events]) => buildStory(key, events));
}

function fullScan(file: string, q: TraceQuery, stories = allStories(file)): Story[] {
  return stories.filter((story) => storyMatches(story, q));
}

const ids = (stories: Story[]) => stories.map((s) => s.queue_id ?? `rejected ${s.first_at}`).sort();

describe('trace over rotated events files', () => {
  let dir = '';
  let file = '';
  let generated: GeneratedEvents;

  beforeAll(async () => {
    dir = tempDir('smarthop-trace-');
    file = path.join(dir, 'events.jsonl');
    // ~2.4 MiB of events over four files of 600 KiB: each file a full 512 KiB block and a shorter one
    // (in the live file, its tail), so blocks, rotation and the live file's tail all take part.
    generated = await generateEvents({ file, events: 8_200, maxSize: 600 * 1024, keep: 5, seed: 11 });
  });
  afterAll(() => removeDir(dir));

  test('finds exactly what a full scan finds, for each kind of criterion', async () => {
    expect(readdirSync(dir).filter((n) => n.startsWith('events.jsonl.')).length).toBeGreaterThanOrEqual(3);
    const { deferred, bounced, middle } = generated.samples;
    const cases: Record<string, string>[] = [
      { queue_id: middle.queueId },
      { queue_id: deferred.queueId },
      { queue_id: bounced.queueId },
      { queue_id: bounced.dsnId as string },
      { message_id: middle.messageId },
      { message_id: middle.messageId.slice(1, -1) },
      { recipient: middle.recipient.toUpperCase() },
      { recipient: 'rare-*@rare.example', limit: '1000' },
      { recipient: 'customer7.example', limit: '1000' },
      { recipient: '*@archive.example', sender: 'crm@corp.example', limit: '1000' },
      { outcome: 'bounced', limit: '1000' },
      { outcome: 'rejected', limit: '1000' },
      { smarthost: 'backup', client: 'erp', limit: '1000' },
      { client: 'scanners', outcome: 'delivered', limit: '1000' },
      {
        from: new Date(generated.firstTs + 60_000).toISOString(),
        until: new Date(generated.firstTs + 120_000).toISOString(),
        limit: '1000',
      },
    ];
    const index = new TraceIndex(file, { persist: true });
    const stories = allStories(file);
    for (const params of cases) {
      const q = query(params);
      const expected = fullScan(file, q, stories);
      const answer = await traceMessages(index, q);
      expect({ params, found: ids(answer.stories) }).toEqual({ params, found: ids(expected).slice(0, q.limit) });
      expect(answer.more).toBe(expected.length > q.limit);
    }
  });

  test('a story has every event: failover attempts, the retry that came later, the DSN and its delivery', async () => {
    const index = new TraceIndex(file, { persist: true });
    const bounced = (await traceMessages(index, query({ queue_id: generated.samples.bounced.queueId }))).stories[0];
    expect(bounced.state).toBe('bounced');
    expect(bounced.events.map((e) => e.type)).toEqual([
      'received',
      'attempt',
      'bounced',
      'dsn',
      'attempt',
      'delivered',
    ]);
    expect(bounced.dsns).toEqual([
      expect.objectContaining({ queue_id: generated.samples.bounced.dsnId, state: 'delivered' }),
    ]);
    // Asked by the DSN's own id, the answer is the same story.
    const viaDsn = (await traceMessages(index, query({ queue_id: generated.samples.bounced.dsnId as string })))
      .stories[0];
    expect(viaDsn.events).toEqual(bounced.events);
    const deferred = (await traceMessages(index, query({ queue_id: generated.samples.deferred.queueId }))).stories[0];
    expect(deferred.state).toBe('delivered');
    const n = deferred.recipients.length;
    expect(deferred.events.map((e) => e.type)).toEqual([
      'received',
      'attempt',
      ...Array(n).fill('deferred'),
      'attempt',
      ...Array(n).fill('delivered'),
    ]);
    expect(deferred.recipients.every((r) => r.state === 'delivered' && r.attempt === 2)).toBe(true);
  });

  test('the index is a few % of the events, one file per events file, and follows a rotation', async () => {
    await traceMessages(new TraceIndex(file, { persist: true }), query({ queue_id: generated.samples.middle.queueId }));
    const indexDir = `${file}.index`;
    const eventBytes = readdirSync(dir)
      .filter((n) => n.startsWith('events.jsonl') && !n.endsWith('.index'))
      .reduce((n, name) => n + statSync(path.join(dir, name)).size, 0);
    const indexFiles = readdirSync(indexDir);
    const indexBytes = indexFiles.reduce((n, name) => n + statSync(path.join(indexDir, name)).size, 0);
    expect(indexFiles.length).toBe(readdirSync(dir).filter((n) => /^events\.jsonl(\.\d+)?$/.test(n)).length);
    expect(indexBytes / eventBytes).toBeLessThan(0.1);

    // A rotation renames the files; their index files (named by inode) stay valid, the oldest goes.
    const names = readdirSync(dir)
      .filter((n) => /^events\.jsonl\.\d+$/.test(n))
      .sort((a, b) => Number(b.split('.').pop()) - Number(a.split('.').pop()));
    for (const name of names) {
      const n = Number(name.split('.').pop());
      if (n >= 5) continue;
      renameSync(path.join(dir, name), path.join(dir, `events.jsonl.${n + 1}`));
    }
    renameSync(file, `${file}.1`);
    writeFileSync(file, '');
    const q = query({ recipient: 'rare-*@rare.example', limit: '1000' });
    const answer = await traceMessages(new TraceIndex(file, { persist: true }), q);
    expect(ids(answer.stories)).toEqual(ids(fullScan(file, q)));
    expect(readdirSync(indexDir).length).toBe(readdirSync(dir).filter((n) => /^events\.jsonl\.\d+$/.test(n)).length);
  });
});

describe('the index survives what a crash or an admin does to it', () => {
  let template = '';
  let dir = '';
  let file = '';
  let generated: GeneratedEvents;
  // One events file of a few blocks, made once; each test gets a copy (a new inode, so no index yet).
  beforeAll(async () => {
    template = tempDir('smarthop-trace-');
    const events = path.join(template, 'events.jsonl');
    generated = await generateEvents({ file: events, events: 6_000, maxSize: 100 * 1024 * 1024, keep: 1, seed: 3 });
  });
  afterAll(() => removeDir(template));
  beforeEach(() => {
    dir = tempDir('smarthop-trace-');
    file = path.join(dir, 'events.jsonl');
    copyFileSync(path.join(template, 'events.jsonl'), file);
  });
  afterEach(() => removeDir(dir));

  const indexFile = () => path.join(`${file}.index`, readdirSync(`${file}.index`).filter((n) => n.endsWith('.idx'))[0]);

  test('a torn last line, garbage and duplicate blocks are skipped; a wasteful index is rewritten', async () => {
    const q = query({ recipient: '*@archive.example', limit: '1000' });
    const expected = ids(fullScan(file, q));
    await traceMessages(new TraceIndex(file, { persist: true }), q);
    const lines = readFileSync(indexFile(), 'utf8').trim().split('\n');
    expect(lines.length).toBeGreaterThan(3);
    // Every block three more times, a garbage line, and a block torn in the middle of its write.
    const blocks = lines.slice(1).join('\n');
    appendFileSync(indexFile(), `${blocks}\n${blocks}\n${blocks}\nnot json\n${lines[1].slice(0, 100)}`);
    const again = await traceMessages(new TraceIndex(file, { persist: true }), q);
    expect(ids(again.stories)).toEqual(expected);
    // The duplicates outnumbered the blocks in use: the file was rewritten with just the chain.
    expect(readFileSync(indexFile(), 'utf8').trim().split('\n').length).toBe(lines.length);
  });

  test('an events file replaced or truncated under the same name gets a new index', async () => {
    const q = query({ queue_id: generated.samples.middle.queueId });
    expect((await traceMessages(new TraceIndex(file, { persist: true }), q)).stories).toHaveLength(1);
    // Same inode, new content: the header (a digest of the first line) no longer fits.
    writeFileSync(
      file,
      `${JSON.stringify({
        ts: new Date().toISOString(),
        type: 'received',
        queue_id: 'NEWFILE0001',
        client: 'lan',
        from: 'a@b.example',
        to: ['c@d.example'],
        smarthost: null,
        response: null,
        attempt: 0,
      })}\n`,
    );
    expect((await traceMessages(new TraceIndex(file, { persist: true }), q)).stories).toHaveLength(0);
    expect(
      (await traceMessages(new TraceIndex(file, { persist: true }), query({ queue_id: 'NEWFILE0001' }))).stories,
    ).toHaveLength(1);
  });

  test('an index it cannot write is no reason to fail: it answers from the events, and says so', async () => {
    if (process.getuid?.() === 0) {
      // root writes anywhere; a file where the index folder should be makes the folder impossible instead.
      writeFileSync(`${file}.index`, 'in the way');
    } else {
      mkdirSync(`${file}.index`);
      chmodSync(`${file}.index`, 0o500);
    }
    const q = query({ queue_id: generated.samples.bounced.queueId });
    const answer = await traceMessages(new TraceIndex(file, { persist: true }), q);
    expect(answer.stories.map((s) => s.queue_id)).toEqual([generated.samples.bounced.queueId]);
    expect(answer.notes).toEqual([expect.stringMatching(/cannot be written/)]);
  });

  test('a line being appended (no newline yet) is left for later, then read once complete', async () => {
    const line = JSON.stringify({
      ts: new Date().toISOString(),
      type: 'received',
      queue_id: 'LATEST00001',
      client: 'lan',
      from: 'a@b.example',
      to: ['late@d.example'],
      smarthost: null,
      response: null,
      attempt: 0,
    });
    appendFileSync(file, line.slice(0, 50));
    const index = new TraceIndex(file, { persist: true });
    expect((await traceMessages(index, query({ queue_id: 'LATEST00001' }))).stories).toHaveLength(0);
    appendFileSync(file, `${line.slice(50)}\n`);
    expect((await traceMessages(index, query({ queue_id: 'LATEST00001' }))).stories).toHaveLength(1);
  });

  test('the background refresh stores the new blocks, so a later query reads only the tail', async () => {
    const index = new TraceIndex(file, { persist: true });
    await index.refresh();
    const stored = readFileSync(indexFile(), 'utf8').trim().split('\n').length - 1;
    expect(stored).toBeGreaterThan(0);
    const opened = await index.open();
    const blocks = opened.files.flatMap((f) => f.blocks);
    expect(blocks.length - stored).toBeLessThanOrEqual(1);
    const result = await runTrace(opened.files, query({ queue_id: generated.samples.middle.queueId }));
    await opened.close();
    expect(result.stories).toHaveLength(1);
  });
});

describe('trace query parameters', () => {
  test('times: local without a zone, UTC with Z, offsets; impossible days refused', () => {
    expect(parseTimestamp('2026-11-01T15:00Z')).toBe(Date.UTC(2026, 10, 1, 15, 0));
    expect(parseTimestamp('2026-11-01 15:00:30.25+01:00')).toBe(Date.UTC(2026, 10, 1, 14, 0, 30, 250));
    expect(parseTimestamp('2026-11-01T15:00')).toBe(new Date(2026, 10, 1, 15, 0).getTime());
    expect(parseTimestamp('2026-11-01')).toBe(new Date(2026, 10, 1).getTime());
    for (const bad of ['2026-02-30', '2026-13-01', 'yesterday', '2026-11-01T25:00', '1700000000'])
      expect(parseTimestamp(bad)).toBeUndefined();
  });

  test('errors name the parameter', () => {
    const error = (params: Record<string, string>) => {
      const parsed = parseTraceQuery(new URLSearchParams(params), Date.now());
      return parsed.ok ? null : parsed.error;
    };
    expect(error({ outcome: 'lost' })).toMatch(/^outcome: unknown lost/);
    expect(error({ since: 'soon' })).toMatch(/^since: /);
    expect(error({ since: '1h', from: '2026-11-01' })).toMatch(/give one of them/);
    expect(error({ recipient: '!x@y' })).toMatch(/^recipient: negated/);
    expect(error({ limit: '0' })).toMatch(/^limit: /);
    expect(error({ until: '2026-11-01', from: '2026-11-02' })).toBe('until is before from');
    expect(error({ whatever: '1' })).toMatch(/^unknown parameter whatever/);
  });

  test('address patterns read ASCII addresses exactly as the policy normalises them', () => {
    const addresses = [
      'User@Example.COM',
      '<User@Example.COM.>',
      '<a/b@x.example>',
      'x@Example.com.',
      'postmaster',
      '',
      'a%41@b.example',
      'ü@bücher.example',
      'a@[10.0.0.1]',
      'A+tag@Sub.Example.org',
      'user@example.co',
    ];
    for (const pattern of [
      '*@example.com',
      'example.com',
      'a/*@*',
      '*',
      '<>',
      'postmaster',
      '*@bücher.example',
      'a+tag@sub.example.org',
      '*@b.example',
      'user@example.com',
      'x@example.com.',
      'aa@b.example',
    ]) {
      const compiled = AddressPattern.compile(pattern);
      if (!compiled.ok) throw new Error(compiled.error);
      const policy = AddressMatcher.of([pattern]);
      for (const address of addresses) {
        const viaPolicy = policy.matches(normalizeAddress(address));
        expect({ pattern, address, matches: compiled.pattern.matches(address) }).toEqual({
          pattern,
          address,
          matches: viaPolicy,
        });
      }
    }
  });
});

describe('the events the trace reads', () => {
  test('attempt and dsn events go to the events file, not to the webhook; received carries the Message-ID', () => {
    const metrics = new Metrics();
    const file: Record<string, unknown>[] = [];
    const webhook: Record<string, unknown>[] = [];
    const observer = new RelayObserver({
      metrics,
      logger: pino({ level: 'silent' }),
      outputs: [
        { traceEvents: true, write: (event) => file.push(event), close: async () => undefined },
        { write: (event) => webhook.push(event), close: async () => undefined },
      ],
      activity: new ClientActivity(),
    });
    observer.emit({
      type: 'received',
      queueId: 'Q1',
      client: 'lan',
      listener: 'smtp',
      remote: '10.0.0.5',
      from: 'a@corp.example',
      to: ['b@example.com'],
      size: 10,
      commitMs: 1,
      messageId: '<m1@corp.example>',
    });
    observer.emit({
      type: 'attempt',
      queueId: 'Q1',
      smarthost: 'primary',
      relay: 'primary[203.0.113.5]:587',
      outcome: 'failed',
      durationMs: 12.4,
      recipients: ['b@example.com'],
      accepted: 0,
      response: '550 5.1.1 No such user',
    });
    observer.emit({
      type: 'dsn',
      queueId: 'D1',
      original: 'Q1',
      to: ['a@corp.example'],
      recipients: ['b@example.com'],
    });
    expect(file.map((e) => e.type)).toEqual(['received', 'attempt', 'dsn']);
    expect(webhook.map((e) => e.type)).toEqual(['received']);
    expect(file[0]).toMatchObject({ message_id: '<m1@corp.example>', remote: '10.0.0.5', listener: 'smtp' });
    expect(file[1]).toMatchObject({
      queue_id: 'Q1',
      to: ['b@example.com'],
      outcome: 'failed',
      accepted: 0,
      duration_ms: 12,
    });
    expect(file[2]).toMatchObject({
      queue_id: 'Q1',
      dsn_id: 'D1',
      to: ['a@corp.example'],
      recipients: ['b@example.com'],
    });
  });
});
