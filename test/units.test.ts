import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Writable } from 'node:stream';
import { nextAttemptAt, orderSmartHosts, retryDelay } from '../src/forward/plan';
import { DataGuard, type LineEndingMode } from '../src/ingress/data-guard';
import { buildReceivedHeader } from '../src/ingress/received-header';

describe('orderSmartHosts', () => {
  const hosts = [
    { name: 'backup', priority: 20, weight: 1 },
    { name: 'a', priority: 10, weight: 3 },
    { name: 'b', priority: 10, weight: 1 },
  ];

  /** The orders of `n` consecutive messages, each using the rotation the previous one left. */
  function run(candidates: typeof hosts, n: number): string[][] {
    let rotation: Map<string, number> | undefined;
    const orders: string[][] = [];
    for (let i = 0; i < n; i++) {
      const planned = orderSmartHosts(candidates, rotation);
      rotation = planned.rotation;
      orders.push(planned.order.map((h) => h.name));
    }
    return orders;
  }

  test('lowest priority first; equals by smooth weighted round robin, interleaved, the rest as they fall due', () => {
    expect(run(hosts, 4)).toEqual([
      ['a', 'b', 'backup'],
      ['a', 'b', 'backup'],
      ['b', 'a', 'backup'],
      ['a', 'b', 'backup'],
    ]);
  });

  test.each([
    [[3, 1], 400, [300, 100]],
    [[1, 1], 10, [5, 5]],
    [[5, 2], 70, [50, 20]],
  ])('weights %p over %p messages lead exactly %p times', (weights, n, expected) => {
    const group = weights.map((weight, i) => ({ name: `h${i}`, priority: 10, weight }));
    const leads = run(group, n).map((order) => order[0]);
    expect(group.map((h) => leads.filter((name) => name === h.name).length)).toEqual(expected);
  });

  test('a lone host per priority keeps no rotation state and is never reordered', () => {
    const planned = orderSmartHosts([
      { name: 'backup', priority: 20, weight: 1 },
      { name: 'primary', priority: 10, weight: 7 },
    ]);
    expect(planned.order.map((h) => h.name)).toEqual(['primary', 'backup']);
    expect(planned.rotation.size).toBe(0);
  });
});

describe('nextAttemptAt', () => {
  const retry = { initial: 30_000, max: 3_600_000, factor: 2 };
  test.each([
    ['a host was tried, nothing skipped: backoff', { tried: true, attempts: 2, skippedUntil: [] }, 1000 + 60_000],
    [
      'tried, and a skipped host frees sooner than the backoff: then',
      { tried: true, attempts: 2, skippedUntil: [11_000, 21_000] },
      11_000,
    ],
    ['tried, skipped host frees later: backoff', { tried: true, attempts: 1, skippedUntil: [500_000] }, 31_000],
    [
      'nothing tried (all quota/breaker): exactly when the first host frees',
      { tried: false, attempts: 0, skippedUntil: [900_000, 400_000] },
      400_000,
    ],
    [
      'nothing tried and nothing skipped: backoff as for a first attempt',
      { tried: false, attempts: 0, skippedUntil: [] },
      31_000,
    ],
  ])('%s', (_what, input, expected) => {
    expect(nextAttemptAt({ now: 1000, retry, ...input })).toBe(expected);
  });
});

describe('retryDelay', () => {
  const retry = { initial: 30_000, max: 3_600_000, factor: 2 };
  test.each([
    [1, 30_000],
    [2, 60_000],
    [3, 120_000],
    [7, 1_920_000],
    [8, 3_600_000],
    [50, 3_600_000],
  ])('after attempt %p wait %p ms', (attempts, ms) => {
    expect(retryDelay(attempts, retry)).toBe(ms);
  });
});

async function guard(chunks: string[], mode: LineEndingMode, max = 1_000_000): Promise<{ out: string; g: DataGuard }> {
  const g = new DataGuard(max, mode);
  const parts: Buffer[] = [];
  await pipeline(
    Readable.from(chunks.map((c) => Buffer.from(c, 'latin1'))),
    g,
    new Writable({
      write: (c: Buffer, _e, cb) => {
        parts.push(c);
        cb();
      },
    }),
  );
  return { out: Buffer.concat(parts).toString('latin1'), g };
}

describe('DataGuard', () => {
  test('CRLF passes untouched, also when CR and LF arrive in different chunks', async () => {
    const { out, g } = await guard(['a\r', '\nb\r\n'], 'strict');
    expect(out).toBe('a\r\nb\r\n');
    expect(g.violation).toBeNull();
  });
  test.each([['x\ry'], ['x\r', 'y'], ['end\r']])('bare CR %p is a violation in both modes', async (...chunks) => {
    for (const mode of ['strict', 'normalize'] as const)
      expect((await guard(chunks, mode)).g.violation).toBe('bare_cr');
  });
  test('bare LF is normalised to CRLF and counted, or refused in strict mode', async () => {
    const normal = await guard(['a\nb\r\nc\n', '\nd'], 'normalize');
    expect(normal.out).toBe('a\r\nb\r\nc\r\n\r\nd');
    expect(normal.g.normalizedLineEndings).toBe(3);
    expect((await guard(['a\nb'], 'strict')).g.violation).toBe('bare_lf');
  });
  test('the classic smuggling payload `\\n.\\n` becomes an ordinary dot line inside the body', async () => {
    const { out } = await guard(['body\n.\nMAIL FROM:<evil@x>\r\n'], 'normalize');
    expect(out).toBe('body\r\n.\r\nMAIL FROM:<evil@x>\r\n');
  });
  test('past the size limit it stops passing data but keeps counting', async () => {
    const { out, g } = await guard(['12345', '67890', 'abc'], 'strict', 8);
    expect(g.oversize).toBe(true);
    expect(out).toBe('12345');
    expect(g.bytesIn).toBe(13);
  });
});

describe('Received header', () => {
  const base = {
    heloName: 'erp01',
    clientName: 'erp',
    hostname: 'relay.corp.example',
    queueId: 'ABC',
    secure: false,
    authenticated: false,
    esmtp: true,
    date: new Date(Date.UTC(2026, 10, 23, 10, 0, 0)),
  };
  test('names the client and, for one recipient, the recipient; never the internal address', () => {
    expect(buildReceivedHeader({ ...base, recipients: ['a@example.com'] })).toBe(
      'Received: from erp01 (client erp)\r\n\tby relay.corp.example (smarthop) with ESMTP id ABC\r\n' +
        '\tfor <a@example.com>; Mon, 23 Nov 2026 10:00:00 +0000\r\n',
    );
  });
  test('TLS and AUTH show in the protocol; several recipients are not listed; a hostile HELO is sanitised', () => {
    const header = buildReceivedHeader({
      ...base,
      heloName: 'x\r\nBcc: y',
      secure: true,
      authenticated: true,
      tls: { version: 'TLSv1.3', cipher: 'TLS_AES_256_GCM_SHA384' },
      recipients: ['a@x', 'b@y'],
    });
    expect(header).toBe(
      'Received: from xBcc:y (client erp)\r\n\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384)\r\n' +
        '\tby relay.corp.example (smarthop) with ESMTPSA id ABC; Mon, 23 Nov 2026 10:00:00 +0000\r\n',
    );
  });
});
