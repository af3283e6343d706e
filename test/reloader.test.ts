import { parseConfig } from '../src/config/load';
import type { RelayConfig } from '../src/config/schema';
import { Reloader, type Generation } from '../src/lifecycle/reloader';
import type { RelayEvent } from '../src/observe/events';
import { baseConfig } from './helpers/test-config';

/**
 * The reload procedure on its own (lifecycle/reloader.ts): what is built, started, swapped in and
 * retired, in which order, and what the admin is told. test/reload.e2e.test.ts covers it in a relay.
 */

function config(overrides: Record<string, unknown> = {}): RelayConfig {
  const parsed = parseConfig(baseConfig('/tmp/reloader', [{ name: 'primary', port: 2599 }], overrides), '/tmp');
  if (!parsed.ok) throw new Error(parsed.errors.join('; '));
  return parsed.config;
}

class FakeGeneration implements Generation {
  constructor(
    readonly config: RelayConfig,
    readonly name: string,
    readonly log: string[],
    private readonly startError?: Error,
  ) {}

  async start(): Promise<void> {
    this.log.push(`start ${this.name}`);
    if (this.startError) throw this.startError;
  }

  async retire(successor: Generation): Promise<void> {
    this.log.push(`retire ${this.name} for ${(successor as FakeGeneration).name}`);
  }
}

interface Setup {
  source?: (() => ReturnType<typeof parseConfig>) | null;
  buildError?: Error;
  startError?: Error;
}

const reloadedConfig = () => ({ ok: true as const, config: config({ log: { level: 'warn' } }) });

function setUp(options: Setup = {}) {
  const log: string[] = [];
  const events: RelayEvent[] = [];
  let running = new FakeGeneration(config(), 'first', log);
  let built = 0;
  const reloader = new Reloader<FakeGeneration>({
    source: 'source' in options ? (options.source ?? null) : reloadedConfig,
    running: () => running,
    build: (next) => {
      if (options.buildError) throw options.buildError;
      built++;
      log.push(`build ${built}`);
      return new FakeGeneration(next, `next${built}`, log, options.startError);
    },
    install: (next) => {
      log.push(`install ${next.name}`);
      running = next;
    },
    observer: { emit: (event) => events.push(event) },
    now: () => new Date(Date.UTC(2026, 11, 1, 12, 0, 0)),
  });
  return { reloader, log, events, running: () => running };
}

describe('Reloader', () => {
  test('a valid config is built, started and installed, then the old generation retired', async () => {
    const { reloader, log, events, running } = setUp();
    expect(await reloader.reload('api')).toEqual({ ok: true, changed: ['log'], restart_required: [] });
    expect(log).toEqual(['build 1', 'start next1', 'install next1', 'retire first for next1']);
    expect(running().config.log.level).toBe('warn');
    expect(events).toEqual([
      { type: 'config_reload', trigger: 'api', result: 'success', errors: [], changed: ['log'], restartRequired: [] },
    ]);
    expect(reloader.last).toEqual({ at: '2026-12-01T12:00:00.000Z', ok: true, errors: [], restart_required: [] });
  });

  test('keys only a restart applies run on with their old values and are named', async () => {
    const { reloader, running } = setUp({ source: () => ({ ok: true, config: config({ max_message_size: '2MiB' }) }) });
    expect(await reloader.reload('SIGHUP')).toEqual({ ok: true, changed: [], restart_required: ['max_message_size'] });
    expect(running().config.max_message_size).toBe(1024 * 1024);
  });

  const invalid = { ok: false as const, errors: ['clients[0].networks: required'] };
  test.each<[string, Setup, string[], string[]]>([
    ['the file does not validate', { source: () => invalid }, invalid.errors, []],
    ['no config file to read', { source: null }, ['this relay was not started from a config file'], []],
    ['it cannot be built', { buildError: new Error('DKIM keys: no such file') }, ['DKIM keys: no such file'], []],
    [
      'it cannot start',
      { startError: new Error('suppressed_recipients: cannot read x') },
      ['suppressed_recipients: cannot read x'],
      ['build 1', 'start next1', 'retire next1 for first'],
    ],
  ])('%s: nothing is swapped and the admin is told why', async (_case, options, errors, steps) => {
    const { reloader, log, events, running } = setUp(options);
    expect(await reloader.reload('SIGHUP')).toEqual({ ok: false, errors });
    expect(running().name).toBe('first');
    expect(log).toEqual(steps);
    expect(events).toEqual([
      { type: 'config_reload', trigger: 'SIGHUP', result: 'failure', errors, changed: [], restartRequired: [] },
    ]);
    expect(reloader.last).toMatchObject({ ok: false, errors });
  });

  test('reloads run one at a time, each against the generation the previous one installed', async () => {
    const { reloader, log } = setUp();
    await Promise.all([reloader.reload('api'), reloader.reload('SIGHUP')]);
    expect(log).toEqual([
      'build 1',
      'start next1',
      'install next1',
      'retire first for next1',
      'build 2',
      'start next2',
      'install next2',
      'retire next1 for next2',
    ]);
  });

  test('once stopping, a reload is refused, and stop waits for the one under way', async () => {
    const { reloader, log, events } = setUp();
    const underWay = reloader.reload('api');
    const stopped = reloader.stop();
    expect(await reloader.reload('SIGHUP')).toEqual({ ok: false, errors: ['the relay is stopping'] });
    await stopped;
    expect(log).toContain('install next1');
    expect(await underWay).toMatchObject({ ok: true });
    expect(events.map((event) => event.type === 'config_reload' && event.result)).toEqual(['failure', 'success']);
  });
});
