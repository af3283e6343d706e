import { PasswordCheckGate, type CheckPlace } from '../src/policy/password-check-gate';

/** The gate with checks that finish when the test says so. */
function gate(concurrent: number, queue: number) {
  const g = new PasswordCheckGate({ concurrent, queue });
  const granted: { who: string; release: () => void }[] = [];
  let most = 0;
  const ask = (who: string, trusted: boolean, closed?: AbortSignal): Promise<CheckPlace> =>
    g.acquire(trusted, closed).then((place) => {
      if (place.kind === 'go') {
        granted.push({ who, release: place.release });
        most = Math.max(most, g.counts.running);
      }
      return place;
    });
  /** Finishes the oldest running check; the next in line starts on the same turn. */
  const finish = async () => {
    granted.shift()?.release();
    await Promise.resolve();
  };
  return { g, ask, granted, finish, most: () => most };
}

describe('PasswordCheckGate', () => {
  test('never more than `concurrent` at once, however many ask', async () => {
    const { g, ask, granted, finish, most } = gate(2, 1000);
    const places = Array.from({ length: 300 }, (_, i) => ask(`s${i}`, i % 3 === 0));
    await Promise.resolve();
    expect(g.counts).toEqual({ running: 2, waiting: 298 });
    while (granted.length > 0) await finish();
    expect((await Promise.all(places)).every((place) => place.kind === 'go')).toBe(true);
    expect(most()).toBe(2);
    expect(g.counts).toEqual({ running: 0, waiting: 0 });
  });

  test("strangers keep one place free for trusted checks, which also go ahead of the strangers' line", async () => {
    const { ask, granted, finish } = gate(2, 100);
    expect((await ask('s1', false)).kind).toBe('go');
    void ask('s2', false);
    void ask('s3', false);
    await Promise.resolve();
    expect(granted.map((g) => g.who)).toEqual(['s1']);
    expect((await ask('t1', true)).kind).toBe('go');
    void ask('t2', true);
    await finish();
    // s1 done: t2 (trusted, waiting) goes before s2 and s3, which waited longer.
    expect(granted.map((g) => g.who)).toEqual(['t1', 't2']);
    await finish();
    expect(granted.map((g) => g.who)).toEqual(['t2', 's2']);
    // Two places, but strangers may use only one of them: s3 waits for s2.
    await finish();
    expect(granted.map((g) => g.who)).toEqual(['s2']);
    await finish();
    expect(granted.map((g) => g.who)).toEqual(['s3']);
  });

  test('a full line refuses; strangers may hold only half of it', async () => {
    const { ask } = gate(1, 4);
    expect((await ask('running', false)).kind).toBe('go');
    void ask('s1', false);
    void ask('s2', false);
    expect((await ask('s3', false)).kind).toBe('full');
    void ask('t1', true);
    void ask('t2', true);
    expect((await ask('t3', true)).kind).toBe('full');
  });

  test('a waiting check whose session closed leaves the line and is never run', async () => {
    const { g, ask, granted, finish } = gate(1, 10);
    await ask('running', false);
    const leaving = new AbortController();
    const left = ask('left', false, leaving.signal);
    void ask('stays', false);
    leaving.abort();
    expect(await left).toEqual({ kind: 'abandoned' });
    expect(g.counts.waiting).toBe(1);
    await finish();
    expect(granted.map((g) => g.who)).toEqual(['stays']);
    const gone = new AbortController();
    gone.abort();
    expect(await ask('gone', true, gone.signal)).toEqual({ kind: 'abandoned' });
  });

  test('a place given back twice counts once', async () => {
    const { g, ask } = gate(1, 10);
    const place = await ask('a', true);
    if (place.kind !== 'go') throw new Error('no place');
    place.release();
    place.release();
    expect(g.counts).toEqual({ running: 0, waiting: 0 });
  });
});
