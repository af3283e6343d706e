import { mkdirSync, readdirSync, readFileSync, statSync, watch, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { relayPerTest } from './helpers/harness';
import { message, openSession } from './helpers/smtp-client';

/**
 * What `smarthop sink --dir` leaves in its folder: whole captures under names nobody else took.
 * Each is written under a hidden name and linked to its capture name, so a script watching the
 * folder never reads half a message, and a name taken meanwhile is skipped, never overwritten.
 */
describe('sink --dir captures', () => {
  const t = relayPerTest();

  test('a name another writer took after the sink started is skipped; no temporary file stays', async () => {
    const captures = path.join(t.dir, 'captures');
    const received: Buffer[] = [];
    const sink = await t.sink({ dir: captures, onMessage: (captured) => received.push(captured.data) });
    // Taken by someone else after the sink counted the folder: the second message must not land on it.
    writeFileSync(path.join(captures, '000002.eml'), 'not the sink’s');
    const { client } = await openSession(sink.port);
    for (const subject of ['one', 'two'])
      expect(await client.sendMessage('app@corp.example', ['user@example.com'], message({ subject }))).toMatch(/^250 /);
    await client.quit();
    expect(readdirSync(captures).sort()).toEqual(['000001.eml', '000002.eml', '000003.eml']);
    expect(readFileSync(path.join(captures, '000002.eml'), 'utf8')).toBe('not the sink’s');
    expect([readFileSync(path.join(captures, '000001.eml')), readFileSync(path.join(captures, '000003.eml'))]).toEqual(
      received,
    );
    expect(received[1].toString('latin1')).toContain('Subject: two');
  });

  test('a script watching the folder sees each capture whole, never while it is written', async () => {
    const captures = path.join(t.dir, 'captures');
    mkdirSync(captures, { recursive: true });
    // Sizes read the moment a capture name appears (the watcher runs on this event loop while the
    // sink's write runs on the thread pool, so a file created first and written after is seen short).
    const sizesSeen: number[] = [];
    const watcher = watch(captures, (_event, name) => {
      if (!name?.endsWith('.eml')) return;
      try {
        sizesSeen.push(statSync(path.join(captures, name)).size);
      } catch {
        // Gone again: not a capture.
      }
    });
    try {
      const sink = await t.sink({ dir: captures });
      const { client } = await openSession(sink.port);
      const body = `${'x'.repeat(998)}\r\n`.repeat(4000);
      expect(await client.sendMessage('app@corp.example', ['user@example.com'], message({ body }))).toMatch(/^250 /);
      await client.quit();
      const size = statSync(path.join(captures, '000001.eml')).size;
      expect(size).toBeGreaterThan(4_000_000);
      expect(sizesSeen.length).toBeGreaterThan(0);
      expect(sizesSeen.filter((seen) => seen !== size)).toEqual([]);
    } finally {
      watcher.close();
    }
  });
});
